//go:build unix

package server

import (
	"runtime"
	"syscall"
)

// readRusage fills p's CPU and memory from getrusage(RUSAGE_SELF).
func readRusage(p *ProcessDebug) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		p.Unavailable = "getrusage: " + err.Error()
		return
	}
	p.CPUUserSeconds = float64(ru.Utime.Nano()) / 1e9
	p.CPUSystemSeconds = float64(ru.Stime.Nano()) / 1e9
	p.MaxRSSBytes = int64(ru.Maxrss) * maxRSSUnit()
}

// maxRSSUnit is the unit of ru_maxrss: bytes on Apple's systems, KiB on
// the others.
func maxRSSUnit() int64 {
	if runtime.GOOS == "darwin" || runtime.GOOS == "ios" {
		return 1
	}
	return 1024
}
