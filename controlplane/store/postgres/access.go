package postgres

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

const tokenCols = `seq, id, hash, role, subject, description, created_by, created_at, expires_at, revoked_at, last_used_at, roles, session_of`

var (
	qTokenByHash = `-- name: TokenGetByHash
SELECT ` + tokenCols + ` FROM tokens WHERE hash = $1`
	// An operator token that works at $1.
	qActiveOperator = `-- name: TokenActiveOperator
SELECT count(*) FROM tokens WHERE role = 'operator' AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)`
	qTokenInsert = `-- name: TokenCreate
INSERT INTO tokens (id, hash, role, subject, description, created_by, created_at, expires_at, roles, session_of)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`
	qTokenForUpdate = `-- name: TokenForUpdate
SELECT ` + tokenCols + ` FROM tokens WHERE id = $1 FOR UPDATE`
	qTokenSetRoles = `-- name: TokenSetRoles
UPDATE tokens SET roles = $2 WHERE id = $1`
	// The first revocation's time stands.
	qTokenRevoke = `-- name: TokenRevoke
UPDATE tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 RETURNING ` + tokenCols
	// The console sessions made from a token die with it (tokens_session_of).
	qTokenRevokeSessions = `-- name: TokenRevokeSessions
UPDATE tokens SET revoked_at = $2 WHERE session_of = $1 AND revoked_at IS NULL`
	qTokenTouch = `-- name: TokenTouch
UPDATE tokens SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)`
	qAuditInsert = `-- name: AuditAppend
INSERT INTO audit_log (time, who, role, token_id, rpc, target, before_json, after_json, trace_id, outcome, detail, count, last_seen)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
	$8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[], $13::timestamptz[])
RETURNING id`
	auditCols = `id, time, who, role, token_id, rpc, target, before_json, after_json, trace_id, outcome, detail, count, last_seen`
)

func scanToken(row pgx.Row) (int64, *store.Token, error) {
	var (
		seq                          int64
		t                            store.Token
		role                         string
		expires, revoked, lastUsedAt pgtype.Timestamptz
		roles                        string
	)
	if err := row.Scan(&seq, &t.ID, &t.Hash, &role, &t.Subject, &t.Description, &t.CreatedBy,
		&t.CreatedAt, &expires, &revoked, &lastUsedAt, &roles, &t.SessionOf); err != nil {
		return 0, nil, err
	}
	t.Role, t.Roles = store.Role(role), store.SplitRoles(roles)
	t.CreatedAt = t.CreatedAt.UTC()
	t.ExpiresAt, t.RevokedAt, t.LastUsedAt = fromTS(expires), fromTS(revoked), fromTS(lastUsedAt)
	return seq, &t, nil
}

func tokenNotFound(what string) error { return fmt.Errorf("token %s: %w", what, store.ErrNotFound) }

