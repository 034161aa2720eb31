package storetest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// claimLog records every claim the workers saw, to check exactly-once
// delivery after the fact instead of trusting the store's final state.
type claimLog struct {
	mu     sync.Mutex
	claims map[string][]*store.Task // task id -> each claim of it, in order
}

func (l *claimLog) add(task *store.Task) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.claims[task.ID] = append(l.claims[task.ID], task)
}

// raceEnabled is set by race.go in -race builds.
var raceEnabled bool

// loadTasks scales a load test's task count: full size normally, a fifth
// under -race or -short, where the same 32 workers still contend for every
// claim but CI does not wait minutes for the instrumented database.
func loadTasks(n int) int {
	if raceEnabled || testing.Short() {
		return n / 5
	}
	return n
}

func (s *suite) testConcurrency(t *testing.T) {
	s.runCases(t, []testCase{
		{"ClaimOneAtATime", func(t *testing.T, h *harness) {
			runClaimers(t, h, claimRun{tasks: loadTasks(2000), workers: 32, max: 1})
		}},
		{"ClaimBatches", func(t *testing.T, h *harness) {
			runClaimers(t, h, claimRun{tasks: loadTasks(2000), workers: 32, max: 8})
		}},
		{"FailOnceThenComplete", func(t *testing.T, h *harness) {
			runClaimers(t, h, claimRun{tasks: loadTasks(500), workers: 32, max: 4, failFirst: true})
		}},
		{"DependentPromotedOnce", func(t *testing.T, h *harness) {
			const deps, dependents = 16, 4
			var tasks []*store.TaskCreate
			var depIDs []string
			for i := range deps {
				id := fmt.Sprintf("dep-%02d", i)
				depIDs = append(depIDs, id)
				tasks = append(tasks, &store.TaskCreate{ID: id})
			}
			for i := range dependents {
				tasks = append(tasks, &store.TaskCreate{ID: fmt.Sprintf("after-%d", i), DependsOn: depIDs})
			}
			h.create(tasks...)
			now := h.now()

			// Every dependency is completed in its own transaction at the
			// same moment; each must see the others' writes, or the
			// dependents are never promoted (or promoted twice).
			var mu sync.Mutex
			promotions := map[string]int{}
			var wg sync.WaitGroup
			for w := range deps {
				wg.Go(func() {
					agent := fmt.Sprintf("agent-%02d", w)
					changes, err := h.s.TaskClaim(h.ctx, &store.TaskClaimParams{Agent: agent, Max: 1, LeaseDuration: time.Hour, Now: now})
					if err != nil || len(changes) != 1 {
						t.Errorf("%s: claim %v, %v", agent, changeIDs(changes), err)
						return
					}
					res, err := h.s.TaskComplete(h.ctx, &store.TaskCompleteParams{Items: []store.TaskCompleteItem{{Lease: leaseOf(changes[0].Task)}}, Now: now})
					if err != nil || res.Results[0].Err != nil {
						t.Errorf("%s: complete: %v", agent, firstErr(err, res))
						return
					}
					mu.Lock()
					defer mu.Unlock()
					for _, c := range res.Changes {
						if c.PreviousState == store.StateBacklog {
							promotions[c.Task.ID]++
						}
					}
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			for i := range dependents {
				id := fmt.Sprintf("after-%d", i)
				h.requireState(id, store.StateReady)
				if promotions[id] != 1 {
					t.Fatalf("%s reported promoted %d times, want once", id, promotions[id])
				}
			}
		}},
	})
}

type claimRun struct {
	tasks, workers, max int
	// failFirst fails every task's first attempt as retryable, so each
	// task is claimed twice and its lease changes hands under load.
	failFirst bool
}

func firstErr(err error, res *store.TaskCompleteResult) error {
	if err != nil {
		return err
	}
	for _, r := range res.Results {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}

// runClaimers lets workers race to claim and finish every task. A worker
// stops at its first empty claim: a task only becomes READY again through
// a worker's own failure report, after which that worker claims again, so
// no task can be stranded.
func runClaimers(t *testing.T, h *harness, r claimRun) {
	tasks := make([]*store.TaskCreate, r.tasks)
	for i := range tasks {
		tasks[i] = &store.TaskCreate{ID: fmt.Sprintf("task-%05d", i), Priority: int32(i % 3), MaxAttempts: 3}
	}
	h.create(tasks...)
	now := h.now()
	log := &claimLog{claims: map[string][]*store.Task{}}
	wantClaims := 1
	if r.failFirst {
		wantClaims = 2
	}
	// A driver that hands tasks out again and again would otherwise keep
	// the workers busy until the test binary's timeout.
	var claimed atomic.Int64
	claimLimit := int64(2 * wantClaims * r.tasks)

	var wg sync.WaitGroup
	for w := range r.workers {
		agent := fmt.Sprintf("agent-%02d", w)
		wg.Go(func() {
			for !t.Failed() {
				changes, err := h.s.TaskClaim(h.ctx, &store.TaskClaimParams{Agent: agent, Max: r.max, LeaseDuration: time.Hour, Now: now})
				if err != nil {
					t.Errorf("%s: claim: %v", agent, err)
					return
				}
				if len(changes) == 0 {
					return
				}
				if n := claimed.Add(int64(len(changes))); n > claimLimit {
					t.Errorf("%d claims for %d tasks: tasks are being handed out more than %d times", n, r.tasks, wantClaims)
					return
				}
				if len(changes) > r.max {
					t.Errorf("%s: claimed %d tasks with Max %d", agent, len(changes), r.max)
					return
				}
				var done []store.TaskCompleteItem
				for _, c := range changes {
					task := c.Task
					if c.PreviousState != store.StateReady || task.State != store.StateInProgress || task.LeaseHolder != agent {
						t.Errorf("%s: claim of %s: %s -> %s held by %q", agent, task.ID, c.PreviousState, task.State, task.LeaseHolder)
						return
					}
					log.add(task)
					if r.failFirst && task.Attempt == 1 {
						if _, err := h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: leaseOf(task), Error: "first try", Backoff: noBackoff, Now: now}); err != nil {
							t.Errorf("%s: fail %s: %v", agent, task.ID, err)
							return
						}
						continue
					}
					done = append(done, store.TaskCompleteItem{Lease: leaseOf(task)})
				}
				if len(done) == 0 {
					continue
				}
				res, err := h.s.TaskComplete(h.ctx, &store.TaskCompleteParams{Items: done, Now: now})
				if err != nil {
					t.Errorf("%s: complete: %v", agent, err)
					return
				}
				for i, item := range res.Results {
					if item.Err != nil {
						t.Errorf("%s: complete %s: %v", agent, done[i].Lease.TaskID, item.Err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	for _, tc := range tasks {
		claims := log.claims[tc.ID]
		if len(claims) != wantClaims {
			holders := make([]string, len(claims))
			for i, c := range claims {
				holders[i] = fmt.Sprintf("%s@%d", c.LeaseHolder, c.FencingToken)
			}
			t.Fatalf("%s claimed %d times (%v), want %d", tc.ID, len(claims), holders, wantClaims)
		}
		for i, c := range claims {
			if c.Attempt != int32(i+1) {
				t.Fatalf("%s claim %d has Attempt %d", tc.ID, i+1, c.Attempt)
			}
			if i > 0 && c.FencingToken <= claims[i-1].FencingToken {
				t.Fatalf("%s re-claimed with token %d after %d", tc.ID, c.FencingToken, claims[i-1].FencingToken)
			}
		}
	}
	if len(log.claims) != r.tasks {
		t.Fatalf("claimed %d distinct tasks, want %d", len(log.claims), r.tasks)
	}

	st := h.stats()
	if st.Counts[store.StateDone] != int64(r.tasks) {
		t.Fatalf("%d DONE at the end, want %d (counts %v)", st.Counts[store.StateDone], r.tasks, st.Counts)
	}
	// Read everything back, to catch a count that disagrees with the rows.
	var seen []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > r.tasks/500+2 {
			t.Fatalf("listing %d tasks 500 at a time did not end", r.tasks)
		}
		res := h.list(&store.TaskListParams{States: []store.TaskState{store.StateDone}, Limit: 500, Cursor: cursor})
		seen = append(seen, taskIDs(res.Tasks)...)
		if res.NextCursor == "" {
			break
		}
		cursor = res.NextCursor
	}
	slices.Sort(seen)
	if len(slices.Compact(seen)) != r.tasks {
		t.Fatalf("listed %d distinct DONE tasks, want %d", len(seen), r.tasks)
	}
}
