package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/factory/factory/controlplane/store"
)

const tokenCols = `seq, id, hash, role, subject, description, created_by, created_at, expires_at, revoked_at, last_used_at, roles, session_of`

var (
	qTokenByHash = `SELECT ` + tokenCols + ` FROM tokens WHERE hash = ?`
	qTokenByID   = `SELECT ` + tokenCols + ` FROM tokens WHERE id = ?`
	qTokenTaken  = `SELECT COUNT(*) FROM tokens WHERE id = ? OR hash = ?`
	// An operator token that works at the given time.
	qActiveOperator = `SELECT COUNT(*) FROM tokens WHERE role = 'operator' AND revoked_at = 0 AND (expires_at = 0 OR expires_at > ?)`
	qTokenInsert    = `INSERT INTO tokens (id, hash, role, subject, description, created_by, created_at, expires_at, roles, session_of)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	qTokenSetRoles = `UPDATE tokens SET roles = ? WHERE id = ?`
	qTokenRevoke   = `UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at = 0`
	// The console sessions made from a token die with it (tokens_session_of).
	qTokenRevokeSessions = `UPDATE tokens SET revoked_at = ? WHERE session_of = ? AND revoked_at = 0`
	qTokenTouch          = `UPDATE tokens SET last_used_at = ? WHERE id = ? AND last_used_at < ?`
	qAuditInsert         = `INSERT INTO audit_log (time, who, role, token_id, rpc, target, before_json, after_json, trace_id, outcome, detail, count, last_seen)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	auditCols = `id, time, who, role, token_id, rpc, target, before_json, after_json, trace_id, outcome, detail, count, last_seen`
)

func scanToken(sc scanner) (int64, *store.Token, error) {
	var (
		seq                                   int64
		t                                     store.Token
		role                                  string
		created, expires, revoked, lastUsedAt int64
		roles                                 string
	)
	if err := sc.Scan(&seq, &t.ID, &t.Hash, &role, &t.Subject, &t.Description, &t.CreatedBy,
		&created, &expires, &revoked, &lastUsedAt, &roles, &t.SessionOf); err != nil {
		return 0, nil, err
	}
	t.Role, t.Roles = store.Role(role), store.SplitRoles(roles)
	t.CreatedAt, t.ExpiresAt, t.RevokedAt, t.LastUsedAt = fromNanos(created), fromNanos(expires), fromNanos(revoked), fromNanos(lastUsedAt)
	return seq, &t, nil
}

func tokenNotFound(what string) error { return fmt.Errorf("token %s: %w", what, store.ErrNotFound) }

