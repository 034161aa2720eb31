package digest_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // the golden card is in Pacific/Auckland wherever it runs

	"github.com/factory/factory/controlplane/digest"
	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

type spend struct{ gotDay time.Time }

func (s *spend) DigestSpend(_ context.Context, day time.Time) (*digest.Spend, error) {
	s.gotDay = day
	return &digest.Spend{Yesterday: 41_250_000, WeekAverage: 30_000_000}, nil
}

type approvals int64

func (a approvals) PendingApprovals(context.Context) (int64, error) { return int64(a), nil }

type agents []fleet.Agent

func (a agents) Agents() []fleet.Agent { return a }

type infra []string

func (i infra) Infrastructure(context.Context) ([]string, error) { return i, nil }

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// seeded is a store with a night's work, on a fixed clock: the digest is
// built at 08:00 on Friday 27 November 2026 in Auckland.
func seeded(t *testing.T, loc *time.Location) (store.Store, *clock) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "factory.db"), Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{}
	q, err := queue.New(queue.Config{Store: st, Logger: quietLog(), Clock: clk, Rand: func() float64 { return 0.5 }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	at := func(day, hour, minute int) { clk.set(time.Date(2026, 11, day, hour, minute, 0, 0, loc)) }
	create := func(id, title string) {
		if _, err := q.Create(ctx, []*queue.CreateParams{{ID: id, Title: title, MaxAttempts: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	claim := func(agent string) *store.Task {
		got, err := q.Claim(ctx, queue.ClaimParams{Agent: agent, LeaseDuration: 6 * time.Hour})
		if err != nil || len(got) != 1 {
			t.Fatalf("claim: %v %v", got, err)
		}
		return got[0]
	}
	ref := func(tk *store.Task, agent string) store.LeaseRef {
		return store.LeaseRef{TaskID: tk.ID, Agent: agent, FencingToken: tk.FencingToken}
	}
	// Done before the window: not counted.
	at(26, 15, 0)
	create("t-early", "Done yesterday afternoon")
	tk := claim("forge")
	if _, err := q.Complete(ctx, []store.TaskCompleteItem{{Lease: ref(tk, "forge")}}); err != nil {
		t.Fatal(err)
	}
	// Overnight: two done, one failed, one stuck.
	at(26, 19, 0)
	create("t-done-1", "Summarise the RFC")
	create("t-done-2", "Write the changelog")
	create("t-fail", "Migrate the index")
	create("t-stuck", "Rebuild embeddings")
	at(26, 20, 0)
	for range 2 {
		tk := claim("forge")
		if _, err := q.Complete(ctx, []store.TaskCompleteItem{{Lease: ref(tk, "forge")}}); err != nil {
			t.Fatal(err)
		}
	}
	at(26, 23, 30)
	tk = claim("hammer")
	if _, err := q.Fail(ctx, ref(tk, "hammer"), "qdrant: connection refused\n(retry budget spent)", true); err != nil {
		t.Fatal(err)
	}
	at(27, 2, 0)
	claim("anvil") // silent since: stuck at 08:00
	at(27, 8, 0)
	return st, clk
}

func TestDigestGolden(t *testing.T) {
	loc, err := time.LoadLocation("Pacific/Auckland")
	if err != nil {
		t.Fatal(err)
	}
	st, clk := seeded(t, loc)
	sp := &spend{}
	svc, err := digest.New(digest.Config{
		Store: st, Spend: sp, Approvals: approvals(2), Location: loc, Clock: clk, Logger: quietLog(),
		Agents: agents{
			{Name: "forge", State: fleet.StateOnline}, {Name: "hammer", State: fleet.StateOnline},
			{Name: "anvil", State: fleet.StateStale}, {Name: "scout", State: fleet.StateOffline},
		},
		Infra: infra{"gpu-1 GPU 0 (NVIDIA H100 80GB HBM3): memory 76.0/80.0 GiB (95%)", "gpu-1 disk /: 91% used", "all 3 probes ok"},
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := svc.Build(t.Context(), time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Completed != 2 || d.Failed != 1 || d.Stuck != 1 || d.DeadLetter != 1 {
		t.Errorf("counts: completed %d failed %d stuck %d dead letter %d, want 2 1 1 1", d.Completed, d.Failed, d.Stuck, d.DeadLetter)
	}
	if want := time.Date(2026, 11, 27, 0, 0, 0, 0, loc); !sp.gotDay.Equal(want) {
		t.Errorf("spend asked for day %s, want %s", sp.gotDay, want)
	}
	golden(t, "digest.golden", d.Render())
}

func TestDigestWithoutSourcesSaysNA(t *testing.T) {
	loc, err := time.LoadLocation("Pacific/Auckland")
	if err != nil {
		t.Fatal(err)
	}
	st, clk := seeded(t, loc)
	svc, err := digest.New(digest.Config{Store: st, Location: loc, Clock: clk, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	d, err := svc.Build(t.Context(), time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "digest_no_sources.golden", d.Render())
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

type sink struct {
	mu     sync.Mutex
	events []notify.Event
}

func (s *sink) Publish(_ context.Context, e notify.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, e)
}

func TestRunSendsDailyAtTheLocalTime(t *testing.T) {
	loc, err := time.LoadLocation("Pacific/Auckland")
	if err != nil {
		t.Fatal(err)
	}
	st, clk := seeded(t, loc)
	clk.set(time.Date(2026, 11, 27, 7, 30, 0, 0, loc))
	waits := make(chan time.Duration, 1)
	fire := make(chan time.Time)
	out := &sink{}
	svc, err := digest.New(digest.Config{Store: st, Location: loc, Clock: clk, Logger: quietLog(), Publisher: out, At: "08:00",
		After: func(d time.Duration) <-chan time.Time { waits <- d; return fire }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	if w := <-waits; w != 30*time.Minute {
		t.Errorf("first wait %s, want 30m (07:30 to 08:00)", w)
	}
	clk.set(time.Date(2026, 11, 27, 8, 0, 0, 0, loc))
	fire <- clk.Now()
	if w := <-waits; w != 24*time.Hour {
		t.Errorf("second wait %s, want 24h", w)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	if len(out.events) != 1 || out.events[0].Kind != notify.KindDigest || out.events[0].ID != "digest-2026-11-27" || out.events[0].Text == "" {
		t.Fatalf("published: %+v", out.events)
	}
}

func TestNextAtCrossesDaylightSaving(t *testing.T) {
	loc, err := time.LoadLocation("Pacific/Auckland")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := digest.New(digest.Config{Store: nopStore{}, Location: loc, At: "08:00"})
	if err != nil {
		t.Fatal(err)
	}
	// NZ daylight saving starts at 02:00 on Sunday 27 September 2026.
	now := time.Date(2026, 9, 26, 9, 0, 0, 0, loc)
	next := svc.NextAt(now)
	if want := time.Date(2026, 9, 27, 8, 0, 0, 0, loc); !next.Equal(want) {
		t.Errorf("next %s, want %s", next, want)
	}
	if got := next.Sub(now); got != 22*time.Hour {
		t.Errorf("wait across the change %s, want 22h", got)
	}
}

func TestDollars(t *testing.T) {
	for micros, want := range map[int64]string{0: "$0.00", 1_234_567: "$1.23", 41_250_000: "$41.25", -5_000_000: "-$5.00", 9_999: "$0.01"} {
		if got := digest.Dollars(micros); got != want {
			t.Errorf("Dollars(%d) = %s, want %s", micros, got, want)
		}
	}
}

// nopStore satisfies New; NextAt never touches it.
type nopStore struct{ store.Store }

// BenchmarkBuild measures a digest over a store holding 10,000 DONE tasks:
// the window is found by reading every DONE, FAILED and IN_PROGRESS task.
func BenchmarkBuild(b *testing.B) {
	st, err := sqlite.Open(b.Context(), sqlite.Config{Path: filepath.Join(b.TempDir(), "factory.db"), Logger: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	var batch []*store.TaskCreate
	for i := range 10_000 {
		batch = append(batch, &store.TaskCreate{ID: fmt.Sprintf("t-%05d", i), Title: "done", InitialState: store.StateDone})
		if len(batch) == 500 {
			if _, err := st.TaskCreate(b.Context(), &store.TaskCreateParams{Tasks: batch, Now: now.Add(-time.Hour)}); err != nil {
				b.Fatal(err)
			}
			batch = nil
		}
	}
	clk := &clock{now: now}
	svc, err := digest.New(digest.Config{Store: st, Clock: clk, Logger: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		d, err := svc.Build(b.Context(), time.Time{}, time.Time{})
		if err != nil || d.Completed != 10_000 {
			b.Fatal(d, err)
		}
	}
}
