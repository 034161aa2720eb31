package sqlite

import (
	"context"
	"encoding/json"

	"github.com/factory/factory/controlplane/store"
)

// The live tokens of a role that a rotation may replace, oldest first:
// console sessions are not rotated (their parent is an operator token).
// The second parameter is a JSON array of subjects, or null for every
// subject.
var (
	qTokensToRotate = `SELECT ` + tokenCols + ` FROM tokens
		WHERE role = ? AND revoked_at = 0 AND (expires_at = 0 OR expires_at > ?) AND session_of = ''
		AND (? IS NULL OR subject IN (SELECT value FROM json_each(?)))
		ORDER BY seq LIMIT ?`
	qTokenSetExpiry = `UPDATE tokens SET expires_at = ? WHERE id = ?`
)

// TokenRotate implements store.Store.
func (s *Store) TokenRotate(ctx context.Context, p *store.TokenRotateParams) (*store.TokenRotateResult, error) {
	if err := store.CheckTokenRotate(p); err != nil {
		return nil, err
	}
	now, graceEnd := norm(p.Now), norm(p.GraceEnd)
	var subjects any
	if len(p.Subjects) > 0 {
		b, err := json.Marshal(p.Subjects)
		if err != nil {
			return nil, err
		}
		subjects = string(b)
	}
	var out *store.TokenRotateResult
	err := s.writeTx(ctx, "TokenRotate", func(w *wtx) error {
		out = &store.TokenRotateResult{}
		live, err := w.tokensToRotate(string(p.Role), toNanos(now), subjects)
		if err != nil {
			return err
		}
		if len(live) > store.MaxRotate {
			return store.InvalidField("subjects", "more than %d live %s tokens match; name fewer subjects", store.MaxRotate, p.Role)
		}
		skip := store.RotationSkips(live, graceEnd)
		for _, old := range live {
			if skip[old.ID] {
				out.Skipped = append(out.Skipped, old)
				continue
			}
			id, hash, err := p.Issue(old)
			if err != nil {
				return err
			}
			after, repl := store.Rotation(old, id, hash, p.CreatedBy, now, graceEnd)
			repl.ExpiresAt = norm(repl.ExpiresAt)
			if _, err := w.exec(qTokenSetExpiry, toNanos(after.ExpiresAt), after.ID); err != nil {
				return err
			}
			if _, err := w.exec(qTokenInsert, repl.ID, repl.Hash, string(repl.Role), repl.Subject, repl.Description, repl.CreatedBy,
				toNanos(repl.CreatedAt), toNanos(repl.ExpiresAt), store.JoinRoles(repl.Roles), ""); err != nil {
				return err
			}
			out.Rotated = append(out.Rotated, store.TokenRotation{Before: old, Old: after, New: repl})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// tokensToRotate reads the tokens a rotation may replace, one more than
// MaxRotate at most.
func (w *wtx) tokensToRotate(role string, now int64, subjects any) ([]*store.Token, error) {
	rs, err := w.query(qTokensToRotate, role, now, subjects, subjects, store.MaxRotate+1)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var live []*store.Token
	for rs.Next() {
		_, t, err := scanToken(rs)
		if err != nil {
			return nil, dbErr(w.op, err)
		}
		live = append(live, t)
	}
	return live, dbErr(w.op, rs.Err())
}
