package budget

import (
	"context"

	"github.com/factory/factory/controlplane/store"
)

// SetBudget stores a budget. A raised cap lets waiting claimers in at once.
func (s *Service) SetBudget(ctx context.Context, b store.Budget) (*store.Budget, error) {
	b.UpdatedAt = s.clock.Now()
	out, err := s.store.BudgetSet(ctx, &b)
	if err != nil {
		return nil, err
	}
	if _, err := s.refresh(ctx, true); err != nil {
		s.log.WarnContext(ctx, "budget: refreshing after a budget change failed", "err", err)
	}
	if s.cfg.Queue != nil {
		s.cfg.Queue.WakeClaimers()
	}
	return out, nil
}

// Status is a budget and where today stands against it.
type Status struct {
	Budget   store.Budget
	Spent    int64
	Reserved int64
	// Remaining is cap - spent - reserved (never below 0); -1 without a
	// cap.
	Remaining int64
	Alerting  bool
	Capped    bool
}

// Standing is every budget with today's standing.
type Standing struct {
	Day      string
	TimeZone string
	Budgets  []Status
	Alerts   []*store.SpendAlert
	Stop     *store.EmergencyStop
}

// Budgets returns every budget in force with today's spend. The default
// agent budget (empty key) shows the largest spend of an agent without a
// budget of its own.
func (s *Service) Budgets(ctx context.Context) (*Standing, error) {
	v, err := s.refresh(ctx, true)
	if err != nil {
		return nil, err
	}
	alerts, err := s.store.SpendAlertList(ctx, v.day)
	if err != nil {
		return nil, err
	}
	st := v.standing
	out := &Standing{Day: v.day, TimeZone: s.loc.String(), Alerts: alerts, Stop: v.stop}
	for _, b := range v.budgets.list() {
		var spent, reserved int64
		switch {
		case b.Scope == store.ScopeTotal:
			spent, reserved = st.Spent[store.DimTotal][""], st.Reserved[store.ScopeTotal][""]
		case b.Scope == store.ScopeTier:
			spent, reserved = st.Spent[store.DimTier][b.Key], st.Reserved[store.ScopeTier][b.Key]
		case b.Key != "":
			spent, reserved = st.Spent[store.DimAgent][b.Key], st.Reserved[store.ScopeAgent][b.Key]
		default:
			for agent, amount := range st.Spent[store.DimAgent] {
				if _, own := v.budgets.agents[agent]; !own && amount > spent {
					spent, reserved = amount, st.Reserved[store.ScopeAgent][agent]
				}
			}
		}
		status := Status{Budget: b, Spent: spent, Reserved: reserved, Remaining: -1,
			Alerting: b.AlertMicros > 0 && spent >= b.AlertMicros}
		if b.CapMicros > 0 {
			used := store.SatAdd(spent, reserved)
			status.Remaining = max(0, b.CapMicros-max(used, 0))
			status.Capped = used >= b.CapMicros
		}
		out.Budgets = append(out.Budgets, status)
	}
	return out, nil
}
