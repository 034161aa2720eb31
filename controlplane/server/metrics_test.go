package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// dashboardDir holds the Grafana dashboards the deploy kit provisions.
const dashboardDir = "../../deploy/grafana/dashboards"

// unwiredHint says, per metric-name prefix, which source feeds those
// gauges, so a missing name points at the wiring to check (newMetrics in
// metrics.go, the adapters in metrics_sources.go).
var unwiredHint = map[string]string{
	"factory_spend_":     "metrics.Sources.Spend (spendSource over the budget service)",
	"factory_budget_":    "metrics.Sources.Spend (spendSource over the budget service)",
	"factory_approvals_": "metrics.Sources.Approvals (approvalSource over the store)",
	"factory_alerts_":    "metrics.Sources.Alerts (alertSource over the alert service)",
	"factory_queue_":     "metrics.Sources.Queue and the queue's Observer",
	"factory_fleet_":     "metrics.Sources.Fleet (the fleet registry)",
	"factory_gpu_":       "metrics.Sources.Fleet (the fleet registry; needs a sidecar's telemetry)",
	"rpc_server_":        "WithMeterProvider on NewGRPCServer (otelgrpc)",
}

// TestDashboardsQueryOnlyExportedMetrics parses every PromQL expression in
// the Grafana dashboards, and checks that every metric name they query is
// in a scrape of a running control plane with tasks claimed, completed,
// failed and rescued and a sidecar reporting GPUs, disks and probes. A
// renamed instrument or a typo in a dashboard fails here instead of
// drawing an empty panel.
func TestDashboardsQueryOnlyExportedMetrics(t *testing.T) {
	wanted := dashboardMetrics(t)
	if len(wanted) < 20 {
		t.Fatalf("only %d metric names found in the dashboards; is the parser broken?", len(wanted))
	}
	addr := startWithData(t)

	// Counters appear once the sweeper has rescued the expired lease; the
	// sweeper runs on its own tick, so scrape until everything is there.
	var missing []string
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := scrapeNames(t, addr)
		missing = missing[:0]
		for name, where := range wanted {
			if !got[name] {
				missing = append(missing, name+" (in "+strings.Join(where, ", ")+")")
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	sort.Strings(missing)
	for _, m := range missing {
		hint := "no instrument exports it: fix the dashboard or add the instrument"
		for prefix, h := range unwiredHint {
			if strings.HasPrefix(m, prefix) {
				hint = "its source may not be wired into the running control plane: " + h
			}
		}
		t.Errorf("dashboard metric missing from /metrics: %s\n\t%s", m, hint)
	}
}

// startWithData runs a control plane with metrics on, fills it with a bit
// of everything the dashboards show, and returns the metrics address.
func startWithData(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	clock := &fakeClock{now: time.Now().UTC()}
	cfg := Config{Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0", DataDir: dir,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), TracerProvider: noop.NewTracerProvider()}
	cfg.Queue.Clock = clock
	cfg.Queue.RescueInterval = 10 * time.Millisecond
	addrCh, metricsCh := make(chan net.Addr, 1), make(chan net.Addr, 1)
	cfg.OnListening = func(a net.Addr) { addrCh <- a }
	cfg.OnMetricsListening = func(a net.Addr) { metricsCh <- a }
	ctx, cancel := context.WithCancel(context.Background())
	errCh := make(chan error, 1)
	go func() { errCh <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errCh; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	var grpcAddr, metricsAddr net.Addr
	for grpcAddr == nil || metricsAddr == nil {
		select {
		case grpcAddr = <-addrCh:
		case metricsAddr = <-metricsCh:
		case err := <-errCh:
			t.Fatalf("Run: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("control plane did not start")
		}
	}
	conn, err := grpc.NewClient(grpcAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()), operatorFrom(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	q, f := factoryv1.NewQueueServiceClient(conn), factoryv1.NewFleetServiceClient(conn)

	// A sidecar with one agent, a GPU, a disk and two probes (one down).
	sctx, scancel := context.WithCancel(ctx)
	t.Cleanup(scancel)
	stream, _, err := connect(sctx, t, f, "gpu-01", "forge")
	if err != nil {
		t.Fatal(err)
	}
	tel := &factoryv1.Telemetry{CollectedAt: timestamppb.New(clock.Now()),
		Gpus: []*factoryv1.GpuDevice{{Index: 0, Name: "NVIDIA H100 80GB HBM3", MemoryUsedBytes: 40 << 30, MemoryTotalBytes: 80 << 30,
			UtilizationPercent: 87, MemoryUtilizationPercent: 30, TemperatureCelsius: 60, PowerMilliwatts: 300_000}},
		Disks: []*factoryv1.DiskUsage{{Path: "/", TotalBytes: 100 << 30, UsedBytes: 40 << 30, AvailableBytes: 55 << 30}},
		Probes: []*factoryv1.ProbeResult{{Name: "litellm", Kind: "http", Ok: true, Latency: durationpb.New(20 * time.Millisecond)},
			{Name: "qdrant", Kind: "http", Detail: "503", Latency: durationpb.New(time.Millisecond)}}}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: tel}}); err != nil {
		t.Fatal(err)
	}

	// Tasks: one completed, one failed, one whose lease runs out.
	for i := range 4 {
		if _, err := q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: fmt.Sprintf("task %d", i), Role: "builder"}); err != nil {
			t.Fatal(err)
		}
	}
	claim := func() *factoryv1.Task {
		t.Helper()
		res, err := q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge", Roles: []string{"builder"}, LeaseDuration: durationpb.New(time.Minute)})
		if err != nil || len(res.GetTasks()) != 1 {
			t.Fatalf("claim: %v %v", res, err)
		}
		return res.GetTasks()[0]
	}
	done := claim()
	if _, err := q.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: done.GetId(), Agent: "forge", FencingToken: done.GetLease().GetToken()}); err != nil {
		t.Fatal(err)
	}
	failed := claim()
	if _, err := q.FailTask(ctx, &factoryv1.FailTaskRequest{TaskId: failed.GetId(), Agent: "forge", FencingToken: failed.GetLease().GetToken(), Error: "tests red"}); err != nil {
		t.Fatal(err)
	}
	claim()
	clock.Advance(2 * time.Minute) // the last lease expires; the sweeper rescues it
	// Spend, so the per-tier, per-agent and per-model gauges have series.
	if _, err := factoryv1.NewBudgetServiceClient(conn).ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: &factoryv1.SpendEvent{
		Id: "metrics-test-1", Agent: "forge", Host: "gpu-01", Model: "claude-sonnet", Tier: factoryv1.SpendTier_SPEND_TIER_FRONTIER,
		CostMicros: proto.Int64(1_500_000), OccurredAt: timestamppb.New(clock.Now())}}); err != nil {
		t.Fatal(err)
	}
	// A refused call, so the RPC histogram has an error series too.
	_, _ = q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: "no-such-task"})
	// The sidecar heartbeats after the jump, so its host stays ONLINE.
	tel.CollectedAt = timestamppb.New(clock.Now())
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: tel}}); err != nil {
		t.Fatal(err)
	}
	return metricsAddr.String()
}

