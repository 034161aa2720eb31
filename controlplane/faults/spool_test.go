//go:build faults

package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// spendSidecar is a sidecar process with its spend endpoint on a known
// port, connected through a proxy that the test can cut.
type spendSidecar struct {
	*proc
	spendAddr string
}

func startSpendSidecar(t *testing.T, name, dir, addr, secret, spendAddr string) *spendSidecar {
	t.Helper()
	p := start(t, name, binary(t, "factory-sidecar"), []string{"FACTORY_TOKEN=" + secret},
		"--addr", addr, "--config", sidecarConfig(t, dir, "spool-host", "spool-agent"), "--spend-listen", spendAddr)
	p.WaitLog("spend endpoint", 30*time.Second, func(l logLine) bool { return l.Str("msg") == "spend endpoint listening" })
	return &spendSidecar{proc: p, spendAddr: spendAddr}
}

// post reports events to the sidecar's endpoint: the HTTP status and body.
func (s *spendSidecar) post(t *testing.T, ids []string, cost int64) (int, string) {
	t.Helper()
	var events []map[string]any
	for _, id := range ids {
		events = append(events, map[string]any{"id": id, "agent": "spool-agent", "model": "claude-sonnet-4", "provider": "anthropic",
			"tier": "mid", "input_tokens": 1200, "output_tokens": 300, "cost_micros": cost, "occurred_at": time.Now().UTC().Format(time.RFC3339Nano)})
	}
	body, _ := json.Marshal(events)
	resp, err := http.Post("http://"+s.spendAddr+"/v1/spend", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("post spend: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func ids(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s-%04d", prefix, i))
	}
	return out
}

// spendTotals is what the control plane's ledger holds for the last days.
func spendTotals(ctx context.Context, b factoryv1.BudgetServiceClient) (events, micros int64) {
	rep, err := b.GetSpend(ctx, &factoryv1.GetSpendRequest{Days: 2})
	if err != nil {
		return -1, -1
	}
	return rep.GetTotals().GetEvents(), rep.GetTotals().GetCostMicros()
}

// TestSidecarKilledWithSpooledSpend kills a sidecar with -9 while its
// spool holds spend the control plane has not acknowledged (the network
// to it is cut), then restarts it: every event the endpoint accepted
// arrives and counts once, resent ids included.
func TestSidecarKilledWithSpooledSpend(t *testing.T) {
	cp := startControlPlane(t, "controlplane", t.TempDir(), "", "--heartbeat-interval", "500ms")
	op := dial(t, cp.addr, cp.operatorToken(t))
	budget := factoryv1.NewBudgetServiceClient(op)
	px := startProxy(t, cp.addr)
	dir := t.TempDir()
	secret := mintToken(t, op, factoryv1.Role_ROLE_SIDECAR, "spool-host", "spool-agent")
	spendAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	sc := startSpendSidecar(t, "sidecar", dir, px.addr(), secret, spendAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Relayed while connected.
	if code, body := sc.post(t, ids("live", 0, 20), 1000); code != http.StatusAccepted {
		t.Fatalf("post while connected: %d %s", code, body)
	}
	eventually(t, "live events relayed", 30*time.Second, func() bool { n, _ := spendTotals(ctx, budget); return n == 20 })

	// Cut off: accepted into the spool only. Then the sidecar dies.
	px.partition()
	for i := 0; i < 100; i += 25 {
		if code, body := sc.post(t, ids("cut", i, i+25), 2000); code != http.StatusAccepted {
			t.Fatalf("post while cut off: %d %s", code, body)
		}
	}
	sc.Kill9()
	if n, _ := spendTotals(ctx, budget); n != 20 {
		t.Fatalf("the ledger has %d events while the sidecar was cut off, want 20", n)
	}
	px.heal()

	sc = startSpendSidecar(t, "sidecar'", dir, px.addr(), secret, spendAddr)
	// A client that never heard back resends: the same ids count once.
	if code, body := sc.post(t, ids("cut", 80, 100), 2000); code != http.StatusAccepted {
		t.Fatalf("resend: %d %s", code, body)
	}
	eventually(t, "spooled events replayed after the restart", 30*time.Second, func() bool {
		n, _ := spendTotals(ctx, budget)
		return n >= 120
	})
	time.Sleep(time.Second) // anything counted twice would show by now
	if n, micros := spendTotals(ctx, budget); n != 120 || micros != 20*1000+100*2000 {
		t.Errorf("ledger: %d events, %d µ$; want 120 events, %d µ$ (each id once)", n, micros, 20*1000+100*2000)
	}
}

// TestSpoolFullDisk fills the sidecar's disk (a file-size limit on its
// spool): the endpoint refuses with a clear error and accepts nothing it
// could not keep; once space returns it accepts again, and everything it
// accepted reaches the control plane once.
func TestSpoolFullDisk(t *testing.T) {
	cp := startControlPlane(t, "controlplane", t.TempDir(), "")
	op := dial(t, cp.addr, cp.operatorToken(t))
	budget := factoryv1.NewBudgetServiceClient(op)
	px := startProxy(t, cp.addr)
	dir := t.TempDir()
	secret := mintToken(t, op, factoryv1.Role_ROLE_SIDECAR, "spool-host", "spool-agent")
	sc := startSpendSidecar(t, "sidecar", dir, px.addr(), secret, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Keep the spool from draining, so it grows to the limit.
	px.partition()
	limitFileSize(t, sc.Pid(), uint64(largestFile(t, dir, "")+16<<10))
	accepted := 0
	var refusal string
	for i := 0; i < 400 && refusal == ""; i++ {
		code, body := sc.post(t, ids("fill", i, i+1), 500)
		switch code {
		case http.StatusAccepted:
			accepted++
		default:
			refusal = fmt.Sprintf("%d %s", code, body)
		}
	}
	if refusal == "" {
		t.Fatal("400 spooled events past a 16 KiB file-size limit were all accepted")
	}
	if !strings.Contains(refusal, "disk") {
		t.Errorf("refusal on a full spool disk does not say why: %s", refusal)
	}
	if !sc.Alive() {
		t.Fatal("the sidecar died of a full disk")
	}

	limitFileSize(t, sc.Pid(), 0)
	if code, body := sc.post(t, ids("after", 0, 5), 500); code != http.StatusAccepted {
		t.Fatalf("post after space returned: %d %s", code, body)
	}
	px.heal()
	want := int64(accepted + 5)
	eventually(t, "every accepted event relayed", 30*time.Second, func() bool { n, _ := spendTotals(ctx, budget); return n >= want })
	time.Sleep(500 * time.Millisecond)
	if n, _ := spendTotals(ctx, budget); n != want {
		t.Errorf("ledger has %d events, the endpoint accepted %d", n, want)
	}
	t.Logf("%d events accepted before the disk was full; refusal: %s", accepted, refusal)
}
