package server

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/approval"
	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/maintenance"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
)

// toStatus is the one place where domain errors become gRPC status codes.
// Anything it does not recognise is an internal fault: logged in full, and
// answered without detail so that internals don't leak to clients.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return err
	}
	var fe *store.FieldError
	var qe *store.QuotaError
	var ve *protovalidate.ValidationError
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.As(err, &ve) && len(ve.Violations) > 0:
		violations := make([]*errdetails.BadRequest_FieldViolation, len(ve.Violations))
		for i, v := range ve.Violations {
			violations[i] = &errdetails.BadRequest_FieldViolation{
				Field:       protovalidate.FieldPathString(v.Proto.GetField()),
				Description: violationText(v),
			}
		}
		return badRequest(violations)
	case errors.As(err, &fe):
		return badRequest([]*errdetails.BadRequest_FieldViolation{{Field: fe.Field, Description: fe.Description}})
	case errors.As(err, &qe):
		st, derr := status.New(codes.ResourceExhausted, qe.Error()).WithDetails(&errdetails.QuotaFailure{
			Violations: []*errdetails.QuotaFailure_Violation{{Subject: qe.Subject, Description: qe.Description}},
		})
		if derr != nil {
			return status.Error(codes.ResourceExhausted, qe.Error())
		}
		return st.Err()
	case errors.Is(err, store.ErrInvalidArgument):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, store.ErrStaleLease), errors.Is(err, store.ErrIllegalTransition), errors.Is(err, store.ErrLoadRefused),
		errors.Is(err, store.ErrTooMany):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, store.ErrStorageFull):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, store.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, approval.ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, fleet.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, fleet.ErrUnknownNode), errors.Is(err, fleet.ErrNotConnected), errors.Is(err, fleet.ErrRefused):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, maintenance.ErrInMaintenance):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, queue.ErrPauseHeld), errors.Is(err, budget.ErrRearmRefused):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	// Also where a validation rule fails to evaluate (a CompilationError or
	// RuntimeError from protovalidate): a fault in the API, not the request.
	log.ErrorContext(ctx, "internal error", "err", err)
	return status.Error(codes.Internal, "internal error (the control plane's log has the cause)")
}

// badRequest is INVALID_ARGUMENT with the violations as a google.rpc.BadRequest
// detail, and a message naming every field ("title: must not be blank") so
// that a client printing only the message still learns what to fix.
func badRequest(violations []*errdetails.BadRequest_FieldViolation) error {
	parts := make([]string, len(violations))
	for i, v := range violations {
		parts[i] = v.GetField() + ": " + v.GetDescription()
	}
	msg := strings.Join(parts, "; ")
	st, err := status.New(codes.InvalidArgument, msg).WithDetails(&errdetails.BadRequest{FieldViolations: violations})
	if err != nil {
		return status.Error(codes.InvalidArgument, msg)
	}
	return st.Err()
}

// violationText is a rule's message, or its id when the rule has none.
func violationText(v *protovalidate.Violation) string {
	if m := v.Proto.GetMessage(); m != "" {
		return m
	}
	return "breaks rule " + v.Proto.GetRuleId()
}
