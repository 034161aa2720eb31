package storetest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (s *suite) testLease(t *testing.T) {
	s.runCases(t, []testCase{
		{"RenewExtendsAndRecordsProgress", func(t *testing.T, h *harness) {
			h.createReady("a")
			start := h.now()
			claimed := h.claimOne("agent-1", "a") // expires at start+1m
			h.clock.Set(start.Add(50 * time.Second))
			renewed, err := h.s.TaskRenew(h.ctx, &store.TaskRenewParams{Lease: leaseOf(claimed), LeaseDuration: 2 * time.Minute, Progress: "compiling", Now: h.now()})
			if err != nil {
				t.Fatalf("renew: %v", err)
			}
			requireTime(t, "LeaseExpiresAt", renewed.LeaseExpiresAt, start.Add(50*time.Second+2*time.Minute))
			requireTime(t, "RenewedAt", renewed.RenewedAt, start.Add(50*time.Second))
			requireTime(t, "ClaimedAt", renewed.ClaimedAt, start)
			if renewed.Progress != "compiling" || renewed.State != store.StateInProgress || renewed.FencingToken != claimed.FencingToken ||
				renewed.Attempt != 1 || renewed.LeaseHolder != "agent-1" {
				t.Fatalf("renewed task: progress %q state %s token %d attempt %d holder %q",
					renewed.Progress, renewed.State, renewed.FencingToken, renewed.Attempt, renewed.LeaseHolder)
			}
			if d := diffTask(renewed, h.get("a")); len(d) > 0 {
				t.Fatalf("renew result differs from stored task:\n%s", strings.Join(d, "\n"))
			}

			// Past the original expiry the renewed lease still holds.
			h.clock.Set(start.Add(90 * time.Second))
			if got := h.rescue(noBackoff); len(got) != 0 {
				t.Fatalf("rescue took a renewed lease: %v", changeIDs(got))
			}
			renewed, err = h.s.TaskRenew(h.ctx, &store.TaskRenewParams{Lease: leaseOf(claimed), LeaseDuration: 2 * time.Minute, Now: h.now()})
			if err != nil {
				t.Fatalf("second renew: %v", err)
			}
			if renewed.Progress != "compiling" {
				t.Fatalf("renew without progress changed it to %q", renewed.Progress)
			}
			requireTime(t, "LeaseExpiresAt", renewed.LeaseExpiresAt, start.Add(90*time.Second+2*time.Minute))
			h.clock.Set(start.Add(3 * time.Minute))
			h.complete(claimed)
		}},
		{"CompleteEndsLease", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "keep-note", Note: "original", Priority: 2},
				&store.TaskCreate{ID: "new-note", Note: "original", Priority: 1},
			)
			first := h.claimOne("agent-1", "keep-note")
			second := h.claimOne("agent-1", "new-note")
			h.clock.Advance(time.Minute - time.Second)
			r, changes := h.completeItem(store.TaskCompleteItem{Lease: leaseOf(first)})
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			requireChange(t, changes, "keep-note", store.StateInProgress, store.StateDone)
			got := h.requireState("keep-note", store.StateDone)
			requireNoLease(t, got)
			requireTime(t, "StateChangedAt", got.StateChangedAt, h.now())
			if got.Note != "original" || got.FencingToken != first.FencingToken {
				t.Fatalf("after complete: note %q token %d; want original %d", got.Note, got.FencingToken, first.FencingToken)
			}
			if d := diffTask(r.Task, got); len(d) > 0 {
				t.Fatalf("complete result differs from stored task:\n%s", strings.Join(d, "\n"))
			}

			r, _ = h.completeItem(store.TaskCompleteItem{Lease: leaseOf(second), Review: true, Note: "please check the diff"})
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			got = h.requireState("new-note", store.StateReview)
			requireNoLease(t, got)
			if got.Note != "please check the diff" {
				t.Fatalf("note = %q, want the completion's note", got.Note)
			}
		}},
		{"CompleteBatchItemsStandAlone", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "good-1", Priority: 3},
				&store.TaskCreate{ID: "stale", Priority: 2},
				&store.TaskCreate{ID: "good-2", Priority: 1},
			)
			g1 := h.claimOne("agent-1", "good-1")
			st := h.claimOne("agent-1", "stale")
			g2 := h.claimOne("agent-1", "good-2")
			staleBefore := h.get("stale")
			badRef := leaseOf(st)
			badRef.FencingToken++
			res, err := h.s.TaskComplete(h.ctx, &store.TaskCompleteParams{Now: h.now(), Items: []store.TaskCompleteItem{
				{Lease: leaseOf(g1)},
				{Lease: store.LeaseRef{TaskID: "no-such-task", Agent: "agent-1", FencingToken: g1.FencingToken}},
				{Lease: badRef},
				{Lease: leaseOf(g2), Review: true},
			}})
			if err != nil {
				t.Fatalf("TaskComplete with bad items failed as a whole: %v", err)
			}
			if len(res.Results) != 4 {
				t.Fatalf("%d results for 4 items", len(res.Results))
			}
			for i, wantErr := range []error{nil, store.ErrNotFound, store.ErrStaleLease, nil} {
				r := res.Results[i]
				if wantErr == nil {
					if r.Err != nil || r.Task == nil {
						t.Fatalf("item %d: err %v task %v, want success", i, r.Err, r.Task)
					}
					continue
				}
				if !errors.Is(r.Err, wantErr) {
					t.Fatalf("item %d: err %v, want %v", i, r.Err, wantErr)
				}
			}
			if res.Results[0].Task.ID != "good-1" || res.Results[3].Task.ID != "good-2" {
				t.Fatalf("results out of item order: %s, %s", res.Results[0].Task.ID, res.Results[3].Task.ID)
			}
			requireSameIDs(t, "changes", changeIDs(res.Changes), []string{"good-1", "good-2"})
			h.requireState("good-1", store.StateDone)
			h.requireState("good-2", store.StateReview)
			h.requireUnchanged(staleBefore)
			h.requireAbsent("no-such-task")
		}},
		{"CompleteSameLeaseTwiceInOneBatch", func(t *testing.T, h *harness) {
			// Items apply in order: the first ends the lease the second
			// names.
			h.createReady("a")
			ref := leaseOf(h.claimOne("agent-1", "a"))
			res, err := h.s.TaskComplete(h.ctx, &store.TaskCompleteParams{Now: h.now(), Items: []store.TaskCompleteItem{
				{Lease: ref, Note: "first"},
				{Lease: ref, Review: true, Note: "second"},
			}})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Results) != 2 || res.Results[0].Err != nil {
				t.Fatalf("results %+v, want the first item to succeed", res.Results)
			}
			requireIs(t, res.Results[1].Err, store.ErrStaleLease, "second completion of one lease")
			if got := h.requireState("a", store.StateDone); got.Note != "first" {
				t.Fatalf("Note = %q, want the first item's", got.Note)
			}
		}},
		{"UnknownTask", func(t *testing.T, h *harness) {
			ref := store.LeaseRef{TaskID: "ghost", Agent: "agent-1", FencingToken: 1}
			_, err := h.s.TaskRenew(h.ctx, &store.TaskRenewParams{Lease: ref, LeaseDuration: time.Minute, Now: h.now()})
			requireIs(t, err, store.ErrNotFound, "renew of an unknown task")
			_, err = h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: ref, Error: "x", Backoff: noBackoff, Now: h.now()})
			requireIs(t, err, store.ErrNotFound, "fail of an unknown task")
		}},
	})
	t.Run("Stale", s.testStaleLease)
	t.Run("Repeat", s.testRepeat)
}

