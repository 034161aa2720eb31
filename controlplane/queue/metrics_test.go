package queue_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// recorder is an Observer that remembers what it was told.
type recorder struct {
	mu       sync.Mutex
	claimed  map[string]int
	finished map[string]int // "agent state"
	rescued  map[store.TaskState]int
}

func (r *recorder) Claimed(agent string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.claimed[agent] += n
}

func (r *recorder) Finished(agent string, to store.TaskState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished[agent+" "+to.String()]++
}

func (r *recorder) Rescued(to store.TaskState, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rescued[to] += n
}

func TestObserverHearsClaimsCompletionsFailuresAndRescues(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "q.db"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := &clock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	q, err := queue.New(queue.Config{Store: st, Clock: c, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{claimed: map[string]int{}, finished: map[string]int{}, rescued: map[store.TaskState]int{}}
	q.SetObserver(rec)
	var tasks []*queue.CreateParams
	for range 4 {
		tasks = append(tasks, &queue.CreateParams{Title: "t", MaxAttempts: 3})
	}
	if _, err := q.Create(ctx, tasks); err != nil {
		t.Fatal(err)
	}
	claimed, err := q.Claim(ctx, queue.ClaimParams{Agent: "forge", MaxTasks: 3, LeaseDuration: time.Minute})
	if err != nil || len(claimed) != 3 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if _, err := q.Claim(ctx, queue.ClaimParams{Agent: "anvil", LeaseDuration: time.Minute}); err != nil {
		t.Fatal(err)
	}
	ref := func(tk *store.Task, agent string) store.LeaseRef {
		return store.LeaseRef{TaskID: tk.ID, Agent: agent, FencingToken: tk.FencingToken}
	}
	// One completion to review, one refused (stale token): only the first counts.
	stale := ref(claimed[1], "forge")
	stale.FencingToken++
	if _, err := q.Complete(ctx, []store.TaskCompleteItem{{Lease: ref(claimed[0], "forge"), Review: true}, {Lease: stale}}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Fail(ctx, ref(claimed[1], "forge"), "red", true); err != nil {
		t.Fatal(err)
	}
	c.advance(2 * time.Minute)
	if _, err := q.RescueExpired(ctx); err != nil {
		t.Fatal(err)
	}
	// Nothing left to claim: an empty claim is not counted.
	if _, err := q.Claim(ctx, queue.ClaimParams{Agent: "forge"}); err != nil {
		t.Fatal(err)
	}
	q.SetObserver(nil) // removing the observer is safe mid-flight
	if _, err := q.RescueExpired(ctx); err != nil {
		t.Fatal(err)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.claimed["forge"] != 3 || rec.claimed["anvil"] != 1 || len(rec.claimed) != 2 {
		t.Errorf("claimed %v, want forge 3 and anvil 1", rec.claimed)
	}
	if want := map[string]int{"forge REVIEW": 1, "forge FAILED": 1}; len(rec.finished) != 2 || rec.finished["forge REVIEW"] != 1 || rec.finished["forge FAILED"] != 1 {
		t.Errorf("finished %v, want %v", rec.finished, want)
	}
	// forge's third task and anvil's task expired; both had attempts left.
	if rec.rescued[store.StateReady] != 2 || len(rec.rescued) != 1 {
		t.Errorf("rescued %v, want 2 to READY", rec.rescued)
	}
}
