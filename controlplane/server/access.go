package server

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/telemetry"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// accessServer adapts AccessService calls to the access domain. Who may
// call each RPC is the policy's business (policy.go), decided before a
// call gets here.
type accessServer struct {
	factoryv1.UnimplementedAccessServiceServer
	acc *access.Service
	log *slog.Logger
	// streams, when set, closes a revoked token's streams at once.
	streams *streamRegistry
}

var _ factoryv1.AccessServiceServer = (*accessServer)(nil)

func (s *accessServer) err(ctx context.Context, err error) error { return toStatus(ctx, s.log, err) }

func caller(ctx context.Context) (access.Caller, error) {
	c, ok := access.FromContext(ctx)
	if !ok {
		return access.Caller{}, status.Error(codes.Unauthenticated, missingToken)
	}
	return c, nil
}

func (s *accessServer) CreateToken(ctx context.Context, r *factoryv1.CreateTokenRequest) (*factoryv1.CreateTokenResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	tok, secret, err := s.acc.Create(ctx, access.CreateParams{
		Role: roleFromProto(r.GetRole()), Subject: r.GetSubject(), Description: r.GetDescription(),
		TTL: durationOf(r.GetExpiresIn()), CreatedBy: c.Ref(), Roles: r.GetRoles(),
	})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	access.Note(ctx, tok.ID, nil, tokenAudit(tok))
	return &factoryv1.CreateTokenResponse{Token: tokenToProto(tok), Secret: secret}, nil
}

func (s *accessServer) ListTokens(ctx context.Context, r *factoryv1.ListTokensRequest) (*factoryv1.ListTokensResponse, error) {
	res, err := s.acc.List(ctx, access.ListParams{IncludeInactive: r.GetIncludeInactive(), PageSize: int(r.GetPageSize()), PageToken: r.GetPageToken()})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &factoryv1.ListTokensResponse{NextPageToken: res.NextCursor, Tokens: make([]*factoryv1.Token, len(res.Tokens))}
	for i, t := range res.Tokens {
		out.Tokens[i] = tokenToProto(t)
	}
	return out, nil
}

func (s *accessServer) RevokeToken(ctx context.Context, r *factoryv1.RevokeTokenRequest) (*factoryv1.RevokeTokenResponse, error) {
	at := s.acc.Now()
	tok, err := s.acc.Revoke(ctx, r.GetTokenId())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	if s.streams != nil {
		s.streams.recheckToken(tok.ID)
	}
	// The store keeps the first revocation's time: a later one means this
	// call found the token revoked already and changed nothing.
	before := tok.Clone()
	if tok.RevokedAt.Sub(at).Abs() < time.Millisecond {
		before.RevokedAt = time.Time{}
	}
	access.Note(ctx, tok.ID, tokenAudit(before), tokenAudit(tok))
	return &factoryv1.RevokeTokenResponse{Token: tokenToProto(tok)}, nil
}

// SetTokenRoles replaces an agent token's grant of task roles; the audit
// entry holds the grant before and after.
func (s *accessServer) SetTokenRoles(ctx context.Context, r *factoryv1.SetTokenRolesRequest) (*factoryv1.SetTokenRolesResponse, error) {
	before, after, err := s.acc.SetRoles(ctx, r.GetTokenId(), r.GetRoles())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	access.Note(ctx, after.ID, tokenAudit(before), tokenAudit(after))
	return &factoryv1.SetTokenRolesResponse{Token: tokenToProto(after)}, nil
}

func (s *accessServer) ListAudit(ctx context.Context, r *factoryv1.ListAuditRequest) (*factoryv1.ListAuditResponse, error) {
	res, err := s.acc.ListAudit(ctx, access.AuditListParams{
		Since: timeOf(r.GetSince()), Who: r.GetWho(), Target: r.GetTarget(),
		PageSize: int(r.GetPageSize()), PageToken: r.GetPageToken(),
	})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &factoryv1.ListAuditResponse{NextPageToken: res.NextCursor, Entries: make([]*factoryv1.AuditEntry, len(res.Entries))}
	for i, e := range res.Entries {
		out.Entries[i] = &factoryv1.AuditEntry{
			Id: strconv.FormatInt(e.ID, 10), Time: ts(e.Time), Who: e.Who, Role: roleToProto(e.Role), TokenId: e.TokenID,
			Rpc: e.RPC, Target: e.Target, BeforeJson: e.BeforeJSON, AfterJson: e.AfterJSON, TraceId: e.TraceID,
			Outcome: e.Outcome, Detail: e.Detail,
		}
		out.Entries[i].Count, out.Entries[i].LastSeen = auditCountOf(e)
	}
	return out, nil
}

