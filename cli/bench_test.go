package cli_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/server"
)

// TestBenchSpreadsOverAddresses runs bench queue with --addrs and
// --wake-addr. One SQLite control plane named twice stands in for two
// replicas (replicas proper, on PostgreSQL, are exercised by the
// control plane's replica tests): the agents must be spread over both
// names and the wake-up phase must wait where --wake-addr says.
func TestBenchSpreadsOverAddresses(t *testing.T) {
	s := newShell(t)
	out := s.ok("bench", "queue", "--addrs", s.addr+","+s.addr, "--wake-addr", s.addr,
		"--agents", "4", "--tasks", "200", "--batch", "5", "--wait-probes", "3", "--probe-interval", "20ms", "-o", "json")
	var res struct {
		Tasks        int      `json:"tasks"`
		Connections  int      `json:"connections"`
		Addrs        []string `json:"addrs"`
		WakeAddr     string   `json:"wake_addr"`
		CyclesPerSec float64  `json:"cycles_per_second"`
		Wakeup       struct {
			Count int `json:"count"`
		} `json:"wakeup_latency"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("bench -o json: %v\n%s", err, out)
	}
	if len(res.Addrs) != 2 || res.WakeAddr != s.addr || res.Connections != 2 {
		t.Errorf("addrs %v, wake_addr %q, %d connections: want two addresses, one connection to each, and the wake address", res.Addrs, res.WakeAddr, res.Connections)
	}
	if res.Tasks != 200 || res.CyclesPerSec <= 0 || res.Wakeup.Count != 3 {
		t.Errorf("tasks %d, cycles/s %v, wake-up probes %d", res.Tasks, res.CyclesPerSec, res.Wakeup.Count)
	}

	if r := s.run("bench", "queue", "--addrs", s.addr+",", "--tasks", "1"); r.code != 2 {
		t.Errorf("--addrs with an empty address: exit %d, want 2 (usage)\n%s", r.code, r.stderr)
	}
}

// TestBenchWatchers holds watch streams during the run, spread over tokens
// and connections so the stream caps admit them all: idle ones hear
// nothing, busy ones every event of the run; slow ones are counted too.
func TestBenchWatchers(t *testing.T) {
	s := newShell(t)
	type watchers struct {
		Requested    int   `json:"requested"`
		Tokens       int   `json:"tokens"`
		Conns        int   `json:"connections"`
		Open         int64 `json:"open"`
		Refused      int64 `json:"refused"`
		ClosedBehind int64 `json:"closed_behind"`
		Events       int64 `json:"events"`
	}
	run := func(mode string) watchers {
		out := s.ok("bench", "queue", "--agents", "2", "--tasks", "50", "--wait-probes", "0",
			"--watchers", "150", "--watcher-mode", mode, "--watchers-per-token", "40", "--watchers-per-conn", "60", "-o", "json")
		var res struct {
			Watchers watchers `json:"watchers"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("bench -o json: %v\n%s", err, out)
		}
		return res.Watchers
	}
	idle := run("idle")
	if idle.Requested != 150 || idle.Tokens != 4 || idle.Conns != 3 || idle.Open != 150 || idle.Refused != 0 || idle.Events != 0 {
		t.Errorf("idle watchers: %+v; want 150 open over 4 tokens and 3 connections, hearing nothing", idle)
	}
	// 50 tasks, each created, claimed and completed: every busy watcher
	// hears them (the last may still be on their way when the bench
	// reports).
	if busy := run("busy"); busy.Open != 150 || busy.Events < 150*50*2 {
		t.Errorf("busy watchers: %+v; want 150 open hearing most of %d events", busy, 150*50*3)
	}
	if slow := run("slow"); slow.Open != 150 || slow.Refused != 0 {
		t.Errorf("slow watchers: %+v; want 150 open", slow)
	}
	if r := s.run("bench", "queue", "--watchers", "1", "--watcher-mode", "lazy"); r.code != 2 {
		t.Errorf("--watcher-mode lazy: exit %d, want 2 (usage)\n%s", r.code, r.stderr)
	}
}

