package server

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// openServices answer without credentials: health checks (load balancers,
// the sidecar's liveness probe) and reflection, which describes the API
// but reveals no data.
var openServices = map[string]bool{
	healthpb.Health_ServiceDesc.ServiceName:    true,
	"grpc.reflection.v1.ServerReflection":      true,
	"grpc.reflection.v1alpha.ServerReflection": true,
}

// needsCaller selects every call but those to openServices.
var needsCaller = selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
	return !openServices[c.Service]
})

// missingToken is the refusal a caller without a token gets; it says how
// to send one.
const missingToken = "missing token: send the metadata 'authorization: Bearer <token>' " +
	"(the factory CLI takes --token, FACTORY_TOKEN or its config file, or ./data/operator.token on loopback)"

// authenticate resolves the call's bearer token to its caller and puts the
// caller in the context: the auth middleware's AuthFunc.
func authenticate(acc *access.Service, log *slog.Logger) auth.AuthFunc {
	return func(ctx context.Context) (context.Context, error) {
		if acc == nil {
			return nil, status.Error(codes.Unauthenticated, "this server was built without an access service, so it accepts no token")
		}
		secret, err := bearerSecret(ctx)
		if err != nil {
			return nil, err
		}
		c, err := acc.Authenticate(ctx, secret)
		var ae *access.AuthError
		switch {
		case errors.As(err, &ae):
			return nil, status.Error(codes.Unauthenticated, ae.Reason)
		case err != nil:
			return nil, toStatus(ctx, log, err)
		}
		return access.NewContext(ctx, c), nil
	}
}

// bearerSecret reads "authorization: Bearer <secret>" from the metadata.
func bearerSecret(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	values := md.Get("authorization")
	switch {
	case len(values) == 0:
		return "", status.Error(codes.Unauthenticated, missingToken)
	case len(values) > 1:
		return "", status.Error(codes.Unauthenticated, "more than one authorization metadata entry; send one")
	}
	scheme, secret, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(secret) == "" {
		return "", status.Error(codes.Unauthenticated, "malformed authorization metadata: want 'Bearer <token>'")
	}
	return strings.TrimSpace(secret), nil
}

// CallerToken keys rate limits by token: each agent gets its own bucket
// however many share a host. Calls without a caller (health checks, which
// are not limited anyway) fall back to the peer's IP.
func CallerToken(ctx context.Context) string {
	if c, ok := access.FromContext(ctx); ok {
		return c.Ref()
	}
	return PeerIP(ctx)
}

// authorizer applies the policy to authenticated calls and writes the
// audit log.
type authorizer struct {
	policy *Policy
	acc    *access.Service
	log    *slog.Logger
}

func (a *authorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c, ok := access.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, missingToken)
	}
	r, err := a.policy.admit(c, info.FullMethod)
	if err != nil {
		a.refused(ctx, c, info.FullMethod, req, err)
		return nil, err
	}
	onBehalf, err := a.policy.check(ctx, c, r, req)
	if err != nil {
		a.refused(ctx, c, info.FullMethod, req, err)
		return nil, toStatus(ctx, a.log, err)
	}
	if !audited(c, r, onBehalf) {
		return handler(ctx, req)
	}
	ctx, rec := access.WithRecord(ctx)
	resp, err := handler(ctx, req)
	if err == nil {
		a.succeeded(ctx, c, info.FullMethod, rec)
	}
	return resp, err
}

