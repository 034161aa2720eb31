package storetest

import (
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (s *suite) testDependencies(t *testing.T) {
	s.runCases(t, []testCase{
		{"BacklogUntilDependencyDone", func(t *testing.T, h *harness) {
			changes := h.create(
				&store.TaskCreate{ID: "a"},
				&store.TaskCreate{ID: "b", DependsOn: []string{"a"}, Priority: 10},
			)
			if changes[1].Task.State != store.StateBacklog {
				t.Fatalf("dependent created %s, want BACKLOG", changes[1].Task.State)
			}
			a := h.claimOne("agent-1", "a")
			h.requireNoClaim("agent-2", nil)
			h.clock.Advance(30 * time.Second)
			done := h.complete(a)
			requireChange(t, done, "a", store.StateInProgress, store.StateDone)
			promoted := requireChange(t, done, "b", store.StateBacklog, store.StateReady)
			_, ai, _ := findChange(done, "a")
			_, bi, _ := findChange(done, "b")
			if ai > bi {
				t.Fatalf("changes %v: the completed task must come before the promoted one", changeIDs(done))
			}
			requireTime(t, "promoted StateChangedAt", promoted.Task.StateChangedAt, h.now())
			h.requireState("b", store.StateReady)
			h.claimOne("agent-2", "b")
		}},
		{"AllDependenciesMustBeDone", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "a", Priority: 2},
				&store.TaskCreate{ID: "b", Priority: 1},
				&store.TaskCreate{ID: "c", DependsOn: []string{"a", "b"}},
			)
			changes := h.claimAndComplete("a")
			if _, _, ok := findChange(changes, "c"); ok {
				t.Fatalf("c changed with one of two dependencies done: %v", changeIDs(changes))
			}
			h.requireState("c", store.StateBacklog)
			changes = h.claimAndComplete("b")
			requireChange(t, changes, "c", store.StateBacklog, store.StateReady)
			h.requireState("c", store.StateReady)
		}},
		{"ReviewDoesNotPromote", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "a"},
				&store.TaskCreate{ID: "b", DependsOn: []string{"a"}},
			)
			a := h.claimOne("agent-1", "a")
			r, changes := h.completeItem(store.TaskCompleteItem{Lease: leaseOf(a), Review: true})
			if r.Err != nil {
				t.Fatalf("complete to review: %v", r.Err)
			}
			requireIDs(t, "changes of a completion to REVIEW", changeIDs(changes), []string{"a"})
			h.requireState("a", store.StateReview)
			h.requireState("b", store.StateBacklog)

			h.clock.Advance(time.Minute)
			changes = h.move("a", store.StateDone)
			if len(changes) == 0 || changes[0].Task.ID != "a" {
				t.Fatalf("move changes %v: the moved task must come first", changeIDs(changes))
			}
			requireChange(t, changes, "a", store.StateReview, store.StateDone)
			requireChange(t, changes, "b", store.StateBacklog, store.StateReady)
			h.requireState("b", store.StateReady)
		}},
		{"WithinOneBatch", func(t *testing.T, h *harness) {
			changes := h.create(
				&store.TaskCreate{ID: "a", Priority: 3},
				&store.TaskCreate{ID: "b", DependsOn: []string{"a"}, Priority: 2},
				&store.TaskCreate{ID: "c", DependsOn: []string{"a", "b"}, Priority: 1},
				&store.TaskCreate{ID: "d", InitialState: store.StateDone},
				&store.TaskCreate{ID: "e", DependsOn: []string{"d"}},
			)
			want := []store.TaskState{store.StateReady, store.StateBacklog, store.StateBacklog, store.StateDone, store.StateReady}
			for i, c := range changes {
				if c.Task.State != want[i] {
					t.Fatalf("%s created %s, want %s", c.Task.ID, c.Task.State, want[i])
				}
				h.requireState(c.Task.ID, want[i])
			}
			h.claimAndComplete("a")
			h.requireState("b", store.StateReady)
			h.requireState("c", store.StateBacklog)
			h.claimAndComplete("b")
			h.requireState("c", store.StateReady)
		}},
		{"PromotesOneLevel", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "a"},
				&store.TaskCreate{ID: "b", DependsOn: []string{"a"}},
				&store.TaskCreate{ID: "c", DependsOn: []string{"b"}},
			)
			changes := h.claimAndComplete("a")
			requireSameIDs(t, "changes", changeIDs(changes), []string{"a", "b"})
			h.requireState("c", store.StateBacklog)
		}},
		{"FailedDependencyBlocks", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "a"},
				&store.TaskCreate{ID: "b", DependsOn: []string{"a"}},
			)
			changes := h.fail(h.claimOne("agent-1", "a"), "broken", true, noBackoff)
			requireIDs(t, "changes of a permanent failure", changeIDs(changes), []string{"a"})
			h.requireState("a", store.StateFailed)
			h.requireState("b", store.StateBacklog)
		}},
		{"DependencyAlreadyDone", func(t *testing.T, h *harness) {
			h.createReady("a")
			h.claimAndComplete("a")
			h.clock.Advance(time.Minute)
			changes := h.create(&store.TaskCreate{ID: "b", DependsOn: []string{"a"}})
			if changes[0].Task.State != store.StateReady {
				t.Fatalf("task whose only dependency is DONE created %s, want READY", changes[0].Task.State)
			}
			h.requireState("b", store.StateReady)
		}},
		{"ExplicitBacklogIsNotPromotedWithoutDependencies", func(t *testing.T, h *harness) {
			// Promotion is triggered by a dependency reaching DONE; a
			// parked task with no dependencies waits for an operator.
			h.create(
				&store.TaskCreate{ID: "parked", InitialState: store.StateBacklog},
				&store.TaskCreate{ID: "other"},
			)
			changes := h.claimAndComplete("other")
			requireIDs(t, "changes", changeIDs(changes), []string{"other"})
			h.requireState("parked", store.StateBacklog)
		}},
	})
}
