package storetest

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (s *suite) testMove(t *testing.T) {
	t.Run("Table", s.testTransitionTable)
	s.runCases(t, []testCase{
		{"UnknownTask", func(t *testing.T, h *harness) {
			_, err := h.s.TaskMove(h.ctx, &store.TaskMoveParams{TaskID: "ghost", To: store.StateReady, Now: h.now()})
			requireIs(t, err, store.ErrNotFound, "move of an unknown task")
		}},
		{"FailedToReadyResetsAttempt", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", MaxAttempts: 2})
			h.fail(h.claimOne("agent-1", "a"), "first", false, noBackoff)
			h.fail(h.claimOne("agent-1", "a"), "second", false, noBackoff)
			if got := h.requireState("a", store.StateFailed); got.Attempt != 2 {
				t.Fatalf("Attempt = %d after two failures", got.Attempt)
			}
			h.clock.Advance(time.Minute)
			h.move("a", store.StateReady)
			got := h.requireState("a", store.StateReady)
			if got.Attempt != 0 || !got.RunAfter.IsZero() {
				t.Fatalf("requeued dead letter: attempt %d, RunAfter %s; want 0 and zero", got.Attempt, fmtTime(got.RunAfter))
			}
			// A fresh budget of attempts: two more failures to dead-letter it.
			if c := h.claimOne("agent-1", "a"); c.Attempt != 1 {
				t.Fatalf("claim after requeue: Attempt = %d, want 1", c.Attempt)
			} else {
				h.fail(c, "third", false, noBackoff)
			}
			h.requireState("a", store.StateReady)
		}},
		{"FailedToReadyClearsRunAfter", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", InitialState: store.StateFailed, RunAfter: h.now().Add(time.Hour)})
			h.move("a", store.StateReady)
			if got := h.requireState("a", store.StateReady); !got.RunAfter.IsZero() {
				t.Fatalf("RunAfter = %s after FAILED -> READY, want zero", fmtTime(got.RunAfter))
			}
			h.claimOne("agent-1", "a")
		}},
		{"EmptyReasonKeepsNote", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", Note: "keep me"})
			h.move("a", store.StateBacklog)
			if got := h.get("a"); got.Note != "keep me" {
				t.Fatalf("Note = %q after a move without reason", got.Note)
			}
		}},
	})
}

// putInState creates task "t" in state from: by initial_state, or by a
// claim for IN_PROGRESS, which cannot be created.
func putInState(h *harness, from store.TaskState) *store.Task {
	h.t.Helper()
	if from == store.StateInProgress {
		h.createReady("t")
		return h.claimOne("agent-1", "t")
	}
	h.create(&store.TaskCreate{ID: "t", InitialState: from, Note: "before"})
	return h.requireState("t", from)
}

// testTransitionTable moves a task along every (from, to) pair of stored
// states, self-moves included: exactly the pairs the table allows succeed.
func (s *suite) testTransitionTable(t *testing.T) {
	for _, from := range store.AllStates {
		for _, to := range store.AllStates {
			t.Run(from.String()+"_to_"+to.String(), func(t *testing.T) {
				t.Parallel()
				h := s.setup(t)
				held := putInState(h, from)
				before := h.get("t")
				h.clock.Advance(time.Minute)
				changes, err := h.s.TaskMove(h.ctx, &store.TaskMoveParams{TaskID: "t", To: to, Reason: "operator says so", Now: h.now()})
				if store.CanOperatorMove(from, to) {
					checkAllowedMove(t, h, held, changes, err, from, to)
				} else {
					checkRefusedMove(t, h, before, changes, err, from, to)
				}
			})
		}
	}
}

func checkAllowedMove(t *testing.T, h *harness, held *store.Task, changes []store.TaskChange, err error, from, to store.TaskState) {
	t.Helper()
	if err != nil {
		t.Fatalf("allowed move failed: %v", err)
	}
	if len(changes) == 0 || changes[0].Task.ID != "t" {
		t.Fatalf("changes %v: the moved task must come first", changeIDs(changes))
	}
	if changes[0].PreviousState != from || changes[0].Task.State != to {
		t.Fatalf("change: %s -> %s, want %s -> %s", changes[0].PreviousState, changes[0].Task.State, from, to)
	}
	got := h.requireState("t", to)
	requireTime(t, "StateChangedAt", got.StateChangedAt, h.now())
	if got.Note != "operator says so" {
		t.Fatalf("Note = %q, want the move's reason", got.Note)
	}
	if d := diffTask(changes[0].Task, got); len(d) > 0 {
		t.Fatalf("move change differs from stored task:\n%s", strings.Join(d, "\n"))
	}
	if to == store.StatePaused && got.PausedByQueue {
		t.Fatal("an operator's pause is marked PausedByQueue")
	}
	if from == store.StateInProgress {
		requireNoLease(t, got)
		r, _ := h.completeItem(store.TaskCompleteItem{Lease: leaseOf(held)})
		requireIs(t, r.Err, store.ErrStaleLease, "completion after the task was moved away")
		_, err := h.s.TaskRenew(h.ctx, &store.TaskRenewParams{Lease: leaseOf(held), LeaseDuration: time.Hour, Now: h.now()})
		requireIs(t, err, store.ErrStaleLease, "renew after the task was moved away")
	}
	if to == store.StateReady {
		h.claimOne("agent-2", "t")
	}
}

func checkRefusedMove(t *testing.T, h *harness, before *store.Task, changes []store.TaskChange, err error, from, to store.TaskState) {
	t.Helper()
	if !errors.Is(err, store.ErrIllegalTransition) {
		t.Fatalf("got %v, want an error matching ErrIllegalTransition", err)
	}
	var te *store.TransitionError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a *store.TransitionError", err, err)
	}
	if te.TaskID != "t" || te.From != from || te.To != to {
		t.Fatalf("TransitionError names %s %s -> %s, want t %s -> %s", te.TaskID, te.From, te.To, from, to)
	}
	want := store.OperatorMoves(from)
	if !slices.Equal(te.Allowed, want) {
		t.Fatalf("Allowed = %v, want %v", te.Allowed, want)
	}
	msg := err.Error()
	for _, st := range want {
		if !strings.Contains(msg, st.String()) {
			t.Fatalf("message %q does not name allowed state %s", msg, st)
		}
	}
	if len(want) == 0 && !strings.Contains(msg, "final") {
		t.Fatalf("message %q does not say %s is final", msg, from)
	}
	if len(changes) != 0 {
		t.Fatalf("refused move reported changes %v", changeIDs(changes))
	}
	h.requireUnchanged(before)
}
