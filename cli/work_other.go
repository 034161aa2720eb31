//go:build !unix

package cli

import (
	"os"
	"syscall"
	"time"
)

// workProcAttr: without process groups, CMD is started as it is.
func workProcAttr() *syscall.SysProcAttr { return nil }

// killProcessGroup kills CMD itself: there is no process group to kill
// here, so what CMD started may outlive it.
func killProcessGroup(p *os.Process) { _ = p.Kill() }

// childrenCPU reports nothing: there is no getrusage here.
func childrenCPU() (time.Duration, bool) { return 0, false }
