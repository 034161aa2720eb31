// Package access is the control plane's identity domain: bearer tokens with
// roles, the caller each call runs as, the first-start operator token, and
// the audit log of what callers changed.
//
// A token's secret is 32 random bytes, shown once when the token is made;
// the store keeps only its SHA-256. Resolving a secret to its caller is on
// every call's path, so lookups are cached in memory for a short TTL. Revoking
// a token drops it, and the console sessions made from it, from this
// replica's cache at once, so they fail from their next call here; other
// replicas notice within the TTL.
//
// Which caller may call what is not decided here but in the gRPC layer's
// policy table, the one place that knows the API.
package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/factory/factory/controlplane/store"
)

// DefaultCacheTTL bounds how long a replica trusts a token lookup. It is
// also the longest a token revoked on another replica keeps working here.
const DefaultCacheTTL = time.Second

// touchEvery spaces out last-used updates: one write per token per minute
// is enough to tell a live token from an abandoned one, and keeps writes
// off the hot path.
const touchEvery = time.Minute

// maxCached bounds the cache; past it the cache starts over. Only tokens
// that exist are cached, so reaching it takes that many issued tokens.
const maxCached = 10000

// Clock is where the service gets the time.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now().UTC() }

// Config configures New.
type Config struct {
	Store  store.Store
	Logger *slog.Logger
	Clock  Clock
	// CacheTTL is how long a token lookup is reused; 0 means
	// DefaultCacheTTL, a negative value turns the cache off.
	CacheTTL time.Duration
	// AuditWindow is how long identical refusals share one audit entry
	// (see audit.go); 0 means DefaultAuditWindow, negative turns it off.
	AuditWindow time.Duration
}

// Service issues, resolves and revokes tokens and keeps the audit log.
type Service struct {
	store store.Store
	log   *slog.Logger
	clock Clock
	ttl   time.Duration

	mu    sync.Mutex
	cache map[string]cached // by secret hash
	// gen counts revocations and grant changes. A lookup caches its
	// result only if neither happened while it read the store, so a read
	// that raced a revoke cannot put the token back.
	gen uint64

	// created counts tokens made here and remembers the latest
	// (created.go).
	created createdTokens
	// audit coalesces repeated refusals (audit.go).
	audit coalescer
}

