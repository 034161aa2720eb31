package console

import (
	"context"
	"slices"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// overviewData is `factory status` as a page.
type overviewData struct {
	Queue       *factoryv1.GetQueueStatsResponse
	Total       *factoryv1.BudgetStatus // the whole fleet's day
	Budget      *factoryv1.GetBudgetResponse
	Maintenance *factoryv1.GetMaintenanceResponse
	Backups     *factoryv1.GetBackupStatusResponse
	Pending     []*factoryv1.Approval
	MorePending bool
	Agents      agentCounts
	Firing      []*factoryv1.Alert
	// Unavailable names sections this control plane does not serve.
	Unavailable map[string]string
}

type agentCounts struct{ Online, Stale, Offline int }

// stateOrder is the queue's states in the order the runbook's folders go.
var stateOrder = []factoryv1.TaskState{
	factoryv1.TaskState_TASK_STATE_BACKLOG, factoryv1.TaskState_TASK_STATE_READY, factoryv1.TaskState_TASK_STATE_IN_PROGRESS,
	factoryv1.TaskState_TASK_STATE_REVIEW, factoryv1.TaskState_TASK_STATE_DONE, factoryv1.TaskState_TASK_STATE_FAILED,
	factoryv1.TaskState_TASK_STATE_PAUSED,
}

// count returns the number of tasks in a state.
func (d overviewData) Count(st factoryv1.TaskState) int64 {
	for _, c := range d.Queue.GetCounts() {
		if c.GetState() == st {
			return c.GetCount()
		}
	}
	return 0
}

// States lists the queue's states for the template.
func (overviewData) States() []factoryv1.TaskState { return stateOrder }

// overview fetches every section at once: the page costs the slowest
// read, not their sum.
func (s *Server) overview(rq *request) error {
	d := overviewData{}
	r := newReads(rq.ctx)
	r.optional("queue", func(ctx context.Context) (err error) {
		d.Queue, err = s.queue.GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{})
		return err
	})
	r.optional("budget", func(ctx context.Context) (err error) {
		d.Budget, err = s.budget.GetBudget(ctx, &factoryv1.GetBudgetRequest{})
		for _, b := range d.Budget.GetBudgets() {
			if b.GetBudget().GetScope() == factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL {
				d.Total = b
			}
		}
		return err
	})
	r.optional("maintenance", func(ctx context.Context) (err error) {
		d.Maintenance, err = s.ops.GetMaintenance(ctx, &factoryv1.GetMaintenanceRequest{})
		return err
	})
	r.optional("backups", func(ctx context.Context) (err error) {
		d.Backups, err = s.ops.GetBackupStatus(ctx, &factoryv1.GetBackupStatusRequest{})
		return err
	})
	r.optional("approvals", func(ctx context.Context) error {
		r, err := s.approvals.ListApprovals(ctx, &factoryv1.ListApprovalsRequest{
			States: []factoryv1.ApprovalState{factoryv1.ApprovalState_APPROVAL_STATE_PENDING}, PageSize: 10})
		d.Pending, d.MorePending = r.GetApprovals(), r.GetNextPageToken() != ""
		// The most urgent first, as on the Approvals page.
		slices.SortStableFunc(d.Pending, func(a, b *factoryv1.Approval) int {
			return a.GetDeadline().AsTime().Compare(b.GetDeadline().AsTime())
		})
		return err
	})
	r.optional("agents", func(ctx context.Context) error {
		r, err := s.fleet.ListAgents(ctx, &factoryv1.ListAgentsRequest{})
		for _, a := range r.GetAgents() {
			switch a.GetState() {
			case factoryv1.NodeState_NODE_STATE_ONLINE:
				d.Agents.Online++
			case factoryv1.NodeState_NODE_STATE_STALE:
				d.Agents.Stale++
			default:
				d.Agents.Offline++
			}
		}
		return err
	})
	r.optional("alerts", func(ctx context.Context) error {
		r, err := s.ops.ListAlerts(ctx, &factoryv1.ListAlertsRequest{})
		for _, a := range r.GetAlerts() {
			if a.GetState() == factoryv1.AlertState_ALERT_STATE_FIRING {
				d.Firing = append(d.Firing, a)
			}
		}
		return err
	})
	if err := r.wait(); err != nil {
		return err
	}
	d.Unavailable = r.unavailable
	return s.render(rq, 200, "overview", view{Title: "Overview", Nav: "overview", Topics: "tasks,approvals,alerts,spend,ops"}, d)
}