// staleScenario leaves a task whose lease ref no longer holds, at the
// returned time.
type staleScenario struct {
	name  string
	setup func(h *harness) (store.LeaseRef, time.Time)
}

var staleScenarios = []staleScenario{
	{"NewerToken", func(h *harness) (store.LeaseRef, time.Time) {
		ref := leaseOf(h.claimOne("agent-1", "a"))
		ref.FencingToken++
		return ref, h.now()
	}},
	{"OlderToken", func(h *harness) (store.LeaseRef, time.Time) {
		ref := leaseOf(h.claimOne("agent-1", "a"))
		ref.FencingToken--
		return ref, h.now()
	}},
	{"WrongAgent", func(h *harness) (store.LeaseRef, time.Time) {
		ref := leaseOf(h.claimOne("agent-1", "a"))
		ref.Agent = "agent-intruder"
		return ref, h.now()
	}},
	{"ExpiredAtDeadline", func(h *harness) (store.LeaseRef, time.Time) {
		task := h.claimOne("agent-1", "a")
		return leaseOf(task), task.LeaseExpiresAt
	}},
	{"ExpiredLongAgo", func(h *harness) (store.LeaseRef, time.Time) {
		task := h.claimOne("agent-1", "a")
		return leaseOf(task), task.LeaseExpiresAt.Add(time.Hour)
	}},
	{"ReclaimedByAnother", func(h *harness) (store.LeaseRef, time.Time) {
		task := h.claimOne("agent-1", "a")
		h.clock.Set(task.LeaseExpiresAt)
		h.rescue(noBackoff)
		h.claimOne("agent-2", "a")
		return leaseOf(task), h.now()
	}},
	{"ReclaimedBySameAgent", func(h *harness) (store.LeaseRef, time.Time) {
		task := h.claimOne("agent-1", "a")
		h.move("a", store.StateReady)
		h.claimOne("agent-1", "a")
		return leaseOf(task), h.now()
	}},
	{"AlreadyCompleted", func(h *harness) (store.LeaseRef, time.Time) {
		task := h.claimOne("agent-1", "a")
		h.complete(task)
		return leaseOf(task), h.now()
	}},
	{"MovedByOperator", func(h *harness) (store.LeaseRef, time.Time) {
		task := h.claimOne("agent-1", "a")
		h.move("a", store.StateFailed)
		return leaseOf(task), h.now()
	}},
	{"NeverClaimed", func(h *harness) (store.LeaseRef, time.Time) {
		return store.LeaseRef{TaskID: "a", Agent: "agent-1", FencingToken: h.get("a").FencingToken}, h.now()
	}},
}

