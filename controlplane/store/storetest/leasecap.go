package storetest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/factory/factory/controlplane/store"
)

// testLeaseCap proves TaskClaimParams.MaxHeld: an agent never holds more
// leases than the cap, whatever it asks for and however many claims it
// runs at once, and its cap leaves other agents alone.
func (s *suite) testLeaseCap(t *testing.T) {
	capped := func(h *harness, agent string, max, held int) ([]store.TaskChange, error) {
		return h.s.TaskClaim(h.ctx, &store.TaskClaimParams{Agent: agent, Max: max, MaxHeld: held, LeaseDuration: defaultLease, Now: h.now()})
	}
	requireRefused := func(t *testing.T, h *harness, agent string, held, limit int) {
		t.Helper()
		got, err := capped(h, agent, 5, limit)
		var qe *store.QuotaError
		if !errors.As(err, &qe) || !errors.Is(err, store.ErrQuotaExceeded) {
			t.Fatalf("claim by %s at its cap: %v, %v; want a QuotaError", agent, changeIDs(got), err)
		}
		for _, want := range []string{fmt.Sprintf("holds %d leases", held), fmt.Sprintf("cap is %d", limit), "complete, fail or let some expire"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("refusal %q does not say %q", err, want)
			}
		}
	}
	s.runCases(t, []testCase{
		{"TakesOnlyTheRoomLeft", func(t *testing.T, h *harness) {
			const limit = 4
			var ids []string
			for i := range 20 {
				ids = append(ids, fmt.Sprintf("t-%02d", i))
			}
			h.createReady(ids...)
			first := h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Max: limit - 1, MaxHeld: limit, LeaseDuration: defaultLease, Now: h.now()})
			if len(first) != limit-1 {
				t.Fatalf("first claim got %d tasks, want %d", len(first), limit-1)
			}
			// Holding cap-1, a claim of 5 gets 1.
			if got := h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Max: 5, MaxHeld: limit, LeaseDuration: defaultLease, Now: h.now()}); len(got) != 1 {
				t.Fatalf("claim of 5 holding %d of %d got %d tasks, want 1", limit-1, limit, len(got))
			}
			// At the cap: refused, and nothing changes hands.
			requireRefused(t, h, "agent-1", limit, limit)
			if st := h.stats(); st.Counts[store.StateInProgress] != limit {
				t.Fatalf("%d IN_PROGRESS after the refusal, want %d", st.Counts[store.StateInProgress], limit)
			}
			// Another agent is unaffected.
			if got := h.claimParams(&store.TaskClaimParams{Agent: "agent-2", Max: 5, MaxHeld: limit, LeaseDuration: defaultLease, Now: h.now()}); len(got) != limit {
				t.Fatalf("agent-2 got %d tasks, want %d", len(got), limit)
			}
			// Completing one frees exactly one slot.
			h.complete(first[0])
			if got := h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Max: 5, MaxHeld: limit, LeaseDuration: defaultLease, Now: h.now()}); len(got) != 1 {
				t.Fatalf("claim after completing one got %d tasks, want 1", len(got))
			}
			requireRefused(t, h, "agent-1", limit, limit)
			// A failed attempt gives its slot back too.
			h.fail(first[1], "boom", true, nil)
			if got := h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Max: 5, MaxHeld: limit, LeaseDuration: defaultLease, Now: h.now()}); len(got) != 1 {
				t.Fatalf("claim after failing one got %d tasks, want 1", len(got))
			}
			// MaxHeld 0 does not cap.
			if got := h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Max: 5, LeaseDuration: defaultLease, Now: h.now()}); len(got) != 5 {
				t.Fatalf("uncapped claim got %d tasks, want 5", len(got))
			}
		}},
		{"RefusedEvenWithNothingReady", func(t *testing.T, h *harness) {
			h.createReady("a", "b")
			h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Max: 2, MaxHeld: 2, LeaseDuration: defaultLease, Now: h.now()})
			requireRefused(t, h, "agent-1", 2, 2)
			// Over the cap (it was lowered): the refusal counts them all.
			requireRefused(t, h, "agent-1", 2, 1)
		}},
		{"ConcurrentClaimsNeverOvershoot", func(t *testing.T, h *harness) {
			const limit, workers = 5, 8
			var ids []string
			for i := range 200 {
				ids = append(ids, fmt.Sprintf("t-%03d", i))
			}
			h.createReady(ids...)
			var (
				mu   sync.Mutex
				got  = map[string]int{}
				wg   sync.WaitGroup
				seen = map[string]bool{}
			)
			for _, agent := range []string{"agent-1", "agent-2"} {
				for range workers {
					wg.Go(func() {
						for {
							changes, err := capped(h, agent, 3, limit)
							if errors.Is(err, store.ErrQuotaExceeded) {
								return
							}
							if err != nil {
								t.Errorf("%s: %v", agent, err)
								return
							}
							if len(changes) == 0 {
								t.Errorf("%s: an empty claim, not the refusal, with tasks left", agent)
								return
							}
							mu.Lock()
							got[agent] += len(changes)
							for _, c := range changes {
								if seen[c.Task.ID] {
									t.Errorf("task %s claimed twice", c.Task.ID)
								}
								seen[c.Task.ID] = true
							}
							mu.Unlock()
						}
					})
				}
			}
			wg.Wait()
			for _, agent := range []string{"agent-1", "agent-2"} {
				if got[agent] != limit {
					t.Errorf("%s holds %d leases after %d concurrent claimers, want exactly %d", agent, got[agent], workers, limit)
				}
			}
			if st := h.stats(); st.Counts[store.StateInProgress] != 2*limit {
				t.Errorf("%d IN_PROGRESS, want %d", st.Counts[store.StateInProgress], 2*limit)
			}
		}},
	})
}
