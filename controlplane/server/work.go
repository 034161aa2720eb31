package server

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Work serves an agent's loop on one stream: each request is handled by
// the same method its unary call reaches (with the audit notes of an
// on-behalf call), in order, and answered with its ref. The interceptors
// already authorized the request (the policy's Work row names the agent
// and roles inside it) and validated it as it arrived.
//
// What a call costs besides the store, its own HTTP/2 stream, header
// frames and the interceptor chain's per-call work, a Work request does
// not: that is the point of the path.
func (s *auditedQueue) Work(stream factoryv1.QueueService_WorkServer) error {
	ctx := stream.Context()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-s.stopping:
			return status.Error(codes.Unavailable, "the control plane is shutting down")
		default:
		}
		if s.limit != nil {
			// Refused as the unary call would be; the stream stays open.
			if err := s.limit(ctx); err != nil {
				// RESOURCE_EXHAUSTED, as the rate-limit interceptor
				// answers a call (the limiter's error carries no code).
				refusal := status.Error(codes.ResourceExhausted, err.Error())
				if err := stream.Send(workError(req.GetRef(), refusal)); err != nil {
					return err
				}
				continue
			}
		}
		// A claim's tasks are noted as claimDelivery notes a unary
		// claim's, so that they go back to READY if they cannot be sent.
		pending := &pendingClaim{}
		rctx := context.WithValue(ctx, pendingClaimKey{}, pending)
		// Audited as the call it carries would be: an operator's, or a
		// sidecar's for an agent on its host (the policy lets an agent
		// act only as itself, which is not audited).
		var rec *access.Record
		c, _ := access.FromContext(ctx)
		if s.audit != nil && c.Role != store.RoleAgent {
			rctx, rec = access.WithRecord(rctx)
		}
		resp := s.work(rctx, req)
		if rec != nil && resp.GetError() == nil {
			s.audit(rctx, c, workMethod(req), rec)
		}
		if err := stream.Send(resp); err != nil {
			if len(pending.tasks) > 0 {
				releaseUndelivered(ctx, s.q, s.log, pending.tasks, err)
			}
			return err
		}
	}
}

// work runs one request and returns its response.
func (s *auditedQueue) work(ctx context.Context, req *factoryv1.WorkRequest) *factoryv1.WorkResponse {
	resp := &factoryv1.WorkResponse{Ref: req.GetRef()}
	var err error
	switch c := req.GetCall().(type) {
	case *factoryv1.WorkRequest_Claim:
		var r *factoryv1.ClaimTaskResponse
		if r, err = s.ClaimTask(ctx, c.Claim); err == nil {
			resp.Result = &factoryv1.WorkResponse_Claim{Claim: r}
		}
	case *factoryv1.WorkRequest_Complete:
		var r *factoryv1.CompleteTaskResponse
		if r, err = s.CompleteTask(ctx, c.Complete); err == nil {
			resp.Result = &factoryv1.WorkResponse_Complete{Complete: r}
		}
	case *factoryv1.WorkRequest_Renew:
		var r *factoryv1.RenewLeaseResponse
		if r, err = s.RenewLease(ctx, c.Renew); err == nil {
			resp.Result = &factoryv1.WorkResponse_Renew{Renew: r}
		}
	case *factoryv1.WorkRequest_Fail:
		var r *factoryv1.FailTaskResponse
		if r, err = s.FailTask(ctx, c.Fail); err == nil {
			resp.Result = &factoryv1.WorkResponse_Fail{Fail: r}
		}
	case *factoryv1.WorkRequest_CompleteMany:
		var r *factoryv1.CompleteTasksResponse
		if r, err = s.CompleteTasks(ctx, c.CompleteMany); err == nil {
			resp.Result = &factoryv1.WorkResponse_CompleteMany{CompleteMany: r}
		}
	default:
		// Validation requires one of the calls; a newer client's call
		// this server does not know is refused, not ignored.
		err = status.Error(codes.InvalidArgument, "call: not a call this control plane knows; send claim, complete, complete_many, renew or fail")
	}
	if err != nil {
		return workError(req.GetRef(), toStatus(ctx, s.log, err))
	}
	return resp
}

// workError answers request ref with err's status.
func workError(ref uint64, err error) *factoryv1.WorkResponse {
	st := status.Convert(err).Proto()
	return &factoryv1.WorkResponse{Ref: ref, Result: &factoryv1.WorkResponse_Error{Error: &factoryv1.WorkError{
		Code: st.GetCode(), Message: st.GetMessage(), Details: st.GetDetails(),
	}}}
}

// workMethod is the unary RPC a Work request stands for, as the audit log
// names it.
func workMethod(req *factoryv1.WorkRequest) string {
	switch req.GetCall().(type) {
	case *factoryv1.WorkRequest_Claim:
		return factoryv1.QueueService_ClaimTask_FullMethodName
	case *factoryv1.WorkRequest_Complete:
		return factoryv1.QueueService_CompleteTask_FullMethodName
	case *factoryv1.WorkRequest_Renew:
		return factoryv1.QueueService_RenewLease_FullMethodName
	case *factoryv1.WorkRequest_Fail:
		return factoryv1.QueueService_FailTask_FullMethodName
	case *factoryv1.WorkRequest_CompleteMany:
		return factoryv1.QueueService_CompleteTasks_FullMethodName
	}
	return factoryv1.QueueService_Work_FullMethodName
}