// TestBenchFleet runs bench fleet against an in-process control plane: every
// simulated sidecar connects, heartbeats flow, and its hosts show in the
// fleet view. Latency and process figures need the server's debug listener
// and are absent without --debug-addr.
func TestBenchFleet(t *testing.T) {
	s := newShell(t)
	out := s.ok("bench", "fleet", "--sidecars", "6", "--conns", "2", "--duration", "1s", "--interval", "50ms", "-o", "json")
	var res struct {
		Sidecars    int       `json:"sidecars"`
		Connections int       `json:"connections"`
		SentPerSec  float64   `json:"heartbeats_sent_per_second"`
		Telemetry   int       `json:"telemetry_sent"`
		SendErrors  int       `json:"send_errors"`
		Latency     *struct{} `json:"heartbeat_latency"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("bench fleet -o json: %v\n%s", err, out)
	}
	if res.Sidecars != 6 || res.Connections != 2 || res.SentPerSec <= 0 || res.Telemetry == 0 || res.SendErrors != 0 || res.Latency != nil {
		t.Errorf("result: %s", out)
	}
	nodes := s.ok("nodes", "-o", "json")
	if n := strings.Count(nodes, `-node-`); n < 6 {
		t.Errorf("%d bench hosts in the fleet view, want 6:\n%s", n, nodes)
	}
	if r := s.run("bench", "fleet", "--sidecars", "0"); r.code != 2 {
		t.Errorf("--sidecars 0: exit %d, want 2 (usage)\n%s", r.code, r.stderr)
	}
}

// debugAddrHandler passes on the address the control plane's debug
// listener logs, and drops every other record.
type debugAddrHandler struct{ addr chan<- string }

func (h debugAddrHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h debugAddrHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h debugAddrHandler) WithGroup(string) slog.Handler            { return h }
func (h debugAddrHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "debug listener" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "addr" {
			select {
			case h.addr <- a.Value.String():
			default:
			}
		}
		return true
	})
	return nil
}

// newShellWithDebug is newShell with the control plane's debug listener
// on, on a port of its choosing; it returns the listener's address too.
func newShellWithDebug(t *testing.T) (*shell, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrCh, debugCh := make(chan string, 1), make(chan string, 1)
	done := make(chan error, 1)
	dataDir := t.TempDir()
	go func() {
		done <- server.Run(ctx, server.Config{
			Listen:      "127.0.0.1:0",
			DebugListen: "127.0.0.1:0",
			DataDir:     dataDir,
			Logger:      slog.New(debugAddrHandler{addr: debugCh}),
			OnListening: func(a net.Addr) { addrCh <- a.String() },
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	var addr, debugAddr string
	for addr == "" || debugAddr == "" {
		select {
		case addr = <-addrCh:
		case debugAddr = <-debugCh:
		case err := <-done:
			t.Fatalf("control plane did not start: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("control plane and its debug listener did not start in 30s")
		}
	}
	return &shell{t: t, addr: addr, token: operatorToken(t, dataDir), stateFile: filepath.Join(t.TempDir(), "leases.json")}, debugAddr
}

// TestBenchPreloadAndCPU runs bench queue with a preloaded backlog and the
// control plane's debug listener: the figures carry its CPU per cycle (the
// control plane runs in this test's process, so its CPU includes the
// bench's: it only has to be there and positive), and the preloaded tasks
// are finished again at the end, none left READY.
func TestBenchPreloadAndCPU(t *testing.T) {
	s, debugAddr := newShellWithDebug(t)
	out := s.ok("bench", "queue", "--agents", "2", "--tasks", "100", "--wait-probes", "0", "--preload", "50", "--debug-addr", debugAddr)
	m := regexp.MustCompile(`(?m)^control plane CPU +([0-9.]+) µs/cycle \(([0-9.]+) cores\); bench client ([0-9.]+) µs/cycle$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no CPU line:\n%s", out)
	}
	for _, v := range m[1:] {
		if f, _ := strconv.ParseFloat(v, 64); f <= 0 {
			t.Errorf("CPU figure %s, want positive:\n%s", v, out)
		}
	}
	if !regexp.MustCompile(`(?m)^preload +50 READY tasks of role bench-[0-9a-f]+-preload ahead`).MatchString(out) {
		t.Errorf("no preload line:\n%s", out)
	}

	raw := s.ok("bench", "queue", "--agents", "2", "--tasks", "100", "--wait-probes", "0", "--preload", "30", "--preload-role", "nobody-takes-this",
		"--debug-addr", debugAddr, "-o", "json")
	var res struct {
		ServerCPU      float64 `json:"server_cpu_us_per_cycle"`
		ClientCPU      float64 `json:"client_cpu_us_per_cycle"`
		Cores          float64 `json:"server_cpu_cores"`
		Preload        int     `json:"preload"`
		PreloadRole    string  `json:"preload_role"`
		PreloadSeconds float64 `json:"preload_seconds"`
	}
	if err := json.Unmarshal([]byte(raw), &res); err != nil {
		t.Fatalf("bench -o json: %v\n%s", err, raw)
	}
	if res.ServerCPU <= 0 || res.ClientCPU <= 0 || res.Cores <= 0 || res.Preload != 30 || res.PreloadRole != "nobody-takes-this" || res.PreloadSeconds <= 0 {
		t.Errorf("json: %s", raw)
	}

	var preloaded []struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(s.ok("task", "ls", "--label", "preload=yes", "--all", "-o", "json")), &preloaded); err != nil {
		t.Fatal(err)
	}
	if len(preloaded) != 80 {
		t.Errorf("%d preloaded tasks, want 80", len(preloaded))
	}
	for _, p := range preloaded {
		if p.State != "TASK_STATE_DONE" {
			t.Errorf("a preloaded task left %s, want every one DONE", p.State)
			break
		}
	}

	for _, args := range [][]string{
		{"--preload", "-1"},
		{"--preload", "5", "--preload-role", "has space"},
		{"--preload-role", "nobody-takes-this"},
	} {
		if r := s.run(append([]string{"bench", "queue", "--tasks", "1"}, args...)...); r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)\n%s", args, r.code, r.stderr)
		}
	}
}

