package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func i32(n int32) *int32 { return &n }

// bulkFixture creates tasks that differ in every filter term, spread over
// time, and returns every id.
func (h *harness) bulkFixture() []string {
	h.t.Helper()
	h.create(
		&store.TaskCreate{ID: "web-ready", Role: "web", Kind: "build", Tier: store.TierFrontier, Priority: 5, Labels: map[string]string{"team": "web"}},
		&store.TaskCreate{ID: "web-low", Role: "web", Kind: "test", Priority: -3, Labels: map[string]string{"team": "web", "tier": "x"}},
		&store.TaskCreate{ID: "api-ready", Role: "api", Kind: "build", Priority: 0, Assignee: "ann"},
		&store.TaskCreate{ID: "api-done", Role: "api", InitialState: store.StateDone, Priority: 10},
	)
	h.clock.Advance(time.Hour)
	h.create(
		&store.TaskCreate{ID: "retry", Role: "retry", Kind: "build", Priority: 1, Labels: map[string]string{"team": "ops"}},
		&store.TaskCreate{ID: "held", Role: "held", Priority: 2},
		&store.TaskCreate{ID: "parked", Role: "web", InitialState: store.StateBacklog, Priority: 0},
	)
	h.failAttempts("retry", 2)
	h.claimAs("bob", "held", "held")
	h.clock.Advance(time.Hour)
	h.create(&store.TaskCreate{ID: "fresh", Role: "web", Kind: "build", Tier: store.TierMid, Priority: 7})
	return []string{"web-ready", "web-low", "api-ready", "api-done", "retry", "held", "parked", "fresh"}
}

// matching is what TaskFilter.Match selects among ids: the predicate's
// definition, to hold the drivers' SQL against.
func (h *harness) matching(f store.TaskFilter, ids []string) []string {
	h.t.Helper()
	var out []string
	for _, id := range ids {
		if f.Match(h.get(id)) {
			out = append(out, id)
		}
	}
	return out
}

func (h *harness) bulk(p *store.TaskBulkParams) *store.TaskBulkResult {
	h.t.Helper()
	if p.Now.IsZero() {
		p.Now = h.now()
	}
	res, err := h.s.TaskBulk(h.ctx, p)
	if err != nil {
		h.t.Fatalf("TaskBulk(%+v): %v", p.Filter, err)
	}
	return res
}

