package storetest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (s *suite) testRetry(t *testing.T) {
	s.runCases(t, []testCase{
		{"RescueExpiredLease", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", MaxAttempts: 3})
			claimed := h.claimOne("agent-crashy", "a")
			backoff := &recordingBackoff{step: 10 * time.Second}

			h.clock.Set(claimed.LeaseExpiresAt.Add(-time.Second))
			if got := h.rescue(backoff.fn); len(got) != 0 {
				t.Fatalf("rescued %v before the lease expired", changeIDs(got))
			}
			h.clock.Set(claimed.LeaseExpiresAt) // LeaseExpiresAt <= Now
			changes := h.rescue(backoff.fn)
			requireIDs(t, "rescued", changeIDs(changes), []string{"a"})
			requireChange(t, changes, "a", store.StateInProgress, store.StateReady)
			got := h.requireState("a", store.StateReady)
			if got.Attempt != 1 {
				t.Fatalf("Attempt = %d after one expired attempt, want 1", got.Attempt)
			}
			requireTime(t, "RunAfter", got.RunAfter, h.now().Add(10*time.Second))
			requireNoLease(t, got)
			if !strings.Contains(strings.ToLower(got.LastError), "expire") || !strings.Contains(got.LastError, "agent-crashy") {
				t.Fatalf("LastError = %q, want it to say the lease expired and name agent-crashy", got.LastError)
			}
			if calls := backoff.calls(); !slices.Equal(calls, []int32{1}) {
				t.Fatalf("Backoff called with %v, want [1]", calls)
			}
			if d := diffTask(changes[0].Task, got); len(d) > 0 {
				t.Fatalf("rescue change differs from stored task:\n%s", strings.Join(d, "\n"))
			}

			// The backoff holds the task back, and the old lease is dead.
			h.requireNoClaim("agent-2", nil)
			h.clock.Set(got.RunAfter)
			again := h.claimOne("agent-2", "a")
			if again.Attempt != 2 {
				t.Fatalf("second claim Attempt = %d, want 2", again.Attempt)
			}
			r, _ := h.completeItem(store.TaskCompleteItem{Lease: leaseOf(claimed)})
			requireIs(t, r.Err, store.ErrStaleLease, "completion by the expired holder")
		}},
		{"RescueOnlyExpired", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "short", Priority: 1}, &store.TaskCreate{ID: "long"})
			h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Max: 1, LeaseDuration: time.Minute, Now: h.now()})
			h.claimParams(&store.TaskClaimParams{Agent: "agent-2", Max: 1, LeaseDuration: time.Hour, Now: h.now()})
			h.clock.Advance(2 * time.Minute)
			changes := h.rescue(noBackoff)
			requireIDs(t, "rescued", changeIDs(changes), []string{"short"})
			h.requireState("short", store.StateReady)
			h.requireState("long", store.StateInProgress)
		}},
		{"RescueExhaustsAttempts", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", MaxAttempts: 2})
			for attempt := int32(1); attempt <= 2; attempt++ {
				claimed := h.claimOne("agent-1", "a")
				if claimed.Attempt != attempt {
					t.Fatalf("claim %d: Attempt = %d", attempt, claimed.Attempt)
				}
				h.clock.Set(claimed.LeaseExpiresAt.Add(time.Second))
				h.rescue(noBackoff)
			}
			got := h.requireState("a", store.StateFailed)
			if got.Attempt != 2 || !strings.Contains(strings.ToLower(got.LastError), "expire") {
				t.Fatalf("dead-lettered task: attempt %d, LastError %q", got.Attempt, got.LastError)
			}
			requireNoLease(t, got)
			h.requireNoClaim("agent-1", nil)
		}},
		{"FailRetryable", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", MaxAttempts: 3})
			backoff := &recordingBackoff{step: 30 * time.Second}
			first := h.claimOne("agent-1", "a")
			h.clock.Advance(5 * time.Second)
			changes := h.fail(first, "compile error", false, backoff.fn)
			requireIDs(t, "fail changes", changeIDs(changes), []string{"a"})
			requireChange(t, changes, "a", store.StateInProgress, store.StateReady)
			got := h.requireState("a", store.StateReady)
			requireTime(t, "RunAfter", got.RunAfter, h.now().Add(30*time.Second))
			requireNoLease(t, got)
			if got.LastError != "compile error" || got.Attempt != 1 {
				t.Fatalf("after retryable failure: LastError %q attempt %d", got.LastError, got.Attempt)
			}

			h.clock.Set(got.RunAfter.Add(-time.Second))
			h.requireNoClaim("agent-1", nil)
			h.clock.Set(got.RunAfter)
			second := h.claimOne("agent-2", "a")
			if second.Attempt != 2 {
				t.Fatalf("Attempt = %d on the second claim", second.Attempt)
			}
			h.fail(second, "test timeout", false, backoff.fn)
			got = h.requireState("a", store.StateReady)
			requireTime(t, "RunAfter after the second failure", got.RunAfter, h.now().Add(60*time.Second))
			if got.LastError != "test timeout" {
				t.Fatalf("LastError = %q", got.LastError)
			}

			h.clock.Set(got.RunAfter)
			third := h.claimOne("agent-3", "a")
			h.fail(third, "still broken", false, backoff.fn)
			got = h.requireState("a", store.StateFailed)
			if got.Attempt != 3 || got.LastError != "still broken" {
				t.Fatalf("after the last attempt: attempt %d LastError %q", got.Attempt, got.LastError)
			}
			if calls := backoff.calls(); len(calls) < 2 || calls[0] != 1 || calls[1] != 2 {
				t.Fatalf("Backoff called with %v, want attempts 1 then 2", calls)
			}
		}},
		{"FailPermanent", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", MaxAttempts: 5})
			claimed := h.claimOne("agent-1", "a")
			changes := h.fail(claimed, "bad input", true, noBackoff)
			requireChange(t, changes, "a", store.StateInProgress, store.StateFailed)
			got := h.requireState("a", store.StateFailed)
			if got.LastError != "bad input" || got.Attempt != 1 {
				t.Fatalf("after permanent failure: LastError %q attempt %d", got.LastError, got.Attempt)
			}
			requireNoLease(t, got)
			h.requireNoClaim("agent-1", nil)
		}},
		{"FailedTaskIsNotRescued", func(t *testing.T, h *harness) {
			h.createReady("a")
			claimed := h.claimOne("agent-1", "a")
			h.fail(claimed, "boom", false, func(int32) time.Duration { return time.Hour })
			h.clock.Set(claimed.LeaseExpiresAt.Add(time.Minute))
			if got := h.rescue(noBackoff); len(got) != 0 {
				t.Fatalf("rescued %v: a released lease cannot expire", changeIDs(got))
			}
		}},
	})
}