func (s *accessServer) WhoAmI(ctx context.Context, _ *factoryv1.WhoAmIRequest) (*factoryv1.WhoAmIResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	return &factoryv1.WhoAmIResponse{Role: roleToProto(c.Role), Subject: c.Subject, TokenId: c.TokenID, ExpiresAt: ts(c.ExpiresAt), Roles: c.Roles, Version: telemetry.Version()}, nil
}

func roleToProto(r store.Role) factoryv1.Role {
	switch r {
	case store.RoleOperator:
		return factoryv1.Role_ROLE_OPERATOR
	case store.RoleAgent:
		return factoryv1.Role_ROLE_AGENT
	case store.RoleSidecar:
		return factoryv1.Role_ROLE_SIDECAR
	}
	return factoryv1.Role_ROLE_UNSPECIFIED
}

func roleFromProto(r factoryv1.Role) store.Role {
	switch r {
	case factoryv1.Role_ROLE_OPERATOR:
		return store.RoleOperator
	case factoryv1.Role_ROLE_AGENT:
		return store.RoleAgent
	case factoryv1.Role_ROLE_SIDECAR:
		return store.RoleSidecar
	}
	return ""
}

func tokenToProto(t *store.Token) *factoryv1.Token {
	return &factoryv1.Token{
		Id: t.ID, Role: roleToProto(t.Role), Subject: t.Subject, Description: t.Description, CreatedBy: t.CreatedBy,
		CreatedAt: ts(t.CreatedAt), ExpiresAt: ts(t.ExpiresAt), RevokedAt: ts(t.RevokedAt), LastUsedAt: ts(t.LastUsedAt),
		Roles: t.Roles,
	}
}

// tokenAudit is a token as the audit log records it: never its hash.
func tokenAudit(t *store.Token) map[string]any {
	m := map[string]any{"role": t.Role, "subject": t.Subject}
	if t.Role == store.RoleAgent {
		m["roles"] = append([]string{}, t.Roles...)
	}
	if t.Description != "" {
		m["description"] = t.Description
	}
	if !t.ExpiresAt.IsZero() {
		m["expires_at"] = t.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if !t.RevokedAt.IsZero() {
		m["revoked_at"] = t.RevokedAt.UTC().Format(time.RFC3339)
	}
	return m
}

// RotateTokens replaces a role's live tokens (access.Service.Rotate). The
// audit log gets one entry per rotated token: its id as the target, its
// new expiry and its replacement's id after; a rotation that matched
// nothing gets one entry with the selection.
func (s *accessServer) RotateTokens(ctx context.Context, r *factoryv1.RotateTokensRequest) (*factoryv1.RotateTokensResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	grace := access.DefaultRotateGrace
	if r.GetGrace() != nil {
		grace = durationOf(r.GetGrace())
	}
	res, err := s.acc.Rotate(ctx, access.RotateParams{Role: roleFromProto(r.GetRole()), Subjects: r.GetSubjects(), Grace: grace, CreatedBy: c.Ref()})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &factoryv1.RotateTokensResponse{}
	for _, rt := range res.Rotated {
		if s.streams != nil {
			s.streams.recheckToken(rt.Old.ID)
		}
		after := tokenAudit(rt.Old)
		after["replaced_by"] = rt.New.ID
		access.Note(ctx, rt.Old.ID, tokenAudit(rt.Before), after)
		out.Rotated = append(out.Rotated, &factoryv1.RotatedToken{OldToken: tokenToProto(rt.Old), NewToken: tokenToProto(rt.New), Secret: rt.Secret})
	}
	for _, t := range res.Skipped {
		out.Skipped = append(out.Skipped, tokenToProto(t))
	}
	if len(res.Rotated) == 0 {
		access.Note(ctx, "tokens", nil, map[string]any{
			"role": roleFromProto(r.GetRole()), "subjects": append([]string{}, r.GetSubjects()...),
			"grace": grace.String(), "rotated": 0, "skipped": len(res.Skipped),
		})
	}
	return out, nil
}
