package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store/sqlite"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
	"github.com/factory/factory/sidecar/spend"
	"github.com/factory/factory/sidecar/spool"
)

// spendLogRows builds LiteLLM /spend/logs/v2 rows shaped as the fixture's
// (sidecar/spend/testdata, a copy of the shared services fixture): n
// copies of its row number `template`, the first `failures` of them with
// status "failure" (in the row and its metadata, no spend, no tokens, an
// error), each with its own request id and a start time a second apart.
func spendLogRows(t *testing.T, template, n, failures int) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile("../../sidecar/spend/testdata/litellm-spend-logs.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	var page struct {
		Response struct {
			Body struct {
				Data []json.RawMessage `json:"data"`
			} `json:"body"`
		} `json:"response"`
	}
	if err := json.Unmarshal(fx["GET /spend/logs/v2"], &page); err != nil {
		t.Fatal(err)
	}
	tmpl := page.Response.Body.Data[template]
	start := time.Date(2026, 11, 26, 14, 0, 0, 0, time.UTC)
	rows := make([]map[string]any, n)
	for i := range rows {
		var row map[string]any
		if err := json.Unmarshal(tmpl, &row); err != nil {
			t.Fatal(err)
		}
		row["request_id"] = fmt.Sprintf("%v-%d", row["request_id"], i)
		row["startTime"] = start.Add(time.Duration(template*n+i) * time.Second).Format("2006-01-02T15:04:05.000000Z")
		if i < failures {
			row["status"], row["spend"], row["prompt_tokens"], row["completion_tokens"], row["total_tokens"] = "failure", 0, 0, 0, 0
			meta := row["metadata"].(map[string]any)
			meta["status"] = "failure"
			meta["error_information"] = map[string]any{"error_code": "529", "error_class": "InternalServerError", "error_message": "Overloaded"}
		}
		rows[i] = row
	}
	return rows
}

// The runbook's "LiteLLM error rate > 5 %" (5.1), end to end: a sidecar's
// LiteLLM poller reads spend-log rows with their status, its relay
// reports them to the control plane, and the litellm_error_rate rule
// fires for the provider and model whose failures passed 5 % of its
// calls, not for those at 5 % or below.
func TestLiteLLMErrorRateFiresAbove5Percent(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "factory.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := &fakeClock{now: time.Date(2026, 11, 26, 14, 20, 0, 0, time.UTC)}
	acc, operator := testAccess(t, st, clock)
	q, err := queue.New(queue.Config{Store: st, Clock: clock, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	bud, err := newBudget(ctx, BudgetConfig{}, st, q, clock, log)
	if err != nil {
		t.Fatal(err)
	}
	fl := fleet.New(clock, fleet.Config{})
	hub := notify.NewHub(0)
	alerts, err := newAlerts(AlertsConfig{}, st, fl, fleet.NewEvents(st, clock), bud, clock, hub, log)
	if err != nil {
		t.Fatal(err)
	}
	stopping := make(chan struct{})
	srv, _ := NewGRPCServer(Services{Access: acc, Queue: q, Fleet: fl, Budget: bud, Alerts: alerts, Events: hub}, log, noop.NewTracerProvider(), stopping)
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	t.Cleanup(func() { close(stopping); srv.Stop() })
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()), bearer(operator))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	// LiteLLM: anthropic's sonnet fails 6 of 100 calls, openai's
	// gpt-4o-mini exactly 5 of 100 and the local qwen (provider openai)
	// 4 of 100.
	var rows []map[string]any
	rows = append(rows, spendLogRows(t, 0, 100, 6)...)
	rows = append(rows, spendLogRows(t, 1, 100, 5)...)
	rows = append(rows, spendLogRows(t, 2, 100, 4)...)
	lite := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page := rows
		if r.URL.Query().Get("page") != "1" {
			page = []map[string]any{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"data": page, "total": len(page), "page": 1, "page_size": 1000, "total_pages": 1})
	}))
	t.Cleanup(lite.Close)

	dir := t.TempDir()
	sp, err := spool.Open(filepath.Join(dir, "spend.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	poller, err := spend.NewLiteLLM(spend.LiteLLMConfig{URL: lite.URL, Spool: sp, CursorPath: filepath.Join(dir, "cursor.json"),
		Host: "edge-1", Clock: clock, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := poller.Poll(ctx); err != nil || n != 300 {
		t.Fatalf("Poll = %d, %v; want 300 rows", n, err)
	}
	relay, err := spend.NewRelay(spend.RelayConfig{Conn: conn, Spool: sp, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(sp.Pending()); n != 0 {
		t.Fatalf("%d events left in the spool", n)
	}

	if _, err := alerts.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	list, err := factoryv1.NewOpsServiceClient(conn).ListAlerts(ctx, &factoryv1.ListAlertsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var fired []*factoryv1.Alert
	for _, a := range list.GetAlerts() {
		if a.GetRule() == "litellm_error_rate" {
			fired = append(fired, a)
		}
	}
	if len(fired) != 1 {
		t.Fatalf("litellm_error_rate alerts: %v, want exactly one (anthropic's sonnet)", fired)
	}
	a := fired[0]
	if a.GetState() != factoryv1.AlertState_ALERT_STATE_FIRING || a.GetLabels()["provider"] != "anthropic" ||
		a.GetLabels()["model"] != "claude-sonnet-4-5-20250929" || a.GetValue() != 0.06 ||
		a.GetSummary() != "6.0% of LiteLLM calls to anthropic claude-sonnet-4-5-20250929 failed in the last 15 minutes, above 5.0%" {
		t.Errorf("alert %v", a)
	}

	// Fifteen quiet minutes later the calls have left the window and the
	// alert resolves.
	clock.Advance(16 * time.Minute)
	if _, err := alerts.Evaluate(ctx); err != nil {
		t.Fatal(err)
	}
	list, err = factoryv1.NewOpsServiceClient(conn).ListAlerts(ctx, &factoryv1.ListAlertsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list.GetAlerts() {
		if a.GetRule() == "litellm_error_rate" {
			t.Errorf("still listed after the window: %v", a)
		}
	}
}
