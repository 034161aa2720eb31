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

// attempts is an AttemptObserver that keeps what it was told.
type attempts struct {
	recorder
	mu    sync.Mutex
	ended []queue.Attempt
}

func (a *attempts) AttemptEnded(at queue.Attempt) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ended = append(a.ended, at)
}

// Each attempt's duration runs from its claim to its completion or
// failure on the queue's clock; a lease that ended otherwise (a rescue)
// leaves nothing behind, and a repeat is not told twice.
func TestAttemptsAreTimedFromClaimToEnd(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "q.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := &clock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	q, err := queue.New(queue.Config{Store: st, Clock: c, Logger: log, Rand: func() float64 { return 0.5 }})
	if err != nil {
		t.Fatal(err)
	}
	obs := &attempts{recorder: recorder{claimed: map[string]int{}, finished: map[string]int{}, rescued: map[store.TaskState]int{}}}
	q.SetObserver(obs)
	if _, err := q.Create(ctx, []*queue.CreateParams{{Title: "build", Role: "builder", MaxAttempts: 3}, {Title: "review", Role: "builder", MaxAttempts: 3},
		{Title: "flaky", Role: "builder", MaxAttempts: 3}, {Title: "lost", Role: "builder", MaxAttempts: 3}}); err != nil {
		t.Fatal(err)
	}
	claim := func() *store.Task {
		t.Helper()
		got, err := q.Claim(ctx, queue.ClaimParams{Agent: "forge", Roles: []string{"builder"}, LeaseDuration: 3 * time.Hour})
		if err != nil || len(got) != 1 {
			t.Fatalf("claim: %v %v", got, err)
		}
		return got[0]
	}
	ref := func(tk *store.Task) store.LeaseRef {
		return store.LeaseRef{TaskID: tk.ID, Agent: "forge", FencingToken: tk.FencingToken}
	}
	build := claim()
	c.advance(90 * time.Second)
	item := store.TaskCompleteItem{Lease: ref(build)}
	if _, err := q.Complete(ctx, []store.TaskCompleteItem{item}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Complete(ctx, []store.TaskCompleteItem{item}); err != nil { // a repeat
		t.Fatal(err)
	}
	review := claim()
	c.advance(2 * time.Hour)
	if _, err := q.Complete(ctx, []store.TaskCompleteItem{{Lease: ref(review), Review: true}}); err != nil {
		t.Fatal(err)
	}
	flaky := claim()
	c.advance(5 * time.Second)
	if _, err := q.Fail(ctx, ref(flaky), "red", false); err != nil {
		t.Fatal(err)
	}
	lost := claim()
	c.advance(4 * time.Hour) // its lease runs out
	if _, err := q.RescueExpired(ctx); err != nil {
		t.Fatal(err)
	}
	// A completion under the rescued lease is refused and not told.
	if res, err := q.Complete(ctx, []store.TaskCompleteItem{{Lease: ref(lost)}}); err != nil || res[0].Err == nil {
		t.Fatalf("stale completion: %v %v", res, err)
	}

	obs.mu.Lock()
	defer obs.mu.Unlock()
	want := []queue.Attempt{
		{Agent: "forge", Role: "builder", To: store.StateDone, Took: 90 * time.Second, Timed: true},
		{Agent: "forge", Role: "builder", To: store.StateReview, Took: 2 * time.Hour, Timed: true},
		{Agent: "forge", Role: "builder", To: store.StateReady, Took: 5 * time.Second, Timed: true},
	}
	if len(obs.ended) != len(want) {
		t.Fatalf("attempts %+v, want %+v", obs.ended, want)
	}
	for i := range want {
		if obs.ended[i] != want[i] {
			t.Errorf("attempt %d = %+v, want %+v", i, obs.ended[i], want[i])
		}
	}
}

// A lease claimed through another replica (here: straight through the
// store) is counted when it ends here, but has no duration.
func TestAnAttemptClaimedElsewhereIsUntimed(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "q.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := &clock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	q, err := queue.New(queue.Config{Store: st, Clock: c, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	obs := &attempts{recorder: recorder{claimed: map[string]int{}, finished: map[string]int{}, rescued: map[store.TaskState]int{}}}
	q.SetObserver(obs)
	if _, err := q.Create(ctx, []*queue.CreateParams{{Title: "t"}}); err != nil {
		t.Fatal(err)
	}
	claimed, err := st.TaskClaim(ctx, &store.TaskClaimParams{Agent: "forge", Max: 1, LeaseDuration: time.Hour, Now: c.Now()})
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	tk := claimed[0].Task
	c.advance(time.Minute)
	if _, err := q.Fail(ctx, store.LeaseRef{TaskID: tk.ID, Agent: "forge", FencingToken: tk.FencingToken}, "boom", true); err != nil {
		t.Fatal(err)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.ended) != 1 || obs.ended[0] != (queue.Attempt{Agent: "forge", To: store.StateFailed}) {
		t.Fatalf("attempts %+v, want one untimed failure", obs.ended)
	}
}
