package alert

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeFleet is a FleetSource whose readings the test sets.
type fakeFleet struct {
	mu     sync.Mutex
	hosts  []HostReading
	agents []AgentReading
	swaps  map[string]int
	err    error
}

func (f *fakeFleet) Hosts(context.Context) ([]HostReading, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.hosts), f.err
}

func (f *fakeFleet) Agents(context.Context) ([]AgentReading, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.agents), f.err
}

func (f *fakeFleet) SwapRates(context.Context) (map[string]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.swaps, f.err
}

func (f *fakeFleet) setGPU(used, total uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hosts = []HostReading{{Host: "gpu-1", GPUs: []GPUReading{{Index: 0, UsedBytes: used, TotalBytes: total}}}}
}

func (f *fakeFleet) setOffline(now time.Time, names ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.agents = nil
	for _, n := range names {
		f.agents = append(f.agents, AgentReading{Name: n, Host: "gpu-1", Offline: true, LastSeen: now.Add(-10 * time.Minute)})
	}
}

// fakeSpend is a SpendSource with fixed amounts.
type fakeSpend struct {
	spend Spend
	reads int
}

func (f *fakeSpend) SpendToday(context.Context) (*Spend, error) {
	f.reads++
	s := f.spend
	return &s, nil
}

// recorder is a Publisher keeping what it hears.
type recorder struct {
	mu     sync.Mutex
	events []notify.Event
}

func (r *recorder) Publish(_ context.Context, e notify.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) take() []notify.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openSQLite(t testing.TB) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: t.TempDir() + "/factory.db", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

var t0 = time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC)

type fixture struct {
	t     *testing.T
	st    store.Store
	clock *fakeClock
	fleet *fakeFleet
	pub   *recorder
	svc   *Service
}

