package server

import (
	"encoding/json"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// Heartbeat processing latency: how long a heartbeat takes from the moment
// its sidecar stamped sent_at to the moment the fleet has applied it. It is
// what `factory bench fleet` reports as its p99. The sidecar's clock and the
// server's are compared, so the figure is exact only when both run on one
// machine (the benchmark's case); across machines it includes their skew.
//
// A fixed-bucket histogram with atomic counters: recording costs one atomic
// add on the hot path, with no lock shared between streams.
const (
	// hbBucketWidth is the histogram's resolution.
	hbBucketWidth = 100 * time.Microsecond
	// hbBuckets covers 0 to 2 s; slower heartbeats land in the last bucket.
	hbBuckets = 20000
)

type latencyHistogram struct {
	buckets [hbBuckets + 1]atomic.Uint64
}

// heartbeatLatency is the process-wide histogram, read on the debug
// listener's /debug/fleet.
var heartbeatLatency = &latencyHistogram{}

func (h *latencyHistogram) record(d time.Duration) {
	i := int(max(d, 0) / hbBucketWidth)
	if i > hbBuckets {
		i = hbBuckets
	}
	h.buckets[i].Add(1)
}

// FleetDebug is what the debug listener's /debug/fleet serves: the server's
// pid (so a local benchmark can read its CPU and memory from /proc) and the
// heartbeat latency histogram since start.
type FleetDebug struct {
	PID int `json:"pid"`
	// Heartbeats is how many heartbeats were applied.
	Heartbeats uint64 `json:"heartbeats"`
	// BucketMicros is the width of each bucket.
	BucketMicros int64 `json:"bucket_micros"`
	// Buckets maps a bucket index (latency / width) to its count; empty
	// buckets are left out. The last index also holds everything slower.
	Buckets map[int]uint64 `json:"buckets"`
}

func (h *latencyHistogram) snapshot() FleetDebug {
	out := FleetDebug{PID: os.Getpid(), BucketMicros: hbBucketWidth.Microseconds(), Buckets: map[int]uint64{}}
	for i := range h.buckets {
		if n := h.buckets[i].Load(); n > 0 {
			out.Buckets[i] = n
			out.Heartbeats += n
		}
	}
	return out
}

func serveFleetDebug(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(heartbeatLatency.snapshot())
}
