//go:build unix

package cli

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// killProcessGroup kills CMD and everything in its process group: CMD
// was started as the group's leader, so the group's id is its pid.
func killProcessGroup(p *os.Process) {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		_ = p.Kill()
	}
}

// childrenCPU is the user plus system CPU time of the children this
// process waited for; ok is false where getrusage fails.
func childrenCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