func (a *authorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	c, ok := access.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, missingToken)
	}
	r, err := a.policy.admit(c, info.FullMethod)
	if err != nil {
		a.refused(ctx, c, info.FullMethod, nil, err)
		return err
	}
	// The per-request rule needs the request, which a stream handler
	// receives only after it starts: check each message as it arrives.
	checked := &checkedStream{WrappedServerStream: middleware.WrapServerStream(ss), a: a, c: c, r: r, method: info.FullMethod}
	if info.FullMethod == factoryv1.QueueService_Work_FullMethodName {
		// Each request on a Work stream is audited on its own, as the
		// call it carries, by the handler (auditedQueue.Work): a
		// stream-long record would grow with every request.
		return handler(srv, checked)
	}
	if !r.mutates || (c.Role != store.RoleOperator && r.actsAs == nil) {
		// No message can make this call audited.
		return handler(srv, checked)
	}
	var rec *access.Record
	checked.WrappedContext, rec = access.WithRecord(ctx)
	if err := handler(srv, checked); err != nil {
		return err
	}
	if c.Role == store.RoleOperator || checked.onBehalf {
		a.succeeded(checked.WrappedContext, c, info.FullMethod, rec)
	}
	return nil
}

type checkedStream struct {
	*middleware.WrappedServerStream
	a        *authorizer
	c        access.Caller
	r        rule
	method   string
	onBehalf bool
}

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.WrappedServerStream.RecvMsg(m); err != nil {
		return err
	}
	onBehalf, err := s.a.policy.check(s.Context(), s.c, s.r, m)
	if err != nil {
		s.a.refused(s.Context(), s.c, s.method, m, err)
		return toStatus(s.Context(), s.a.log, err)
	}
	s.onBehalf = s.onBehalf || onBehalf
	return nil
}

// auditTimeout bounds an audit write. It runs after the call's own work,
// on a context the client's cancellation does not end: the change has
// happened and must be recorded even if the caller has gone.
const auditTimeout = 5 * time.Second

// succeeded appends one entry per change the handler noted, or one bare
// entry when it noted none.
func (a *authorizer) succeeded(ctx context.Context, c access.Caller, method string, rec *access.Record) {
	changes := rec.Changes()
	if len(changes) == 0 {
		changes = []access.Change{{}}
	}
	entries := make([]*store.AuditEntry, len(changes))
	for i, ch := range changes {
		e := a.entry(ctx, c, method, codes.OK)
		e.Target, e.BeforeJSON, e.AfterJSON = ch.Target, ch.Before, ch.After
		entries[i] = e
	}
	a.append(ctx, entries)
}

// refused records a call the policy turned down. Other failures (the
// fleet's lookup failing) are not decisions and are not recorded.
func (a *authorizer) refused(ctx context.Context, c access.Caller, method string, req any, err error) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.PermissionDenied {
		return
	}
	e := a.entry(ctx, c, method, codes.PermissionDenied)
	e.Target, e.Detail = targetOf(req), st.Message()
	a.appendRefusal(ctx, e) // audit_wiring.go
}

func (a *authorizer) entry(ctx context.Context, c access.Caller, method string, code codes.Code) *store.AuditEntry {
	e := &store.AuditEntry{Who: c.Subject, Role: c.Role, TokenID: c.TokenID, RPC: method, Outcome: codeName(code)}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		e.TraceID = sc.TraceID().String()
	}
	return e
}

func (a *authorizer) append(ctx context.Context, entries []*store.AuditEntry) {
	if a.acc == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	// The call's outcome stands either way; a lost entry is logged in
	// full, so the log still has what the audit table missed.
	if err := a.acc.Append(ctx, entries); err != nil {
		for _, e := range entries {
			a.log.ErrorContext(ctx, "audit entry not written", "err", err, "who", e.Who, "role", string(e.Role), "token_id", e.TokenID,
				"rpc", e.RPC, "target", e.Target, "before", e.BeforeJSON, "after", e.AfterJSON, "outcome", e.Outcome, "detail", e.Detail)
		}
	}
}

// targetOf names what a refused request aimed at, when it says: a task or
// a token.
func targetOf(req any) string {
	switch r := req.(type) {
	case interface{ GetTaskId() string }:
		return r.GetTaskId()
	case interface{ GetTokenId() string }:
		return r.GetTokenId()
	}
	return ""
}
