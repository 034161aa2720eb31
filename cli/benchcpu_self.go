package cli

import (
	"time"

	"github.com/factory/factory/controlplane/telemetry"
)

// selfCPU is this process's user plus system CPU time so far; ok is false
// where the platform cannot say (the bench then shows no client figure
// rather than a wrong one).
func selfCPU() (time.Duration, bool) {
	user, sys, _, err := telemetry.ProcessUsage()
	return user + sys, err == nil
}
