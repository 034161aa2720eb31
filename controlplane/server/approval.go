package server

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/approval"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// approvalServer is the ApprovalService: a thin adapter over the approval
// domain. The policy table has already admitted the caller; Decide passes
// the caller on, because who may decide a given request (never its
// requester) depends on the request.
type approvalServer struct {
	factoryv1.UnimplementedApprovalServiceServer
	a        *approval.Service
	log      *slog.Logger
	stopping <-chan struct{}
}

var _ factoryv1.ApprovalServiceServer = (*approvalServer)(nil)

func (s *approvalServer) err(ctx context.Context, err error) error { return toStatus(ctx, s.log, err) }

func (s *approvalServer) ready() error {
	if s.a == nil {
		return status.Error(codes.Unimplemented, "approvals are not configured on this control plane")
	}
	return nil
}

func (s *approvalServer) RequestApproval(ctx context.Context, r *factoryv1.RequestApprovalRequest) (*factoryv1.RequestApprovalResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	a, err := s.a.Request(ctx, approval.RequestParams{
		What: r.GetWhat(), Why: r.GetWhy(), Agent: r.GetAgent(), Risk: store.ApprovalRisk(r.GetRisk()), Tier: r.GetTier(),
		Kind: r.GetKind(), PayloadJSON: r.GetPayloadJson(), PayloadSHA256: r.GetPayloadSha256(), AmountMicros: r.GetAmountMicros(),
		Deadline: timeOf(r.GetDeadline()), Timeout: durationOf(r.GetTimeout()),
		DefaultOnTimeout: store.ApprovalDecision(r.GetDefaultOnTimeout()), TaskID: r.GetTaskId(),
	})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.RequestApprovalResponse{Approval: approvalToProto(a, s.a.Now())}, nil
}

func (s *approvalServer) GetApproval(ctx context.Context, r *factoryv1.GetApprovalRequest) (*factoryv1.GetApprovalResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	a, err := s.a.Get(ctx, r.GetApprovalId())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.GetApprovalResponse{Approval: approvalToProto(a, s.a.Now())}, nil
}

func (s *approvalServer) ListApprovals(ctx context.Context, r *factoryv1.ListApprovalsRequest) (*factoryv1.ListApprovalsResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	states := make([]store.ApprovalState, len(r.GetStates()))
	for i, st := range r.GetStates() {
		states[i] = store.ApprovalState(st)
	}
	res, err := s.a.List(ctx, approval.ListParams{
		States: states, Agent: r.GetAgent(), PageSize: int(r.GetPageSize()), PageToken: r.GetPageToken(),
		NewestFirst: r.GetNewestFirst(), IDPrefix: r.GetIdPrefix(),
	})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	now := s.a.Now()
	out := &factoryv1.ListApprovalsResponse{NextPageToken: res.NextCursor, Approvals: make([]*factoryv1.Approval, len(res.Approvals))}
	for i, a := range res.Approvals {
		out.Approvals[i] = approvalToProto(a, now)
	}
	return out, nil
}

func (s *approvalServer) Decide(ctx context.Context, r *factoryv1.DecideRequest) (*factoryv1.DecideResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	c, _ := access.FromContext(ctx)
	a, err := s.a.Decide(ctx, approval.DecideParams{
		ID: r.GetApprovalId(), Decision: store.ApprovalDecision(r.GetDecision()), Reason: r.GetReason(),
		Instructions: r.GetInstructions(), By: approval.Decider{Name: c.Subject, Operator: c.Role == store.RoleOperator},
	})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	// The audit entry says who decided what: the request, its outcome and
	// the gated task.
	access.Note(ctx, "approval:"+a.ID, map[string]any{"state": store.ApprovalPending.String()}, map[string]any{
		"state": a.State.String(), "outcome": a.Outcome.String(), "decided_by": a.DecidedBy, "reason": a.Reason,
		"instructions": a.Instructions, "agent": a.Agent, "what": a.What, "task_id": a.TaskID, "payload_sha256": a.PayloadSHA256,
	})
	return &factoryv1.DecideResponse{Approval: approvalToProto(a, s.a.Now())}, nil
}

func (s *approvalServer) WaitApproval(r *factoryv1.WaitApprovalRequest, stream factoryv1.ApprovalService_WaitApprovalServer) error {
	if err := s.ready(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	// A long wait must not hold up a graceful stop.
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := s.a.Wait(ctx, r.GetApprovalId(), func(a *store.Approval) error {
		return stream.Send(&factoryv1.WaitApprovalResponse{Approval: approvalToProto(a, s.a.Now()), Final: a.Final()})
	})
	if err != nil && stream.Context().Err() == nil && ctx.Err() != nil {
		return status.Error(codes.Unavailable, "the control plane is shutting down; wait again")
	}
	return s.err(ctx, err)
}

func approvalToProto(a *store.Approval, now time.Time) *factoryv1.Approval {
	if a == nil {
		return nil
	}
	p := &factoryv1.Approval{
		Id: a.ID, What: a.What, Why: a.Why, Agent: a.Agent, Risk: factoryv1.ApprovalRisk(a.Risk), Tier: a.Tier,
		Kind: a.Kind, PayloadJson: a.PayloadJSON, PayloadSha256: a.PayloadSHA256, Deadline: ts(a.Deadline),
		DefaultOnTimeout: factoryv1.ApprovalDecision(a.DefaultOnTimeout), TaskId: a.TaskID,
		State: factoryv1.ApprovalState(a.State), AutoApproved: a.AutoApproved, Expired: a.State == store.ApprovalExpired,
		AppliedOutcome: factoryv1.ApprovalDecision(a.Outcome), DecidedBy: a.DecidedBy, DecidedAt: ts(a.DecidedAt),
		Reason: a.Reason, Instructions: a.Instructions, CreatedAt: ts(a.CreatedAt), RemindedAt: ts(a.RemindedAt),
	}
	if left := approval.TimeLeft(a, now); left > 0 {
		p.TimeLeft = durationpb.New(left)
	}
	return p
}
