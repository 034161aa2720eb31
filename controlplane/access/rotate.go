package access

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/factory/factory/controlplane/store"
)

// DefaultRotateGrace is how long a rotated token keeps working when the
// rotation names no grace: long enough to roll the new secrets out.
const DefaultRotateGrace = time.Hour

// MaxRotateGrace bounds the grace period (as the API does).
const MaxRotateGrace = 30 * 24 * time.Hour

// RotateParams selects the tokens Rotate replaces.
type RotateParams struct {
	Role store.Role
	// Subjects, when not empty, keeps only their tokens.
	Subjects []string
	// Grace is how long the old tokens keep working.
	Grace time.Duration
	// CreatedBy names the caller, recorded on the new tokens.
	CreatedBy string
}

// Rotated is one replaced token and its replacement's secret, which
// exists nowhere else afterwards.
type Rotated struct {
	// Before is the old token as it was, Old as the rotation left it.
	Before, Old, New *store.Token
	Secret           string
}

// RotateResult is what Rotate did.
type RotateResult struct {
	Rotated []Rotated
	// Skipped are live tokens left alone: replaced by an earlier
	// rotation, they stop working within the grace period anyway.
	Skipped []*store.Token
	// GraceEnd is when the old tokens stop working.
	GraceEnd time.Time
}

// Rotate replaces every live token of an agent or sidecar role (of some
// subjects) with a new one of the same role, subject, description and
// grant, all in one store transaction. The old tokens keep working until
// the grace period ends (never longer than they would have), then are
// refused as expired. Operator tokens are not rotated: a rotated operator
// token's console sessions would outlive it, so an operator makes a new
// token and revokes the old one, which ends its sessions.
func (s *Service) Rotate(ctx context.Context, p RotateParams) (*RotateResult, error) {
	switch {
	case p.Role == store.RoleOperator:
		return nil, store.InvalidField("role", "operator tokens are not rotated: create a new operator token (factory token create --role operator), then revoke the old one, which also ends the console sessions made from it")
	case p.Role != store.RoleAgent && p.Role != store.RoleSidecar:
		return nil, store.InvalidField("role", "want agent or sidecar, got %q", p.Role)
	case p.Grace < 0 || p.Grace > MaxRotateGrace:
		return nil, store.InvalidField("grace", "want 0 to %s, got %s", MaxRotateGrace, p.Grace)
	}
	for _, sub := range p.Subjects {
		if !subjectRE.MatchString(sub) {
			return nil, store.InvalidField("subjects", "want 1-128 letters, digits, '.', '_', ':', '/', '-', got %q", sub)
		}
	}
	now := s.clock.Now()
	secrets := map[string]string{} // by new token id; a retried transaction adds more
	res, err := s.store.TokenRotate(ctx, &store.TokenRotateParams{
		Role: p.Role, Subjects: p.Subjects, Now: now, GraceEnd: now.Add(p.Grace), CreatedBy: p.CreatedBy,
		Issue: func(*store.Token) (string, string, error) {
			id, err := uuid.NewV7()
			if err != nil {
				return "", "", fmt.Errorf("token id: %w", err)
			}
			secret, err := NewSecret()
			if err != nil {
				return "", "", err
			}
			hash := HashSecret(secret)
			// Noted before the insert: it may commit even if the call
			// then fails.
			s.created.note(hash)
			secrets[id.String()] = secret
			return id.String(), hash, nil
		},
	})
	if err != nil {
		// The rotation may have committed: drop every cached lookup of
		// the role's tokens.
		s.forgetRole(p.Role)
		return nil, err
	}
	out := &RotateResult{Skipped: res.Skipped, GraceEnd: now.Add(p.Grace)}
	for _, r := range res.Rotated {
		s.forget(r.Old.ID)
		out.Rotated = append(out.Rotated, Rotated{Before: r.Before, Old: r.Old, New: r.New, Secret: secrets[r.New.ID]})
	}
	return out, nil
}

// forgetRole drops the cached lookups of every token of a role.
func (s *Service) forgetRole(role store.Role) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
	for h, c := range s.cache {
		if c.tok.Role == role {
			delete(s.cache, h)
		}
	}
}