// TokenCreate implements store.Store.
func (s *Store) TokenCreate(ctx context.Context, p *store.TokenCreateParams) (*store.Token, error) {
	if err := store.CheckTokenCreate(p); err != nil {
		return nil, err
	}
	in := p.Token
	now := norm(p.Now)
	t := &store.Token{
		ID: in.ID, Hash: in.Hash, Role: in.Role, Subject: in.Subject, Description: in.Description,
		CreatedBy: in.CreatedBy, CreatedAt: now, ExpiresAt: norm(in.ExpiresAt), Roles: slices.Clone(in.Roles),
		SessionOf: in.SessionOf,
	}
	err := s.writeTx(ctx, "TokenCreate", func(w *wtx) error {
		if p.OnlyIfNoActiveOperator {
			n, err := w.count(qActiveOperator, toNanos(now))
			if err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("an active operator token: %w", store.ErrAlreadyExists)
			}
		}
		n, err := w.count(qTokenTaken, t.ID, t.Hash)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("token %q: %w", t.ID, store.ErrAlreadyExists)
		}
		_, err = w.exec(qTokenInsert, t.ID, t.Hash, string(t.Role), t.Subject, t.Description, t.CreatedBy,
			toNanos(t.CreatedAt), toNanos(t.ExpiresAt), store.JoinRoles(t.Roles), t.SessionOf)
		return err
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// count runs a SELECT COUNT(*) on the write transaction.
func (t *wtx) count(query string, args ...any) (int64, error) {
	st, err := t.stmt(query)
	if err != nil {
		return 0, dbErr(t.op, err)
	}
	var n int64
	err = st.QueryRowContext(t.ctx, args...).Scan(&n)
	return n, dbErr(t.op, err)
}

// TokenGetByHash implements store.Store.
func (s *Store) TokenGetByHash(ctx context.Context, p *store.TokenGetByHashParams) (*store.Token, error) {
	if p == nil || p.Hash == "" {
		return nil, tokenNotFound("with an empty hash")
	}
	st, err := s.rs.get(ctx, qTokenByHash)
	if err != nil {
		return nil, dbErr("TokenGetByHash", err)
	}
	_, t, err := scanToken(st.QueryRowContext(ctx, p.Hash))
	if errors.Is(err, sql.ErrNoRows) {
		// The hash is not echoed: it is as good as the secret's
		// fingerprint, and errors end up in logs.
		return nil, tokenNotFound("with that secret")
	}
	if err != nil {
		return nil, dbErr("TokenGetByHash", err)
	}
	return t, nil
}

// TokenList implements store.Store.
func (s *Store) TokenList(ctx context.Context, p *store.TokenListParams) (*store.TokenListResult, error) {
	if p == nil {
		p = &store.TokenListParams{}
	}
	after, err := parseCursor(p.Cursor)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("SELECT " + tokenCols + " FROM tokens WHERE seq > ?")
	args := []any{after}
	if p.Role != "" {
		b.WriteString(" AND role = ?")
		args = append(args, string(p.Role))
	}
	if !p.ActiveAt.IsZero() {
		b.WriteString(" AND revoked_at = 0 AND (expires_at = 0 OR expires_at > ?)")
		args = append(args, toNanos(p.ActiveAt))
	}
	limit := pageLimit(p.Limit)
	b.WriteString(" ORDER BY seq LIMIT ?")
	args = append(args, limit)

	st, err := s.rs.get(ctx, b.String())
	if err != nil {
		return nil, dbErr("TokenList", err)
	}
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, dbErr("TokenList", err)
	}
	defer rs.Close()
	res := &store.TokenListResult{}
	var last int64
	for rs.Next() {
		seq, t, err := scanToken(rs)
		if err != nil {
			return nil, dbErr("TokenList", err)
		}
		if limit > 0 && len(res.Tokens) == p.Limit {
			res.NextCursor = strconv.FormatInt(last, 10)
			break
		}
		res.Tokens = append(res.Tokens, t)
		last = seq
	}
	if err := rs.Err(); err != nil {
		return nil, dbErr("TokenList", err)
	}
	return res, nil
}

