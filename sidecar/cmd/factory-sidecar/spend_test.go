package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/access"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
	"github.com/factory/factory/sidecar/spend"
	"github.com/factory/factory/sidecar/spool"
)

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// fakeLiteLLMRows serves the fixture's /spend/logs/v2 page, then empty
// pages.
func fakeLiteLLMRows(t *testing.T) *httptest.Server {
	t.Helper()
	raw, err := os.ReadFile("../../spend/testdata/litellm-spend-logs.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx map[string]struct {
		Response struct {
			Body json.RawMessage `json:"body"`
		} `json:"response"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path != "/spend/logs/v2" || r.Header.Get("Authorization") != "Bearer sk-fixture-master-0000000000000000" {
			http.Error(w, "{}", http.StatusUnauthorized)
			return
		}
		if r.URL.Query().Get("page") == "1" {
			_, _ = w.Write(fx["GET /spend/logs/v2"].Response.Body)
			return
		}
		_, _ = w.Write(fx["GET /spend/logs/v2 (page past the end)"].Response.Body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestSidecarRelaysSpendToTheLedger runs the sidecar binary's run() with
// the spend endpoint and the LiteLLM poller against a real control plane:
// an agent's report and the LiteLLM rows of the host's agents reach the
// ledger under the sidecar's token; a replay of the spool after a restart
// (an ack lost to a crash) counts once; the emergency stop reaches
// GET /v1/emergency-stop.
func TestSidecarRelaysSpendToTheLedger(t *testing.T) {
	r := newEventRig(t)
	defer func() { r.stop() }()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sidecar.yaml")
	spoolDir := filepath.Join(dir, "spool")
	cfg := "host: edge-1\ngpu: {disabled: true}\ndisk: {paths: [" + dir + "]}\n" +
		"spool: {path: " + filepath.Join(spoolDir, "events.jsonl") + "}\n" +
		"agents: [{name: planner-01}, {name: coder-03}]\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	lite := fakeLiteLLMRows(t)
	listen := freeAddr(t)
	t.Setenv("FACTORY_LITELLM_KEY", "sk-fixture-master-0000000000000000")
	start := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"--addr", r.addr, "--token", r.sidecarSecret, "--config", cfgPath,
				"--spend-listen", listen, "--litellm-url", lite.URL, "--litellm-interval", "50ms"})
		}()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("sidecar: %v", err)
			}
		}
	}
	stop := start()
	raw, err := os.ReadFile(filepath.Join(r.dataDir, access.OperatorTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	ledger := factoryv1.NewBudgetServiceClient(r.dial(t, strings.TrimSpace(string(raw))))
	byAgent := func() map[string]*factoryv1.SpendTotals {
		resp, err := ledger.GetSpend(context.Background(), &factoryv1.GetSpendRequest{Days: 30, GroupBy: factoryv1.SpendGroupBy_SPEND_GROUP_BY_AGENT})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]*factoryv1.SpendTotals{}
		for _, g := range resp.GetGroups() {
			m[g.GetKey()] = g.GetTotals()
		}
		return m
	}
	postSpend := func(body string) int {
		var resp *http.Response
		waitUntil(t, "spend endpoint up", func() bool {
			resp, err = http.Post("http://"+listen+"/v1/spend", "application/json", bytes.NewBufferString(body))
			return err == nil
		})
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := postSpend(`{"id":"e2e-1","agent":"planner-01","model":"claude-sonnet-4","tier":"frontier","input_tokens":10,"cost_usd":"1.25","occurred_at":"` +
		time.Now().UTC().Format(time.RFC3339) + `"}`); code != http.StatusAccepted {
		t.Fatalf("POST /v1/spend: %d", code)
	}
	// planner-01: $1.25 reported + $0.035303 from LiteLLM; coder-03's
	// LiteLLM row costs $0; reviewer-02 is not this host's agent.
	waitUntil(t, "the report and the LiteLLM rows in the ledger", func() bool {
		m := byAgent()
		return m["planner-01"].GetCostMicros() == 1_285_303 && m["planner-01"].GetEvents() == 2 && m["coder-03"].GetEvents() == 1
	})
	if m := byAgent(); m["reviewer-02"] != nil {
		t.Errorf("reviewer-02, an agent of another host, was reported: %v", m["reviewer-02"])
	}

	// The fleet is stopped: the sidecar hears it on its stream.
	if _, err := ledger.EmergencyStop(context.Background(), &factoryv1.EmergencyStopRequest{Reason: "e2e"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "GET /v1/emergency-stop says stopped", func() bool {
		resp, err := http.Get("http://" + listen + "/v1/emergency-stop")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var s spend.StopState
		return json.NewDecoder(resp.Body).Decode(&s) == nil && s.Stopped && s.Reason == "e2e"
	})
	if _, err := ledger.RearmEmergencyStop(context.Background(), &factoryv1.RearmEmergencyStopRequest{}); err != nil {
		t.Fatal(err)
	}
	stop()

	// A crash after delivery but before the ack: the spool holds e2e-1
	// again, beside a new event. The restarted sidecar replays both; the
	// ledger counts e2e-1 once.
	sp, err := spool.Open(filepath.Join(spoolDir, "spend.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC()
	for _, id := range []string{"e2e-1", "e2e-2"} {
		if _, err := sp.Append(spool.Event{ID: id, Kind: spend.Kind, Time: at, Attributes: map[string]string{
			"agent": "planner-01", "model": "claude-sonnet-4", "tier": "frontier", "input_tokens": "10", "output_tokens": "0", "cost_micros": "1250000"}}); err != nil {
			t.Fatal(err)
		}
	}
	sp.Close()
	stop = start()
	defer stop()
	waitUntil(t, "the replay delivered", func() bool {
		m := byAgent()
		return m["planner-01"].GetEvents() == 3
	})
	if m := byAgent(); m["planner-01"].GetCostMicros() != 2_535_303 {
		t.Errorf("planner-01 after the replay: %v, want $2.535303 (e2e-1 once, e2e-2, the LiteLLM row)", m["planner-01"])
	}
}

// TestSpendListenIsLoopbackOnly: the endpoint takes reports without a
// token, so it refuses to listen beyond the host.
func TestSpendListenIsLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:7421", ":7421", "localhost.:0", "127.0.0.1.nip.io:0", "unix:/tmp/x"} {
		if l, err := listenLoopback(addr); err == nil {
			l.Close()
			t.Errorf("listenLoopback(%q): no error", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0"} {
		l, err := listenLoopback(addr)
		if err != nil {
			if strings.Contains(addr, "::1") {
				continue // no IPv6 loopback on this host
			}
			t.Errorf("listenLoopback(%q): %v", addr, err)
			continue
		}
		l.Close()
	}
}

// TestSpendSecretSources: --spend-secret, else the file, else
// FACTORY_SPEND_SECRET; an unreadable or empty file is an error, not "no
// secret".
func TestSpendSecretSources(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FACTORY_SPEND_SECRET", "from-env")
	for _, tc := range []struct {
		o    spendOptions
		want string
	}{
		{spendOptions{secret: "from-flag", secretFile: file}, "from-flag"},
		{spendOptions{secretFile: file}, "from-file"},
		{spendOptions{}, "from-env"},
	} {
		if got, err := tc.o.spendSecret(); err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.o, got, err, tc.want)
		}
	}
	for _, f := range []string{empty, filepath.Join(dir, "missing")} {
		if got, err := (spendOptions{secretFile: f}).spendSecret(); err == nil {
			t.Errorf("--spend-secret-file %s: %q and no error", f, got)
		}
	}
}
