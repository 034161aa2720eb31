package store

import (
	"context"
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
	TokenRevoke(ctx context.Context, params *TokenRevokeParams) (*Token, error)

	// TokenTouch sets LastUsedAt=Now on a token. An unknown id is not an
	// error: the token may have been deleted by an import meanwhile.
	TokenTouch(ctx context.Context, params *TokenTouchParams) error

	// AuditAppend appends entries in order, all or none, and sets each
	// one's ID, which grows with every append.
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
}

// Clone returns a deep copy.
func (t *Token) Clone() *Token {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}

// ActiveAt reports whether the token works at now: not revoked and not
// expired.
func (t *Token) ActiveAt(now time.Time) bool {
	return t.RevokedAt.IsZero() && (t.ExpiresAt.IsZero() || now.Before(t.ExpiresAt))
}

// TokenCreateParams holds a new token. ID, Hash, Role, Subject,
// Description, CreatedBy and ExpiresAt come from Token; CreatedAt is Now.
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
}

// AuditAppendParams holds entries to append.
type AuditAppendParams struct {
	Entries []*AuditEntry
}

// AuditListParams filters AuditList. Zero values do not filter.
type AuditListParams struct {
	Since time.Time // Time >= Since
	// Who matches an entry's Who or its TokenID.
	Who    string
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
	}
	return nil
}
