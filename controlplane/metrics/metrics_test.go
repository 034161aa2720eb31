package metrics

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

type fakeQueue struct {
	stats *store.QueueStats
	now   time.Time
	err   error
}

func (f fakeQueue) Stats(context.Context) (*store.QueueStats, time.Time, error) {
	return f.stats, f.now, f.err
}

type fakeFleet struct {
	nodes  []fleet.Node
	agents []fleet.Agent
}

func (f fakeFleet) Nodes() []fleet.Node   { return f.nodes }
func (f fakeFleet) Agents() []fleet.Agent { return f.agents }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// scrape returns every sample line of one scrape, keyed by series (name
// and labels as exported).
func scrape(t *testing.T, h http.Handler) map[string]string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		out[line[:i]] = line[i+1:]
	}
	return out
}

// value finds the one series of name whose labels include every want
// pair ("k=v"); it fails unless exactly one matches.
func value(t *testing.T, samples map[string]string, name string, want ...string) string {
	t.Helper()
	var found []string
	for series, v := range samples {
		n, labels, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		ok := true
		for _, w := range want {
			k, val, _ := strings.Cut(w, "=")
			if !strings.Contains(labels, k+`="`+val+`"`) {
				ok = false
			}
		}
		if ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d series match, want 1", name, want, len(found))
	}
	return found[0]
}