// TestBenchStream runs bench queue --stream against an in-process control
// plane: the agents claim and complete over Work streams, every task ends
// DONE, and the figures say the run was a streaming one.
func TestBenchStream(t *testing.T) {
	s := newShell(t)
	r := s.run("bench", "queue", "--stream", "--agents", "4", "--tasks", "200", "--batch", "5", "--wait-probes", "2", "--probe-interval", "20ms", "-o", "json")
	// Shown as "... (UNIMPLEMENTED)" by a control plane without Work.
	if r.code != 0 && strings.Contains(strings.ToUpper(r.stderr), "UNIMPLEMENTED") {
		t.Skipf("the control plane does not serve Work yet:\n%s", r.stderr)
	}
	if r.code != 0 {
		t.Fatalf("bench queue --stream: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	var res struct {
		Run            string  `json:"run"`
		Tasks          int     `json:"tasks"`
		Stream         bool    `json:"stream"`
		CyclesPerSec   float64 `json:"cycles_per_second"`
		CompleteErrors int64   `json:"complete_errors"`
		Claims         struct {
			Count int `json:"count"`
		} `json:"claim_latency"`
		Wakeup struct {
			Count int `json:"count"`
		} `json:"wakeup_latency"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("bench -o json: %v\n%s", err, r.stdout)
	}
	// 200 tasks, 5 a claim: at least 40 claims.
	if !res.Stream || res.Tasks != 200 || res.CyclesPerSec <= 0 || res.CompleteErrors != 0 || res.Claims.Count < 40 || res.Wakeup.Count != 2 {
		t.Errorf("result: %s", r.stdout)
	}
	var tasks []struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(s.ok("task", "ls", "--label", "bench="+res.Run, "--all", "-o", "json")), &tasks); err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 202 {
		t.Errorf("%d tasks of the run, want 202 (200 and 2 wake-up probes)", len(tasks))
	}
	for _, task := range tasks {
		if task.State != "TASK_STATE_DONE" {
			t.Errorf("a task of the run left %s, want every one DONE", task.State)
			break
		}
	}

	out := s.ok("bench", "queue", "--stream", "--agents", "2", "--tasks", "20", "--wait-probes", "0")
	if !regexp.MustCompile(`(?m)^run +bench-[0-9a-f]+ \(2 agents, 20 tasks, batch 1, 1 connection\(s\), stream\)$`).MatchString(out) {
		t.Errorf("no stream run line:\n%s", out)
	}
}