// scrapeNames GETs /metrics and returns every sample name in it.
func scrapeNames(t *testing.T, addr string) map[string]bool {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// dashboardMetrics returns every metric name the dashboards query, each
// with the dashboards and panels that query it.
func dashboardMetrics(t *testing.T) map[string][]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dashboardDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in %s: %v", dashboardDir, err)
	}
	out := map[string][]string{}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var dash map[string]any
		if err := json.Unmarshal(raw, &dash); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, q := range dashboardQueries(dash, "") {
			names, err := promqlMetricNames(q.expr)
			if err != nil {
				t.Errorf("%s, %s: %v in %q", filepath.Base(file), q.where, err, q.expr)
			}
			for _, n := range names {
				where := filepath.Base(file) + ": " + q.where
				if !slices.Contains(out[n], where) {
					out[n] = append(out[n], where)
				}
			}
		}
	}
	return out
}

type dashboardQuery struct{ where, expr string }

// dashboardQueries walks a dashboard's JSON for every query: each
// target's "expr" (named by its panel's title) and each template
// variable's label_values(...) query.
func dashboardQueries(v any, panel string) []dashboardQuery {
	var out []dashboardQuery
	switch v := v.(type) {
	case map[string]any:
		if title, ok := v["title"].(string); ok {
			panel = title
		}
		if expr, ok := v["expr"].(string); ok {
			out = append(out, dashboardQuery{where: fmt.Sprintf("panel %q", panel), expr: expr})
		}
		if def, ok := v["definition"].(string); ok {
			if metric, ok := labelValuesMetric(def); ok {
				out = append(out, dashboardQuery{where: fmt.Sprintf("variable %q", v["name"]), expr: metric})
			}
		}
		for k, child := range v {
			if k != "expr" {
				out = append(out, dashboardQueries(child, panel)...)
			}
		}
	case []any:
		for _, child := range v {
			out = append(out, dashboardQueries(child, panel)...)
		}
	}
	return out
}

// labelValuesMetric is the metric of Grafana's label_values(METRIC, label).
func labelValuesMetric(q string) (string, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(q), "label_values(")
	if !ok {
		return "", false
	}
	metric, _, ok := strings.Cut(rest, ",")
	return strings.TrimSpace(metric), ok && strings.TrimSpace(metric) != ""
}

// promqlKeywords are the words of PromQL that are not metric names.
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true,
	"inf": true, "nan": true, "start": true, "end": true,
	// Aggregations, which may be followed by "by (...)" rather than "(".
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
}