// newFixture runs only the named default rules (the rest are disabled),
// with cfg's timings, on a fresh SQLite store.
func newFixture(t *testing.T, cfg Config, only ...string) *fixture {
	t.Helper()
	f := &fixture{t: t, st: openSQLite(t), clock: &fakeClock{now: t0}, fleet: &fakeFleet{}, pub: &recorder{}}
	cfg.Store, cfg.Clock, cfg.Publisher, cfg.Logger = f.st, f.clock, f.pub, quiet()
	if cfg.Sources.Fleet == nil {
		cfg.Sources.Fleet = f.fleet
	}
	for _, r := range DefaultRules() {
		if !slices.Contains(only, r.Name) {
			cfg.Rules = append(cfg.Rules, Rule{Name: r.Name, Disabled: true})
		}
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	return f
}

func (f *fixture) eval() *Result {
	f.t.Helper()
	res, err := f.svc.Evaluate(context.Background())
	if err != nil {
		f.t.Fatalf("Evaluate: %v", err)
	}
	return res
}

func (f *fixture) alerts() []*store.Alert {
	f.t.Helper()
	got, err := f.st.AlertList(context.Background(), nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return got
}

func (f *fixture) requireEvents(want ...string) []notify.Event {
	f.t.Helper()
	got := f.pub.take()
	titles := make([]string, len(got))
	for i, e := range got {
		titles[i] = e.Title
	}
	if !slices.Equal(titles, want) {
		f.t.Fatalf("at +%s: events %q, want %q", f.clock.Now().Sub(t0), titles, want)
	}
	return got
}

const gib = 1 << 30

// The GPU rule: 23.5 of 24 GB for 5 minutes fires; pending until then;
// resolved when usage drops, each transition notified once.
func TestPendingFiringResolved(t *testing.T) {
	f := newFixture(t, Config{GroupWait: -1}, "gpu_memory_high")
	f.fleet.setGPU(23*gib+gib/2, 24*gib)

	res := f.eval()
	if res.Pending != 1 || res.Firing != 0 {
		t.Fatalf("first evaluation: %+v, want one PENDING", res)
	}
	f.requireEvents()
	a := f.alerts()[0]
	if a.State != store.AlertPending || !a.ActiveSince.Equal(t0) || a.Labels["host"] != "gpu-1" || a.Labels["gpu"] != "0" {
		t.Fatalf("pending alert %+v", a)
	}

	f.clock.Advance(4*time.Minute + 59*time.Second)
	if res := f.eval(); res.Pending != 1 {
		t.Fatalf("before `for` elapsed: %+v", res)
	}
	f.requireEvents()

	f.clock.Advance(time.Second)
	if res := f.eval(); res.Firing != 1 {
		t.Fatalf("after `for`: %+v, want FIRING", res)
	}
	ev := f.requireEvents("[FIRING:1] gpu_memory_high")[0]
	if ev.Kind != notify.KindAlert || ev.Attributes["alert_ids"] != a.ID || ev.Attributes["status"] != "firing" ||
		!strings.Contains(ev.Text, "GPU 0 on gpu-1 has 97.9% of its memory in use") {
		t.Errorf("event %+v", ev)
	}
	fired := f.alerts()[0]
	if fired.ID != a.ID || fired.State != store.AlertFiring || !fired.FiredAt.Equal(t0.Add(5*time.Minute)) || fired.LastNotifiedAt.IsZero() {
		t.Errorf("firing alert %+v", fired)
	}

	// Still firing: nothing new to say.
	f.clock.Advance(time.Minute)
	f.eval()
	f.requireEvents()

	f.fleet.setGPU(10*gib, 24*gib)
	f.clock.Advance(time.Minute)
	if res := f.eval(); res.Firing != 0 || res.Pending != 0 {
		t.Fatalf("after recovery: %+v", res)
	}
	ev = f.requireEvents("[RESOLVED:1] gpu_memory_high")[0]
	if ev.Attributes["status"] != "resolved" || ev.Attributes["alert_ids"] != a.ID {
		t.Errorf("resolved event %+v", ev)
	}
	if got := f.alerts()[0]; got.State != store.AlertResolved || !got.ResolvedAt.Equal(f.clock.Now()) {
		t.Errorf("resolved alert %+v", got)
	}
	f.clock.Advance(time.Minute)
	f.eval()
	f.requireEvents()

	// It comes back: a new occurrence with a new id, pending again.
	f.fleet.setGPU(24*gib, 24*gib)
	f.eval()
	if got := f.alerts()[0]; got.ID == a.ID || got.State != store.AlertPending {
		t.Errorf("recurrence %+v, want a new PENDING occurrence", got)
	}
}

// A condition that clears before `for` elapses never fires and leaves no
// alert behind.
func TestPendingThatClearsIsDropped(t *testing.T) {
	f := newFixture(t, Config{GroupWait: -1}, "gpu_memory_high")
	f.fleet.setGPU(24*gib, 24*gib)
	f.eval()
	f.clock.Advance(2 * time.Minute)
	f.fleet.setGPU(gib, 24*gib)
	f.eval()
	f.requireEvents()
	if got := f.alerts(); len(got) != 0 {
		t.Errorf("alerts left: %+v", got[0])
	}
}

func TestSilenceMutesMatchingAlertsUntilItEnds(t *testing.T) {
	f := newFixture(t, Config{GroupWait: -1}, "agent_offline")
	ctx := context.Background()
	sil, err := f.svc.Silence(ctx, SilenceParams{Rule: "agent_offline", Matchers: map[string]string{"agent": "forge"},
		For: 2 * time.Hour, Reason: "host rebuild", By: "operator"})
	if err != nil {
		t.Fatal(err)
	}
	f.fleet.setOffline(f.clock.Now(), "forge", "hammer")
	f.eval()
	ev := f.requireEvents("[FIRING:1] agent_offline")[0]
	if !strings.Contains(ev.Text, "agent hammer") || strings.Contains(ev.Text, "agent forge") {
		t.Errorf("event under a silence for forge: %s", ev.Text)
	}
	listed, err := f.svc.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range listed {
		if want := map[string]string{"forge": sil.ID, "hammer": ""}[l.Labels["agent"]]; l.SilencedBy != want {
			t.Errorf("%s listed silenced by %q, want %q", l.Labels["agent"], l.SilencedBy, want)
		}
	}

	// Still silenced an hour later.
	f.clock.Advance(time.Hour)
	f.fleet.setOffline(f.clock.Now(), "forge", "hammer")
	f.eval()
	f.requireEvents()

	// The silence ends: forge, still firing, is heard of.
	f.clock.Advance(time.Hour)
	f.fleet.setOffline(f.clock.Now(), "forge", "hammer")
	f.eval()
	ev = f.requireEvents("[FIRING:1] agent_offline")[0]
	if !strings.Contains(ev.Text, "agent forge") {
		t.Errorf("after the silence: %s", ev.Text)
	}

	// Expiring a silence early works the same way.
	if _, err := f.svc.Silence(ctx, SilenceParams{Rule: "agent_offline", For: time.Hour, By: "op"}); err != nil {
		t.Fatal(err)
	}
	f.fleet.setOffline(f.clock.Now())
	f.eval() // both resolve under the new, rule-wide silence: not notified
	f.requireEvents()
	f.fleet.setOffline(f.clock.Now(), "anvil")
	f.eval()
	f.requireEvents()
	active, _ := f.svc.Silences(ctx, true)
	if len(active) != 1 {
		t.Fatalf("%d active silences, want 1", len(active))
	}
	if _, err := f.svc.Expire(ctx, active[0].ID); err != nil {
		t.Fatal(err)
	}
	f.eval()
	f.requireEvents("[FIRING:1] agent_offline")
}

func TestSilenceRefusesUnknownRuleAndBadDuration(t *testing.T) {
	f := newFixture(t, Config{}, "agent_offline")
	ctx := context.Background()
	for _, p := range []SilenceParams{
		{Rule: "no_such_rule", For: time.Hour, By: "op"},
		{Rule: "agent_offline", For: 0, By: "op"},
		{Rule: "agent_offline", For: MaxSilence + time.Second, By: "op"},
	} {
		if _, err := f.svc.Silence(ctx, p); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("Silence(%+v): %v, want InvalidArgument", p, err)
		}
	}
	if got, _ := f.svc.Silences(ctx, false); len(got) != 0 {
		t.Errorf("a refused silence was stored: %+v", got[0])
	}
}

// A firing alert nobody acked is notified again once per repeat interval;
// an ack stops the repeats, and the resolution is still notified.
func TestRepeatIntervalAndAck(t *testing.T) {
	f := newFixture(t, Config{GroupWait: -1, RepeatInterval: 4 * time.Hour}, "queue_ready_backlog")
	f.svc.cfg.Sources.Queue = &fakeQueue{stats: store.QueueStats{Counts: map[store.TaskState]int64{store.StateReady: 80}}}
	f.eval()
	f.requireEvents("[FIRING:1] queue_ready_backlog")
	f.clock.Advance(time.Hour)
	f.eval()
	f.requireEvents()
	f.clock.Advance(2*time.Hour + 58*time.Minute) // 3h58m after the notification
	f.eval()
	f.requireEvents()
	f.clock.Advance(2 * time.Minute) // 4h
	f.eval()
	f.requireEvents("[FIRING:1] queue_ready_backlog")
	f.clock.Advance(time.Hour)
	f.eval()
	f.requireEvents()

	id := f.alerts()[0].ID
	if _, err := f.svc.Ack(context.Background(), id, "operator"); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(12 * time.Hour)
	f.eval()
	f.requireEvents()
	if a := f.alerts()[0]; a.AckedBy != "operator" {
		t.Errorf("the evaluator lost the ack: %+v", a)
	}

	f.svc.cfg.Sources.Queue = &fakeQueue{stats: store.QueueStats{Counts: map[store.TaskState]int64{store.StateReady: 3}}}
	f.eval()
	f.requireEvents("[RESOLVED:1] queue_ready_backlog")
	if _, err := f.svc.Ack(context.Background(), id, "operator"); !errors.Is(err, store.ErrIllegalTransition) {
		t.Errorf("ack of a resolved alert: %v", err)
	}
}

// Alerts of one rule that fire close together go out as one event once
// the first has waited GroupWait.
func TestGroupWaitGroupsOneRule(t *testing.T) {
	f := newFixture(t, Config{GroupWait: 30 * time.Second, Interval: 15 * time.Second}, "agent_offline")
	f.fleet.setOffline(f.clock.Now(), "forge")
	f.eval()
	f.requireEvents()
	f.clock.Advance(15 * time.Second)
	f.fleet.setOffline(f.clock.Now(), "forge", "hammer")
	f.eval()
	f.requireEvents()
	f.clock.Advance(15 * time.Second)
	f.eval()
	ev := f.requireEvents("[FIRING:2] agent_offline")[0]
	if ids := strings.Split(ev.Attributes["alert_ids"], ","); len(ids) != 2 {
		t.Errorf("alert_ids %q", ev.Attributes["alert_ids"])
	}
}

// The state lives in the store: a new evaluator (a restart, or another
// replica taking over) neither notifies a firing alert again nor forgets
// an ack.
func TestStateSurvivesARestart(t *testing.T) {
	f := newFixture(t, Config{GroupWait: -1}, "agent_offline")
	f.fleet.setOffline(f.clock.Now(), "forge")
	f.eval()
	f.requireEvents("[FIRING:1] agent_offline")
	if _, err := f.svc.Ack(context.Background(), f.alerts()[0].ID, "operator"); err != nil {
		t.Fatal(err)
	}
	again, err := New(Config{Store: f.st, Clock: f.clock, Publisher: f.pub, Logger: quiet(), GroupWait: -1,
		Sources: Sources{Fleet: f.fleet}, Rules: f.svc.cfg.Rules})
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(8 * time.Hour)
	f.fleet.setOffline(f.clock.Now(), "forge")
	if _, err := again.Evaluate(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.requireEvents()
	if a := f.alerts()[0]; a.State != store.AlertFiring || a.AckedBy != "operator" {
		t.Errorf("after restart: %+v", a)
	}
}

// A measurement that fails keeps its alerts as they are instead of
// resolving them.
func TestFailedMeasurementDoesNotResolve(t *testing.T) {
	f := newFixture(t, Config{GroupWait: -1}, "disk_usage_high")
	f.fleet.hosts = []HostReading{{Host: "gpu-1", Disks: []DiskReading{{Path: "/", UsedBytes: 90, TotalBytes: 100}}}}
	f.eval()
	f.requireEvents("[FIRING:1] disk_usage_high")
	f.fleet.err = errors.New("registry unavailable")
	f.clock.Advance(time.Minute)
	f.eval()
	f.requireEvents()
	if a := f.alerts()[0]; a.State != store.AlertFiring {
		t.Errorf("after a failed measurement: %+v", a)
	}
}

type fakeQueue struct {
	stats      store.QueueStats
	failed     []*store.Task
	statsReads int
}

func (q *fakeQueue) QueueStats(context.Context) (*store.QueueStats, error) {
	q.statsReads++
	s := q.stats
	return &s, nil
}

func (q *fakeQueue) TaskList(_ context.Context, p *store.TaskListParams) (*store.TaskListResult, error) {
	if !slices.Equal(p.States, []store.TaskState{store.StateFailed}) {
		return nil, errors.New("unexpected list")
	}
	// Two per page, to exercise paging.
	start := 0
	if p.Cursor != "" {
		start = int(p.Cursor[0] - '0')
	}
	end := min(start+2, len(q.failed))
	res := &store.TaskListResult{Tasks: q.failed[start:end]}
	if end < len(q.failed) {
		res.NextCursor = string(rune('0' + end))
	}
	return res, nil
}

// Every default measurement, from its source, against its threshold.
func TestDefaultRulesMeasure(t *testing.T) {
	f := newFixture(t, Config{GroupWait: -1}, "spend_daily_total", "spend_tier_frontier", "spend_tier_mid",
		"spend_tier_infra", "spend_agent_runaway", "queue_ready_backlog", "tasks_failed_24h", "task_dead_lettered",
		"model_swaps_high", "task_ready_waiting", "task_in_progress_long", "disk_usage_high")
	now := f.clock.Now()
	var failed []*store.Task
	for i := range 6 {
		failed = append(failed, &store.Task{ID: string(rune('a' + i)), State: store.StateFailed, StateChangedAt: now.Add(-time.Hour)})
	}
	failed = append(failed, &store.Task{ID: "old", State: store.StateFailed, StateChangedAt: now.Add(-48 * time.Hour)})
	f.svc.cfg.Sources.Queue = &fakeQueue{failed: failed, stats: store.QueueStats{
		Counts:           map[store.TaskState]int64{store.StateReady: 51, store.StateFailed: 7},
		OldestReadySince: now.Add(-61 * time.Minute), OldestClaimedAt: now.Add(-2*time.Hour - time.Second)}}
	f.svc.cfg.Sources.Spend = &fakeSpend{spend: Spend{TotalMicros: 50_000_001,
		TierMicros:  map[string]int64{"frontier": 25_000_001, "mid": 15_000_000, "infra": 10_500_000},
		AgentMicros: map[string]int64{"forge": 10_000_001, "hammer": 9_000_000}}}
	f.fleet.swaps = map[string]int{"gpu-1": 21, "gpu-2": 20}
	// df's usage, used / (used + available): /data's 5% reserved blocks
	// put it at 85.3% (used / total would say 81%); / is at, not over.
	f.fleet.hosts = []HostReading{{Host: "gpu-1", Disks: []DiskReading{{Path: "/data", UsedBytes: 81, AvailableBytes: 14, TotalBytes: 100},
		{Path: "/", UsedBytes: 85, AvailableBytes: 15, TotalBytes: 100}}}}
	f.eval()
	// Rules sharing a source share one read of it per evaluation.
	if q, sp := f.svc.cfg.Sources.Queue.(*fakeQueue), f.svc.cfg.Sources.Spend.(*fakeSpend); q.statsReads != 1 || sp.reads != 1 {
		t.Errorf("one evaluation read the queue's stats %d times and the spend %d times, want once each", q.statsReads, sp.reads)
	}
	firing := map[string][]map[string]string{}
	for _, a := range f.alerts() {
		if a.State == store.AlertFiring {
			firing[a.Rule] = append(firing[a.Rule], a.Labels)
		}
	}
	want := map[string]string{
		"spend_daily_total":     "",
		"spend_tier_frontier":   "tier=frontier",
		"spend_tier_infra":      "tier=infra",
		"spend_agent_runaway":   "agent=forge",
		"queue_ready_backlog":   "",
		"task_dead_lettered":    "",
		"model_swaps_high":      "host=gpu-1",
		"task_ready_waiting":    "",
		"task_in_progress_long": "",
		"disk_usage_high":       "host=gpu-1,path=/data",
	}
	for rule, labels := range want {
		got := firing[rule]
		if len(got) != 1 || labelString(got[0]) != labels {
			t.Errorf("%s: firing %v, want one with %q", rule, got, labels)
		}
	}
	// The dead letter's alert names its newest tasks, not only a count.
	for _, a := range f.alerts() {
		if a.Rule == "task_dead_lettered" && a.Summary != "7 FAILED tasks need an operator (dead-lettered): a, b, …" {
			t.Errorf("task_dead_lettered summary %q, want the count and the newest task ids", a.Summary)
		}
	}
	// 6 failed in 24 h is under the threshold of 10; mid spend is at, not
	// over, its line.
	for _, rule := range []string{"tasks_failed_24h", "spend_tier_mid"} {
		if len(firing[rule]) != 0 {
			t.Errorf("%s fired: %v", rule, firing[rule])
		}
	}
	// 11 failed in 24 h crosses it.
	for i := range 5 {
		failed = append(failed, &store.Task{ID: string(rune('p' + i)), State: store.StateFailed, StateChangedAt: now.Add(-time.Minute)})
	}
	f.svc.cfg.Sources.Queue.(*fakeQueue).failed = failed
	f.eval()
	if got, _ := f.st.AlertList(context.Background(), &store.AlertListParams{Rule: "tasks_failed_24h"}); len(got) != 1 || got[0].Value != 11 {
		t.Errorf("tasks_failed_24h after 11 failures: %+v", got)
	}
}

func labelString(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

// Alerts of one rule that fire in one evaluation are one event; another
// rule's are another.
func TestOneEventPerRulePerEvaluation(t *testing.T) {
	f := newFixture(t, Config{GroupWait: -1}, "agent_offline", "disk_usage_high")
	f.fleet.setOffline(f.clock.Now(), "forge", "hammer", "anvil")
	f.fleet.hosts = []HostReading{{Host: "gpu-1", Disks: []DiskReading{{Path: "/", UsedBytes: 90, TotalBytes: 100}}}}
	f.eval()
	evs := f.requireEvents("[FIRING:3] agent_offline", "[FIRING:1] disk_usage_high")
	if ids := strings.Split(evs[0].Attributes["alert_ids"], ","); len(ids) != 3 || evs[0].Attributes["firing"] != "3" {
		t.Errorf("agent_offline event %+v", evs[0].Attributes)
	}
	// One resolves while another keeps firing: the resolution alone is news.
	f.fleet.setOffline(f.clock.Now(), "forge", "hammer")
	f.clock.Advance(time.Minute)
	f.eval()
	f.requireEvents("[RESOLVED:1] agent_offline")
}