// testStaleLease runs every lease-carrying call against every way a lease
// goes stale: each must be refused with ErrStaleLease and write nothing.
func (s *suite) testStaleLease(t *testing.T) {
	ops := []struct {
		name string
		call func(h *harness, ref store.LeaseRef, now time.Time) error
	}{
		{"Complete", func(h *harness, ref store.LeaseRef, now time.Time) error {
			res, err := h.s.TaskComplete(h.ctx, &store.TaskCompleteParams{Items: []store.TaskCompleteItem{{Lease: ref, Note: "late"}}, Now: now})
			if err != nil {
				return fmt.Errorf("call failed as a whole, want a per-item error: %w", err)
			}
			if len(res.Results) != 1 {
				return fmt.Errorf("%d results for one item", len(res.Results))
			}
			if len(res.Changes) != 0 {
				h.t.Errorf("a refused completion reported changes %v", changeIDs(res.Changes))
			}
			return res.Results[0].Err
		}},
		{"CompleteToReview", func(h *harness, ref store.LeaseRef, now time.Time) error {
			res, err := h.s.TaskComplete(h.ctx, &store.TaskCompleteParams{Items: []store.TaskCompleteItem{{Lease: ref, Review: true}}, Now: now})
			if err != nil {
				return fmt.Errorf("call failed as a whole, want a per-item error: %w", err)
			}
			if len(res.Results) != 1 {
				return fmt.Errorf("%d results for one item", len(res.Results))
			}
			return res.Results[0].Err
		}},
		{"Renew", func(h *harness, ref store.LeaseRef, now time.Time) error {
			_, err := h.s.TaskRenew(h.ctx, &store.TaskRenewParams{Lease: ref, LeaseDuration: time.Hour, Progress: "late", Now: now})
			return err
		}},
		{"FailRetryable", func(h *harness, ref store.LeaseRef, now time.Time) error {
			_, err := h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: ref, Error: "late", Backoff: noBackoff, Now: now})
			return err
		}},
		{"FailPermanent", func(h *harness, ref store.LeaseRef, now time.Time) error {
			_, err := h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: ref, Error: "late", Permanent: true, Backoff: noBackoff, Now: now})
			return err
		}},
	}
	for _, sc := range staleScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			for _, op := range ops {
				t.Run(op.name, func(t *testing.T) {
					t.Parallel()
					h := s.setup(t)
					h.create(&store.TaskCreate{ID: "a", MaxAttempts: 5})
					ref, now := sc.setup(h)
					before := h.get("a")
					err := op.call(h, ref, now)
					if !errors.Is(err, store.ErrStaleLease) {
						t.Fatalf("got %v, want an error matching ErrStaleLease", err)
					}
					h.requireUnchanged(before)
				})
			}
		})
	}
}
