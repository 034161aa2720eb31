package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestBenchValidatePreload(t *testing.T) {
	for _, c := range []struct {
		n    int
		role string
		ok   bool
	}{
		{0, "", true},
		{100000, "", true},
		{50, "nobody-has-this", true},
		{50, "team/x:y.z_w", true},
		{-1, "", false},
		{0, "nobody-has-this", false}, // a role for no preload
		{50, "has space", false},
		{50, "star*", false},
		{50, strings.Repeat("r", 129), false},
	} {
		err := validatePreload(c.n, c.role)
		var usage *usageError
		if c.ok != (err == nil) || (err != nil && !errors.As(err, &usage)) {
			t.Errorf("--preload %d --preload-role %q: %v", c.n, c.role, err)
		}
	}

	if role, err := preloadRoleFor("bench-abc", ""); err != nil || role != "bench-abc-preload" {
		t.Errorf("default role: %q, %v", role, err)
	}
	if role, err := preloadRoleFor("bench-abc", "idle-role"); err != nil || role != "idle-role" {
		t.Errorf("given role: %q, %v", role, err)
	}
	var usage *usageError
	if _, err := preloadRoleFor("bench-abc", "bench-abc"); !errors.As(err, &usage) {
		t.Errorf("the run's own role: %v, want a usage error", err)
	}
}

func sample(pid int, user, sys float64, at time.Time) *processDebug {
	return &processDebug{PID: pid, CPUUserSeconds: user, CPUSystemSeconds: sys, SampledAt: at}
}

// TestBenchCPUPerCycle: the control plane's CPU over the phase divided by
// the cycles, its cores over the phase by its own clock, the client's CPU
// per cycle; and a reason instead of a figure where the samples cannot be
// compared.
func TestBenchCPUPerCycle(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// 1.3 s user + 0.26 s system over 2 s, 5,000 cycles: 312 µs a cycle,
	// 0.78 cores; the client spent 0.9 s: 180 µs a cycle.
	c := benchCPU{
		serverBefore: sample(7, 10, 2, t0),
		serverAfter:  sample(7, 11.3, 2.26, t0.Add(2*time.Second)),
		clientBefore: 3 * time.Second, clientAfter: 3900 * time.Millisecond, clientOK: true,
	}
	var res benchResult
	c.apply(&res, 5000)
	if res.ServerCPUMicrosPerCycle != 312 || res.ServerCPUCores != 0.78 || res.ClientCPUMicrosPerCycle != 180 {
		t.Errorf("server %v µs/cycle, %v cores; client %v µs/cycle", res.ServerCPUMicrosPerCycle, res.ServerCPUCores, res.ClientCPUMicrosPerCycle)
	}
	if got, want := res.cpuLine(), "312 µs/cycle (0.78 cores); bench client 180 µs/cycle"; got != want {
		t.Errorf("line %q, want %q", got, want)
	}

	for _, tc := range []struct {
		name          string
		before, after *processDebug
		want          string
	}{
		{"no --debug-addr", nil, nil, "pass --debug-addr (the control plane's --debug-listen)"},
		{"restarted", sample(7, 10, 2, t0), sample(8, 1, 1, t0.Add(time.Second)), "restarted"},
		{"no getrusage", &processDebug{PID: 7, Unavailable: "not on plan9"}, &processDebug{PID: 7, Unavailable: "not on plan9"}, "not on plan9"},
	} {
		c := benchCPU{serverBefore: tc.before, serverAfter: tc.after}
		var res benchResult
		c.apply(&res, 5000)
		if res.ServerCPUMicrosPerCycle != 0 || res.ServerCPUCores != 0 || res.ClientCPUMicrosPerCycle != 0 {
			t.Errorf("%s: %+v", tc.name, res)
		}
		if line := res.cpuLine(); !strings.HasPrefix(line, "not measured: ") || !strings.Contains(line, tc.want) {
			t.Errorf("%s: line %q, want one saying %q", tc.name, line, tc.want)
		}
	}
}

