package server

import (
	"crypto/sha256"
	"encoding/json"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

func getProcessDebug(t *testing.T) ProcessDebug {
	t.Helper()
	rec := httptest.NewRecorder()
	serveProcessDebug(rec, httptest.NewRequest("GET", "/debug/process", nil))
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var p ProcessDebug
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("/debug/process: %v\n%s", err, rec.Body)
	}
	return p
}

// TestProcessDebugEndpoint: /debug/process serves the process's own CPU
// counters, and they grow by the CPU the process spends between two reads.
func TestProcessDebugEndpoint(t *testing.T) {
	before := getProcessDebug(t)
	if before.Unavailable != "" {
		t.Skipf("no CPU counters here: %s", before.Unavailable)
	}
	if before.PID != os.Getpid() || before.Goroutines < 1 || before.MaxRSSBytes < 1<<20 || before.SampledAt.IsZero() {
		t.Errorf("served %+v", before)
	}
	// Busy work: hash for a while, so user CPU grows by far more than the
	// counters' resolution.
	sum := sha256.Sum256(nil)
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
		for range 1000 {
			sum = sha256.Sum256(sum[:])
		}
	}
	after := getProcessDebug(t)
	cpu := (after.CPUUserSeconds + after.CPUSystemSeconds) - (before.CPUUserSeconds + before.CPUSystemSeconds)
	if cpu < 0.02 || after.CPUUserSeconds <= before.CPUUserSeconds {
		t.Errorf("CPU grew by %.3fs over 100ms of hashing (user %.3f → %.3f)", cpu, before.CPUUserSeconds, after.CPUUserSeconds)
	}
	if !after.SampledAt.After(before.SampledAt) || after.MaxRSSBytes < before.MaxRSSBytes {
		t.Errorf("before %+v, after %+v", before, after)
	}
}
