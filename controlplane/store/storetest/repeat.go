package storetest

import (
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// testRepeat proves that a completion, failure or renewal repeated by the
// same holder under the same token (its reply was lost) answers as the
// first call did and changes nothing, while anyone else holding that ref
// (another agent, an older token, a lease since taken over) is still
// refused.
func (s *suite) testRepeat(t *testing.T) {
	s.runCases(t, []testCase{
		{"CompleteRepeatedReturnsFirstResult", func(t *testing.T, h *harness) {
			h.createReady("a")
			ref := leaseOf(h.claimOne("agent-1", "a"))
			item := store.TaskCompleteItem{Lease: ref, Note: "shipped"}
			first, _ := h.completeItem(item)
			if first.Err != nil || first.Replay {
				t.Fatalf("first completion: err %v, replay %v", first.Err, first.Replay)
			}
			h.clock.Advance(time.Minute)
			again, changes := h.completeItem(item)
			requireReplayOf(t, "repeated completion", first.Task, again.Task, again.Err, again.Replay, changes)
			h.requireUnchanged(first.Task)

			// Without a note the repeat still matches the first.
			again, changes = h.completeItem(store.TaskCompleteItem{Lease: ref})
			requireReplayOf(t, "repeated completion without its note", first.Task, again.Task, again.Err, again.Replay, changes)
		}},
		{"CompleteToReviewRepeated", func(t *testing.T, h *harness) {
			h.createReady("a")
			ref := leaseOf(h.claimOne("agent-1", "a"))
			first, _ := h.completeItem(store.TaskCompleteItem{Lease: ref, Review: true})
			if first.Err != nil || first.Task.State != store.StateReview {
				t.Fatalf("first completion: %+v", first)
			}
			again, changes := h.completeItem(store.TaskCompleteItem{Lease: ref, Review: true})
			requireReplayOf(t, "repeated completion to REVIEW", first.Task, again.Task, again.Err, again.Replay, changes)

			// A repeat asking for DONE is not the same call.
			differs, _ := h.completeItem(store.TaskCompleteItem{Lease: ref})
			requireDiffers(t, differs.Err, "task is now REVIEW; the repeated completion asks for DONE")
			h.requireUnchanged(first.Task)
		}},
		{"CompleteRepeatedWithOtherContentRefused", func(t *testing.T, h *harness) {
			h.createReady("a")
			ref := leaseOf(h.claimOne("agent-1", "a"))
			first, _ := h.completeItem(store.TaskCompleteItem{Lease: ref, Note: "one"})
			if first.Err != nil {
				t.Fatal(first.Err)
			}
			r, _ := h.completeItem(store.TaskCompleteItem{Lease: ref, Review: true, Note: "one"})
			requireDiffers(t, r.Err, "task is now DONE; the repeated completion asks for REVIEW")
			r, _ = h.completeItem(store.TaskCompleteItem{Lease: ref, Note: "two"})
			requireDiffers(t, r.Err, "different note")
			h.requireUnchanged(first.Task)
		}},
		{"CompleteRepeatedInOneBatch", func(t *testing.T, h *harness) {
			h.createReady("a")
			ref := leaseOf(h.claimOne("agent-1", "a"))
			item := store.TaskCompleteItem{Lease: ref, Note: "n"}
			res, err := h.s.TaskComplete(h.ctx, &store.TaskCompleteParams{Now: h.now(), Items: []store.TaskCompleteItem{item, item}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Results[0].Err != nil || res.Results[0].Replay {
				t.Fatalf("first item: %+v", res.Results[0])
			}
			if res.Results[1].Err != nil || !res.Results[1].Replay || res.Results[1].Task.State != store.StateDone {
				t.Fatalf("second item of the same completion: %+v, want a replay of the first", res.Results[1])
			}
			if len(res.Changes) != 1 {
				t.Fatalf("changes %v, want the one completion", changeIDs(res.Changes))
			}
		}},
		{"FailRepeatedReturnsFirstResult", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", MaxAttempts: 5})
			task := h.claimOne("agent-1", "a")
			ref := leaseOf(task)
			backoff := func(int32) time.Duration { return time.Hour }
			first := h.fail(task, "boom", false, backoff)[0].Task
			if first.State != store.StateReady {
				t.Fatalf("first failure left the task %s", first.State)
			}
			h.clock.Advance(time.Minute)
			p := &store.TaskFailParams{Lease: ref, Error: "boom", Backoff: backoff, Now: h.now()}
			changes, err := h.s.TaskFail(h.ctx, p)
			if err != nil {
				t.Fatalf("repeated failure: %v", err)
			}
			if len(changes) != 1 || changes[0].PreviousState != changes[0].Task.State {
				t.Fatalf("repeated failure reported a change: %+v", changes)
			}
			if d := diffTask(first, changes[0].Task); len(d) > 0 {
				t.Fatalf("repeated failure answers differently from the first:\n%s", strings.Join(d, "\n"))
			}
			h.requireUnchanged(first)

			_, err = h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: ref, Error: "other", Backoff: backoff, Now: h.now()})
			requireDiffers(t, err, "different error")
			_, err = h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: ref, Error: "boom", Permanent: true, Backoff: backoff, Now: h.now()})
			requireDiffers(t, err, "the repeated failure is permanent")
			// The failure ended the lease: completing it is not a repeat.
			r, _ := h.completeItem(store.TaskCompleteItem{Lease: ref})
			requireIs(t, r.Err, store.ErrStaleLease, "completion of a failed lease")
			h.requireUnchanged(first)
		}},
		{"FailPermanentRepeated", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", MaxAttempts: 5})
			task := h.claimOne("agent-1", "a")
			first := h.fail(task, "fatal", true, noBackoff)[0].Task
			changes, err := h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: leaseOf(task), Error: "fatal", Permanent: true, Backoff: noBackoff, Now: h.now()})
			if err != nil || changes[0].Task.State != store.StateFailed || changes[0].PreviousState != store.StateFailed {
				t.Fatalf("repeated permanent failure: %+v, %v", changes, err)
			}
			_, err = h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: leaseOf(task), Error: "fatal", Backoff: noBackoff, Now: h.now()})
			requireDiffers(t, err, "the repeated failure is retryable")
			h.requireUnchanged(first)
		}},
		{"FailOfLastAttemptRepeated", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", MaxAttempts: 1})
			task := h.claimOne("agent-1", "a")
			first := h.fail(task, "boom", false, noBackoff)[0].Task
			if first.State != store.StateFailed {
				t.Fatalf("last attempt's failure left the task %s", first.State)
			}
			changes, err := h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: leaseOf(task), Error: "boom", Backoff: noBackoff, Now: h.now()})
			if err != nil || changes[0].Task.State != store.StateFailed {
				t.Fatalf("repeated failure of the last attempt: %+v, %v", changes, err)
			}
			h.requireUnchanged(first)
		}},
		{"RenewRepeatedReturnsSameLease", func(t *testing.T, h *harness) {
			h.createReady("a")
			ref := leaseOf(h.claimOne("agent-1", "a"))
			p := &store.TaskRenewParams{Lease: ref, LeaseDuration: time.Minute, Progress: "half", Now: h.now()}
			first, err := h.s.TaskRenew(h.ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			again, err := h.s.TaskRenew(h.ctx, p)
			if err != nil {
				t.Fatalf("repeated renewal: %v", err)
			}
			if d := diffTask(first, again); len(d) > 0 {
				t.Fatalf("repeated renewal answers differently:\n%s", strings.Join(d, "\n"))
			}
			// Once a completion ended the lease, a renewal is refused.
			h.complete(first)
			_, err = h.s.TaskRenew(h.ctx, p)
			requireIs(t, err, store.ErrStaleLease, "renewal after the completion")
		}},
		{"RepeatByAnotherAgentRefused", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "done"}, &store.TaskCreate{ID: "failed", MaxAttempts: 5})
			done := h.claimOne("agent-1", "done")
			failed := h.claimOne("agent-1", "failed")
			h.complete(done)
			h.fail(failed, "boom", false, noBackoff)
			beforeDone, beforeFailed := h.get("done"), h.get("failed")

			intruder := leaseOf(done)
			intruder.Agent = "agent-2"
			r, _ := h.completeItem(store.TaskCompleteItem{Lease: intruder})
			requireIs(t, r.Err, store.ErrStaleLease, "another agent repeating a completion")
			intruder = leaseOf(failed)
			intruder.Agent = "agent-2"
			_, err := h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: intruder, Error: "boom", Backoff: noBackoff, Now: h.now()})
			requireIs(t, err, store.ErrStaleLease, "another agent repeating a failure")
			h.requireUnchanged(beforeDone)
			h.requireUnchanged(beforeFailed)
		}},
		{"RepeatAfterReclaimRefused", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", MaxAttempts: 5})
			firstLease := h.claimOne("agent-1", "a")
			h.fail(firstLease, "boom", false, noBackoff)

			// Another agent takes the task over: the first holder's repeat
			// is fenced out.
			second := h.claimOne("agent-2", "a")
			_, err := h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: leaseOf(firstLease), Error: "boom", Backoff: noBackoff, Now: h.now()})
			requireIs(t, err, store.ErrStaleLease, "repeated failure after another agent's claim")
			h.fail(second, "boom", false, noBackoff)

			// The same agent claims again and completes: its repeat of the
			// older lease's failure is refused, of the newer's completion
			// answered.
			third := h.claimOne("agent-1", "a")
			h.complete(third)
			done := h.get("a")
			_, err = h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: leaseOf(firstLease), Error: "boom", Backoff: noBackoff, Now: h.now()})
			requireIs(t, err, store.ErrStaleLease, "repeated failure under an older token")
			r, _ := h.completeItem(store.TaskCompleteItem{Lease: leaseOf(firstLease)})
			requireIs(t, r.Err, store.ErrStaleLease, "completion under an older token")
			r, changes := h.completeItem(store.TaskCompleteItem{Lease: leaseOf(third)})
			requireReplayOf(t, "repeated completion of the newest lease", done, r.Task, r.Err, r.Replay, changes)
			h.requireUnchanged(done)
		}},
		{"AfterRescueRefused", func(t *testing.T, h *harness) {
			// A lease the rescue ended was not ended by its holder: a late
			// completion or failure is refused, not taken for a repeat.
			h.create(&store.TaskCreate{ID: "a", MaxAttempts: 5})
			task := h.claimOne("agent-1", "a")
			h.clock.Set(task.LeaseExpiresAt)
			h.rescue(noBackoff)
			before := h.get("a")
			r, _ := h.completeItem(store.TaskCompleteItem{Lease: leaseOf(task)})
			requireIs(t, r.Err, store.ErrStaleLease, "completion after the rescue")
			_, err := h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: leaseOf(task), Error: before.LastError, Backoff: noBackoff, Now: h.now()})
			requireIs(t, err, store.ErrStaleLease, "failure after the rescue")
			h.requireUnchanged(before)
		}},
	})
}

// requireReplayOf checks that a repeated completion succeeded as a replay,
// answering with the first call's task and reporting no change.
func requireReplayOf(t *testing.T, what string, first, got *store.Task, err error, replay bool, changes []store.TaskChange) {
	t.Helper()
	if err != nil || !replay || got == nil {
		t.Fatalf("%s: err %v, replay %v, task %v; want the first result", what, err, replay, got)
	}
	if d := diffTask(first, got); len(d) > 0 {
		t.Fatalf("%s answers differently from the first call:\n%s", what, strings.Join(d, "\n"))
	}
	if len(changes) != 0 {
		t.Fatalf("%s reported changes %v", what, changeIDs(changes))
	}
}

// requireDiffers checks that a repeat asking for something else than the
// first call is refused as a stale lease saying what differs.
func requireDiffers(t *testing.T, err error, want string) {
	t.Helper()
	requireIs(t, err, store.ErrStaleLease, "a repeat that differs from the first call")
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}