func (s *suite) testBulk(t *testing.T) {
	s.runCases(t, []testCase{
		{"FilterTerms", func(t *testing.T, h *harness) {
			ids := h.bulkFixture()
			base := baseTime
			filters := map[string]store.TaskFilter{
				"state":          {States: []store.TaskState{store.StateReady, store.StateBacklog}},
				"role":           {Role: "web"},
				"agent assignee": {Assignee: "ann"},
				"agent holder":   {Assignee: "bob"},
				"label":          {Labels: map[string]string{"team": "web"}},
				"labels":         {Labels: map[string]string{"team": "web", "tier": "x"}},
				"kind":           {Kind: "build"},
				"tier":           {Tier: store.TierFrontier},
				"attempt":        {MinAttempt: 2},
				"priority min":   {MinPriority: i32(2)},
				"priority max":   {MaxPriority: i32(0)},
				"priority range": {MinPriority: i32(0), MaxPriority: i32(5)},
				"created before": {CreatedBefore: base.Add(30 * time.Minute)},
				"state age":      {StateChangedBefore: base.Add(90 * time.Minute)},
				"combined":       {States: []store.TaskState{store.StateReady}, Role: "web", MaxPriority: i32(6), CreatedBefore: base.Add(time.Hour)},
			}
			want := map[string][]string{
				"state":          {"web-ready", "web-low", "api-ready", "retry", "parked", "fresh"},
				"role":           {"web-ready", "web-low", "parked", "fresh"},
				"agent assignee": {"api-ready"},
				"agent holder":   {"held"},
				"label":          {"web-ready", "web-low"},
				"labels":         {"web-low"},
				"kind":           {"web-ready", "api-ready", "retry", "fresh"},
				"tier":           {"web-ready"},
				"attempt":        {"retry"},
				"priority min":   {"web-ready", "api-done", "held", "fresh"},
				"priority max":   {"web-low", "api-ready", "parked"},
				"priority range": {"web-ready", "api-ready", "retry", "held", "parked"},
				"created before": {"web-ready", "web-low", "api-ready", "api-done"},
				"state age":      {"web-ready", "web-low", "api-ready", "api-done", "retry", "held", "parked"},
				"combined":       {"web-ready", "web-low"},
			}
			for name, f := range filters {
				// The Go predicate, the list and the bulk call agree, and
				// say what the fixture was built to give.
				requireSameIDs(t, name+": Match", h.matching(f, ids), want[name])
				var lp store.TaskListParams
				lp.SetFilter(f)
				requireIDs(t, name+": TaskList", taskIDs(h.list(&lp).Tasks), want[name])
				res := h.bulk(&store.TaskBulkParams{Filter: f, Priority: i32(9), DryRun: true})
				requireIDs(t, name+": TaskBulk dry run", changeIDs(res.Changes), want[name])
				if res.Matched != len(want[name]) {
					t.Fatalf("%s: Matched = %d, want %d", name, res.Matched, len(want[name]))
				}
			}
		}},
		{"MoveSkipsIllegalAndEndsLease", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "r", Role: "x"},
				&store.TaskCreate{ID: "ip", Role: "x"},
				&store.TaskCreate{ID: "d", Role: "x", InitialState: store.StateDone},
				&store.TaskCreate{ID: "f", Role: "x", InitialState: store.StateFailed},
				&store.TaskCreate{ID: "other", Role: "y"},
			)
			held := h.claimAs("agent-1", "x", "r")
			h.clock.Advance(time.Second)
			res := h.bulk(&store.TaskBulkParams{Filter: store.TaskFilter{Role: "x"}, To: store.StateFailed, Reason: "runaway", Max: 10})
			if res.Matched != 4 || res.Changed != 2 || res.Skipped[store.StateDone] != 1 || res.Skipped[store.StateFailed] != 1 || len(res.Skipped) != 2 {
				t.Fatalf("result: matched %d, changed %d, skipped %v; want 4, 2, DONE 1 FAILED 1", res.Matched, res.Changed, res.Skipped)
			}
			requireChange(t, res.Changes, held.ID, store.StateInProgress, store.StateFailed)
			for _, id := range []string{"r", "ip"} {
				got := h.requireState(id, store.StateFailed)
				requireNoLease(t, got)
				if got.Note != "runaway" {
					t.Fatalf("%s note = %q", id, got.Note)
				}
			}
			h.requireState("d", store.StateDone)
			h.requireState("other", store.StateReady)
			// The holder's token went stale with the move.
			_, err := h.s.TaskRenew(h.ctx, &store.TaskRenewParams{Lease: leaseOf(held), LeaseDuration: time.Minute, Now: h.now()})
			requireIs(t, err, store.ErrStaleLease, "renewal after a bulk kill")
		}},
		{"RequeueFailedResetsAttempt", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", Role: "a", MaxAttempts: 1})
			h.failAttempts("a", 1)
			h.requireState("a", store.StateFailed)
			h.bulk(&store.TaskBulkParams{Filter: store.TaskFilter{States: []store.TaskState{store.StateFailed}}, To: store.StateReady})
			if got := h.requireState("a", store.StateReady); got.Attempt != 0 {
				t.Fatalf("attempt %d after bulk requeue", got.Attempt)
			}
		}},
		{"DonePromotesDependents", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "rev", Role: "r", InitialState: store.StateReview}, &store.TaskCreate{ID: "next", DependsOn: []string{"rev"}})
			res := h.bulk(&store.TaskBulkParams{Filter: store.TaskFilter{Role: "r"}, To: store.StateDone})
			requireIDs(t, "changes", changeIDs(res.Changes), []string{"rev", "next"})
			if res.Changed != 1 {
				t.Fatalf("Changed = %d, want 1 (the promoted task is not counted)", res.Changed)
			}
			h.requireState("next", store.StateReady)
		}},
		{"TooManyChangesNothing", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", Role: "x"}, &store.TaskCreate{ID: "b", Role: "x"}, &store.TaskCreate{ID: "c", Role: "x"})
			before := h.get("a")
			_, err := h.s.TaskBulk(h.ctx, &store.TaskBulkParams{Filter: store.TaskFilter{Role: "x"}, To: store.StateFailed, Max: 2, Now: h.now()})
			var tm *store.TooManyError
			if !errors.As(err, &tm) || tm.Matched != 3 || tm.Max != 2 || !errors.Is(err, store.ErrTooMany) {
				t.Fatalf("err = %v, want a TooManyError for 3 of 2", err)
			}
			h.requireUnchanged(before)
			h.requireState("c", store.StateReady)
		}},
		{"PauseTooManyRecordsNothing", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", Role: "x"}, &store.TaskCreate{ID: "b", Role: "x"}, &store.TaskCreate{ID: "c", Role: "x"})
			_, err := h.s.QueuePauseTasks(h.ctx, &store.QueuePauseTasksParams{ID: "p", Filter: store.TaskFilter{Role: "x"}, Max: 2, Now: h.now()})
			var tm *store.TooManyError
			if !errors.As(err, &tm) || tm.Matched != 3 || tm.Max != 2 {
				t.Fatalf("err = %v, want a TooManyError for 3 of 2", err)
			}
			if st := h.stats(); len(st.Pauses) != 0 {
				t.Fatalf("a refused pause is recorded: %+v", st.Pauses)
			}
			h.requireState("a", store.StateReady)
			// The id is free: the same pause, narrowed, goes through.
			if _, err := h.s.QueuePauseTasks(h.ctx, &store.QueuePauseTasksParams{ID: "p", Filter: store.TaskFilter{Role: "x"}, Max: 3, Now: h.now()}); err != nil {
				t.Fatal(err)
			}
		}},
		{"DryRunChangesNothing", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", Role: "x"}, &store.TaskCreate{ID: "d", Role: "x", InitialState: store.StateDone})
			before := h.get("a")
			res := h.bulk(&store.TaskBulkParams{Filter: store.TaskFilter{Role: "x"}, To: store.StateFailed, DryRun: true})
			if res.Changed != 1 || res.Skipped[store.StateDone] != 1 || res.Changes[0].Task.State != store.StateReady {
				t.Fatalf("dry run: changed %d, skipped %v, first %s", res.Changed, res.Skipped, res.Changes[0].Task.State)
			}
			h.requireUnchanged(before)
		}},
		{"Priority", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", Role: "x"}, &store.TaskCreate{ID: "d", Role: "x", InitialState: store.StateDone}, &store.TaskCreate{ID: "o"})
			res := h.bulk(&store.TaskBulkParams{Filter: store.TaskFilter{Role: "x"}, Priority: i32(42)})
			if res.Changed != 2 {
				t.Fatalf("Changed = %d", res.Changed)
			}
			if h.get("a").Priority != 42 || h.get("d").Priority != 42 || h.get("o").Priority != 0 {
				t.Fatal("priorities not set as filtered")
			}
		}},
		{"EmptyFilterRefused", func(t *testing.T, h *harness) {
			h.createReady("a")
			_, err := h.s.TaskBulk(h.ctx, &store.TaskBulkParams{To: store.StateFailed, Now: h.now()})
			requireFieldError(t, err, "filter")
			h.requireState("a", store.StateReady)
			_, err = h.s.QueuePauseTasks(h.ctx, &store.QueuePauseTasksParams{ID: "p", Filter: store.TaskFilter{States: []store.TaskState{store.StateReady}}, Now: h.now()})
			requireFieldError(t, err, "filter")
		}},
		{"SelectivePauseAndResume", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "w1", Role: "web"},
				&store.TaskCreate{ID: "w2", Role: "web"},
				&store.TaskCreate{ID: "wop", Role: "web"},
				&store.TaskCreate{ID: "api", Role: "api"},
				&store.TaskCreate{ID: "wb", Role: "web", InitialState: store.StateBacklog},
			)
			h.move("wop", store.StatePaused) // an operator's pause
			changes, err := h.s.QueuePauseTasks(h.ctx, &store.QueuePauseTasksParams{ID: "p1", Reason: "web deploy", FilterText: "role=web",
				Filter: store.TaskFilter{Role: "web"}, Max: 10, Now: h.now()})
			if err != nil {
				t.Fatal(err)
			}
			requireIDs(t, "paused", changeIDs(changes), []string{"w1", "w2"})
			for _, id := range []string{"w1", "w2"} {
				if got := h.requireState(id, store.StatePaused); got.PausedByQueue {
					t.Fatalf("%s is marked paused by the queue", id)
				}
			}
			_, err = h.s.QueuePauseTasks(h.ctx, &store.QueuePauseTasksParams{ID: "p1", Filter: store.TaskFilter{Role: "api"}, Now: h.now()})
			requireIs(t, err, store.ErrAlreadyExists, "a second pause with the same id")
			h.requireState("api", store.StateReady)

			st := h.stats()
			if len(st.Pauses) != 1 || st.Pauses[0].ID != "p1" || st.Pauses[0].Held != 2 || st.Pauses[0].FilterText != "role=web" || st.Pauses[0].Reason != "web deploy" {
				t.Fatalf("stats pauses = %+v", st.Pauses)
			}
			// w2 is taken out of the pause by hand and paused again by
			// hand: it is the operator's now.
			h.clock.Advance(time.Second)
			h.move("w2", store.StateReady)
			h.move("w2", store.StatePaused)
			// The global pause takes what is READY.
			h.pause("maintenance")
			h.requireState("api", store.StatePaused)

			_, err = h.s.QueueResumeTasks(h.ctx, &store.QueueResumeTasksParams{ID: "nope", Now: h.now()})
			requireIs(t, err, store.ErrNotFound, "resume of an unknown pause")
			res, err := h.s.QueueResumeTasks(h.ctx, &store.QueueResumeTasksParams{ID: "p1", Now: h.now()})
			if err != nil {
				t.Fatal(err)
			}
			requireIDs(t, "ended", res.Ended, []string{"p1"})
			requireIDs(t, "resumed", changeIDs(res.Changes), []string{"w1"})
			// The queue is still paused: w1 goes to the global pause.
			if got := h.requireState("w1", store.StatePaused); !got.PausedByQueue {
				t.Fatal("w1 resumed into a paused queue is not held by the queue")
			}
			h.resume()
			h.requireState("w1", store.StateReady)
			h.requireState("api", store.StateReady)
			h.requireState("w2", store.StatePaused)
			h.requireState("wop", store.StatePaused)
			h.requireState("wb", store.StateBacklog)
			if st := h.stats(); len(st.Pauses) != 0 {
				t.Fatalf("pauses after resume: %+v", st.Pauses)
			}
		}},
		{"ResumeEveryPause", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", Role: "a"}, &store.TaskCreate{ID: "b", Role: "b"}, &store.TaskCreate{ID: "c", Role: "c"})
			for _, id := range []string{"a", "b"} {
				if _, err := h.s.QueuePauseTasks(h.ctx, &store.QueuePauseTasksParams{ID: "p-" + id, Filter: store.TaskFilter{Role: id}, Now: h.now()}); err != nil {
					t.Fatal(err)
				}
				h.clock.Advance(time.Second)
			}
			h.requireState("c", store.StateReady)
			res, err := h.s.QueueResumeTasks(h.ctx, &store.QueueResumeTasksParams{Now: h.now()})
			if err != nil {
				t.Fatal(err)
			}
			requireIDs(t, "ended", res.Ended, []string{"p-a", "p-b"})
			requireIDs(t, "resumed", changeIDs(res.Changes), []string{"a", "b"})
			h.requireState("a", store.StateReady)
			h.requireState("b", store.StateReady)
		}},
	})
}
