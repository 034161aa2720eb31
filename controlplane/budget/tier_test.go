package budget

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
)

// A tier's cap reached (or a tier turned off) leaves that tier's tasks
// unclaimed; it does not refuse the claim, so tasks of other tiers and
// without a tier are still claimed. The total's and the agent's caps still
// refuse. A reservation against the capped tier is still refused.
func TestATierCapLeavesOnlyItsTasks(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	if _, err := f.q.Create(f.ctx, []*queue.CreateParams{
		{ID: "f1", Title: "opus", Tier: store.TierFrontier, Priority: 9},
		{ID: "m1", Title: "sonnet", Tier: store.TierMid, Priority: 5},
		{ID: "plain", Title: "no tier"},
	}); err != nil {
		t.Fatal(err)
	}
	f.report("opus-1", "planner", store.TierFrontier, 2_000_000, f.clock.Now())
	f.setBudget(store.Budget{Scope: store.ScopeTier, Key: store.TierFrontier, CapMicros: 1_000_000})

	if err := f.svc.Gate(f.ctx, "forge"); err != nil {
		t.Fatalf("a tier's cap refused the claim: %v", err)
	}
	if ex, err := f.svc.ClaimFilter(f.ctx, "forge"); err != nil || !slices.Equal(ex, []string{store.TierFrontier}) {
		t.Fatalf("claim filter: %v, %v; want frontier excluded", ex, err)
	}
	claim := func(agent string) string {
		t.Helper()
		got, err := f.q.Claim(f.ctx, queue.ClaimParams{Agent: agent})
		if err != nil {
			t.Fatalf("claim by %s: %v", agent, err)
		}
		if len(got) == 0 {
			return ""
		}
		return got[0].ID
	}
	if id := claim("forge"); id != "m1" {
		t.Fatalf("claimed %q, want m1", id)
	}
	if id := claim("hammer"); id != "plain" {
		t.Fatalf("claimed %q, want plain", id)
	}
	if id := claim("anvil"); id != "" {
		t.Fatalf("claimed %q past the frontier cap", id)
	}
	var qe *store.QuotaError
	if _, err := f.svc.Reserve(f.ctx, ReserveParams{Agent: "planner", Tier: store.TierFrontier, EstimateMicros: 1}); !errors.As(err, &qe) || qe.Subject != "budget:tier:frontier" {
		t.Errorf("a reservation past the frontier cap: %v", err)
	}

	// The total's cap still refuses every claim.
	f.setBudget(store.Budget{Scope: store.ScopeTotal, CapMicros: 2_000_000})
	if _, err := f.q.Claim(f.ctx, queue.ClaimParams{Agent: "anvil"}); !errors.As(err, &qe) || qe.Subject != "budget:total" {
		t.Errorf("claim past the total cap: %v", err)
	}
}

