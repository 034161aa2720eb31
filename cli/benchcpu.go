package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"
)

// processDebug is the control plane's /debug/process (server.ProcessDebug):
// its own CPU and memory counters at one moment.
type processDebug struct {
	PID              int       `json:"pid"`
	CPUUserSeconds   float64   `json:"cpu_user_seconds"`
	CPUSystemSeconds float64   `json:"cpu_system_seconds"`
	MaxRSSBytes      int64     `json:"max_rss_bytes"`
	Goroutines       int       `json:"goroutines"`
	SampledAt        time.Time `json:"sampled_at"`
	Unavailable      string    `json:"unavailable,omitempty"`
}

// readProcessDebug reads the control plane's counters from its debug
// listener. They come from the process itself, so they hold when the
// bench runs on another machine (through a tunnel to the loopback
// listener) or outside the control plane's container.
func readProcessDebug(ctx context.Context, addr string) (*processDebug, error) {
	var p processDebug
	if err := getDebugJSON(ctx, addr, "/debug/process", &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// getDebugJSON decodes what the debug listener at addr serves on path.
func getDebugJSON(ctx context.Context, addr, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return fmt.Errorf("--debug-addr: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("--debug-addr: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("--debug-addr: GET %s: %s (is it the control plane's --debug-listen, of a version that serves %s?)", path, resp.Status, path)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("--debug-addr: %s: %w", path, err)
	}
	return nil
}

// cpuSince is the CPU the control plane spent between two samples and the
// wall time between them, both by its own clock; ok is false when they
// cannot be compared: counters not available there, or another process
// (a restart) answered one of the reads.
func (p *processDebug) cpuSince(before *processDebug) (cpu time.Duration, wall time.Duration, ok bool) {
	if p == nil || before == nil || p.Unavailable != "" || before.Unavailable != "" || p.PID != before.PID {
		return 0, 0, false
	}
	seconds := (p.CPUUserSeconds + p.CPUSystemSeconds) - (before.CPUUserSeconds + before.CPUSystemSeconds)
	wall = p.SampledAt.Sub(before.SampledAt)
	if seconds < 0 || wall <= 0 {
		return 0, 0, false
	}
	return time.Duration(seconds * float64(time.Second)), wall, true
}

// notMeasuredWhy says why the samples give no CPU figure.
func (p *processDebug) notMeasuredWhy(before *processDebug) string {
	switch {
	case p == nil || before == nil:
		return "not measured: pass --debug-addr (the control plane's --debug-listen)"
	case p.Unavailable != "":
		return "not measured: the control plane says " + p.Unavailable
	case before.Unavailable != "":
		return "not measured: the control plane says " + before.Unavailable
	case p.PID != before.PID:
		return fmt.Sprintf("not measured: the control plane restarted during the run (pid %d, then %d)", before.PID, p.PID)
	}
	return "not measured: its counters went backwards"
}

// microsPer is CPU time per unit of work in µs, to 0.1 µs; 0 when there
// was no work.
func microsPer(cpu time.Duration, units int64) float64 {
	if units <= 0 {
		return 0
	}
	return math.Round(float64(cpu)/float64(time.Microsecond)/float64(units)*10) / 10
}

// coresBusy is CPU time over a window divided by its length, to 0.01: 1.0
// is one core kept busy throughout.
func coresBusy(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return math.Round(cpu.Seconds()/wall.Seconds()*100) / 100
}

// benchCPU is what a run's CPU figures are measured from: the control
// plane's /debug/process and the bench's own getrusage, read just before
// and just after its claim/complete phase.
type benchCPU struct {
	serverBefore, serverAfter *processDebug
	clientBefore, clientAfter time.Duration
	clientOK                  bool
}

// apply sets res's CPU figures for cycles completed tasks, or says in
// res.serverCPUNote why the control plane's are missing.
func (c benchCPU) apply(res *benchResult, cycles int64) {
	if cpu, wall, ok := c.serverAfter.cpuSince(c.serverBefore); ok && cycles > 0 {
		res.ServerCPUMicrosPerCycle = microsPer(cpu, cycles)
		res.ServerCPUCores = coresBusy(cpu, wall)
	} else {
		res.serverCPUNote = c.serverAfter.notMeasuredWhy(c.serverBefore)
	}
	if c.clientOK && cycles > 0 && c.clientAfter >= c.clientBefore {
		res.ClientCPUMicrosPerCycle = microsPer(c.clientAfter-c.clientBefore, cycles)
	}
}

// cpuLine is the table's "control plane CPU" figure.
func (res *benchResult) cpuLine() string {
	var b strings.Builder
	if res.ServerCPUMicrosPerCycle > 0 {
		fmt.Fprintf(&b, "%.0f µs/cycle (%.2f cores)", res.ServerCPUMicrosPerCycle, res.ServerCPUCores)
	} else if res.serverCPUNote != "" {
		b.WriteString(res.serverCPUNote)
	} else {
		b.WriteString("not measured")
	}
	if res.ClientCPUMicrosPerCycle > 0 {
		fmt.Fprintf(&b, "; bench client %.0f µs/cycle", res.ClientCPUMicrosPerCycle)
	}
	return b.String()
}