type cached struct {
	tok     *store.Token
	fetched time.Time
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("access: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = wallClock{}
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	s := &Service{store: cfg.Store, log: cfg.Logger, clock: cfg.Clock, ttl: cfg.CacheTTL, cache: map[string]cached{}}
	s.audit.init(cfg.AuditWindow)
	return s, nil
}

// subjectRE is the shape of an agent or host name, as the queue API
// accepts agent names.
var subjectRE = regexp.MustCompile(`^[A-Za-z0-9._:/-]{1,128}$`)

// CreateParams describes a new token.
type CreateParams struct {
	Role        store.Role
	Subject     string
	Description string
	// TTL is how long the token works; 0 means until revoked.
	TTL time.Duration
	// CreatedBy names the creator, for the record.
	CreatedBy string
	// Roles are the task roles an agent token may claim (store.AnyRole:
	// every role). An agent token made without any claims only tasks
	// that name no role: a grant is never implied. Other roles take none.
	Roles []string
	// SessionOf, for a console session, is the id of the token the
	// operator signed in with; revoking that token revokes the session.
	// Empty for every other token.
	SessionOf string
}

// Create issues a token and returns it with its secret, which exists
// nowhere else afterwards.
func (s *Service) Create(ctx context.Context, p CreateParams) (*store.Token, string, error) {
	return s.create(ctx, p, false)
}

func (s *Service) create(ctx context.Context, p CreateParams, onlyIfNoOperator bool) (*store.Token, string, error) {
	switch {
	case !p.Role.Valid():
		return nil, "", store.InvalidField("role", "want operator, agent or sidecar, got %q", p.Role)
	case !subjectRE.MatchString(p.Subject):
		return nil, "", store.InvalidField("subject", "want 1-128 letters, digits, '.', '_', ':', '/', '-', got %q", p.Subject)
	case p.TTL < 0:
		return nil, "", store.InvalidField("expires_in", "must not be negative")
	case len(p.Roles) > 0 && p.Role != store.RoleAgent:
		return nil, "", store.InvalidField("roles", "only agent tokens carry roles, not a %s token", p.Role)
	}
	roles, err := store.NormalizeRoles(p.Roles)
	if err != nil {
		return nil, "", err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, "", fmt.Errorf("token id: %w", err)
	}
	secret, err := NewSecret()
	if err != nil {
		return nil, "", err
	}
	now := s.clock.Now()
	tok := &store.Token{
		ID: id.String(), Hash: HashSecret(secret), Role: p.Role, Subject: p.Subject,
		Description: p.Description, CreatedBy: p.CreatedBy, Roles: roles, SessionOf: p.SessionOf,
	}
	if p.TTL > 0 {
		tok.ExpiresAt = now.Add(p.TTL)
	}
	created, err := s.store.TokenCreate(ctx, &store.TokenCreateParams{Token: tok, OnlyIfNoActiveOperator: onlyIfNoOperator, Now: now})
	// Noted even on failure: the insert may have committed.
	s.created.note(tok.Hash)
	if err != nil {
		return nil, "", err
	}
	return created, secret, nil
}

// ListParams filters and pages List.
type ListParams struct {
	// IncludeInactive lists revoked and expired tokens too.
	IncludeInactive bool
	PageSize        int
	PageToken       string
}

// DefaultPageSize and MaxPageSize bound token and audit pages.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

func pageSize(n int) int {
	switch {
	case n <= 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	}
	return n
}

// List lists tokens, oldest first.
func (s *Service) List(ctx context.Context, p ListParams) (*store.TokenListResult, error) {
	lp := &store.TokenListParams{Limit: pageSize(p.PageSize), Cursor: p.PageToken}
	if !p.IncludeInactive {
		lp.ActiveAt = s.clock.Now()
	}
	return s.store.TokenList(ctx, lp)
}

// Revoke ends a token and the console sessions made from it (the store
// revokes both in one transaction). This replica forgets them at once, so
// their very next call here fails; other replicas drop them when their
// cached lookup (at most CacheTTL old) runs out.
func (s *Service) Revoke(ctx context.Context, id string) (*store.Token, error) {
	tok, err := s.store.TokenRevoke(ctx, &store.TokenRevokeParams{ID: id, Now: s.clock.Now()})
	// Forget it even when the store failed: the revoke may have committed.
	s.forget(id)
	if err != nil {
		return nil, err
	}
	return tok, nil
}

// SetRoles replaces an agent token's grant and returns the token before
// and after. Like a revocation, this replica forgets its cached lookup at
// once, so the next claim here sees the new grant; other replicas within
// CacheTTL.
func (s *Service) SetRoles(ctx context.Context, id string, roles []string) (before, after *store.Token, err error) {
	norm, err := store.NormalizeRoles(roles)
	if err != nil {
		return nil, nil, err
	}
	before, after, err = s.store.TokenSetRoles(ctx, &store.TokenSetRolesParams{ID: id, Roles: norm})
	// Forget it even when the store failed: the update may have committed.
	s.forget(id)
	if err != nil {
		return nil, nil, err
	}
	return before, after, nil
}

// forget drops the cached lookups of token id and of the console sessions
// made from it: a revoke ends those sessions too, and a grant change
// leaves sessions (operator tokens) as they were, so dropping them costs
// one store read each at most.
func (s *Service) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	for h, c := range s.cache {
		if c.tok.ID == id || c.tok.SessionOf == id {
			delete(s.cache, h)
		}
	}
}

// AuthError is why a secret does not authenticate: missing, unknown,
// revoked or expired. The gRPC layer answers UNAUTHENTICATED with its text.
type AuthError struct{ Reason string }

func (e *AuthError) Error() string { return e.Reason }