// TestBenchTableAndJSONShowCPU: the table has the CPU line (or why it is
// missing) and the preload; JSON has the fields when measured and leaves
// them out when not.
func TestBenchTableAndJSONShowCPU(t *testing.T) {
	res := benchResult{Run: "bench-1", Role: "bench-1", Agents: 8, Tasks: 2000, Batch: 1, Connections: 1, Addrs: []string{"127.0.0.1:7420"},
		CreateSeconds: 0.5, CycleSeconds: 2, CyclesPerSec: 1000,
		ServerCPUMicrosPerCycle: 312.4, ClientCPUMicrosPerCycle: 180.2, ServerCPUCores: 1.43,
		Preload: 20000, PreloadRole: "bench-1-preload", PreloadSeconds: 4}
	var out bytes.Buffer
	if err := writeBenchTable(&out, &res); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^control plane CPU +312 µs/cycle \(1\.43 cores\); bench client 180 µs/cycle$`).MatchString(out.String()) ||
		!regexp.MustCompile(`(?m)^preload +20000 READY tasks of role bench-1-preload ahead of the bench's, created in 4\.00s \(5000 tasks/s\)$`).MatchString(out.String()) {
		t.Errorf("table:\n%s", out.String())
	}
	out.Reset()
	if err := writeJSON(&out, res); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["server_cpu_us_per_cycle"] != 312.4 || m["client_cpu_us_per_cycle"] != 180.2 || m["server_cpu_cores"] != 1.43 ||
		m["preload"] != 20000.0 || m["preload_role"] != "bench-1-preload" || m["preload_seconds"] != 4.0 {
		t.Errorf("json: %s", out.String())
	}

	var bare benchResult
	benchCPU{}.apply(&bare, 2000)
	bare.Addrs = []string{"x"}
	out.Reset()
	if err := writeBenchTable(&out, &bare); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^control plane CPU +not measured: pass --debug-addr \(the control plane's --debug-listen\)$`).MatchString(out.String()) ||
		strings.Contains(out.String(), "preload") {
		t.Errorf("table without --debug-addr or --preload:\n%s", out.String())
	}
	out.Reset()
	if err := writeJSON(&out, bare); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"server_cpu_us_per_cycle", "client_cpu_us_per_cycle", "server_cpu_cores", "preload_role", "preload_seconds"} {
		if strings.Contains(out.String(), field) {
			t.Errorf("json has %s, not measured:\n%s", field, out.String())
		}
	}
}

// TestBenchReadProcessDebug decodes what /debug/process serves, and names the
// flag when the address is not a debug listener.
func TestBenchReadProcessDebug(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/debug/process" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(`{"pid":42,"cpu_user_seconds":1.5,"cpu_system_seconds":0.25,"max_rss_bytes":1048576,"goroutines":9,"sampled_at":"2026-01-02T03:04:05.0000006Z"}`))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	p, err := readProcessDebug(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if p.PID != 42 || p.CPUUserSeconds != 1.5 || p.CPUSystemSeconds != 0.25 || p.MaxRSSBytes != 1<<20 || p.Goroutines != 9 || !p.SampledAt.Equal(at) {
		t.Errorf("read %+v", p)
	}
	var d fleetDebug
	if err := getDebugJSON(t.Context(), addr, "/debug/nothing", &d); err == nil || !strings.Contains(err.Error(), "--debug-addr") {
		t.Errorf("404: %v", err)
	}
}

// TestBenchSelfCPU: the bench's own CPU grows with its work.
func TestBenchSelfCPU(t *testing.T) {
	before, ok := selfCPU()
	if !ok {
		t.Skip("no getrusage here")
	}
	sum := sha256.Sum256(nil)
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
		for range 1000 {
			sum = sha256.Sum256(sum[:])
		}
	}
	if after, _ := selfCPU(); after-before < 10*time.Millisecond {
		t.Errorf("CPU grew by %s over 50ms of hashing", after-before)
	}
}
