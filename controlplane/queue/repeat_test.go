package queue

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

// countingObserver counts finished tasks.
type countingObserver struct {
	mu       sync.Mutex
	finished int
}

func (o *countingObserver) Claimed(string, int) {}
func (o *countingObserver) Finished(string, store.TaskState) {
	o.mu.Lock()
	o.finished++
	o.mu.Unlock()
}
func (o *countingObserver) Rescued(store.TaskState, int) {}

// A completion or failure repeated after its reply was lost answers as the
// first did but is neither announced to watchers nor counted again.
func TestRepeatedCompleteAndFailAreNotAnnouncedAgain(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "factory.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	q, err := New(Config{Store: st, Logger: log, Rand: func() float64 { return 0.5 }})
	if err != nil {
		t.Fatal(err)
	}
	obs := &countingObserver{}
	q.SetObserver(obs)
	if _, err := st.TaskCreate(ctx, &store.TaskCreateParams{Tasks: []*store.TaskCreate{{ID: "done"}, {ID: "failed", MaxAttempts: 3}}}); err != nil {
		t.Fatal(err)
	}
	claimed, err := st.TaskClaim(ctx, &store.TaskClaimParams{Agent: "forge", Max: 2, LeaseDuration: time.Minute, Now: time.Now()})
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claim: %v, %v", claimed, err)
	}
	refs := map[string]store.LeaseRef{}
	for _, c := range claimed {
		refs[c.Task.ID] = store.LeaseRef{TaskID: c.Task.ID, Agent: "forge", FencingToken: c.Task.FencingToken}
	}
	item := store.TaskCompleteItem{Lease: refs["done"]}
	if res, err := q.Complete(ctx, []store.TaskCompleteItem{item}); err != nil || res[0].Err != nil {
		t.Fatalf("complete: %v, %v", res, err)
	}
	if _, err := q.Fail(ctx, refs["failed"], "boom", false); err != nil {
		t.Fatalf("fail: %v", err)
	}

	sub := q.Subscribe(Filter{})
	defer sub.Close()
	res, err := q.Complete(ctx, []store.TaskCompleteItem{item})
	if err != nil || res[0].Err != nil || !res[0].Replay {
		t.Fatalf("repeated complete: %+v, %v", res, err)
	}
	if task, err := q.Fail(ctx, refs["failed"], "boom", false); err != nil || task.State != store.StateReady {
		t.Fatalf("repeated fail: %v, %v", task, err)
	}
	wait, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if events, err := sub.Next(wait, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("repeats announced %d events (%v), want none", len(events), err)
	}
	if obs.finished != 2 {
		t.Fatalf("observer counted %d finished tasks, want the 2 first calls only", obs.finished)
	}
}
