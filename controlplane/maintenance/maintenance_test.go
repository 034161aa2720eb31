package maintenance_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/maintenance"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

type fixture struct {
	st     store.Store
	q      *queue.Service
	m      *maintenance.Service
	events *recorder
}

type recorder struct {
	mu     sync.Mutex
	events []notify.Event
}

func (r *recorder) Publish(_ context.Context, e notify.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func open(t *testing.T, path string) *fixture {
	t.Helper()
	st, err := sqlite.Open(t.Context(), sqlite.Config{Path: path, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	q, err := queue.New(queue.Config{Store: st, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	m, err := maintenance.New(t.Context(), maintenance.Config{Store: st, Queue: q, Logger: quietLog(), Publisher: rec})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{st: st, q: q, m: m, events: rec}
}

func (f *fixture) create(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if _, err := f.q.Create(t.Context(), []*queue.CreateParams{{ID: id, Title: id}}); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fixture) counts(t *testing.T) map[store.TaskState]int64 {
	t.Helper()
	qs, _, err := f.q.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return qs.Counts
}

func TestStartPausesRefusesClaimsAndEndRestores(t *testing.T) {
	f := open(t, filepath.Join(t.TempDir(), "factory.db"))
	ctx := t.Context()
	f.create(t, "a", "b", "c")
	held, err := f.q.Claim(ctx, queue.ClaimParams{Agent: "forge"})
	if err != nil || len(held) != 1 {
		t.Fatalf("claim before maintenance: %v %v", held, err)
	}

	res, err := f.m.Start(ctx, maintenance.StartParams{Reason: "disk swap", StartedBy: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.State.Active || !res.State.PausedQueue || res.PausedTasks != 2 {
		t.Errorf("start: %+v", res)
	}
	if len(res.StillRunning) != 1 || res.StillRunning[0].ID != held[0].ID {
		t.Errorf("still running: %v, want the held task", res.StillRunning)
	}
	if c := f.counts(t); c[store.StatePaused] != 2 || c[store.StateReady] != 0 {
		t.Errorf("after start: %v", c)
	}
	_, err = f.q.Claim(ctx, queue.ClaimParams{Agent: "hammer"})
	if !errors.Is(err, maintenance.ErrInMaintenance) || !strings.Contains(err.Error(), "maintenance since") || !strings.Contains(err.Error(), "disk swap") {
		t.Errorf("claim in maintenance: %v", err)
	}
	// The task in flight may still finish.
	if _, err := f.q.Complete(ctx, []store.TaskCompleteItem{{Lease: store.LeaseRef{TaskID: held[0].ID, Agent: "forge", FencingToken: held[0].FencingToken}}}); err != nil {
		t.Fatal(err)
	}

	end, err := f.m.End(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if !end.ResumedQueue || end.ResumedTasks != 2 || end.Ended.Reason != "disk swap" {
		t.Errorf("end: %+v", end)
	}
	if c := f.counts(t); c[store.StateReady] != 2 || c[store.StatePaused] != 0 {
		t.Errorf("after end: %v", c)
	}
	if got, err := f.q.Claim(ctx, queue.ClaimParams{Agent: "hammer"}); err != nil || len(got) != 1 {
		t.Errorf("claim after end: %v %v", got, err)
	}
	if len(f.events.events) != 2 || f.events.events[0].Kind != notify.KindMaintenance {
		t.Errorf("events: %+v", f.events.events)
	}
	// Ending again changes nothing.
	if again, err := f.m.End(ctx, "ops"); err != nil || again.Ended.Active || again.ResumedQueue {
		t.Errorf("second end: %+v %v", again, err)
	}
}

func TestEndLeavesAQueuePausedBeforeTheStartPaused(t *testing.T) {
	f := open(t, filepath.Join(t.TempDir(), "factory.db"))
	ctx := t.Context()
	f.create(t, "a")
	if _, err := f.q.Pause(ctx, "provider outage"); err != nil {
		t.Fatal(err)
	}
	res, err := f.m.Start(ctx, maintenance.StartParams{Reason: "upgrade", StartedBy: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if res.State.PausedQueue || res.PausedTasks != 0 {
		t.Errorf("start on a paused queue: %+v", res)
	}
	end, err := f.m.End(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if end.ResumedQueue {
		t.Error("the end resumed a queue the start had not paused")
	}
	qs, _, _ := f.q.Stats(ctx)
	if !qs.Paused || qs.PauseReason != "provider outage" || qs.Counts[store.StatePaused] != 1 {
		t.Errorf("queue after end: paused=%v reason=%q counts=%v", qs.Paused, qs.PauseReason, qs.Counts)
	}
}

func TestARestartStaysInMaintenance(t *testing.T) {
	path := filepath.Join(t.TempDir(), "factory.db")
	f := open(t, path)
	f.create(t, "a")
	if _, err := f.m.Start(t.Context(), maintenance.StartParams{Reason: "restart test", StartedBy: "ops"}); err != nil {
		t.Fatal(err)
	}
	// An operator resumes by hand, then the control plane restarts.
	if _, err := f.q.Resume(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.st.Close()

	g := open(t, path)
	if c := g.counts(t); c[store.StatePaused] != 1 {
		t.Errorf("after restart the queue is not paused again: %v", c)
	}
	if _, err := g.q.Claim(t.Context(), queue.ClaimParams{Agent: "forge"}); !errors.Is(err, maintenance.ErrInMaintenance) {
		t.Errorf("claim after restart: %v", err)
	}
	st, err := g.m.Get(t.Context())
	if err != nil || !st.State.Active || st.State.Reason != "restart test" {
		t.Errorf("get after restart: %+v %v", st, err)
	}
	if end, err := g.m.End(t.Context(), "ops"); err != nil || !end.ResumedQueue || end.ResumedTasks != 1 {
		t.Errorf("end after restart: %+v %v", end, err)
	}
}

func TestStartWaitsForTasksInFlight(t *testing.T) {
	f := open(t, filepath.Join(t.TempDir(), "factory.db"))
	ctx := t.Context()
	f.create(t, "a")
	held, err := f.q.Claim(ctx, queue.ClaimParams{Agent: "forge"})
	if err != nil || len(held) != 1 {
		t.Fatal(held, err)
	}
	progress := make(chan int64, 10)
	done := make(chan *maintenance.StartResult, 1)
	go func() {
		res, err := f.m.Start(ctx, maintenance.StartParams{Reason: "drain", StartedBy: "ops", Wait: time.Minute,
			Progress: func(n int64) { progress <- n }})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	if n := <-progress; n != 1 {
		t.Fatalf("first progress: %d in flight, want 1", n)
	}
	if _, err := f.q.Complete(ctx, []store.TaskCompleteItem{{Lease: store.LeaseRef{TaskID: held[0].ID, Agent: "forge", FencingToken: held[0].FencingToken}}}); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res == nil || len(res.StillRunning) != 0 {
		t.Errorf("start after the last task finished: %+v", res)
	}
}

func TestStartNeedsAReason(t *testing.T) {
	f := open(t, filepath.Join(t.TempDir(), "factory.db"))
	if _, err := f.m.Start(t.Context(), maintenance.StartParams{}); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("start without a reason: %v", err)
	}
	if st, _ := f.m.Get(t.Context()); st.State.Active {
		t.Error("a refused start changed the switch")
	}
}