// TokenCreate implements store.Store.
func (s *Store) TokenCreate(ctx context.Context, p *store.TokenCreateParams) (*store.Token, error) {
	if err := store.CheckTokenCreate(p); err != nil {
		return nil, err
	}
	in := p.Token
	if err := checkText("id", in.ID, "hash", in.Hash, "subject", in.Subject, "description", in.Description, "created_by", in.CreatedBy); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	t := &store.Token{
		ID: in.ID, Hash: in.Hash, Role: in.Role, Subject: in.Subject, Description: in.Description,
		CreatedBy: in.CreatedBy, CreatedAt: now, ExpiresAt: norm(in.ExpiresAt), Roles: slices.Clone(in.Roles),
		SessionOf: in.SessionOf,
	}
	err := s.inTx(ctx, "TokenCreate", func(tx *txn) error {
		if p.OnlyIfNoActiveOperator {
			// Replicas starting together serialise here, so only the first
			// finds no operator token.
			var n int64
			b := tx.batch()
			b.Queue("SELECT pg_advisory_xact_lock($1)", lockID("bootstrap", s.cfg.Schema))
			b.Queue(qActiveOperator, now).QueryRow(func(r pgx.Row) error { return r.Scan(&n) })
			if err := tx.send(b); err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("an active operator token: %w", store.ErrAlreadyExists)
			}
		}
		b := tx.batch()
		b.Queue(qTokenInsert, t.ID, t.Hash, string(t.Role), t.Subject, t.Description, t.CreatedBy, t.CreatedAt, ts(t.ExpiresAt), store.JoinRoles(t.Roles), t.SessionOf)
		return tx.send(b)
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// TokenGetByHash implements store.Store.
func (s *Store) TokenGetByHash(ctx context.Context, p *store.TokenGetByHashParams) (*store.Token, error) {
	if p == nil || p.Hash == "" || !pgText(p.Hash) {
		return nil, tokenNotFound("with that secret")
	}
	var t *store.Token
	err := s.read(ctx, "TokenGetByHash", func(ctx context.Context) error {
		var err error
		_, t, err = scanToken(s.pool.QueryRow(ctx, qTokenByHash, p.Hash))
		if err == pgx.ErrNoRows {
			t, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if t == nil {
		// The hash is not echoed: it is the secret's fingerprint, and
		// errors end up in logs.
		return nil, tokenNotFound("with that secret")
	}
	return t, nil
}

// TokenList implements store.Store.
func (s *Store) TokenList(ctx context.Context, p *store.TokenListParams) (*store.TokenListResult, error) {
	if p == nil {
		p = &store.TokenListParams{}
	}
	after, err := parseAccessCursor(p.Cursor)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("-- name: TokenList\nSELECT " + tokenCols + " FROM tokens WHERE seq > $1")
	args := []any{after}
	if p.Role != "" {
		args = append(args, string(p.Role))
		fmt.Fprintf(&b, " AND role = $%d", len(args))
	}
	if !p.ActiveAt.IsZero() {
		args = append(args, p.ActiveAt)
		fmt.Fprintf(&b, " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $%d)", len(args))
	}
	b.WriteString(" ORDER BY seq")
	if p.Limit > 0 {
		args = append(args, p.Limit+1)
		fmt.Fprintf(&b, " LIMIT $%d", len(args))
	}
	res := &store.TokenListResult{}
	err = s.read(ctx, "TokenList", func(ctx context.Context) error {
		res.Tokens, res.NextCursor = nil, ""
		rs, err := s.pool.Query(ctx, b.String(), args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		var last int64
		for rs.Next() {
			seq, t, err := scanToken(rs)
			if err != nil {
				return err
			}
			if p.Limit > 0 && len(res.Tokens) == p.Limit {
				res.NextCursor = strconv.FormatInt(last, 10)
				break
			}
			res.Tokens = append(res.Tokens, t)
			last = seq
		}
		return rs.Err()
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// TokenRevoke implements store.Store.
func (s *Store) TokenRevoke(ctx context.Context, p *store.TokenRevokeParams) (*store.Token, error) {
	if p == nil || p.ID == "" {
		return nil, store.InvalidField("token_id", "is required")
	}
	if !pgText(p.ID) {
		return nil, tokenNotFound(strconv.Quote(p.ID))
	}
	var out *store.Token
	now := norm(p.Now)
	err := s.inTx(ctx, "TokenRevoke", func(tx *txn) error {
		out = nil
		b := tx.batch()
		b.Queue(qTokenRevoke, p.ID, now).Query(func(rs pgx.Rows) error {
			for rs.Next() {
				_, t, err := scanToken(rs)
				if err != nil {
					return err
				}
				out = t
			}
			return rs.Err()
		})
		b.Queue(qTokenRevokeSessions, p.ID, now)
		if err := tx.send(b); err != nil {
			return err
		}
		if out == nil {
			// Rolls back what the batch did to sessions naming no token.
			return tokenNotFound(strconv.Quote(p.ID))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TokenSetRoles implements store.Store.
func (s *Store) TokenSetRoles(ctx context.Context, p *store.TokenSetRolesParams) (before, after *store.Token, err error) {
	if p == nil || p.ID == "" {
		return nil, nil, store.InvalidField("token_id", "is required")
	}
	if !pgText(p.ID) {
		return nil, nil, tokenNotFound(strconv.Quote(p.ID))
	}
	err = s.inTx(ctx, "TokenSetRoles", func(tx *txn) error {
		before, after = nil, nil
		b := tx.batch()
		b.Queue(qTokenForUpdate, p.ID).Query(func(rs pgx.Rows) error {
			for rs.Next() {
				_, t, err := scanToken(rs)
				if err != nil {
					return err
				}
				before = t
			}
			return rs.Err()
		})
		if err := tx.send(b); err != nil {
			return err
		}
		if before == nil {
			return tokenNotFound(strconv.Quote(p.ID))
		}
		if err := store.CheckSetRoles(before); err != nil {
			return err
		}
		b = tx.batch()
		b.Queue(qTokenSetRoles, p.ID, store.JoinRoles(p.Roles))
		if err := tx.send(b); err != nil {
			return err
		}
		after = before.Clone()
		after.Roles = slices.Clone(p.Roles)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return before, after, nil
}

// TokenTouch implements store.Store.
func (s *Store) TokenTouch(ctx context.Context, p *store.TokenTouchParams) error {
	if p == nil || p.ID == "" || !pgText(p.ID) {
		return nil
	}
	return s.read(ctx, "TokenTouch", func(ctx context.Context) error {
		// One statement is its own transaction, and running it twice
		// after a lost connection does no harm.
		_, err := s.pool.Exec(ctx, qTokenTouch, p.ID, norm(p.Now))
		return err
	})
}

// AuditAppend implements store.Store.
func (s *Store) AuditAppend(ctx context.Context, p *store.AuditAppendParams) error {
	if p == nil || len(p.Entries) == 0 {
		return nil
	}
	n := len(p.Entries)
	for i, e := range p.Entries {
		if e == nil {
			return store.InvalidField("entries", "entry %d is missing", i)
		}
	}
	cols := auditColumns(p.Entries)
	ids := make([]int64, 0, n)
	err := s.inTx(ctx, "AuditAppend", func(tx *txn) error {
		ids = ids[:0]
		b := tx.batch()
		b.Queue(qAuditInsert, cols.args()...).Query(func(rs pgx.Rows) error {
			for rs.Next() {
				var id int64
				if err := rs.Scan(&id); err != nil {
					return err
				}
				ids = append(ids, id)
			}
			return rs.Err()
		})
		return tx.send(b)
	})
	if err != nil {
		return err
	}
	if len(ids) != n {
		return fmt.Errorf("postgres AuditAppend: %d ids for %d entries", len(ids), n)
	}
	// INSERT ... SELECT FROM unnest keeps the arrays' order, and identity
	// values are drawn in insertion order.
	for i, e := range p.Entries {
		e.ID = ids[i]
	}
	return nil
}

// storable makes text storable: an audit entry records what a caller sent,
// and a NUL byte or broken UTF-8 in it must not lose the entry.
func storable(s string) string {
	if pgText(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// AuditList implements store.Store.
func (s *Store) AuditList(ctx context.Context, p *store.AuditListParams) (*store.AuditListResult, error) {
	if p == nil {
		p = &store.AuditListParams{}
	}
	before, err := parseAccessCursor(p.Cursor)
	if err != nil {
		return nil, err
	}
	if !pgText(p.Who) || !pgText(p.Target) {
		return &store.AuditListResult{}, nil
	}
	var b strings.Builder
	b.WriteString("-- name: AuditList\nSELECT " + auditCols + " FROM audit_log WHERE true")
	var args []any
	if before > 0 {
		args = append(args, before)
		fmt.Fprintf(&b, " AND id < $%d", len(args))
	}
	if !p.Since.IsZero() {
		args = append(args, p.Since)
		// A coalesced entry counts from its last call.
		fmt.Fprintf(&b, " AND last_seen >= $%d", len(args))
	}
	if p.Who != "" {
		args = append(args, p.Who)
		fmt.Fprintf(&b, " AND (who = $%d OR token_id = $%d)", len(args), len(args))
	}
	if p.Target != "" {
		args = append(args, p.Target)
		fmt.Fprintf(&b, " AND target = $%d", len(args))
	}
	b.WriteString(" ORDER BY id DESC")
	if p.Limit > 0 {
		args = append(args, p.Limit+1)
		fmt.Fprintf(&b, " LIMIT $%d", len(args))
	}
	res := &store.AuditListResult{}
	err = s.read(ctx, "AuditList", func(ctx context.Context) error {
		res.Entries, res.NextCursor = nil, ""
		rs, err := s.pool.Query(ctx, b.String(), args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			e, err := scanAudit(rs)
			if err != nil {
				return err
			}
			if p.Limit > 0 && len(res.Entries) == p.Limit {
				res.NextCursor = strconv.FormatInt(res.Entries[len(res.Entries)-1].ID, 10)
				break
			}
			res.Entries = append(res.Entries, e)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// parseAccessCursor reads a page token made by a previous list: a row number.
func parseAccessCursor(c string) (int64, error) {
	if c == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(c, 10, 64)
	if err != nil || n <= 0 {
		return 0, store.InvalidField("page_token", "%q is not a page token from a previous list", c)
	}
	return n, nil
}
