//go:build !unix

package cli

import "time"

// selfCPU reports no CPU time: there is no getrusage here, and the bench
// then shows no client figure rather than a wrong one.
func selfCPU() (time.Duration, bool) { return 0, false }
