//go:build !unix

package telemetry

import (
	"errors"
	"runtime"
	"time"
)

// ProcessUsage is not available without getrusage.
func ProcessUsage() (user, system time.Duration, maxRSSBytes int64, err error) {
	return 0, 0, 0, errors.New("no getrusage on " + runtime.GOOS)
}
