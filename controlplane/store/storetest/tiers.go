package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/factory/factory/controlplane/store"
)

// testTiers covers the spend tier a task names: stored and read back,
// carried by a dump, and a claim's ExcludeTiers, which leaves the tasks of
// capped or turned-off tiers while every other task stays claimable; and
// the budget flag that turns a tier off.
func (s *suite) testTiers(t *testing.T) {
	s.runCases(t, []testCase{
		{"TierRoundTrips", func(t *testing.T, h *harness) {
			got := h.create(
				&store.TaskCreate{ID: "f", Tier: store.TierFrontier},
				&store.TaskCreate{ID: "none"},
			)
			if got[0].Task.Tier != store.TierFrontier || got[1].Task.Tier != "" {
				t.Fatalf("created with tiers %q, %q", got[0].Task.Tier, got[1].Task.Tier)
			}
			if tier := h.get("f").Tier; tier != store.TierFrontier {
				t.Errorf("read back tier %q, want frontier", tier)
			}
			claimed := h.claimOne("agent-1", "f")
			if claimed.Tier != store.TierFrontier {
				t.Errorf("claimed task's tier %q, want frontier", claimed.Tier)
			}
		}},
		{"ExcludeTiersLeavesOnlyThoseTiers", func(t *testing.T, h *harness) {
			// The excluded tier's tasks come first in claim order: a claim
			// that stopped at them, or filtered after its LIMIT, would get
			// nothing.
			h.create(
				&store.TaskCreate{ID: "f-top", Priority: 9, Tier: store.TierFrontier},
				&store.TaskCreate{ID: "f-builder", Priority: 9, Role: "builder", Tier: store.TierFrontier},
				&store.TaskCreate{ID: "i-top", Priority: 8, Tier: store.TierInfra},
				&store.TaskCreate{ID: "mid", Priority: 5, Tier: store.TierMid},
				&store.TaskCreate{ID: "plain-builder", Priority: 1, Role: "builder"},
				&store.TaskCreate{ID: "local", Priority: 0, Tier: store.TierLocal},
			)
			exclude := []string{store.TierFrontier, store.TierInfra}
			one := h.claimParams(&store.TaskClaimParams{Agent: "a1", Roles: []string{"builder"}, Max: 1, LeaseDuration: defaultLease,
				Now: h.now(), ExcludeTiers: exclude})
			requireIDs(t, "claim of one without frontier and infra", taskIDs(one), []string{"mid"})
			many := h.claimParams(&store.TaskClaimParams{Agent: "a2", Roles: []string{"builder"}, Max: 10, LeaseDuration: defaultLease,
				Now: h.now(), ExcludeTiers: exclude})
			requireIDs(t, "claim of many without frontier and infra", taskIDs(many), []string{"plain-builder", "local"})
			h.requireState("f-top", store.StateReady)
			h.requireState("f-builder", store.StateReady)
			h.requireState("i-top", store.StateReady)
			none := h.claimParams(&store.TaskClaimParams{Agent: "a3", Roles: []string{"builder"}, Max: 10, LeaseDuration: defaultLease,
				Now: h.now(), ExcludeTiers: exclude})
			if len(none) != 0 {
				t.Fatalf("claimed %v with only excluded tiers left", taskIDs(none))
			}
			// Without the exclusion they are claimable as ever.
			rest := h.claimParams(&store.TaskClaimParams{Agent: "a4", Roles: []string{"builder"}, Max: 10, LeaseDuration: defaultLease,
				Now: h.now(), ExcludeTiers: []string{store.TierInfra}})
			requireSameIDs(t, "claim excluding infra only", taskIDs(rest), []string{"f-top", "f-builder"})
			h.claimOne("a5", "i-top")
		}},
		{"ConcurrentClaimsKeepTheirOwnExclusions", func(t *testing.T, h *harness) {
			// Claims made together (which a driver may serve from one
			// shared pick) each leave their own excluded tiers.
			var creates []*store.TaskCreate
			for i := range 40 {
				tier := store.TierFrontier
				if i%2 == 1 {
					tier = store.TierMid
				}
				creates = append(creates, &store.TaskCreate{ID: fmt.Sprintf("t%02d", i), Tier: tier})
			}
			h.create(creates...)
			var (
				wg   sync.WaitGroup
				mu   sync.Mutex
				errs []error
			)
			for i := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					agent := fmt.Sprintf("agent-%d", i)
					var exclude []string
					if i%2 == 0 {
						exclude = []string{store.TierFrontier}
					}
					changes, err := h.s.TaskClaim(h.ctx, &store.TaskClaimParams{Agent: agent, Max: 3, LeaseDuration: defaultLease,
						Now: h.now(), ExcludeTiers: exclude})
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs = append(errs, err)
						return
					}
					for _, c := range changes {
						if slices.Contains(exclude, c.Task.Tier) {
							errs = append(errs, fmt.Errorf("%s excluding %v claimed %s of tier %s", agent, exclude, c.Task.ID, c.Task.Tier))
						}
					}
				}()
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
		}},
		{"BudgetTurnsATierOff", func(t *testing.T, h *harness) {
			b := store.Budget{Scope: store.ScopeTier, Key: store.TierFrontier, AlertMicros: 25_000_000, Off: true, UpdatedAt: h.now()}
			if _, err := h.s.BudgetSet(h.ctx, &b); err != nil {
				t.Fatal(err)
			}
			find := func() *store.Budget {
				t.Helper()
				list, err := h.s.BudgetList(h.ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, b := range list {
					if b.Scope == store.ScopeTier && b.Key == store.TierFrontier {
						return b
					}
				}
				t.Fatal("the frontier budget is not listed")
				return nil
			}
			if got := find(); !got.Off || got.AlertMicros != 25_000_000 {
				t.Errorf("stored %+v, want off with its alert kept", got)
			}
			b.Off = false
			if _, err := h.s.BudgetSet(h.ctx, &b); err != nil {
				t.Fatal(err)
			}
			if got := find(); got.Off {
				t.Errorf("turned on again but stored %+v", got)
			}
			bad := store.Budget{Scope: store.ScopeAgent, Key: "forge", Off: true}
			if _, err := h.s.BudgetSet(h.ctx, &bad); !errors.Is(err, store.ErrInvalidArgument) {
				t.Errorf("turning an agent's budget off: %v, want invalid", err)
			}
		}},
		{"RearmRaisesTheThresholdInOneStep", func(t *testing.T, h *harness) {
			total := func() *store.Budget {
				t.Helper()
				list, err := h.s.BudgetList(h.ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, b := range list {
					if b.Scope == store.ScopeTotal {
						return b
					}
				}
				return nil
			}
			raised := &store.Budget{Scope: store.ScopeTotal, EmergencyMicros: 150_000_000, UpdatedAt: h.now()}
			// Not stopped: nothing is written.
			if prev, err := h.s.EmergencyStopRearm(h.ctx, &store.EmergencyStopRearmParams{Now: h.now(), Budget: raised}); err != nil || prev.Stopped {
				t.Fatalf("rearm while running: %+v %v", prev, err)
			}
			if b := total(); b != nil {
				t.Fatalf("a rearm of a running fleet stored %+v", b)
			}
			if _, _, err := h.s.EmergencyStopStart(h.ctx, &store.EmergencyStopStartParams{Reason: "over", StoppedBy: "budget", Now: h.now()}); err != nil {
				t.Fatal(err)
			}
			prev, err := h.s.EmergencyStopRearm(h.ctx, &store.EmergencyStopRearmParams{Now: h.now(), Budget: raised})
			if err != nil || !prev.Stopped {
				t.Fatalf("rearm: %+v %v", prev, err)
			}
			if b := total(); b == nil || b.EmergencyMicros != 150_000_000 {
				t.Errorf("after the rearm the total budget is %+v, want the threshold raised to $150", b)
			}
			if st, _ := h.s.EmergencyStopGet(h.ctx); st.Stopped {
				t.Errorf("still stopped after the rearm")
			}
		}},
	})
}
