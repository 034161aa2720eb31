package store

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"time"
)

// AccessStore is the identity part of the persistence contract: bearer
// tokens (kept only as hashes) and the append-only audit log. It is part of
// Store, so every driver implements it and passes the conformance suite.
type AccessStore interface {
	// TokenCreate inserts a token. An id or hash that exists gets
	// ErrAlreadyExists. With OnlyIfNoActiveOperator set it inserts nothing
	// and returns ErrAlreadyExists when an operator token that is neither
	// revoked nor expired at Now exists; the check and the insert are one
	// transaction, so replicas starting together bootstrap one token.
	TokenCreate(ctx context.Context, params *TokenCreateParams) (*Token, error)

	// TokenGetByHash returns the token whose secret hashes to Hash,
	// revoked and expired ones included (the caller says which it is), or
	// ErrNotFound.
	TokenGetByHash(ctx context.Context, params *TokenGetByHashParams) (*Token, error)

	// TokenList returns tokens in creation order after Cursor, at most
	// Limit. NextCursor is empty on the last page. An undecodable cursor is
	// a FieldError on "page_token".
	TokenList(ctx context.Context, params *TokenListParams) (*TokenListResult, error)

	// TokenRevoke sets RevokedAt=Now on a token and returns it, or
	// ErrNotFound. A token already revoked keeps its first RevokedAt.
	// In the same transaction it revokes, with RevokedAt=Now, every
	// console session made from the token (SessionOf is its id) that is
	// not revoked yet: a session must not outlive the token that opened
	// it. Revoking a session touches only the session.
	TokenRevoke(ctx context.Context, params *TokenRevokeParams) (*Token, error)

	// TokenTouch sets LastUsedAt=Now on a token. An unknown id is not an
	// error: the token may have been deleted by an import meanwhile.
	TokenTouch(ctx context.Context, params *TokenTouchParams) error

	// TokenSetRoles replaces an agent token's Roles and returns the token
	// as it was before and as it is now, or ErrNotFound. A token of
	// another role is a FieldError on "token_id": only agents claim by
	// role.
	TokenSetRoles(ctx context.Context, params *TokenSetRolesParams) (before, after *Token, err error)

	// TokenRotate replaces, in one transaction, every token of Role (of
	// Subjects, when given) that works at Now and is not a console
	// session: each gets a new token (ID and Hash from Issue, which may
	// be called again if the transaction is retried) with its role,
	// subject, description and grant, and its own ExpiresAt becomes
	// GraceEnd unless it was earlier. A token that stops working by
	// GraceEnd anyway and has a newer live token of its subject (its
	// replacement from an earlier rotation) is left alone and returned in
	// Skipped: rotating twice does not replace it twice.
	// More than MaxRotate matching tokens is a FieldError on "subjects".
	TokenRotate(ctx context.Context, params *TokenRotateParams) (*TokenRotateResult, error)

	// AuditAppend appends entries in order, all or none, and sets each
	// one's ID, which grows with every append. Count and LastSeen are
	// stored as AuditCounts reads them (audit.go).
	AuditAppend(ctx context.Context, params *AuditAppendParams) error

	// AuditList returns entries newest first (by ID) before Cursor, at most
	// Limit, filtered as the params say. NextCursor is empty on the last
	// page. An undecodable cursor is a FieldError on "page_token".
	AuditList(ctx context.Context, params *AuditListParams) (*AuditListResult, error)
}

// Role is what a token's holder may do. Values are stored as text.
type Role string

// The roles. Values match factory.v1.Role's names in lower case.
const (
	RoleOperator Role = "operator"
	RoleAgent    Role = "agent"
	RoleSidecar  Role = "sidecar"
)

// Valid reports whether r is one of the roles.
func (r Role) Valid() bool { return r == RoleOperator || r == RoleAgent || r == RoleSidecar }

// Token is an issued bearer token. The secret itself is never stored: Hash
// is its SHA-256 (hex), which is enough because secrets are random with
// full entropy, so no slow hash is needed against guessing.
type Token struct {
	ID          string
	Hash        string
	Role        Role
	Subject     string
	Description string
	// CreatedBy names the creator ("subject (token id)", or "bootstrap").
	CreatedBy  string
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: never
	RevokedAt  time.Time // zero: not revoked
	LastUsedAt time.Time // zero: never used
	// Roles are the task roles an agent token may claim, sorted; AnyRole
	// grants all of them. Empty for other roles' tokens, and for an agent
	// token granted none (it claims only tasks that name no role).
	Roles []string
	// SessionOf is the id of the token this console session was made
	// from; empty for ordinary tokens. Revoking that token revokes this
	// one.
	SessionOf string
}

// AnyRole, as a token's only role, grants every task role. The migration
// that introduced grants gave it to every agent token that existed, so
// agents kept claiming as before until an operator narrows them.
const AnyRole = "*"

// MaxTokenRoles bounds a token's grant.
const MaxTokenRoles = 64

