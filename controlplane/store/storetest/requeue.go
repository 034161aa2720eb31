package storetest

import (
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (s *suite) testRequeueStuck(t *testing.T) {
	s.runCases(t, []testCase{
		{"MovesOnlySilentTasks", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "silent-1", Priority: 3},
				&store.TaskCreate{ID: "alive", Priority: 2},
				&store.TaskCreate{ID: "silent-2", Priority: 1},
				&store.TaskCreate{ID: "waiting"},
			)
			start := h.now()
			held := map[string]*store.Task{}
			for _, id := range []string{"silent-1", "alive", "silent-2"} {
				held[id] = h.claimParams(&store.TaskClaimParams{Agent: "agent-" + id, Max: 1, LeaseDuration: time.Hour, Now: start})[0]
			}
			h.clock.Set(start.Add(5 * time.Minute))
			if _, err := h.s.TaskRenew(h.ctx, &store.TaskRenewParams{Lease: leaseOf(held["alive"]), LeaseDuration: time.Hour, Now: h.now()}); err != nil {
				t.Fatal(err)
			}
			requeue := func(dryRun bool) []store.TaskChange {
				t.Helper()
				changes, err := h.s.TaskRequeueStuck(h.ctx, &store.TaskRequeueStuckParams{OlderThan: 10 * time.Minute, DryRun: dryRun, Now: h.now()})
				if err != nil {
					t.Fatalf("TaskRequeueStuck: %v", err)
				}
				return changes
			}

			h.clock.Set(start.Add(10*time.Minute - time.Second))
			if got := requeue(false); len(got) != 0 {
				t.Fatalf("requeued %v before they were silent for 10m", changeIDs(got))
			}

			h.clock.Set(start.Add(10 * time.Minute)) // RenewedAt <= Now-OlderThan
			before := map[string]*store.Task{}
			for id := range held {
				before[id] = h.get(id)
			}
			dry := requeue(true)
			requireSameIDs(t, "dry run", changeIDs(dry), []string{"silent-1", "silent-2"})
			for _, c := range dry {
				if c.PreviousState != store.StateInProgress || c.Task.State != store.StateInProgress {
					t.Fatalf("dry-run change for %s: %s -> %s, want the task as it is", c.Task.ID, c.PreviousState, c.Task.State)
				}
			}
			for _, b := range before {
				h.requireUnchanged(b)
			}

			changes := requeue(false)
			requireSameIDs(t, "requeued", changeIDs(changes), []string{"silent-1", "silent-2"})
			for _, id := range []string{"silent-1", "silent-2"} {
				requireChange(t, changes, id, store.StateInProgress, store.StateReady)
				got := h.requireState(id, store.StateReady)
				requireNoLease(t, got)
				if got.Attempt != 1 {
					t.Fatalf("%s Attempt = %d after requeue, want it kept at 1", id, got.Attempt)
				}
				if got.RunAfter.After(h.now()) {
					t.Fatalf("%s RunAfter = %s: a requeue has no backoff", id, fmtTime(got.RunAfter))
				}
				r, _ := h.completeItem(store.TaskCompleteItem{Lease: leaseOf(held[id])})
				requireIs(t, r.Err, store.ErrStaleLease, "completion by the silent holder")
			}
			h.requireUnchanged(before["alive"])
			h.requireState("waiting", store.StateReady)

			got := h.claim("agent-new", nil, 2)
			requireSameIDs(t, "reclaimed", taskIDs(got), []string{"silent-1", "silent-2"})
			for _, task := range got {
				if task.Attempt != 2 || task.FencingToken <= held[task.ID].FencingToken {
					t.Fatalf("reclaimed %s: attempt %d token %d (old token %d)", task.ID, task.Attempt, task.FencingToken, held[task.ID].FencingToken)
				}
			}
		}},
		{"NothingStuck", func(t *testing.T, h *harness) {
			h.createReady("a")
			changes, err := h.s.TaskRequeueStuck(h.ctx, &store.TaskRequeueStuckParams{OlderThan: time.Nanosecond, Now: h.now().Add(time.Hour)})
			if err != nil || len(changes) != 0 {
				t.Fatalf("requeue with nothing in progress: %v, %v", changeIDs(changes), err)
			}
		}},
	})
}
