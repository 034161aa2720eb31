//go:build unix

package telemetry

import (
	"runtime"
	"syscall"
	"time"
)

// ProcessUsage is this process's user and system CPU time so far and its
// peak resident memory, from getrusage(RUSAGE_SELF): what benchmarks and
// the debug listener report CPU per operation with.
func ProcessUsage() (user, system time.Duration, maxRSSBytes int64, err error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0, 0, err
	}
	// ru_maxrss is bytes on Apple's systems, KiB on the others.
	unit := int64(1024)
	if runtime.GOOS == "darwin" || runtime.GOOS == "ios" {
		unit = 1
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()), int64(ru.Maxrss) * unit, nil
}
