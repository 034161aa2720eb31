package cli

import (
	"bytes"
	"os"
	"regexp"
	"strings"
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

// TestBenchFleetCPUPerHeartbeat: the control plane's CPU comes from its own
// counters when they were read (memory still from /proc where this machine
// sees it), else from /proc; divided by the heartbeats applied in the
// window, it is the CPU per heartbeat the table and JSON show.
func TestBenchFleetCPUPerHeartbeat(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	before := sample(7, 10, 1, t0)
	after := sample(7, 12, 1.5, t0.Add(10*time.Second))
	after.MaxRSSBytes = 96 << 20
	fromProc := &procUsage{PID: 7, CPUCores: 0.3, CPUFrom: "/proc", RSSMiB: 80, PeakMiB: 95, cpu: 3 * time.Second}

	// 2.5 s over 10 s from /debug/process: 0.25 cores, and /proc's memory.
	u := serverUsage(fromProc, before, after)
	if u.CPUCores != 0.25 || u.CPUFrom != "/debug/process" || u.RSSMiB != 80 || u.cpu != 2500*time.Millisecond {
		t.Errorf("with /debug/process and /proc: %+v", u)
	}
	// Not on this machine: CPU and peak from /debug/process alone.
	if u := serverUsage(nil, before, after); u.PID != 7 || u.CPUCores != 0.25 || u.RSSMiB != 0 || u.PeakMiB != 96 {
		t.Errorf("with /debug/process only: %+v", u)
	}
	// No /debug/process: /proc as before.
	if u := serverUsage(fromProc, nil, nil); u != fromProc {
		t.Errorf("with /proc only: %+v", u)
	}

	// 2.5 s of CPU for 20,000 heartbeats: 125 µs each.
	res := fleetBenchResult{Run: "bench-1", Sidecars: 2000, Connections: 20, IntervalSec: 1, WindowSec: 10,
		Latency: &latencySummary{Count: 20000}, Server: serverUsage(nil, before, after)}
	res.setHeartbeatCPU(true, 20000)
	if res.ServerCPUMicrosPerHeartbeat != 125 {
		t.Errorf("%v µs per heartbeat, want 125", res.ServerCPUMicrosPerHeartbeat)
	}
	var out bytes.Buffer
	if err := writeFleetBenchTable(&out, &res); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^CPU per heartbeat +control plane 125\.0 µs per applied heartbeat$`).MatchString(out.String()) ||
		!regexp.MustCompile(`(?m)^control plane +pid 7: CPU 0\.25 cores \(/debug/process\), RSS not read \(not on this machine\) \(peak 96 MiB\)$`).MatchString(out.String()) {
		t.Errorf("table:\n%s", out.String())
	}
	out.Reset()
	if err := writeJSON(&out, res); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"server_cpu_us_per_heartbeat": 125`) {
		t.Errorf("json:\n%s", out.String())
	}

	for _, tc := range []struct {
		name    string
		debug   bool
		server  *procUsage
		applied uint64
		want    string
	}{
		{"no --debug-addr", false, fromProc, 0, "pass --debug-addr"},
		{"no server CPU", true, nil, 100, "no control plane CPU"},
		{"nothing applied", true, fromProc, 0, "no heartbeat applied"},
	} {
		res := fleetBenchResult{Server: tc.server}
		res.setHeartbeatCPU(tc.debug, tc.applied)
		if res.ServerCPUMicrosPerHeartbeat != 0 || !strings.Contains(res.heartbeatCPUNote, tc.want) {
			t.Errorf("%s: %v, %q", tc.name, res.ServerCPUMicrosPerHeartbeat, res.heartbeatCPUNote)
		}
	}
}