// TokenRevoke implements store.Store.
func (s *Store) TokenRevoke(ctx context.Context, p *store.TokenRevokeParams) (*store.Token, error) {
	if p == nil || p.ID == "" {
		return nil, store.InvalidField("token_id", "is required")
	}
	var out *store.Token
	now := toNanos(norm(p.Now))
	err := s.writeTx(ctx, "TokenRevoke", func(w *wtx) error {
		if _, err := w.exec(qTokenRevoke, now, p.ID); err != nil {
			return err
		}
		if _, err := w.exec(qTokenRevokeSessions, now, p.ID); err != nil {
			return err
		}
		st, err := w.stmt(qTokenByID)
		if err != nil {
			return dbErr(w.op, err)
		}
		_, out, err = scanToken(st.QueryRowContext(w.ctx, p.ID))
		if errors.Is(err, sql.ErrNoRows) {
			return tokenNotFound(strconv.Quote(p.ID))
		}
		return dbErr(w.op, err)
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
	err = s.writeTx(ctx, "TokenSetRoles", func(w *wtx) error {
		st, err := w.stmt(qTokenByID)
		if err != nil {
			return dbErr(w.op, err)
		}
		_, before, err = scanToken(st.QueryRowContext(w.ctx, p.ID))
		if errors.Is(err, sql.ErrNoRows) {
			return tokenNotFound(strconv.Quote(p.ID))
		}
		if err != nil {
			return dbErr(w.op, err)
		}
		if err := store.CheckSetRoles(before); err != nil {
			return err
		}
		if _, err := w.exec(qTokenSetRoles, store.JoinRoles(p.Roles), p.ID); err != nil {
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
	if p == nil || p.ID == "" {
		return nil
	}
	now := toNanos(norm(p.Now))
	return s.writeTx(ctx, "TokenTouch", func(w *wtx) error {
		_, err := w.exec(qTokenTouch, now, p.ID, now)
		return err
	})
}

// AuditAppend implements store.Store.
func (s *Store) AuditAppend(ctx context.Context, p *store.AuditAppendParams) error {
	if p == nil || len(p.Entries) == 0 {
		return nil
	}
	for i, e := range p.Entries {
		if e == nil {
			return store.InvalidField("entries", "entry %d is missing", i)
		}
	}
	ids := make([]int64, len(p.Entries))
	err := s.writeTx(ctx, "AuditAppend", func(w *wtx) error {
		for i, e := range p.Entries {
			res, err := w.exec(qAuditInsert, auditArgs(e)...)
			if err != nil {
				return err
			}
			if ids[i], err = res.LastInsertId(); err != nil {
				return dbErr(w.op, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Only a committed append hands out ids.
	for i, e := range p.Entries {
		e.ID = ids[i]
	}
	return nil
}

// AuditList implements store.Store.
func (s *Store) AuditList(ctx context.Context, p *store.AuditListParams) (*store.AuditListResult, error) {
	if p == nil {
		p = &store.AuditListParams{}
	}
	before, err := parseCursor(p.Cursor)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("SELECT " + auditCols + " FROM audit_log WHERE 1 = 1")
	var args []any
	if before > 0 {
		b.WriteString(" AND id < ?")
		args = append(args, before)
	}
	if !p.Since.IsZero() {
		// A coalesced entry counts from its last call.
		b.WriteString(" AND last_seen >= ?")
		args = append(args, toNanos(p.Since))
	}
	if p.Who != "" {
		b.WriteString(" AND (who = ? OR token_id = ?)")
		args = append(args, p.Who, p.Who)
	}
	if p.Target != "" {
		b.WriteString(" AND target = ?")
		args = append(args, p.Target)
	}
	limit := pageLimit(p.Limit)
	b.WriteString(" ORDER BY id DESC LIMIT ?")
	args = append(args, limit)

	st, err := s.rs.get(ctx, b.String())
	if err != nil {
		return nil, dbErr("AuditList", err)
	}
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, dbErr("AuditList", err)
	}
	defer rs.Close()
	res := &store.AuditListResult{}
	for rs.Next() {
		e, err := scanAudit(rs)
		if err != nil {
			return nil, dbErr("AuditList", err)
		}
		if limit > 0 && len(res.Entries) == p.Limit {
			res.NextCursor = strconv.FormatInt(res.Entries[len(res.Entries)-1].ID, 10)
			break
		}
		res.Entries = append(res.Entries, e)
	}
	if err := rs.Err(); err != nil {
		return nil, dbErr("AuditList", err)
	}
	return res, nil
}

// parseCursor reads a page token made by a previous list: a row number.
func parseCursor(c string) (int64, error) {
	if c == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(c, 10, 64)
	if err != nil || n <= 0 {
		return 0, store.InvalidField("page_token", "%q is not a page token from a previous list", c)
	}
	return n, nil
}

// pageLimit is the LIMIT for a page of limit rows: one row more, which says
// whether there is a next page; -1 (no limit) for 0.
func pageLimit(limit int) int {
	if limit > 0 && limit < math.MaxInt32 {
		return limit + 1
	}
	return -1
}
