package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
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