// promqlMetricNames is a small PromQL tokenizer: it returns the bare
// identifiers of expr that name metrics. It skips strings, label
// matchers ({...}), ranges and subqueries ([...]), Grafana variables
// ($x, ${x}), numbers and durations, the label lists after by, without,
// on, ignoring, group_left and group_right, function names (an
// identifier before "(") and keywords.
func promqlMetricNames(expr string) ([]string, error) {
	var names []string
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	// skipTo returns the index just past the close that balances s[i].
	skipTo := func(i int, open, close byte) (int, error) {
		depth := 0
		for j := i; j < len(expr); j++ {
			switch c := expr[j]; {
			case c == '"' || c == '\'' || c == '`':
				end := strings.IndexByte(expr[j+1:], c)
				if end < 0 {
					return 0, fmt.Errorf("unterminated string at %d", j)
				}
				j += end + 1
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %c at %d", open, i)
	}
	groupingNext := false
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
			continue // a grouping keyword still applies to the "(" after it
		case c == '"' || c == '\'' || c == '`':
			end := strings.IndexByte(expr[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			i += end + 2
		case c == '{':
			j, err := skipTo(i, '{', '}')
			if err != nil {
				return nil, err
			}
			i = j
		case c == '[':
			j, err := skipTo(i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = j
		case c == '$':
			i++
			if i < len(expr) && expr[i] == '{' {
				j, err := skipTo(i, '{', '}')
				if err != nil {
					return nil, err
				}
				i = j
			}
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := j
			for k < len(expr) && expr[k] == ' ' {
				k++
			}
			i = j
			switch lw := strings.ToLower(word); {
			case lw == "by" || lw == "without" || lw == "on" || lw == "ignoring" || lw == "group_left" || lw == "group_right":
				groupingNext = true
				continue
			case promqlKeywords[lw]:
			case k < len(expr) && expr[k] == '(':
				// A function call.
			default:
				if !slices.Contains(names, word) {
					names = append(names, word)
				}
			}
		case c == '(' && groupingNext:
			j, err := skipTo(i, '(', ')')
			if err != nil {
				return nil, err
			}
			i = j
		default:
			i++
		}
		groupingNext = false
	}
	return names, nil
}

func TestPromQLMetricNames(t *testing.T) {
	cases := map[string][]string{
		`factory_queue_depth{state="ready"}`: {"factory_queue_depth"},
		`sum by (state) (rate(factory_queue_claims_total{agent=~"$agent", x="}by("}[$__rate_interval])) * 60`:   {"factory_queue_claims_total"},
		`histogram_quantile(0.95, sum by (le, rpc_method) (rate(rpc_server_call_duration_seconds_bucket[5m])))`: {"rpc_server_call_duration_seconds_bucket"},
		`1 - a_remaining{scope="total"} / on (scope) group_left (name) b_cap / 1e6`:                             {"a_remaining", "b_cap"},
		`count(sum by (agent) (spend) > 10e6) or vector(0)`:                                                     {"spend"},
		`topk(10, sum without (instance) (x offset 1h)) and y @ start()`:                                        {"x", "y"},
		`max(m[1h:5m]) > bool ${threshold}`:                                                                     {"m"},
	}
	for expr, want := range cases {
		got, err := promqlMetricNames(expr)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("promqlMetricNames(%q) = %v, %v; want %v", expr, got, err, want)
		}
	}
	for _, bad := range []string{`x{a="b"`, `sum(rate(x[5m)`, `x{a="b}`} {
		if _, err := promqlMetricNames(bad); err == nil {
			t.Errorf("promqlMetricNames(%q): no error", bad)
		}
	}
}

// A metrics port that is taken (a second replica on the host) is logged,
// and the control plane serves on without /metrics.
func TestMetricsPortTakenDoesNotStopTheControlPlane(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	var logs strings.Builder
	var mu sync.Mutex
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	addrCh, errCh := make(chan net.Addr, 1), make(chan error, 1)
	go func() {
		errCh <- Run(ctx, Config{Listen: "127.0.0.1:0", MetricsListen: taken.Addr().String(), DataDir: dir,
			Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)), TracerProvider: noop.NewTracerProvider(),
			OnListening: func(a net.Addr) { addrCh <- a }})
	}()
	var addr net.Addr
	select {
	case addr = <-addrCh:
	case err := <-errCh:
		t.Fatalf("Run: %v", err)
	}
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()), operatorFrom(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := factoryv1.NewQueueServiceClient(conn).CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "still serving"}); err != nil {
		t.Fatalf("the control plane stopped serving: %v", err)
	}
	logged := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), "metrics listener failed")
	}
	// The listener fails on its own goroutine; give it a moment to say so.
	for deadline := time.Now().Add(10 * time.Second); !logged() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !logged() {
		t.Error("the taken port was not logged")
	}
	cancel()
	if err := <-errCh; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
