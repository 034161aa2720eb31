package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/server"
)

// startAlertingControlPlane runs a control plane whose READY-backlog rule
// fires on a single READY task, evaluated every 50ms with no group wait.
func startAlertingControlPlane(t *testing.T) *shell {
	t.Helper()
	rules := filepath.Join(t.TempDir(), "alerts.yaml")
	if err := os.WriteFile(rules, []byte(`interval: 50ms
group_wait: 0s
rules:
  - name: queue_ready_backlog
    expr: queue_ready_depth
    threshold: 0
    severity: critical
    summary: "{{.Value}} tasks are READY"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrCh := make(chan string, 1)
	done := make(chan error, 1)
	dataDir := t.TempDir()
	go func() {
		done <- server.Run(ctx, server.Config{
			Listen: "127.0.0.1:0", DataDir: dataDir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Alerts:      server.AlertsConfig{File: rules},
			OnListening: func(a net.Addr) { addrCh <- a.String() },
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case addr := <-addrCh:
		return &shell{t: t, addr: addr, token: operatorToken(t, dataDir), stateFile: filepath.Join(t.TempDir(), "leases.json")}
	case err := <-done:
		t.Fatalf("control plane did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("control plane did not start in 30s")
	}
	return nil
}

func TestAlertsCommands(t *testing.T) {
	s := startAlertingControlPlane(t)
	if out := s.ok("alerts"); out != "no alerts\n" {
		t.Errorf("alerts before any: %q", out)
	}

	// events watch, started first, prints the alert when it fires.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	watchDone := make(chan result, 1)
	go func() {
		watchDone <- s.runCtx(ctx, pw, "events", "watch", "--kind", "alert", "-o", "json")
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	s.ok("task", "create", "--title", "waiting work")

	var alerts []map[string]any
	deadline := time.Now().Add(20 * time.Second)
	for len(alerts) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the alert never fired")
		}
		if err := json.Unmarshal([]byte(s.ok("alerts", "-o", "json")), &alerts); err != nil {
			t.Fatal(err)
		}
		if len(alerts) > 0 && alerts[0]["state"] != "ALERT_STATE_FIRING" {
			alerts = nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	id := alerts[0]["id"].(string)
	if alerts[0]["rule"] != "queue_ready_backlog" || alerts[0]["summary"] != "1 tasks are READY" {
		t.Errorf("alert %v", alerts[0])
	}
	if !lines.Scan() {
		t.Fatalf("events watch printed nothing: %v", lines.Err())
	}
	var ev map[string]any
	if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
		t.Fatalf("events watch line %q: %v", lines.Text(), err)
	}
	if ev["kind"] != "alert" || !strings.Contains(ev["title"].(string), "queue_ready_backlog") {
		t.Errorf("watched %v", ev)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	cancel()
	if r := <-watchDone; r.code != 0 {
		t.Errorf("events watch exit %d: %s", r.code, r.stderr)
	}

	table := s.ok("alerts")
	if !strings.Contains(table, id) || !strings.Contains(table, "FIRING") || !strings.Contains(table, "critical") {
		t.Errorf("alerts table:\n%s", table)
	}
	if out := s.ok("alerts", "ack", id); !strings.Contains(out, "acked "+id) {
		t.Errorf("ack: %q", out)
	}
	if table := s.ok("alerts"); !strings.Contains(table, "acked by") {
		t.Errorf("alerts after ack:\n%s", table)
	}
	if r := s.run("alerts", "ack", "no-such-alert"); r.code == 0 || !strings.Contains(r.stderr, "no-such-alert") {
		t.Errorf("ack unknown: exit %d, %s", r.code, r.stderr)
	}

	out := s.ok("alerts", "silence", "--rule", "queue_ready_backlog", "--match", "x=y", "--for", "2h", "--reason", "load test", "-o", "json")
	var sil map[string]any
	if err := json.Unmarshal([]byte(out), &sil); err != nil {
		t.Fatal(err)
	}
	silID := sil["id"].(string)
	if sil["active"] != true || sil["reason"] != "load test" || sil["matchers"].(map[string]any)["x"] != "y" {
		t.Errorf("silence %v", sil)
	}
	if table := s.ok("alerts", "silences"); !strings.Contains(table, silID) || !strings.Contains(table, "x=y") {
		t.Errorf("silences:\n%s", table)
	}
	if r := s.run("alerts", "silence", "--rule", "no_such_rule", "--for", "1h"); r.code == 0 || !strings.Contains(r.stderr, "rule") {
		t.Errorf("silence of an unknown rule: exit %d, %s", r.code, r.stderr)
	}
	if r := s.run("alerts", "silence", "--rule", "queue_ready_backlog"); r.code == 0 || !strings.Contains(r.stderr, "--for") {
		t.Errorf("silence without --for: exit %d, %s", r.code, r.stderr)
	}
	if out := s.ok("alerts", "unsilence", silID); !strings.Contains(out, "silence "+silID+" ended") {
		t.Errorf("unsilence: %q", out)
	}
	if out := s.ok("alerts", "silences"); out != "no silences\n" {
		t.Errorf("silences after unsilence: %q", out)
	}
	if out := s.ok("alerts", "silences", "--all"); !strings.Contains(out, silID) {
		t.Errorf("silences --all: %q", out)
	}

	// A watch started now begins with the firing alert, marked current.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	pr2, pw2 := io.Pipe()
	go func() {
		s.runCtx(ctx2, pw2, "events", "watch")
		pw2.Close()
	}()
	r2 := bufio.NewReader(pr2)
	first, err := r2.ReadString('\n')
	go func() { _, _ = io.Copy(io.Discard, r2) }()
	if err != nil || !strings.Contains(first, "alert (current): [FIRING] queue_ready_backlog") {
		t.Errorf("watch's first line %q, %v", first, err)
	}
	cancel2()
}
