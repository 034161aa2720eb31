package server

import "github.com/factory/factory/controlplane/telemetry"

// readRusage fills p's CPU and memory from the process's own counters.
func readRusage(p *ProcessDebug) {
	user, sys, maxRSS, err := telemetry.ProcessUsage()
	if err != nil {
		p.Unavailable = "CPU and memory counters: " + err.Error()
		return
	}
	p.CPUUserSeconds, p.CPUSystemSeconds, p.MaxRSSBytes = user.Seconds(), sys.Seconds(), maxRSS
}
