package cli

import (
	"os"
	"testing"
	"time"
)

func TestFleetDebugSince(t *testing.T) {
	before := &fleetDebug{BucketMicros: 100, Buckets: map[string]uint64{"0": 5, "3": 1}}
	// 100 heartbeats since: 98 under 0.1 ms, one at 0.3 ms, one at 5 ms.
	after := &fleetDebug{BucketMicros: 100, Buckets: map[string]uint64{"0": 103, "3": 2, "50": 1}}
	sum, n := after.since(before)
	if n != 100 || sum.Count != 100 {
		t.Fatalf("n = %d, %+v", n, sum)
	}
	// Percentiles are bucket upper bounds: p50 0.1 ms, p99 0.4 ms, max 5.1 ms.
	if sum.P50ms != 0.1 || sum.P99ms != 0.4 || sum.Maxms != 5.1 {
		t.Errorf("summary = %+v", sum)
	}
	if s, n := before.since(before); n != 0 || s.Count != 0 {
		t.Errorf("no heartbeats: %+v %d", s, n)
	}
}

func TestReadProc(t *testing.T) {
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if s.rssKiB == 0 || s.hwmKiB < s.rssKiB {
		t.Errorf("sample = %+v", s)
	}
	u := s.usage(os.Getpid(), time.Second)
	if u == nil || u.RSSMiB <= 0 || u.CPUCores < 0 {
		t.Errorf("usage = %+v", u)
	}
	if _, err := readProc(0); err == nil {
		t.Error("pid 0: no error")
	}
}
