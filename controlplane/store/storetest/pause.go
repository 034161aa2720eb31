package storetest

import (
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (s *suite) testPause(t *testing.T) {
	s.runCases(t, []testCase{
		{"PauseAndResume", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "held", Priority: 9},
				&store.TaskCreate{ID: "r1"},
				&store.TaskCreate{ID: "r2"},
				&store.TaskCreate{ID: "r3", RunAfter: h.now().Add(time.Hour)},
				&store.TaskCreate{ID: "parked", InitialState: store.StateBacklog},
				&store.TaskCreate{ID: "finished", InitialState: store.StateDone},
			)
			h.claimOne("agent-1", "held")
			h.clock.Advance(time.Minute)

			changes := h.pause("emergency stop: spend over $100")
			requireSameIDs(t, "paused", changeIDs(changes), []string{"r1", "r2", "r3"})
			for _, c := range changes {
				if c.PreviousState != store.StateReady || c.Task.State != store.StatePaused || !c.Task.PausedByQueue {
					t.Fatalf("pause change for %s: %s -> %s, by queue %v", c.Task.ID, c.PreviousState, c.Task.State, c.Task.PausedByQueue)
				}
			}
			for _, id := range []string{"r1", "r2", "r3"} {
				if got := h.requireState(id, store.StatePaused); !got.PausedByQueue {
					t.Fatalf("%s paused by the queue lacks PausedByQueue", id)
				}
			}
			h.requireState("held", store.StateInProgress)
			h.requireState("parked", store.StateBacklog)
			h.requireState("finished", store.StateDone)
			st := h.stats()
			if !st.Paused || st.PauseReason != "emergency stop: spend over $100" || st.Counts[store.StatePaused] != 3 || st.Counts[store.StateReady] != 0 {
				t.Fatalf("stats while paused: paused %v reason %q PAUSED %d READY %d",
					st.Paused, st.PauseReason, st.Counts[store.StatePaused], st.Counts[store.StateReady])
			}
			h.requireNoClaim("agent-2", nil)

			h.clock.Advance(time.Minute)
			changes = h.resume()
			requireSameIDs(t, "resumed", changeIDs(changes), []string{"r1", "r2", "r3"})
			for _, c := range changes {
				if c.PreviousState != store.StatePaused || c.Task.State != store.StateReady || c.Task.PausedByQueue {
					t.Fatalf("resume change for %s: %s -> %s, by queue %v", c.Task.ID, c.PreviousState, c.Task.State, c.Task.PausedByQueue)
				}
			}
			// The backoff survives the pause.
			if got := h.requireState("r3", store.StateReady); !got.RunAfter.Equal(baseTime.Add(time.Hour)) {
				t.Fatalf("r3 RunAfter = %s after resume", fmtTime(got.RunAfter))
			}
			st = h.stats()
			if st.Paused || st.PauseReason != "" || st.Counts[store.StateReady] != 3 || st.Counts[store.StatePaused] != 0 {
				t.Fatalf("stats after resume: paused %v reason %q READY %d PAUSED %d",
					st.Paused, st.PauseReason, st.Counts[store.StateReady], st.Counts[store.StatePaused])
			}
			got := h.claim("agent-2", nil, 10)
			requireSameIDs(t, "claimed after resume", taskIDs(got), []string{"r1", "r2"})
		}},
		{"PauseTwiceKeepsFirstReason", func(t *testing.T, h *harness) {
			h.createReady("a")
			h.pause("first")
			if got := h.pause("second"); len(got) != 0 {
				t.Fatalf("second pause moved %v", changeIDs(got))
			}
			if st := h.stats(); st.PauseReason != "first" {
				t.Fatalf("PauseReason = %q, want the first", st.PauseReason)
			}
			h.resume()
			if got := h.resume(); len(got) != 0 {
				t.Fatalf("resuming a running queue moved %v", changeIDs(got))
			}
			h.requireState("a", store.StateReady)
		}},
		{"CreatedWhilePaused", func(t *testing.T, h *harness) {
			h.pause("maintenance")
			changes := h.create(
				&store.TaskCreate{ID: "default"},
				&store.TaskCreate{ID: "ready", InitialState: store.StateReady},
				&store.TaskCreate{ID: "backlog", InitialState: store.StateBacklog},
				&store.TaskCreate{ID: "operator-paused", InitialState: store.StatePaused},
				&store.TaskCreate{ID: "dependent", DependsOn: []string{"backlog"}},
			)
			want := map[string]struct {
				state   store.TaskState
				byQueue bool
			}{
				"default":         {store.StatePaused, true},
				"ready":           {store.StatePaused, true},
				"backlog":         {store.StateBacklog, false},
				"operator-paused": {store.StatePaused, false},
				"dependent":       {store.StateBacklog, false},
			}
			for _, c := range changes {
				w := want[c.Task.ID]
				got := h.get(c.Task.ID)
				if c.Task.State != w.state || got.State != w.state || got.PausedByQueue != w.byQueue {
					t.Fatalf("%s created while paused: change %s, stored %s by queue %v; want %s by queue %v",
						c.Task.ID, c.Task.State, got.State, got.PausedByQueue, w.state, w.byQueue)
				}
			}
			h.requireNoClaim("agent-1", nil)
			requireSameIDs(t, "resumed", changeIDs(h.resume()), []string{"default", "ready"})
			h.requireState("operator-paused", store.StatePaused)
		}},
		{"PromotedWhilePaused", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "a"},
				&store.TaskCreate{ID: "b", DependsOn: []string{"a"}},
			)
			a := h.claimOne("agent-1", "a")
			h.pause("maintenance")
			changes := h.complete(a)
			c := requireChange(t, changes, "b", store.StateBacklog, store.StatePaused)
			if !c.Task.PausedByQueue {
				t.Fatal("dependent promoted into a paused queue lacks PausedByQueue")
			}
			h.requireNoClaim("agent-1", nil)
			requireSameIDs(t, "resumed", changeIDs(h.resume()), []string{"b"})
			h.claimOne("agent-1", "b")
		}},
		{"PromotedByMoveWhilePaused", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "a", InitialState: store.StateReview},
				&store.TaskCreate{ID: "b", DependsOn: []string{"a"}},
			)
			h.pause("maintenance")
			changes := h.move("a", store.StateDone)
			c := requireChange(t, changes, "b", store.StateBacklog, store.StatePaused)
			if !c.Task.PausedByQueue {
				t.Fatal("dependent promoted into a paused queue lacks PausedByQueue")
			}
			requireSameIDs(t, "resumed", changeIDs(h.resume()), []string{"b"})
		}},
		{"RetriedWhilePaused", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "failed", Priority: 3},
				&store.TaskCreate{ID: "expired", Priority: 2},
				&store.TaskCreate{ID: "stuck", Priority: 1},
			)
			failed := h.claimOne("agent-1", "failed")
			expired := h.claimOne("agent-2", "expired")
			stuck := h.claimParams(&store.TaskClaimParams{Agent: "agent-3", Max: 1, LeaseDuration: time.Hour, Now: h.now()})[0]
			h.pause("maintenance")

			h.clock.Advance(10 * time.Second)
			changes := h.fail(failed, "flaky", false, func(int32) time.Duration { return time.Minute })
			c := requireChange(t, changes, "failed", store.StateInProgress, store.StatePaused)
			if !c.Task.PausedByQueue {
				t.Fatal("task retried into a paused queue lacks PausedByQueue")
			}
			requireTime(t, "RunAfter", h.get("failed").RunAfter, h.now().Add(time.Minute))

			h.clock.Set(expired.LeaseExpiresAt)
			changes = h.rescue(noBackoff)
			c = requireChange(t, changes, "expired", store.StateInProgress, store.StatePaused)
			if !c.Task.PausedByQueue {
				t.Fatal("task rescued into a paused queue lacks PausedByQueue")
			}

			h.clock.Advance(time.Minute)
			changes, err := h.s.TaskRequeueStuck(h.ctx, &store.TaskRequeueStuckParams{OlderThan: time.Minute, Now: h.now()})
			if err != nil {
				t.Fatal(err)
			}
			c = requireChange(t, changes, stuck.ID, store.StateInProgress, store.StatePaused)
			if !c.Task.PausedByQueue {
				t.Fatal("task requeued into a paused queue lacks PausedByQueue")
			}

			requireSameIDs(t, "resumed", changeIDs(h.resume()), []string{"failed", "expired", "stuck"})
			for _, id := range []string{"failed", "expired", "stuck"} {
				h.requireState(id, store.StateReady)
			}
		}},
		{"OperatorPauseOutlivesResume", func(t *testing.T, h *harness) {
			h.createReady("by-operator", "by-queue", "moved-during-pause")
			h.create(&store.TaskCreate{ID: "backlog", InitialState: store.StateBacklog})
			h.move("by-operator", store.StatePaused)

			changes := h.pause("maintenance")
			requireSameIDs(t, "paused", changeIDs(changes), []string{"by-queue", "moved-during-pause"})
			if got := h.get("by-operator"); got.PausedByQueue {
				t.Fatal("the queue pause took over an operator's pause")
			}
			// An operator pausing a task during the pause owns it: it
			// was BACKLOG, so resume has nothing of the queue's to undo.
			h.move("backlog", store.StatePaused)
			// Sending a queue-paused task back to BACKLOG and pausing it
			// again makes it the operator's.
			h.move("moved-during-pause", store.StateBacklog)
			h.move("moved-during-pause", store.StatePaused)

			requireSameIDs(t, "resumed", changeIDs(h.resume()), []string{"by-queue"})
			for _, id := range []string{"by-operator", "backlog", "moved-during-pause"} {
				if got := h.requireState(id, store.StatePaused); got.PausedByQueue {
					t.Fatalf("%s is marked PausedByQueue", id)
				}
			}
			h.requireState("by-queue", store.StateReady)
		}},
	})
}