func TestEveryInstrumentIsExportedUnderItsListedName(t *testing.T) {
	now := time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)
	tel := &factoryv1.Telemetry{
		Gpus: []*factoryv1.GpuDevice{{Index: 0, Name: "NVIDIA H100 80GB HBM3", MemoryUsedBytes: 40 << 30, MemoryTotalBytes: 80 << 30,
			UtilizationPercent: 87, MemoryUtilizationPercent: 40, TemperatureCelsius: 61, PowerMilliwatts: 350_500}},
		Disks:  []*factoryv1.DiskUsage{{Path: "/", TotalBytes: 100, UsedBytes: 20, AvailableBytes: 60}}, // df: 20/(20+60); not 20/100
		Probes: []*factoryv1.ProbeResult{{Name: "litellm", Kind: "http", Ok: true, Latency: durationpb.New(30 * time.Millisecond)}, {Name: "qdrant", Kind: "tcp"}},
		Host:   hostReading(),
	}
	m, err := New(Config{
		Logger: quiet(), Sources: Sources{
			Queue: fakeQueue{now: now, stats: &store.QueueStats{Counts: map[store.TaskState]int64{store.StateReady: 3, store.StateInProgress: 1},
				OldestReadySince: now.Add(-90 * time.Second), OldestClaimedAt: now.Add(-time.Minute), Retrying: 1}},
			Fleet: fakeFleet{
				nodes:  []fleet.Node{{Host: "gpu-01", State: fleet.StateOnline, Telemetry: tel}, {Host: "gone", State: fleet.StateOffline, Telemetry: tel}},
				agents: []fleet.Agent{{Name: "forge", Host: "gpu-01", Role: "builder", State: fleet.StateOnline, CurrentTask: "t1"}, {Name: "scout", State: fleet.StateStale}},
			},
			Spend: func(context.Context) (*SpendSnapshot, error) {
				return &SpendSnapshot{TotalMicros: 1_250_000, ByTier: map[string]int64{"frontier": 1_250_000},
					ByAgent: map[string]int64{"forge": 1_250_000}, ByModel: map[string]int64{"claude": 1_250_000},
					Budgets: []BudgetLine{{Scope: "total", SpentMicros: 1_250_000, ReservedMicros: 250_000,
						Limits: map[string]int64{"alert": 50_000_000, "cap": 0}}}}, nil
			},
			Approvals: func(context.Context) (int64, error) { return 2, nil },
			Alerts: func(context.Context) ([]AlertCount, error) {
				return []AlertCount{{Rule: "spend-total", Severity: "critical", Firing: 1}, {Rule: "disk", Severity: "warning"}}, nil
			},
			Backups: func(context.Context) (*BackupSnapshot, error) {
				return &BackupSnapshot{LastSuccess: now.Add(-time.Hour), Failures: 3, Every: 6 * time.Hour}, nil
			},
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	m.Claimed("forge", 2)
	m.Finished("forge", store.StateDone)
	m.Rescued(store.StateReady, 1)
	m.AttemptEnded(queue.Attempt{Agent: "forge", Role: "builder", To: store.StateDone, Took: time.Minute, Timed: true})
	m.Spent(budget.Call{Agent: "forge", Host: "gpu-01", Model: "claude", Provider: "anthropic", Tier: "frontier", InputTokens: 10, CostMicros: 5})

	got := scrape(t, m.Handler())
	names := map[string]bool{}
	for series := range got {
		n, _, _ := strings.Cut(series, "{")
		names[n] = true
	}
	for otel, prom := range Names {
		if strings.HasPrefix(otel, "rpc.") {
			continue // otelgrpc's; the server's test covers it
		}
		if !names[prom] && !names[prom+"_count"] { // a histogram's
			t.Errorf("%s is not exported as %s", otel, prom)
		}
	}
	checks := []struct {
		name string
		want []string
		val  string
	}{
		{"factory_queue_depth", []string{"state=ready"}, "3"},
		{"factory_queue_depth", []string{"state=done"}, "0"},
		{"factory_queue_oldest_ready_age_seconds", nil, "90"},
		{"factory_queue_claims_total", []string{"agent=forge"}, "2"},
		{"factory_queue_lease_rescues_total", []string{"state=ready"}, "1"},
		{"factory_fleet_agents", []string{"state=online"}, "1"},
		{"factory_fleet_agents", []string{"state=stale"}, "1"},
		{"factory_fleet_agents", []string{"state=offline"}, "0"},
		{"factory_fleet_agent_busy", []string{"agent=forge"}, "1"},
		{"factory_gpu_memory_used_bytes", []string{"host=gpu-01", "gpu=0"}, "4.294967296e+10"},
		{"factory_gpu_utilization_percent", []string{"host=gpu-01"}, "87"},
		{"factory_gpu_power_watts", []string{"host=gpu-01"}, "350.5"},
		{"factory_disk_usage_ratio", []string{"host=gpu-01", "path=/"}, "0.25"},
		{"factory_probe_up", []string{"probe=litellm"}, "1"},
		{"factory_probe_up", []string{"probe=qdrant"}, "0"},
		{"factory_spend_today_micros", nil, "1.25e+06"},
		{"factory_spend_agent_today_micros", []string{"agent=forge"}, "1.25e+06"},
		{"factory_spend_model_today_micros", []string{"model=claude"}, "1.25e+06"},
		{"factory_budget_limit_micros", []string{"scope=total", "limit=alert"}, "5e+07"},
		{"factory_budget_remaining_micros", []string{"scope=total", "limit=alert"}, "4.85e+07"},
		{"factory_approvals_pending", nil, "2"},
		{"factory_alerts_firing", []string{"rule=disk"}, "0"},
		{"factory_backup_failures_total", nil, "3"},
		{"factory_backup_interval_seconds", nil, "21600"},
	}
	for _, c := range checks {
		if v := value(t, got, c.name, c.want...); v != c.val {
			t.Errorf("%s%v = %s, want %s", c.name, c.want, v, c.val)
		}
	}
	// The OFFLINE host's stale readings are not exported.
	for series := range got {
		if strings.HasPrefix(series, "factory_gpu_") && strings.Contains(series, `host="gone"`) {
			t.Errorf("offline host exported: %s", series)
		}
	}
}

func TestAFailingSourceHidesOnlyItsOwnGauges(t *testing.T) {
	m, err := New(Config{
		Logger: quiet(),
		Sources: Sources{
			Queue:     fakeQueue{err: errors.New("database is locked")},
			Approvals: func(context.Context) (int64, error) { return 4, nil },
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	got := scrape(t, m.Handler())
	if v := value(t, got, "factory_approvals_pending"); v != "4" {
		t.Fatalf("approvals pending = %s", v)
	}
	for series := range got {
		if strings.HasPrefix(series, "factory_queue_depth") {
			t.Fatalf("queue gauge exported although its source failed: %s", series)
		}
	}
}

func TestServeAnswersMetricsAndHealthzAndStops(t *testing.T) {
	m, err := New(Config{Logger: quiet(), Sources: Sources{Approvals: func(context.Context) (int64, error) { return 0, nil }}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	addrCh := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", m.Handler(), quiet(), func(a net.Addr) { addrCh <- a }) }()
	var addr net.Addr
	select {
	case addr = <-addrCh:
	case err := <-done:
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/metrics": "factory_approvals_pending", "/healthz": "ok"} {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Fatalf("GET %s: %d %q", path, resp.StatusCode, body)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// BenchmarkScrape is one Prometheus scrape of a fleet of 10 hosts with 8
// GPUs and 4 agents each, reading in-memory sources.
func BenchmarkScrape(b *testing.B) {
	tel := &factoryv1.Telemetry{}
	for i := range 8 {
		tel.Gpus = append(tel.Gpus, &factoryv1.GpuDevice{Index: int32(i), Name: "H100", MemoryUsedBytes: 1 << 30, MemoryTotalBytes: 80 << 30})
	}
	var ff fakeFleet
	for h := range 10 {
		host := "gpu-" + string(rune('a'+h))
		ff.nodes = append(ff.nodes, fleet.Node{Host: host, State: fleet.StateOnline, Telemetry: tel})
		for a := range 4 {
			ff.agents = append(ff.agents, fleet.Agent{Name: host + "-agent-" + string(rune('a'+a)), Host: host, State: fleet.StateOnline})
		}
	}
	m, err := New(Config{Logger: quiet(), Sources: Sources{Fleet: ff, Queue: fakeQueue{stats: &store.QueueStats{Counts: map[store.TaskState]int64{}}}}})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	h := m.Handler()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}

// BenchmarkClaimedCounter is what the queue's hook adds to each claim.
func BenchmarkClaimedCounter(b *testing.B) {
	m, err := New(Config{Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	b.ReportAllocs()
	for b.Loop() {
		m.Claimed("forge", 1)
	}
}

// The queue calls Claimed on its claim path (thousands a second) and
// Finished on its completion path: once an agent has claimed or finished,
// another call builds no attribute set.
func TestClaimedIsCheapOnTheClaimPath(t *testing.T) {
	m, err := New(Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	m.Claimed("forge", 1)
	m.Finished("forge", store.StateDone)
	if n := testing.AllocsPerRun(1000, func() { m.Claimed("forge", 1) }); n > 1 {
		t.Errorf("Claimed allocates %.0f times per call, want at most 1", n)
	}
	if n := testing.AllocsPerRun(1000, func() { m.Finished("forge", store.StateDone) }); n > 1 {
		t.Errorf("Finished allocates %.0f times per call, want at most 1", n)
	}
}
