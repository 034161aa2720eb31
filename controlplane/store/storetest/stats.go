package storetest

import (
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (s *suite) testStats(t *testing.T) {
	s.runCases(t, []testCase{
		{"EmptyStore", func(t *testing.T, h *harness) {
			st := h.stats()
			for _, state := range store.AllStates {
				n, ok := st.Counts[state]
				if !ok || n != 0 {
					t.Fatalf("Counts[%s] = %d (present %v), want a present zero", state, n, ok)
				}
			}
			if !st.OldestReadySince.IsZero() || !st.OldestClaimedAt.IsZero() || st.Retrying != 0 || st.Paused || st.PauseReason != "" {
				t.Fatalf("empty store stats: %+v", st)
			}
		}},
		{"Shape", func(t *testing.T, h *harness) {
			t0 := h.now()
			at := func(d time.Duration) { h.clock.Set(t0.Add(d)) }
			h.create(
				&store.TaskCreate{ID: "z", Priority: 8},
				&store.TaskCreate{ID: "x", Priority: 5, MaxAttempts: 5},
				&store.TaskCreate{ID: "b", InitialState: store.StateBacklog},
				&store.TaskCreate{ID: "r", InitialState: store.StateReview},
				&store.TaskCreate{ID: "d", InitialState: store.StateDone},
				&store.TaskCreate{ID: "f", InitialState: store.StateFailed},
				&store.TaskCreate{ID: "p", InitialState: store.StatePaused},
			)
			hold := func(id string) *store.Task {
				t.Helper()
				got := h.claimParams(&store.TaskClaimParams{Agent: "agent-" + id, Max: 1, LeaseDuration: time.Hour, Now: h.now()})
				if len(got) != 1 || got[0].ID != id {
					t.Fatalf("claimed %v, want %s", taskIDs(got), id)
				}
				return got[0]
			}
			// z is created at t0 but claimed at t0+1m: the oldest claim is
			// its claim time.
			at(time.Minute)
			hold("z")
			// x was created first but became READY again at t0+3m.
			at(2 * time.Minute)
			h.fail(hold("x"), "flaky", false, noBackoff)
			at(3 * time.Minute)
			h.fail(hold("x"), "flaky", false, noBackoff)
			at(4 * time.Minute)
			h.create(&store.TaskCreate{ID: "y"})
			// v is on its second attempt: retrying.
			at(5 * time.Minute)
			h.create(&store.TaskCreate{ID: "v", Priority: 9, MaxAttempts: 5})
			h.fail(hold("v"), "flaky", false, noBackoff)
			at(6 * time.Minute)
			hold("v")
			// u succeeded on its second attempt: DONE is not retrying.
			at(7 * time.Minute)
			h.create(&store.TaskCreate{ID: "u", Priority: 10, MaxAttempts: 5})
			h.fail(hold("u"), "flaky", false, noBackoff)
			h.complete(hold("u"))
			// s was dead-lettered on its second attempt: retrying.
			at(8 * time.Minute)
			h.create(&store.TaskCreate{ID: "s", Priority: 10, MaxAttempts: 2})
			h.fail(hold("s"), "flaky", false, noBackoff)
			h.fail(hold("s"), "flaky", false, noBackoff)

			st := h.stats()
			want := map[store.TaskState]int64{
				store.StateBacklog: 1, store.StateReady: 2, store.StateInProgress: 2, store.StateReview: 1,
				store.StateDone: 2, store.StateFailed: 2, store.StatePaused: 1,
			}
			for _, state := range store.AllStates {
				if n, ok := st.Counts[state]; !ok || n != want[state] {
					t.Fatalf("Counts[%s] = %d (present %v), want %d", state, n, ok, want[state])
				}
			}
			requireTime(t, "OldestReadySince", st.OldestReadySince, t0.Add(3*time.Minute))
			requireTime(t, "OldestClaimedAt", st.OldestClaimedAt, t0.Add(time.Minute))
			// x (attempt 2, READY), v (attempt 2, IN_PROGRESS), s (attempt 2, FAILED).
			if st.Retrying != 3 {
				t.Fatalf("Retrying = %d, want 3 (x, v, s)", st.Retrying)
			}
			if st.Paused {
				t.Fatal("stats report a pause nobody made")
			}

			h.pause("budget")
			st = h.stats()
			if !st.Paused || st.PauseReason != "budget" || st.Counts[store.StateReady] != 0 || st.Counts[store.StatePaused] != 3 || !st.OldestReadySince.IsZero() {
				t.Fatalf("stats after pause: paused %v reason %q READY %d PAUSED %d oldest READY %s",
					st.Paused, st.PauseReason, st.Counts[store.StateReady], st.Counts[store.StatePaused], fmtTime(st.OldestReadySince))
			}
		}},
	})
}
