package server

import (
	"encoding/json"
	"net/http"
	"os"
	"runtime"
	"time"
)

// ProcessDebug is what the debug listener's /debug/process serves: the
// control plane's own resource counters at one moment. A benchmark reads it
// before and after a phase and divides the CPU between them by the work
// done. The process reports its own counters (getrusage), rather than a
// reader looking it up in /proc, so the figure holds wherever the
// benchmark runs: on another machine through a tunnel to the loopback
// listener, or outside the container the control plane runs in, where its
// pid means nothing.
type ProcessDebug struct {
	PID int `json:"pid"`
	// CPUUserSeconds and CPUSystemSeconds are the CPU time the process has
	// used since it started, in user and kernel mode.
	CPUUserSeconds   float64 `json:"cpu_user_seconds"`
	CPUSystemSeconds float64 `json:"cpu_system_seconds"`
	// MaxRSSBytes is the peak resident set size so far.
	MaxRSSBytes int64 `json:"max_rss_bytes"`
	Goroutines  int   `json:"goroutines"`
	// SampledAt is the wall time the counters were read: the difference of
	// two samples is the window their CPU was spent in, on one clock.
	SampledAt time.Time `json:"sampled_at"`
	// Unavailable, when set, says why the CPU and memory counters are zero
	// (a platform without getrusage), so a reader never takes them for an
	// idle process.
	Unavailable string `json:"unavailable,omitempty"`
}

// sampleProcess reads the process's counters now.
func sampleProcess() ProcessDebug {
	p := ProcessDebug{PID: os.Getpid(), Goroutines: runtime.NumGoroutine(), SampledAt: time.Now()}
	readRusage(&p)
	return p
}

func serveProcessDebug(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(sampleProcess())
}
