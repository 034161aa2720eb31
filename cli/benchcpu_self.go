//go:build unix

package cli

import (
	"syscall"
	"time"
)

// selfCPU is this process's user plus system CPU time so far; ok is false
// where getrusage fails.
func selfCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
