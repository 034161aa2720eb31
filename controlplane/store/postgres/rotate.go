package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/factory/factory/controlplane/store"
)

var (
	// The live tokens of a role that a rotation may replace, oldest
	// first, locked: console sessions are not rotated (their parent is an
	// operator token). $3 is the subjects, or NULL for every subject.
	qTokensToRotate = `-- name: TokensToRotate
SELECT ` + tokenCols + ` FROM tokens
WHERE role = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) AND session_of = ''
	AND ($3::text[] IS NULL OR subject = ANY($3::text[]))
ORDER BY seq LIMIT $4 FOR UPDATE`
	qTokenSetExpiry = `-- name: TokenSetExpiry
UPDATE tokens SET expires_at = $2 WHERE id = $1`
)

// TokenRotate implements store.Store.
func (s *Store) TokenRotate(ctx context.Context, p *store.TokenRotateParams) (*store.TokenRotateResult, error) {
	if err := store.CheckTokenRotate(p); err != nil {
		return nil, err
	}
	if err := checkTexts("subjects", p.Subjects); err != nil {
		return nil, err
	}
	if err := checkText("created_by", p.CreatedBy); err != nil {
		return nil, err
	}
	now, graceEnd := norm(p.Now), norm(p.GraceEnd)
	var subjects []string
	if len(p.Subjects) > 0 {
		subjects = p.Subjects
	}
	var out *store.TokenRotateResult
	err := s.inTx(ctx, "TokenRotate", func(tx *txn) error {
		out = &store.TokenRotateResult{}
		var live []*store.Token
		b := tx.batch()
		b.Queue(qTokensToRotate, string(p.Role), now, subjects, store.MaxRotate+1).Query(func(rs pgx.Rows) error {
			for rs.Next() {
				_, t, err := scanToken(rs)
				if err != nil {
					return err
				}
				live = append(live, t)
			}
			return rs.Err()
		})
		if err := tx.send(b); err != nil {
			return err
		}
		if len(live) > store.MaxRotate {
			return store.InvalidField("subjects", "more than %d live %s tokens match; name fewer subjects", store.MaxRotate, p.Role)
		}
		b = tx.batch()
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
			b.Queue(qTokenSetExpiry, after.ID, after.ExpiresAt)
			b.Queue(qTokenInsert, repl.ID, repl.Hash, string(repl.Role), repl.Subject, repl.Description, repl.CreatedBy,
				repl.CreatedAt, ts(repl.ExpiresAt), store.JoinRoles(repl.Roles), "")
			out.Rotated = append(out.Rotated, store.TokenRotation{Before: old, Old: after, New: repl})
		}
		if len(out.Rotated) == 0 {
			return nil
		}
		return tx.send(b)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
