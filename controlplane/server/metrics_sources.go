package server

import (
	"context"

	"github.com/factory/factory/controlplane/alert"
	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/metrics"
	"github.com/factory/factory/controlplane/store"
)

// The adapters below turn the domain services into the metrics package's
// sources; each reads the store once per Prometheus scrape.

// spendSource reads today's spend from the day's rollups and the budgets
// with where today stands against them.
func spendSource(b *budget.Service) metrics.SpendSource {
	return func(ctx context.Context) (*metrics.SpendSnapshot, error) {
		standing, err := b.Budgets(ctx)
		if err != nil {
			return nil, err
		}
		total, byAgent, byTier, byModel, err := b.DayTotals(ctx, standing.Day)
		if err != nil {
			return nil, err
		}
		snap := &metrics.SpendSnapshot{TotalMicros: total, ByTier: byTier, ByAgent: byAgent, ByModel: byModel,
			Halted: standing.Stop != nil && standing.Stop.Stopped}
		for _, st := range standing.Budgets {
			name := st.Budget.Key
			if st.Budget.Scope == store.ScopeAgent && name == "" {
				name = "default"
			}
			snap.Budgets = append(snap.Budgets, metrics.BudgetLine{Scope: st.Budget.Scope, Name: name,
				SpentMicros: st.Spent, ReservedMicros: st.Reserved,
				Limits: map[string]int64{"target": st.Budget.TargetMicros, "alert": st.Budget.AlertMicros,
					"cap": st.Budget.CapMicros, "emergency": st.Budget.EmergencyMicros}})
		}
		return snap, nil
	}
}

// alertSource counts the FIRING alerts of every rule in force (disabled
// rules are not), listing the rules with none as 0. Silenced alerts still
// fire, so they count.
func alertSource(a *alert.Service) metrics.AlertSource {
	return func(ctx context.Context) ([]metrics.AlertCount, error) {
		firing, err := a.FiringByRule(ctx)
		if err != nil {
			return nil, err
		}
		rules := a.Rules()
		out := make([]metrics.AlertCount, len(rules))
		for i, r := range rules {
			out[i] = metrics.AlertCount{Rule: r.Name, Severity: r.Severity, Firing: firing[r.Name]}
		}
		return out, nil
	}
}

// approvalSource counts the PENDING approval requests in the store, a page
// at a time (there are few: each is waiting for a person). It reads the
// store, not the approval service, so the count is there on every replica
// whatever runs the approval sweeper.
func approvalSource(st store.ApprovalStore) metrics.ApprovalSource {
	return func(ctx context.Context) (int64, error) {
		var n int64
		token := ""
		for {
			page, err := st.ApprovalList(ctx, &store.ApprovalListParams{States: []store.ApprovalState{store.ApprovalPending}, Limit: 1000, Cursor: token})
			if err != nil {
				return 0, err
			}
			n += int64(len(page.Approvals))
			if page.NextCursor == "" {
				return n, nil
			}
			token = page.NextCursor
		}
	}
}
