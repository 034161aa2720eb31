package budget

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
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

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// events records what the service published.
type events struct {
	mu   sync.Mutex
	list []notify.Event
}

func (e *events) Publish(_ context.Context, ev notify.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, ev)
}

func (e *events) kinds(k notify.Kind) []notify.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []notify.Event
	for _, ev := range e.list {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

type fixture struct {
	t     *testing.T
	ctx   context.Context
	svc   *Service
	q     *queue.Service
	st    store.Store
	clock *fakeClock
	pub   *events
}

func newFixture(t *testing.T, start time.Time, mod func(*Config)) *fixture {
	t.Helper()
	st, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "f.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := &fakeClock{now: start}
	q, err := queue.New(queue.Config{Store: st, Clock: clock, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	pub := &events{}
	cfg := Config{Store: st, Clock: clock, Publisher: pub, Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Attach(t.Context(), q); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: t.Context(), svc: svc, q: q, st: st, clock: clock, pub: pub}
}

func cost(c int64) *int64 { return &c }

func (f *fixture) report(id, agent, tier string, micros int64, at time.Time) {
	f.t.Helper()
	_, err := f.svc.Report(f.ctx, []*Event{{ID: id, Agent: agent, Model: "claude-sonnet-4", Tier: tier, Cost: cost(micros), OccurredAt: at}})
	if err != nil {
		f.t.Fatalf("Report %s: %v", id, err)
	}
}

func (f *fixture) setBudget(b store.Budget) {
	f.t.Helper()
	if _, err := f.svc.SetBudget(f.ctx, b); err != nil {
		f.t.Fatal(err)
	}
}

func mustUTC(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// Days are Pacific/Auckland calendar days, also across the daylight-saving
// changes: 2026-09-27 has 23 hours (02:00 NZST becomes 03:00 NZDT) and
// 2026-04-05 has 25 (03:00 NZDT becomes 02:00 NZST).
func TestDaysFollowAucklandAcrossDaylightSaving(t *testing.T) {
	f := newFixture(t, mustUTC("2026-09-28T00:00:00Z"), nil)
	cases := []struct {
		at, day string
	}{
		// Spring forward: NZST is UTC+12, NZDT UTC+13.
		{"2026-09-26T11:59:59Z", "2026-09-26"}, // 23:59:59 NZST
		{"2026-09-26T12:00:00Z", "2026-09-27"}, // 00:00 NZST
		{"2026-09-26T13:59:59Z", "2026-09-27"}, // 01:59:59 NZST, just before the change
		{"2026-09-26T14:00:00Z", "2026-09-27"}, // 03:00 NZDT, just after
		{"2026-09-27T10:59:59Z", "2026-09-27"}, // 23:59:59 NZDT: the day had 23 hours
		{"2026-09-27T11:00:00Z", "2026-09-28"}, // 00:00 NZDT
		// Fall back.
		{"2026-04-04T10:59:59Z", "2026-04-04"}, // 23:59:59 NZDT
		{"2026-04-04T11:00:00Z", "2026-04-05"}, // 00:00 NZDT
		{"2026-04-04T14:30:00Z", "2026-04-05"}, // 02:30 NZST, the second time round
		{"2026-04-05T11:59:59Z", "2026-04-05"}, // 23:59:59 NZST: the day had 25 hours
		{"2026-04-05T12:00:00Z", "2026-04-06"}, // 00:00 NZST
	}
	for i, c := range cases {
		at := mustUTC(c.at)
		if got := f.svc.DayOf(at); got != c.day {
			t.Errorf("%s: day %s, want %s", c.at, got, c.day)
		}
		f.report(c.at, "forge", store.TierMid, int64(i+1), at)
	}
	// The reports add up per local day.
	want := map[string]int64{}
	for i, c := range cases {
		want[c.day] += int64(i + 1)
	}
	for _, r := range []struct{ from, to string }{{"2026-09-26", "2026-09-28"}, {"2026-04-04", "2026-04-06"}} {
		rep, err := f.svc.Spend(f.ctx, Query{FromDay: r.from, ToDay: r.to, GroupBy: GroupDay})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range rep.Groups {
			if g.CostMicros != want[g.Key] {
				t.Errorf("day %s: %d, want %d", g.Key, g.CostMicros, want[g.Key])
			}
		}
		if len(rep.Groups) != 3 {
			t.Errorf("%s..%s: %d days, want 3", r.from, r.to, len(rep.Groups))
		}
	}
	// "Today" and the caps follow the zone too: a cap reached late on the
	// 27th (local) no longer holds at local midnight, an hour of UTC
	// earlier than before the change.
	f.clock.Set(mustUTC("2026-09-27T10:00:00Z")) // 23:00 NZDT on the 27th
	if got := f.svc.Today(); got != "2026-09-27" {
		t.Fatalf("today %s", got)
	}
	f.setBudget(store.Budget{Scope: store.ScopeAgent, Key: "forge", CapMicros: 10})
	f.report("late", "forge", store.TierMid, 10, f.clock.Now())
	if err := f.svc.Gate(f.ctx, "forge"); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("capped at 23:00: %v", err)
	}
	f.clock.Set(mustUTC("2026-09-27T11:00:00Z")) // 00:00 NZDT on the 28th
	if err := f.svc.Gate(f.ctx, "forge"); err != nil {
		t.Errorf("a new local day: %v", err)
	}
}

func TestPricing(t *testing.T) {
	p := DefaultPrices()
	for _, c := range []struct {
		model, tier string
		in, out     int64
		want        int64
		ok          bool
	}{
		{"claude-opus-4", store.TierFrontier, 1_000_000, 1_000_000, 90_000_000, true},
		{"claude-opus-4-5-20251101", store.TierFrontier, 1_000, 1_000, 30_000, true}, // longest prefix: opus-4-5
		{"gpt-4o-mini", store.TierMid, 1, 0, 0, true},                                // 0.15 µ$ rounds down
		{"gpt-4o-mini", store.TierMid, 4, 0, 1, true},                                // 0.6 µ$ rounds up
		{"gpt-4o-mini", store.TierMid, 10, 0, 2, true},                               // 1.5 µ$: half up
		{"gpt-4o", store.TierMid, 1_000, 1_000, 12_500, true},
		{"qwen2.5:7b", store.TierLocal, 5_000_000, 5_000_000, 0, true},
		{"some-gguf-model", store.TierLocal, 100, 100, 0, true}, // the local tier's rate
		{"mystery", store.TierMid, 1, 1, 0, false},
	} {
		pr, ok := p.Lookup(c.model, c.tier)
		if ok != c.ok {
			t.Errorf("%s: found %v", c.model, ok)
			continue
		}
		if got := pr.Cost(c.in, c.out); ok && got != c.want {
			t.Errorf("%s %d/%d tokens: %d µ$, want %d", c.model, c.in, c.out, got, c.want)
		}
	}
	// No overflow at the largest tokens the API accepts.
	if got := (Price{InputMicros: 75_000_000}).Cost(100_000_000_000, 0); got != 7_500_000_000_000 {
		t.Errorf("huge call: %d", got)
	}
	for _, bad := range []string{"-1", "1.1234567", "abc", ""} {
		if _, err := parseMicros(bad); err == nil {
			t.Errorf("parseMicros(%q) accepted", bad)
		}
	}
	if v, err := parseMicros("0.15"); err != nil || v != 150_000 {
		t.Errorf("0.15 = %d %v", v, err)
	}
	if _, err := ParsePrices([]byte("models:\n  x: {input: 1, output: 2}\ntiers:\n  premium: {input: 0, output: 0}\n")); err == nil {
		t.Error("an unknown tier in the table was accepted")
	}
}

func TestReportPricesAndRefusesUnknownModels(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	res, err := f.svc.Report(f.ctx, []*Event{{ID: "a", Agent: "forge", Model: "claude-haiku-4-5", Tier: store.TierMid,
		InputTokens: 1_000_000, OutputTokens: 100_000, OccurredAt: f.clock.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Records[0]; !r.PricedByServer || r.CostMicros != 1_500_000 {
		t.Errorf("priced %+v", r)
	}
	got, err := f.svc.Record(f.ctx, "forge", "a")
	if err != nil || !got.PricedByServer || got.CostMicros != 1_500_000 {
		t.Errorf("stored %+v %v", got, err)
	}
	_, err = f.svc.Report(f.ctx, []*Event{
		{ID: "b", Agent: "forge", Model: "claude-haiku-4-5", Tier: store.TierMid, Cost: cost(5), OccurredAt: f.clock.Now()},
		{ID: "c", Agent: "forge", Model: "mystery", Tier: store.TierMid, InputTokens: 5, OccurredAt: f.clock.Now()},
	})
	var fe *store.FieldError
	if !errors.As(err, &fe) || fe.Field != "events[1].cost_micros" {
		t.Fatalf("unknown model: %v", err)
	}
	if _, err := f.svc.Record(f.ctx, "forge", "b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused batch stored its other event: %v", err)
	}
}

// alertWrites counts the alert writes the service asks of the store.
type alertWrites struct {
	store.Store
	n atomic.Int32
}

func (a *alertWrites) SpendAlertRaise(ctx context.Context, al *store.SpendAlert) (bool, error) {
	a.n.Add(1)
	return a.Store.SpendAlertRaise(ctx, al)
}

func TestAlertsRaiseOncePerDayPerScope(t *testing.T) {
	var writes *alertWrites
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), func(c *Config) {
		writes = &alertWrites{Store: c.Store}
		c.Store = writes
	})
	now := f.clock.Now()
	// The runbook's defaults: an agent over $10 is a runaway; mid alert $15.
	f.report("1", "forge", store.TierMid, 9_000_000, now)
	if n := len(f.pub.kinds(notify.KindSpendAlert)); n != 0 {
		t.Fatalf("%d alerts under every threshold", n)
	}
	f.report("2", "forge", store.TierMid, 2_000_000, now)
	alerts := f.pub.kinds(notify.KindSpendAlert)
	if len(alerts) != 1 || alerts[0].Attributes["scope"] != store.ScopeAgent || alerts[0].Attributes["key"] != "forge" {
		t.Fatalf("alerts %+v", alerts)
	}
	f.report("3", "forge", store.TierMid, 5_000_000, now) // mid crosses $15
	f.report("4", "forge", store.TierMid, 1_000_000, now)
	if n := len(f.pub.kinds(notify.KindSpendAlert)); n != 2 {
		t.Errorf("%d alerts, want 2 (agent forge once, tier mid once)", n)
	}
	// Reports past a threshold already raised do not write it again.
	if n := writes.n.Load(); n != 2 {
		t.Errorf("%d alert writes, want 2 (one per scope crossed)", n)
	}
	st, err := f.svc.Budgets(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Alerts) != 2 {
		t.Errorf("today's alerts %+v", st.Alerts)
	}
	// The next day raises again.
	f.clock.Advance(24 * time.Hour)
	f.report("5", "forge", store.TierMid, 11_000_000, f.clock.Now())
	if n := len(f.pub.kinds(notify.KindSpendAlert)); n != 3 {
		t.Errorf("%d alerts after a new day's crossing, want 3", n)
	}
}

func TestEmergencyThresholdStopsTheFleetUntilRearmed(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	if _, err := f.q.Create(f.ctx, []*queue.CreateParams{{Title: "a"}, {Title: "b"}}); err != nil {
		t.Fatal(err)
	}
	f.report("big", "forge", store.TierFrontier, 99_000_000, f.clock.Now())
	if st, _ := f.svc.StopState(f.ctx); st.Stopped {
		t.Fatal("stopped under the threshold")
	}
	sig, unwatch := f.svc.WatchStop()
	defer unwatch()
	f.report("over", "hammer", store.TierMid, 1_000_000, f.clock.Now())
	st, _ := f.svc.StopState(f.ctx)
	if !st.Stopped || st.StoppedBy != StoppedByBudget || st.PausedTasks != 2 || !st.PausedQueue {
		t.Fatalf("after crossing $100: %+v", st)
	}
	if s := <-sig; !s.Stopped {
		t.Errorf("watchers told %+v", s)
	}
	if stops := f.pub.kinds(notify.KindEmergencyStop); len(stops) != 1 || stops[0].Attributes["paused_tasks"] != "2" {
		t.Errorf("stop notifications %+v, want one telling of 2 paused tasks", stops)
	}
	stats, _ := f.st.QueueStats(f.ctx)
	if !stats.Paused || stats.Counts[store.StatePaused] != 2 {
		t.Errorf("queue %+v", stats)
	}
	var qe *store.QuotaError
	if err := f.svc.Gate(f.ctx, "forge"); !errors.As(err, &qe) || qe.Subject != SubjectEmergencyStop {
		t.Errorf("gate under the stop: %v", err)
	}
	// A new day does not lift it.
	f.clock.Advance(48 * time.Hour)
	if err := f.svc.Gate(f.ctx, "forge"); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Errorf("the stop lifted itself at the rollover: %v", err)
	}
	n, err := f.svc.Rearm(f.ctx, "ops", "raised the budget")
	if err != nil || n != 2 {
		t.Fatalf("rearm resumed %d: %v", n, err)
	}
	if s := <-sig; s.Stopped {
		t.Errorf("watchers told %+v after the rearm", s)
	}
	if err := f.svc.Gate(f.ctx, "forge"); err != nil {
		t.Errorf("gate after rearm: %v", err)
	}
}

// A view refreshed while the stop was pulled read the state from before
// the pull: announcing it would tell the sidecars the fleet runs again.
func TestAStaleReadDoesNotUndoANewerStopAnnouncement(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	sig, unwatch := f.svc.WatchStop()
	defer unwatch()
	gen := f.svc.stopGeneration()
	stale, err := f.svc.StopState(f.ctx)
	if err != nil || stale.Stopped {
		t.Fatalf("before the stop: %+v, %v", stale, err)
	}
	if _, err := f.svc.EmergencyStop(f.ctx, "drill", "ops"); err != nil {
		t.Fatal(err)
	}
	if s := <-sig; !s.Stopped {
		t.Fatalf("watchers told %+v, want the stop", s)
	}
	f.svc.announceStopRead(stale, gen)
	select {
	case s := <-sig:
		t.Fatalf("the stale read was announced: %+v", s)
	default:
	}
	// A read taken after the stop is announced as usual (here: unchanged).
	gen = f.svc.stopGeneration()
	fresh, _ := f.svc.StopState(f.ctx)
	f.svc.announceStopRead(fresh, gen)
	select {
	case s := <-sig:
		t.Fatalf("an unchanged state was announced again: %+v", s)
	default:
	}
}

func TestRearmLeavesAnOperatorsPauseAlone(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	if _, err := f.q.Create(f.ctx, []*queue.CreateParams{{Title: "a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.q.Pause(f.ctx, "deploy freeze"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.EmergencyStop(f.ctx, "drill", "ops"); err != nil {
		t.Fatal(err)
	}
	if n, err := f.svc.Rearm(f.ctx, "ops", ""); err != nil || n != 0 {
		t.Fatalf("rearm resumed %d: %v", n, err)
	}
	if stats, _ := f.st.QueueStats(f.ctx); !stats.Paused || stats.PauseReason != "deploy freeze" {
		t.Errorf("the operator's pause was lifted: %+v", stats)
	}
}

func TestCapsGateClaimsAndReservations(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	f.setBudget(store.Budget{Scope: store.ScopeTier, Key: store.TierFrontier, CapMicros: 3_000_000})
	f.setBudget(store.Budget{Scope: store.ScopeAgent, Key: "", CapMicros: 2_000_000}) // every agent
	r, err := f.svc.Reserve(f.ctx, ReserveParams{Agent: "forge", Tier: store.TierFrontier, EstimateMicros: 2_000_000, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var qe *store.QuotaError
	// Reserved counts against the cap: forge is at its $2 default cap.
	if err := f.svc.Gate(f.ctx, "forge"); !errors.As(err, &qe) || qe.Subject != "budget:agent:forge" {
		t.Errorf("forge with $2 reserved: %v", err)
	}
	if _, err := f.svc.Reserve(f.ctx, ReserveParams{Agent: "hammer", Tier: store.TierFrontier, EstimateMicros: 1_500_000}); !errors.As(err, &qe) || qe.Subject != "budget:tier:frontier" {
		t.Errorf("hammer past the frontier cap: %v", err)
	}
	// Settling for less frees the difference.
	if _, _, err := f.svc.Settle(f.ctx, r.ID, &Event{ID: "x", Agent: "forge", Model: "m", Tier: store.TierFrontier, Cost: cost(500_000), OccurredAt: f.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Gate(f.ctx, "forge"); err != nil {
		t.Errorf("forge after settling for $0.50: %v", err)
	}
	// An unsettled reservation lapses at its ttl, with no sleeping.
	if _, err := f.svc.Reserve(f.ctx, ReserveParams{Agent: "hammer", Tier: store.TierFrontier, EstimateMicros: 2_000_000, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Gate(f.ctx, "hammer"); !errors.As(err, &qe) {
		t.Errorf("hammer with $2 held: %v", err)
	}
	f.clock.Advance(time.Minute)
	if err := f.svc.Gate(f.ctx, "hammer"); err != nil {
		t.Errorf("after the reservation expired: %v", err)
	}
	if _, _, err := f.svc.Settle(f.ctx, "no-such", nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("releasing an unknown reservation: %v", err)
	}
}

func TestSpendReports(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil) // 13:00 on the 14th in Auckland
	day := func(d int) time.Time { return f.clock.Now().AddDate(0, 0, -d) }
	for i := range 8 {
		f.report("w"+string(rune('a'+i)), "forge", store.TierMid, 7_000_000, day(i+1)) // the 7 days before today, and one more
	}
	f.report("t1", "forge", store.TierFrontier, 3_000_000, day(0))
	f.report("t2", "hammer", store.TierMid, 1_000_000, day(0))
	rep, err := f.svc.Spend(f.ctx, Query{GroupBy: GroupAgent})
	if err != nil {
		t.Fatal(err)
	}
	if rep.FromDay != "2031-03-14" || rep.Totals.CostMicros != 4_000_000 || rep.Rolling7DayAvg != 7_000_000 || len(rep.Groups) != 2 ||
		rep.Groups[0].Key != "forge" || rep.TimeZone != "Pacific/Auckland" {
		t.Errorf("today by agent: %+v", rep)
	}
	rep, err = f.svc.Spend(f.ctx, Query{Days: 2, Agent: "forge", GroupBy: GroupTier})
	if err != nil {
		t.Fatal(err)
	}
	if rep.FromDay != "2031-03-13" || rep.Totals.CostMicros != 10_000_000 || len(rep.Groups) != 2 || rep.Groups[0].Key != store.TierMid {
		t.Errorf("forge's 2 days by tier: %+v", rep)
	}
	rep, err = f.svc.Spend(f.ctx, Query{Tier: store.TierMid, GroupBy: GroupAgent})
	if err != nil || rep.Totals.CostMicros != 1_000_000 || len(rep.Groups) != 1 || rep.Groups[0].Key != "hammer" {
		t.Errorf("mid today by agent: %+v %v", rep, err)
	}
	rep, err = f.svc.Spend(f.ctx, Query{Agent: "forge", Tier: store.TierMid, FromDay: "2031-03-01", ToDay: "2031-03-14", GroupBy: GroupDay})
	if err != nil || rep.Totals.CostMicros != 56_000_000 || len(rep.Groups) != 8 {
		t.Errorf("forge's mid spend by day: %+v %v", rep, err)
	}
	for _, bad := range []Query{
		{FromDay: "2031-03-15", ToDay: "2031-03-14"},
		{ToDay: "14/03/2031"},
		{FromDay: "2030-01-01", ToDay: "2031-03-14"},
		{GroupBy: "colour"},
		{Agent: "forge", Tier: store.TierMid, GroupBy: GroupModel},
	} {
		var fe *store.FieldError
		if _, err := f.svc.Spend(f.ctx, bad); !errors.As(err, &fe) {
			t.Errorf("%+v: %v, want a field error", bad, err)
		}
	}
}

func TestOnRecordedHearsNewEventsOnly(t *testing.T) {
	var mu sync.Mutex
	got := map[string]int64{}
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), func(c *Config) {
		c.OnRecorded = func(_ context.Context, day string, recs []CounterEntry) {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range recs {
				got[day+"/"+r.Agent] += r.CostMicros
			}
		}
	})
	f.report("a", "forge", store.TierMid, 5, f.clock.Now())
	f.report("a", "forge", store.TierMid, 5, f.clock.Now())
	f.report("b", "forge", store.TierMid, 7, f.clock.Now().Add(-24*time.Hour))
	if got["2031-03-14/forge"] != 5 || got["2031-03-13/forge"] != 7 {
		t.Errorf("counters heard %v", got)
	}
	total, byAgent, byTier, _, err := f.svc.DayTotals(f.ctx, "2031-03-14")
	if err != nil || total != 5 || byAgent["forge"] != 5 || byTier[store.TierMid] != 5 {
		t.Errorf("DayTotals: %d %v %v %v", total, byAgent, byTier, err)
	}
}

func TestEventsAreCappedHoweverPriced(t *testing.T) {
	dear, err := ParsePrices([]byte("models:\n  dear-model: {input: \"1000000\", output: \"1000000\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), func(c *Config) { c.Prices = dear })
	now := f.clock.Now()
	var fe *store.FieldError
	for _, c := range []struct {
		name  string
		event *Event
		field string
	}{
		{"server-priced past $1M", &Event{ID: "a", Agent: "forge", Model: "dear-model", Tier: store.TierFrontier, InputTokens: 1_000_001, OccurredAt: now}, "event.cost_micros"},
		{"sent cost past $1M", &Event{ID: "b", Agent: "forge", Model: "m", Tier: store.TierFrontier, Cost: cost(store.MaxEventCostMicros + 1), OccurredAt: now}, "event.cost_micros"},
		{"1e11 input tokens", &Event{ID: "c", Agent: "forge", Model: "claude-opus-4", Tier: store.TierFrontier, InputTokens: 100_000_000_000, OccurredAt: now}, "event.input_tokens"},
		{"1e11 output tokens", &Event{ID: "d", Agent: "forge", Model: "m", Tier: store.TierFrontier, OutputTokens: 100_000_000_000, Cost: cost(1), OccurredAt: now}, "event.output_tokens"},
	} {
		if _, err := f.svc.Report(f.ctx, []*Event{c.event}); !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: %v, want a FieldError on %s", c.name, err, c.field)
		}
	}
	// At the cap exactly is a real (if dear) call.
	if _, err := f.svc.Report(f.ctx, []*Event{{ID: "e", Agent: "forge", Model: "dear-model", Tier: store.TierFrontier, InputTokens: 1_000_000, OccurredAt: now}}); err != nil {
		t.Errorf("an event priced at the cap: %v", err)
	}
}

func TestResendingAnIDWithOtherContentIsRefused(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	ev := &Event{ID: "call-1", Agent: "forge", Model: "m", Tier: store.TierMid, Cost: cost(1_000), OccurredAt: f.clock.Now()}
	if _, dup, err := f.svc.ReportOne(f.ctx, ev); err != nil || dup {
		t.Fatalf("first report: dup %v, %v", dup, err)
	}
	retry := *ev
	retry.OccurredAt = ev.OccurredAt.Add(time.Second)
	if rec, dup, err := f.svc.ReportOne(f.ctx, &retry); err != nil || !dup || rec.CostMicros != 1_000 {
		t.Fatalf("an identical retry: %+v dup %v, %v", rec, dup, err)
	}
	rewrite := *ev
	rewrite.Cost = cost(50_000_000)
	_, _, err := f.svc.ReportOne(f.ctx, &rewrite)
	var ce *store.SpendConflictError
	if !errors.As(err, &ce) || !errors.Is(err, store.ErrAlreadyExists) || fmt.Sprint(ce.Fields) != "[cost_micros]" {
		t.Fatalf("a rewrite: %v, want a conflict naming cost_micros", err)
	}
	// Another agent may use the same id.
	other := *ev
	other.Agent = "hammer"
	if _, dup, err := f.svc.ReportOne(f.ctx, &other); err != nil || dup {
		t.Fatalf("hammer with forge's id: dup %v, %v", dup, err)
	}
	if rep, _ := f.svc.Spend(f.ctx, Query{}); rep.Totals.CostMicros != 2_000 {
		t.Errorf("total %d, want both agents' $0.001", rep.Totals.CostMicros)
	}
}

func TestRunawayAgentIsHaltedNotTheFleet(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	f.report("loop", "forge", store.TierFrontier, 12_000_000, f.clock.Now())
	var qe *store.QuotaError
	if err := f.svc.Gate(f.ctx, "forge"); !errors.As(err, &qe) || qe.Subject != "budget:agent:forge" {
		t.Errorf("forge past the runbook's $10 a day: %v, want budget:agent:forge", err)
	}
	if err := f.svc.Gate(f.ctx, "hammer"); err != nil {
		t.Errorf("hammer under a runaway forge: %v", err)
	}
	if st, _ := f.svc.StopState(f.ctx); st.Stopped {
		t.Errorf("one runaway agent stopped the fleet: %+v", st)
	}
}

func TestVoidNetsOutAndARearmHolds(t *testing.T) {
	var mu sync.Mutex
	counted := map[string]int64{}
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), func(c *Config) {
		c.OnRecorded = func(_ context.Context, _ string, recs []CounterEntry) {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range recs {
				counted[r.Agent] += r.CostMicros
			}
		}
	})
	if _, err := f.q.Create(f.ctx, []*queue.CreateParams{{Title: "a"}}); err != nil {
		t.Fatal(err)
	}
	f.report("real", "hammer", store.TierMid, 3_000_000, f.clock.Now())
	f.report("bogus", "forge", store.TierFrontier, 50_000_000_000, f.clock.Now())
	if st, _ := f.svc.StopState(f.ctx); !st.Stopped {
		t.Fatal("a $50,000 day did not pull the emergency stop")
	}
	ev, err := f.svc.Void(f.ctx, "forge", "bogus", "test event", "ops")
	if err != nil || ev.Void == nil || ev.Void.VoidedBy != "ops" {
		t.Fatalf("void: %+v, %v", ev, err)
	}
	if _, err := f.svc.Void(f.ctx, "forge", "bogus", "again", "ops"); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("a second void: %v, want ErrAlreadyExists", err)
	}
	if counted["forge"] != 0 || counted["hammer"] != 3_000_000 {
		t.Errorf("live counters heard %v, want forge netted to 0", counted)
	}
	// The stop stays until an operator rearms; then a report under the
	// threshold does not pull it again.
	if st, _ := f.svc.StopState(f.ctx); !st.Stopped {
		t.Fatal("the void lifted the stop by itself")
	}
	if _, err := f.svc.Rearm(f.ctx, "ops", "bogus event voided"); err != nil {
		t.Fatal(err)
	}
	f.report("next", "hammer", store.TierMid, 1_000_000, f.clock.Now())
	if st, _ := f.svc.StopState(f.ctx); st.Stopped {
		t.Fatalf("the next report pulled the stop again: %+v", st)
	}
	for _, agent := range []string{"forge", "hammer"} {
		if err := f.svc.Gate(f.ctx, agent); err != nil {
			t.Errorf("gate for %s after void and rearm: %v", agent, err)
		}
	}
	st, err := f.svc.Budgets(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Budgets[0].Spent != 4_000_000 {
		t.Errorf("the total budget sees %d, want the net 4000000", st.Budgets[0].Spent)
	}
	if rep, _ := f.svc.Spend(f.ctx, Query{GroupBy: GroupAgent}); rep.Totals.CostMicros != 4_000_000 || rep.Totals.Events != 2 {
		t.Errorf("report totals %+v, want the net", rep.Totals)
	}
}
