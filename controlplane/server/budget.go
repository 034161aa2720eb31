package server

import (
	"context"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// budgetServer adapts the budget domain to BudgetService.
type budgetServer struct {
	factoryv1.UnimplementedBudgetServiceServer
	b   *budget.Service
	log *slog.Logger
	// hostsAgent checks a sidecar's release of a reservation, whose agent
	// only the stored reservation names.
	hostsAgent HostsAgent
}

var _ factoryv1.BudgetServiceServer = (*budgetServer)(nil)

func (s *budgetServer) err(ctx context.Context, err error) error { return toStatus(ctx, s.log, err) }

func (s *budgetServer) ready() error {
	if s.b == nil {
		return status.Error(codes.Unimplemented, "this control plane runs no budget service")
	}
	return nil
}

// ReportSpend implements factoryv1.BudgetServiceServer.
func (s *budgetServer) ReportSpend(ctx context.Context, req *factoryv1.ReportSpendRequest) (*factoryv1.ReportSpendResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	rec, dup, err := s.b.ReportOne(ctx, eventFromProto(req.GetEvent()))
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.ReportSpendResponse{Record: recordToProto(rec), Duplicate: dup}, nil
}

// ReportSpendBatch implements factoryv1.BudgetServiceServer.
func (s *budgetServer) ReportSpendBatch(ctx context.Context, req *factoryv1.ReportSpendBatchRequest) (*factoryv1.ReportSpendBatchResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	events := make([]*budget.Event, len(req.GetEvents()))
	for i, e := range req.GetEvents() {
		events[i] = eventFromProto(e)
	}
	res, err := s.b.Report(ctx, events)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &factoryv1.ReportSpendBatchResponse{Recorded: int32(res.Recorded)}
	for i, dup := range res.Duplicates {
		if dup {
			out.Duplicates++
			out.DuplicateIds = append(out.DuplicateIds, events[i].ID)
		}
	}
	for _, c := range res.Conflicts {
		out.Conflicts = append(out.Conflicts, &factoryv1.SpendConflict{Id: c.ID, Agent: c.Agent, Fields: c.Fields})
	}
	return out, nil
}

// VoidSpend implements factoryv1.BudgetServiceServer.
func (s *budgetServer) VoidSpend(ctx context.Context, req *factoryv1.VoidSpendRequest) (*factoryv1.VoidSpendResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	ev, err := s.b.Void(ctx, req.GetAgent(), req.GetId(), req.GetReason(), callerName(ctx))
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &factoryv1.VoidSpendResponse{Record: recordToProto(ev)}
	void := map[string]any{"voided": false}
	if ev.Void != nil {
		out.VoidedBy, out.VoidedAt = ev.Void.VoidedBy, timestamppb.New(ev.Void.VoidedAt)
		void = map[string]any{"voided": true, "reason": ev.Void.Reason, "cost_micros_reversed": ev.CostMicros, "day": ev.Day}
	}
	// The audit entry names the event and carries the reason.
	access.Note(ctx, "spend "+ev.Agent+"/"+ev.ID, map[string]any{"voided": false, "cost_micros": ev.CostMicros}, void)
	return out, nil
}

// GetSpend implements factoryv1.BudgetServiceServer.
func (s *budgetServer) GetSpend(ctx context.Context, req *factoryv1.GetSpendRequest) (*factoryv1.GetSpendResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	rep, err := s.b.Spend(ctx, budget.Query{
		FromDay: req.GetFromDay(), ToDay: req.GetToDay(), Days: int(req.GetDays()), GroupBy: groupByFromProto(req.GetGroupBy()),
		Agent: req.GetAgent(), Tier: tierFromProto(req.GetTier()), Limit: int(req.GetLimit()),
	})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &factoryv1.GetSpendResponse{
		TimeZone: rep.TimeZone, FromDay: rep.FromDay, ToDay: rep.ToDay, Totals: totalsToProto(rep.Totals),
		Rolling_7DayAverageMicros: rep.Rolling7DayAvg, GroupsLeftOut: int32(rep.GroupsLeftOut),
	}
	for _, g := range rep.Groups {
		out.Groups = append(out.Groups, &factoryv1.SpendGroup{Key: g.Key, Totals: totalsToProto(g.SpendTotals)})
	}
	return out, nil
}

// SetBudget implements factoryv1.BudgetServiceServer.
func (s *budgetServer) SetBudget(ctx context.Context, req *factoryv1.SetBudgetRequest) (*factoryv1.SetBudgetResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	b, err := s.b.SetBudget(ctx, budgetFromProto(req.GetBudget()))
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.SetBudgetResponse{Budget: budgetToProto(*b)}, nil
}

// GetBudget implements factoryv1.BudgetServiceServer.
func (s *budgetServer) GetBudget(ctx context.Context, _ *factoryv1.GetBudgetRequest) (*factoryv1.GetBudgetResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	st, err := s.b.Budgets(ctx)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &factoryv1.GetBudgetResponse{Day: st.Day, TimeZone: st.TimeZone, EmergencyStop: stopToProto(st.Stop)}
	for _, b := range st.Budgets {
		out.Budgets = append(out.Budgets, &factoryv1.BudgetStatus{
			Budget: budgetToProto(b.Budget), SpentMicros: b.Spent, ReservedMicros: b.Reserved, RemainingMicros: b.Remaining,
			Alerting: b.Alerting, Capped: b.Capped,
		})
	}
	for _, a := range st.Alerts {
		out.Alerts = append(out.Alerts, &factoryv1.SpendAlert{
			Scope: scopeToProto(a.Scope), Key: a.Key, Day: a.Day, ThresholdMicros: a.ThresholdMicros, SpentMicros: a.SpentMicros,
			RaisedAt: timestamppb.New(a.RaisedAt),
		})
	}
	return out, nil
}

// ReserveSpend implements factoryv1.BudgetServiceServer.
func (s *budgetServer) ReserveSpend(ctx context.Context, req *factoryv1.ReserveSpendRequest) (*factoryv1.ReserveSpendResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	p := budget.ReserveParams{
		Agent: req.GetAgent(), Tier: tierFromProto(req.GetTier()), EstimateMicros: req.GetEstimateMicros(),
		Model: req.GetModel(), TaskID: req.GetTaskId(),
	}
	if req.GetTtl() != nil {
		p.TTL = req.GetTtl().AsDuration()
	}
	r, err := s.b.Reserve(ctx, p)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.ReserveSpendResponse{ReservationId: r.ID, ExpiresAt: timestamppb.New(r.ExpiresAt)}, nil
}

// SettleSpend implements factoryv1.BudgetServiceServer. The policy checks
// the actual event's agent; the reservation's own agent is checked here,
// since only the stored reservation knows it.
func (s *budgetServer) SettleSpend(ctx context.Context, req *factoryv1.SettleSpendRequest) (*factoryv1.SettleSpendResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if err := s.mayEnd(ctx, req.GetReservationId()); err != nil {
		return nil, err
	}
	var actual *budget.Event
	if req.GetActual() != nil {
		actual = eventFromProto(req.GetActual())
	}
	rec, dup, err := s.b.Settle(ctx, req.GetReservationId(), actual)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &factoryv1.SettleSpendResponse{Duplicate: dup}
	if rec != nil {
		out.Record = recordToProto(rec)
	}
	return out, nil
}

// mayEnd checks that the caller may end the reservation: an agent only
// its own, a sidecar only one of an agent on its host. An unknown id is
// left to Settle, which answers NOT_FOUND.
func (s *budgetServer) mayEnd(ctx context.Context, id string) error {
	c, ok := access.FromContext(ctx)
	if !ok || c.Role == store.RoleOperator {
		return nil
	}
	r, err := s.b.Reservation(ctx, id)
	if err != nil {
		return nil
	}
	switch {
	case c.Role == store.RoleAgent && r.Agent == c.Subject:
		return nil
	case c.Role == store.RoleSidecar && s.hostsAgent != nil:
		ok, err := s.hostsAgent(ctx, c.Subject, r.Agent)
		if err != nil {
			return s.err(ctx, err)
		}
		if ok {
			return nil
		}
	}
	return status.Errorf(codes.PermissionDenied, "%s may not settle a reservation of agent %s", c, r.Agent)
}

// EmergencyStop implements factoryv1.BudgetServiceServer.
func (s *budgetServer) EmergencyStop(ctx context.Context, req *factoryv1.EmergencyStopRequest) (*factoryv1.EmergencyStopResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	st, err := s.b.EmergencyStop(ctx, req.GetReason(), callerName(ctx))
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.EmergencyStopResponse{State: stopToProto(st)}, nil
}

// RearmEmergencyStop implements factoryv1.BudgetServiceServer.
func (s *budgetServer) RearmEmergencyStop(ctx context.Context, req *factoryv1.RearmEmergencyStopRequest) (*factoryv1.RearmEmergencyStopResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	n, err := s.b.RearmWith(ctx, budget.RearmParams{By: callerName(ctx), Note: req.GetNote(), ThresholdMicros: req.GetThresholdMicros()})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	if req.GetThresholdMicros() > 0 {
		// The audit entry carries the threshold the rearm raised.
		access.Note(ctx, "emergency-stop", map[string]any{"stopped": true},
			map[string]any{"stopped": false, "emergency_micros": req.GetThresholdMicros(), "resumed_tasks": n})
	}
	return &factoryv1.RearmEmergencyStopResponse{ResumedTasks: n}, nil
}

// GetEmergencyStop implements factoryv1.BudgetServiceServer.
func (s *budgetServer) GetEmergencyStop(ctx context.Context, _ *factoryv1.GetEmergencyStopRequest) (*factoryv1.GetEmergencyStopResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	st, err := s.b.StopState(ctx)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.GetEmergencyStopResponse{State: stopToProto(st)}, nil
}

// callerName is who a stop or rearm is recorded as: the operator's name.
func callerName(ctx context.Context) string {
	if c, ok := access.FromContext(ctx); ok {
		return c.Subject
	}
	return "unknown"
}

func eventFromProto(e *factoryv1.SpendEvent) *budget.Event {
	out := &budget.Event{
		ID: e.GetId(), Agent: e.GetAgent(), Host: e.GetHost(), Model: e.GetModel(), Provider: e.GetProvider(),
		Tier: tierFromProto(e.GetTier()), InputTokens: e.GetInputTokens(), OutputTokens: e.GetOutputTokens(), TaskID: e.GetTaskId(),
		CacheReadTokens: e.GetCacheReadTokens(), CacheWriteTokens: e.GetCacheWriteTokens(), Failed: e.GetFailed(),
	}
	if e.CostMicros != nil {
		c := e.GetCostMicros()
		out.Cost = &c
	}
	if e.GetOccurredAt() != nil {
		out.OccurredAt = e.GetOccurredAt().AsTime()
	}
	return out
}

func recordToProto(r *store.SpendEvent) *factoryv1.SpendRecord {
	cost := r.CostMicros
	return &factoryv1.SpendRecord{
		Event: &factoryv1.SpendEvent{
			Id: r.ID, Agent: r.Agent, Host: r.Host, Model: r.Model, Provider: r.Provider, Tier: tierToProto(r.Tier),
			InputTokens: r.InputTokens, OutputTokens: r.OutputTokens, CostMicros: &cost, TaskId: r.TaskID,
			OccurredAt: timestamppb.New(r.OccurredAt),
		},
		PricedByServer: r.PricedByServer, RecordedAt: timestamppb.New(r.RecordedAt), Day: r.Day,
	}
}

var tierNames = map[factoryv1.SpendTier]string{
	factoryv1.SpendTier_SPEND_TIER_FRONTIER: store.TierFrontier,
	factoryv1.SpendTier_SPEND_TIER_MID:      store.TierMid,
	factoryv1.SpendTier_SPEND_TIER_LOCAL:    store.TierLocal,
	factoryv1.SpendTier_SPEND_TIER_INFRA:    store.TierInfra,
}

func tierFromProto(t factoryv1.SpendTier) string { return tierNames[t] }

func tierToProto(t string) factoryv1.SpendTier {
	for k, v := range tierNames {
		if v == t {
			return k
		}
	}
	return factoryv1.SpendTier_SPEND_TIER_UNSPECIFIED
}

func groupByFromProto(g factoryv1.SpendGroupBy) budget.GroupBy {
	switch g {
	case factoryv1.SpendGroupBy_SPEND_GROUP_BY_AGENT:
		return budget.GroupAgent
	case factoryv1.SpendGroupBy_SPEND_GROUP_BY_MODEL:
		return budget.GroupModel
	case factoryv1.SpendGroupBy_SPEND_GROUP_BY_PROVIDER:
		return budget.GroupProvider
	case factoryv1.SpendGroupBy_SPEND_GROUP_BY_TIER:
		return budget.GroupTier
	case factoryv1.SpendGroupBy_SPEND_GROUP_BY_TASK:
		return budget.GroupTask
	case factoryv1.SpendGroupBy_SPEND_GROUP_BY_DAY:
		return budget.GroupDay
	}
	return budget.GroupNone
}

func totalsToProto(t store.SpendTotals) *factoryv1.SpendTotals {
	return &factoryv1.SpendTotals{CostMicros: t.CostMicros, Events: t.Events, InputTokens: t.InputTokens, OutputTokens: t.OutputTokens}
}

func scopeToProto(s string) factoryv1.BudgetScope {
	switch s {
	case store.ScopeTotal:
		return factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL
	case store.ScopeTier:
		return factoryv1.BudgetScope_BUDGET_SCOPE_TIER
	case store.ScopeAgent:
		return factoryv1.BudgetScope_BUDGET_SCOPE_AGENT
	}
	return factoryv1.BudgetScope_BUDGET_SCOPE_UNSPECIFIED
}

func budgetFromProto(b *factoryv1.Budget) store.Budget {
	scope := ""
	switch b.GetScope() {
	case factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL:
		scope = store.ScopeTotal
	case factoryv1.BudgetScope_BUDGET_SCOPE_TIER:
		scope = store.ScopeTier
	case factoryv1.BudgetScope_BUDGET_SCOPE_AGENT:
		scope = store.ScopeAgent
	}
	return store.Budget{
		Scope: scope, Key: b.GetKey(), TargetMicros: b.GetTargetMicros(), AlertMicros: b.GetAlertMicros(),
		CapMicros: b.GetCapMicros(), EmergencyMicros: b.GetEmergencyMicros(), Off: b.GetOff(),
	}
}

func budgetToProto(b store.Budget) *factoryv1.Budget {
	return &factoryv1.Budget{
		Scope: scopeToProto(b.Scope), Key: b.Key, TargetMicros: b.TargetMicros, AlertMicros: b.AlertMicros,
		CapMicros: b.CapMicros, EmergencyMicros: b.EmergencyMicros, Off: b.Off,
	}
}

func stopToProto(st *store.EmergencyStop) *factoryv1.EmergencyStopState {
	if st == nil {
		return &factoryv1.EmergencyStopState{}
	}
	out := &factoryv1.EmergencyStopState{Stopped: st.Stopped, Reason: st.Reason, StoppedBy: st.StoppedBy, PausedTasks: st.PausedTasks}
	if !st.StoppedAt.IsZero() {
		out.StoppedAt = timestamppb.New(st.StoppedAt)
	}
	return out
}