// Off turns a tier off whatever its spend; a cap of 0 is no cap.
func TestATierTurnedOff(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	f.setBudget(store.Budget{Scope: store.ScopeTier, Key: store.TierMid, CapMicros: 0})
	if ex, _ := f.svc.ClaimFilter(f.ctx, "forge"); len(ex) != 0 {
		t.Fatalf("a cap of 0 excluded %v", ex)
	}
	f.setBudget(store.Budget{Scope: store.ScopeTier, Key: store.TierMid, AlertMicros: 15_000_000, Off: true})
	if ex, _ := f.svc.ClaimFilter(f.ctx, "forge"); !slices.Equal(ex, []string{store.TierMid}) {
		t.Fatalf("with mid off the filter excludes %v", ex)
	}
	st, err := f.svc.Budgets(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range st.Budgets {
		if b.Budget.Scope == store.ScopeTier && b.Budget.Key == store.TierMid && !b.Budget.Off {
			t.Errorf("the budgets list mid as on: %+v", b)
		}
	}
}

// A claimer waiting while the only READY task's tier is capped is woken
// the moment the cap is raised.
func TestRaisingATierCapWakesAWaitingClaimer(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	if _, err := f.q.Create(f.ctx, []*queue.CreateParams{{ID: "f1", Title: "opus", Tier: store.TierFrontier}}); err != nil {
		t.Fatal(err)
	}
	f.report("opus-1", "planner", store.TierFrontier, 2_000_000, f.clock.Now())
	f.setBudget(store.Budget{Scope: store.ScopeTier, Key: store.TierFrontier, CapMicros: 1_000_000})
	// Told each time the claimer asks the gates: after the first ask it
	// has taken its wake-up channel, so a wake-up from then on reaches it.
	asked := make(chan struct{}, 10)
	f.q.AddClaimFilter(func(_ context.Context, _ string) ([]string, error) {
		asked <- struct{}{}
		return nil, nil
	})
	type res struct {
		tasks []*store.Task
		err   error
	}
	done := make(chan res, 1)
	go func() {
		got, err := f.q.Claim(f.ctx, queue.ClaimParams{Agent: "forge", Wait: 30 * time.Second})
		done <- res{got, err}
	}()
	<-asked
	select {
	case r := <-done:
		t.Fatalf("the claim returned while the tier was capped: %v %v", r.tasks, r.err)
	default:
	}
	f.setBudget(store.Budget{Scope: store.ScopeTier, Key: store.TierFrontier, CapMicros: 5_000_000})
	select {
	case r := <-done:
		if r.err != nil || len(r.tasks) != 1 || r.tasks[0].ID != "f1" {
			t.Fatalf("woken claim: %v %v", r.tasks, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("raising the cap did not wake the waiting claimer")
	}
}

// Rearm is refused while today's total is at or over the threshold, and
// nothing changes; raising the threshold in the same call rearms.
func TestRearmRefusedOverTheThresholdUnlessRaised(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	f.report("big", "forge", store.TierFrontier, 120_000_000, f.clock.Now())
	if st, _ := f.svc.StopState(f.ctx); !st.Stopped {
		t.Fatal("$120 did not stop the fleet")
	}
	if _, err := f.svc.Rearm(f.ctx, "ops", ""); !errors.Is(err, ErrRearmRefused) {
		t.Fatalf("rearm over the threshold: %v", err)
	}
	if _, err := f.svc.RearmWith(f.ctx, RearmParams{By: "ops", ThresholdMicros: 120_000_000}); !errors.Is(err, ErrRearmRefused) {
		t.Fatalf("rearm raising the threshold only to today's total: %v", err)
	}
	if st, _ := f.svc.StopState(f.ctx); !st.Stopped {
		t.Fatal("a refused rearm lifted the stop")
	}
	if _, err := f.svc.RearmWith(f.ctx, RearmParams{By: "ops", ThresholdMicros: 150_000_000}); err != nil {
		t.Fatal(err)
	}
	st, _ := f.svc.Budgets(f.ctx)
	if st.Stop.Stopped || st.Budgets[0].Budget.EmergencyMicros != 150_000_000 || st.Budgets[0].Budget.AlertMicros != 50_000_000 {
		t.Errorf("after the rearm: stop %+v, total %+v; want running, threshold $150, the default alert kept", st.Stop, st.Budgets[0].Budget)
	}
	f.report("next", "forge", store.TierMid, 1_000_000, f.clock.Now())
	if st, _ := f.svc.StopState(f.ctx); st.Stopped {
		t.Error("the next report stopped the fleet again")
	}
	// A threshold given to a rearm of a running fleet is refused, not
	// silently dropped.
	if _, err := f.svc.RearmWith(f.ctx, RearmParams{By: "ops", ThresholdMicros: 200_000_000}); !errors.Is(err, ErrRearmRefused) {
		t.Errorf("rearm --threshold of a running fleet: %v", err)
	}
}

// A task naming an unknown tier is refused, naming the field.
func TestAnUnknownTaskTierIsRefused(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	_, err := f.q.Create(f.ctx, []*queue.CreateParams{{Title: "x", Tier: "premium"}})
	var fe *store.FieldError
	if !errors.As(err, &fe) || fe.Field != "tier" {
		t.Fatalf("create with tier premium: %v, want an invalid tier field", err)
	}
}