// Authenticate resolves a bearer secret to its caller. A secret that names
// no token, or a revoked or expired one, is an *AuthError saying which;
// a store failure is returned as it is (the caller may retry).
func (s *Service) Authenticate(ctx context.Context, secret string) (Caller, error) {
	if secret == "" {
		return Caller{}, &AuthError{Reason: "missing token"}
	}
	hash := HashSecret(secret)
	now := s.clock.Now()
	tok, err := s.lookup(ctx, hash, now)
	if errors.Is(err, store.ErrNotFound) {
		return Caller{}, &AuthError{Reason: "unknown token: no token has this secret (check that it was copied whole)"}
	}
	if err != nil {
		return Caller{}, err
	}
	// Named only on refusal: this runs on every call.
	who := func() string { return fmt.Sprintf("token %s (%s %s)", tok.ID, tok.Role, tok.Subject) }
	switch {
	case !tok.RevokedAt.IsZero():
		return Caller{}, &AuthError{Reason: who() + " was revoked at " + tok.RevokedAt.UTC().Format(time.RFC3339)}
	case !tok.ExpiresAt.IsZero() && !now.Before(tok.ExpiresAt):
		return Caller{}, &AuthError{Reason: who() + " expired at " + tok.ExpiresAt.UTC().Format(time.RFC3339)}
	}
	return Caller{TokenID: tok.ID, Role: tok.Role, Subject: tok.Subject, ExpiresAt: tok.ExpiresAt, Roles: tok.Roles}, nil
}

// lookup returns the token with the hash, from the cache while it is
// fresh. A fresh lookup also records the token's use, at most once per
// touchEvery.
func (s *Service) lookup(ctx context.Context, hash string, now time.Time) (*store.Token, error) {
	var gen uint64
	if s.ttl > 0 {
		s.mu.Lock()
		c, ok := s.cache[hash]
		gen = s.gen
		s.mu.Unlock()
		if ok && now.Sub(c.fetched) < s.ttl && !now.Before(c.fetched) {
			return c.tok, nil
		}
	}
	tok, err := s.store.TokenGetByHash(ctx, &store.TokenGetByHashParams{Hash: hash})
	if err != nil {
		return nil, err
	}
	if tok.ActiveAt(now) && now.Sub(tok.LastUsedAt) >= touchEvery {
		// Best effort: a failed touch must not fail the call it rides on.
		if err := s.store.TokenTouch(ctx, &store.TokenTouchParams{ID: tok.ID, Now: now}); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "recording a token's use failed", "token_id", tok.ID, "err", err)
		}
		tok.LastUsedAt = now
	}
	if s.ttl > 0 {
		s.mu.Lock()
		if s.gen == gen {
			if len(s.cache) >= maxCached {
				clear(s.cache)
			}
			s.cache[hash] = cached{tok: tok, fetched: now}
		}
		s.mu.Unlock()
	}
	return tok, nil
}

// Caller is who a call runs as.
type Caller struct {
	TokenID string
	Role    store.Role
	Subject string
	// ExpiresAt is when the caller's token stops working; zero: never.
	ExpiresAt time.Time
	// Roles are the task roles an agent may claim (store.Token.Roles).
	// They come with the cached token, so checking a claim against them
	// reads nothing. Shared with the cache: never modified.
	Roles []string
}

// MayClaim reports whether the caller may claim tasks of role: operators
// always, agents within their grant, sidecars never. Tasks that name no
// role are every agent's.
func (c Caller) MayClaim(role string) bool {
	switch c.Role {
	case store.RoleOperator:
		return true
	case store.RoleAgent:
		return store.MayClaim(c.Roles, role)
	}
	return false
}

// String names the caller the way refusals do: "agent forge".
func (c Caller) String() string { return string(c.Role) + " " + c.Subject }

// Ref is how a caller is recorded as a creator: "operator ops (token id)".
func (c Caller) Ref() string { return fmt.Sprintf("%s (%s)", c, c.TokenID) }

type callerKey struct{}

// NewContext returns ctx carrying the caller.
func NewContext(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// FromContext returns the caller ctx carries; ok is false on a call that
// was not authenticated (health checks, reflection, or a bug).
func FromContext(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}
