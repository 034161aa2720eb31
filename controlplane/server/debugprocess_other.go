//go:build !unix

package server

import "runtime"

// readRusage leaves p's counters at zero and says so: there is no
// getrusage here.
func readRusage(p *ProcessDebug) {
	p.Unavailable = "CPU and memory counters are not available on " + runtime.GOOS + " (no getrusage)"
}
