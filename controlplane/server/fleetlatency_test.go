package server

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

func TestLatencyHistogram(t *testing.T) {
	h := &latencyHistogram{}
	h.record(-time.Millisecond) // clock skew: counted as 0
	h.record(150 * time.Microsecond)
	h.record(150 * time.Microsecond)
	h.record(time.Hour) // beyond the range: the last bucket
	s := h.snapshot()
	if s.Heartbeats != 4 || s.Buckets[0] != 1 || s.Buckets[1] != 2 || s.Buckets[hbBuckets] != 1 || s.PID != os.Getpid() {
		t.Errorf("snapshot = %+v", s)
	}
}

// TestFleetDebugEndpoint: what the debug listener serves is the histogram of
// applied heartbeats, as JSON `factory bench fleet` decodes.
func TestFleetDebugEndpoint(t *testing.T) {
	before := heartbeatLatency.snapshot().Heartbeats
	heartbeatLatency.record(time.Millisecond)
	rec := httptest.NewRecorder()
	serveFleetDebug(rec, httptest.NewRequest("GET", "/debug/fleet", nil))
	var got FleetDebug
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Heartbeats != before+1 || got.BucketMicros != 100 || got.Buckets[10] == 0 {
		t.Errorf("served %+v", got)
	}
}