// Clone returns a deep copy.
func (t *Token) Clone() *Token {
	if t == nil {
		return nil
	}
	c := *t
	c.Roles = slices.Clone(t.Roles)
	return &c
}

// MayClaim reports whether the token's grant covers the task role. The
// empty role is every agent's: tasks that name no role match any agent.
func MayClaim(granted []string, role string) bool {
	return role == "" || slices.Contains(granted, AnyRole) || slices.Contains(granted, role)
}

// NormalizeRoles checks a grant and returns it sorted and without
// repeats: the form stored, listed and compared. A role is a task's role
// (letters, digits, '.', '_', ':', '/', '-', at most 128) or AnyRole,
// which then must be the only one.
func NormalizeRoles(roles []string) ([]string, error) {
	if len(roles) > MaxTokenRoles {
		return nil, InvalidField("roles", "at most %d, got %d", MaxTokenRoles, len(roles))
	}
	out := make([]string, 0, len(roles))
	for _, r := range roles {
		if r != AnyRole && !taskRoleRE.MatchString(r) {
			return nil, InvalidField("roles", "%q is not a task role: want 1-128 letters, digits, '.', '_', ':', '/', '-', or %q for every role", r, AnyRole)
		}
		out = append(out, r)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if slices.Contains(out, AnyRole) && len(out) > 1 {
		return nil, InvalidField("roles", "%q grants every role; name it alone, not with %v", AnyRole, slices.DeleteFunc(slices.Clone(out), func(r string) bool { return r == AnyRole }))
	}
	return out, nil
}

var taskRoleRE = regexp.MustCompile(`^[A-Za-z0-9._:/-]{1,128}$`)

// ValidTokenID reports whether id has the shape of a token id, as the API
// accepts one (factory.v1 token_id): 1-128 letters, digits, '.', '_',
// ':', '-'. Issued ids are UUIDs, which fit.
func ValidTokenID(id string) bool { return tokenIDRE.MatchString(id) }

var tokenIDRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// JoinRoles is a grant as drivers store it: comma-separated (no role
// holds a comma), "" for none.
func JoinRoles(roles []string) string { return strings.Join(roles, ",") }

// SplitRoles reads a grant JoinRoles wrote; "" is no role (a nil slice).
func SplitRoles(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// CheckSetRoles is the check TokenSetRoles makes on the stored token:
// only agents claim by role.
func CheckSetRoles(t *Token) error {
	if t.Role != RoleAgent {
		return InvalidField("token_id", "token %s is a %s token; only agent tokens carry roles", t.ID, t.Role)
	}
	return nil
}

// ActiveAt reports whether the token works at now: not revoked and not
// expired.
func (t *Token) ActiveAt(now time.Time) bool {
	return t.RevokedAt.IsZero() && (t.ExpiresAt.IsZero() || now.Before(t.ExpiresAt))
}

// TokenCreateParams holds a new token. ID, Hash, Role, Subject,
// Description, CreatedBy, ExpiresAt, Roles and SessionOf come from Token;
// CreatedAt is Now.
type TokenCreateParams struct {
	Token                  *Token
	OnlyIfNoActiveOperator bool
	Now                    time.Time
}

// TokenGetByHashParams names a token by its secret's hash.
type TokenGetByHashParams struct {
	Hash string
}

// TokenListParams filters TokenList. Zero values do not filter.
type TokenListParams struct {
	Role Role
	// ActiveAt, when set, keeps only tokens neither revoked nor expired at
	// that time.
	ActiveAt time.Time
	Limit    int
	Cursor   string
}

// TokenListResult is one page.
type TokenListResult struct {
	Tokens     []*Token
	NextCursor string
}

// TokenRevokeParams revokes a token.
type TokenRevokeParams struct {
	ID  string
	Now time.Time
}

// TokenSetRolesParams replaces a token's grant. Roles are as
// NormalizeRoles returns them.
type TokenSetRolesParams struct {
	ID    string
	Roles []string
}

// TokenTouchParams records a token's use.
type TokenTouchParams struct {
	ID  string
	Now time.Time
}

// AuditEntry is one audited call.
type AuditEntry struct {
	// ID is set by AuditAppend.
	ID      int64
	Time    time.Time
	Who     string // the caller's subject
	Role    Role
	TokenID string
	RPC     string // full method name
	Target  string // task id, token id or "queue"
	// BeforeJSON and AfterJSON are the target's state around the call.
	BeforeJSON string
	AfterJSON  string
	TraceID    string
	Outcome    string // gRPC code name: OK, PERMISSION_DENIED
	Detail     string // why a call was refused
	// Count is how many identical calls the entry stands for (see
	// audit.go): 0 is read as 1. Time is the first of them, LastSeen the
	// last; a zero LastSeen is Time.
	Count    int64
	LastSeen time.Time
}

// AuditAppendParams holds entries to append.
type AuditAppendParams struct {
	Entries []*AuditEntry
}

// AuditListParams filters AuditList. Zero values do not filter.
type AuditListParams struct {
	Since time.Time // LastSeen >= Since: seen at or after Since
	// Who matches an entry's Who or its TokenID.
	Who    string
	Target string
	Limit  int
	Cursor string
}

// AuditListResult is one page.
type AuditListResult struct {
	Entries    []*AuditEntry
	NextCursor string
}

// CheckTokenCreate is the input check every driver's TokenCreate makes
// before touching the database.
func CheckTokenCreate(p *TokenCreateParams) error {
	if p == nil || p.Token == nil {
		return InvalidField("token", "is missing")
	}
	switch in := p.Token; {
	case in.ID == "":
		return InvalidField("id", "is required")
	case in.Hash == "":
		return InvalidField("hash", "is required")
	case !in.Role.Valid():
		return InvalidField("role", "unknown role %q", in.Role)
	case in.Subject == "":
		return InvalidField("subject", "is required")
	case len(in.Roles) > 0 && in.Role != RoleAgent:
		return InvalidField("roles", "only agent tokens carry roles, not a %s token", in.Role)
	}
	return checkSessionOf(p.Token)
}

// checkSessionOf checks a token's link to the token its session was made
// from. The parent need not exist: the link only decides what a revoke
// takes with it, and a dangling one takes nothing.
func checkSessionOf(t *Token) error {
	switch {
	case t.SessionOf == "":
		return nil
	case !ValidTokenID(t.SessionOf):
		return InvalidField("session_of", "%q is not a token id: want 1-128 letters, digits, '.', '_', ':', '-'", t.SessionOf)
	case t.SessionOf == t.ID:
		return InvalidField("session_of", "names the token itself: a session is made from another token")
	}
	return nil
}

// MaxRotate bounds one rotation: its new secrets travel in one response.
const MaxRotate = 1000

// TokenRotateParams selects the tokens TokenRotate replaces.
type TokenRotateParams struct {
	Role Role
	// Subjects, when not empty, keeps only tokens of these subjects.
	Subjects []string
	Now      time.Time
	// GraceEnd is when the old tokens stop working.
	GraceEnd time.Time
	// CreatedBy is recorded on the new tokens.
	CreatedBy string
	// Issue returns the id and secret hash of old's replacement.
	Issue func(old *Token) (id, hash string, err error)
}

// TokenRotation is one replaced token.
type TokenRotation struct {
	Before *Token // the old token as it was
	Old    *Token // the old token as the rotation left it
	New    *Token
}

// TokenRotateResult is what TokenRotate did, oldest token first.
type TokenRotateResult struct {
	Rotated []TokenRotation
	Skipped []*Token
}

// CheckTokenRotate is the input check every driver's TokenRotate makes.
func CheckTokenRotate(p *TokenRotateParams) error {
	switch {
	case p == nil:
		return InvalidField("role", "is required")
	case p.Role != RoleAgent && p.Role != RoleSidecar:
		return InvalidField("role", "only agent and sidecar tokens are rotated, not %q", p.Role)
	case p.Issue == nil:
		return InvalidField("issue", "is required")
	case p.GraceEnd.Before(p.Now):
		return InvalidField("grace", "must not be negative")
	}
	return nil
}

// Rotation returns old as the rotation leaves it (ending at graceEnd, or
// earlier if it did) and its replacement, made at now. Both drivers build
// their rows with it.
func Rotation(old *Token, id, hash, createdBy string, now, graceEnd time.Time) (after, repl *Token) {
	after = old.Clone()
	if after.ExpiresAt.IsZero() || after.ExpiresAt.After(graceEnd) {
		after.ExpiresAt = graceEnd
	}
	repl = &Token{
		ID: id, Hash: hash, Role: old.Role, Subject: old.Subject, Description: old.Description,
		CreatedBy: createdBy, CreatedAt: now, Roles: slices.Clone(old.Roles),
	}
	if !old.ExpiresAt.IsZero() {
		// The same lifetime as the old token had, from now.
		repl.ExpiresAt = now.Add(old.ExpiresAt.Sub(old.CreatedAt))
	}
	return after, repl
}

// RotationSkips returns the live tokens (in creation order) a rotation
// whose grace ends at graceEnd leaves alone: those that stop working by
// then anyway and have a newer live token of the same subject, which is
// what an earlier rotation leaves. A token about to expire with no
// successor is rotated (keeping its expiry), so its holder is not left
// without one.
func RotationSkips(live []*Token, graceEnd time.Time) map[string]bool {
	skip := map[string]bool{}
	newer := map[string]bool{} // subjects with a newer live token
	for i := len(live) - 1; i >= 0; i-- {
		t := live[i]
		if newer[t.Subject] && !t.ExpiresAt.IsZero() && !t.ExpiresAt.After(graceEnd) {
			skip[t.ID] = true
		}
		newer[t.Subject] = true
	}
	return skip
}
