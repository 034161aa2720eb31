package storetest

import (
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (s *suite) testNextRunAfter(t *testing.T) {
	next := func(h *harness, now time.Time) (time.Time, bool) {
		h.t.Helper()
		at, ok, err := h.s.TaskNextRunAfter(h.ctx, now)
		if err != nil {
			h.t.Fatalf("TaskNextRunAfter: %v", err)
		}
		return at, ok
	}
	s.runCases(t, []testCase{
		{"NoneWhenEmpty", func(t *testing.T, h *harness) {
			if at, ok := next(h, h.now()); ok {
				t.Fatalf("empty store: next run after %s", fmtTime(at))
			}
		}},
		{"EarliestFutureReady", func(t *testing.T, h *harness) {
			t0 := h.now()
			h.create(
				&store.TaskCreate{ID: "due-now"},
				&store.TaskCreate{ID: "past", RunAfter: t0.Add(-time.Minute)},
				&store.TaskCreate{ID: "in-5m", RunAfter: t0.Add(5 * time.Minute)},
				&store.TaskCreate{ID: "in-2m", RunAfter: t0.Add(2 * time.Minute)},
				// Only READY tasks wake a claimer.
				&store.TaskCreate{ID: "backlog-1m", RunAfter: t0.Add(time.Minute), InitialState: store.StateBacklog},
				&store.TaskCreate{ID: "paused-30s", RunAfter: t0.Add(30 * time.Second), InitialState: store.StatePaused},
				&store.TaskCreate{ID: "failed-10s", RunAfter: t0.Add(10 * time.Second), InitialState: store.StateFailed},
			)
			if at, ok := next(h, t0); !ok || !at.Equal(t0.Add(2*time.Minute)) {
				t.Fatalf("at t0: %s %v, want t0+2m", fmtTime(at), ok)
			}
			// "Later than Now": a task due exactly now is not in the future.
			if at, ok := next(h, t0.Add(2*time.Minute)); !ok || !at.Equal(t0.Add(5*time.Minute)) {
				t.Fatalf("at t0+2m: %s %v, want t0+5m", fmtTime(at), ok)
			}
			if at, ok := next(h, t0.Add(5*time.Minute)); ok {
				t.Fatalf("at t0+5m: %s, want none", fmtTime(at))
			}
		}},
		{"RetryBackoff", func(t *testing.T, h *harness) {
			h.createReady("a")
			h.fail(h.claimOne("agent-1", "a"), "flaky", false, func(int32) time.Duration { return 45 * time.Second })
			if at, ok := next(h, h.now()); !ok || !at.Equal(h.now().Add(45*time.Second)) {
				t.Fatalf("after a retryable failure: %s %v, want now+45s", fmtTime(at), ok)
			}
			// Claimed, the task no longer wakes anyone.
			h.clock.Advance(45 * time.Second)
			h.claimOne("agent-1", "a")
			if at, ok := next(h, baseTime); ok {
				t.Fatalf("IN_PROGRESS task reported as next run after %s", fmtTime(at))
			}
		}},
	})
}

func (s *suite) testSetPriority(t *testing.T) {
	s.runCases(t, []testCase{
		{"ChangesClaimOrder", func(t *testing.T, h *harness) {
			h.createReady("a", "b", "c")
			task, err := h.s.TaskSetPriority(h.ctx, &store.TaskSetPriorityParams{TaskID: "c", Priority: 5, Now: h.now()})
			if err != nil {
				t.Fatal(err)
			}
			if task.ID != "c" || task.Priority != 5 {
				t.Fatalf("returned task %s priority %d", task.ID, task.Priority)
			}
			if got := h.get("c"); got.Priority != 5 {
				t.Fatalf("stored priority %d", got.Priority)
			}
			if _, err := h.s.TaskSetPriority(h.ctx, &store.TaskSetPriorityParams{TaskID: "a", Priority: -1, Now: h.now()}); err != nil {
				t.Fatal(err)
			}
			h.claimOne("agent-1", "c")
			h.claimOne("agent-1", "b")
			h.claimOne("agent-1", "a")
		}},
		{"UnknownTask", func(t *testing.T, h *harness) {
			_, err := h.s.TaskSetPriority(h.ctx, &store.TaskSetPriorityParams{TaskID: "ghost", Priority: 1, Now: h.now()})
			requireIs(t, err, store.ErrNotFound, "priority of an unknown task")
		}},
	})
}
