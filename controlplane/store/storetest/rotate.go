package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// rotate runs TokenRotate with new ids "<old id>-r<n>", n counting the
// Issue calls of this harness (a retried transaction calls it again).
func (h *harness) rotate(p *store.TokenRotateParams) (*store.TokenRotateResult, error) {
	h.t.Helper()
	n := 0
	p.Issue = func(old *store.Token) (string, string, error) {
		n++
		id := fmt.Sprintf("%s-r%d", old.ID, n)
		return id, "hash-of-" + id, nil
	}
	if p.Now.IsZero() {
		p.Now = h.now()
	}
	p.CreatedBy = "operator ops (op-1)"
	return h.s.TokenRotate(h.ctx, p)
}

func rotatedIDs(res *store.TokenRotateResult) (olds, skipped []string) {
	for _, r := range res.Rotated {
		olds = append(olds, r.Old.ID)
	}
	for _, t := range res.Skipped {
		skipped = append(skipped, t.ID)
	}
	return olds, skipped
}

func (s *suite) testTokenRotate(t *testing.T) {
	s.runCases(t, []testCase{
		{"ReplacesLiveTokensOfTheRoleInOneGo", func(t *testing.T, h *harness) {
			forge := newToken("forge-1", store.RoleAgent, "forge")
			forge.Roles = []string{"builder", "tester"}
			h.createToken(forge)
			h.createToken(newToken("anvil-1", store.RoleAgent, "anvil"))
			h.createToken(newToken("gpu-1", store.RoleSidecar, "gpu-1"))
			h.createToken(newToken("ops-1", store.RoleOperator, "ops"))
			gone := h.createToken(newToken("revoked-1", store.RoleAgent, "forge"))
			if _, err := h.s.TokenRevoke(h.ctx, &store.TokenRevokeParams{ID: gone.ID, Now: h.now()}); err != nil {
				t.Fatal(err)
			}
			h.clock.Advance(time.Minute)
			graceEnd := h.now().Add(time.Hour)
			res, err := h.rotate(&store.TokenRotateParams{Role: store.RoleAgent, GraceEnd: graceEnd})
			if err != nil {
				t.Fatal(err)
			}
			olds, skipped := rotatedIDs(res)
			if !slices.Equal(olds, []string{"forge-1", "anvil-1"}) || len(skipped) != 0 {
				t.Fatalf("rotated %v, skipped %v; want forge-1, anvil-1 and none skipped", olds, skipped)
			}
			r := res.Rotated[0]
			requireTime(t, "old ExpiresAt", r.Old.ExpiresAt, graceEnd)
			want := &store.Token{ID: "forge-1-r1", Hash: "hash-of-forge-1-r1", Role: store.RoleAgent, Subject: "forge",
				Description: "for forge", CreatedBy: "operator ops (op-1)", CreatedAt: h.now()}
			requireToken(t, r.New, want)
			requireRoles(t, "new grant", r.New.Roles, "builder", "tester")
			// What the store holds is what it returned.
			requireToken(t, h.tokenByHash("hash-of-forge-1-r1"), want)
			requireRoles(t, "stored grant", h.tokenByHash("hash-of-forge-1-r1").Roles, "builder", "tester")
			requireTime(t, "stored old ExpiresAt", h.tokenByHash("hash-of-forge-1").ExpiresAt, graceEnd)
			// Other roles, and revoked tokens, are untouched.
			for _, hash := range []string{"hash-of-gpu-1", "hash-of-ops-1", "hash-of-revoked-1"} {
				if got := h.tokenByHash(hash); !got.ExpiresAt.IsZero() {
					t.Fatalf("%s got an expiry %s", got.ID, got.ExpiresAt)
				}
			}
			// Once the grace is over, only the new tokens are live.
			live := h.tokenIDs(&store.TokenListParams{Role: store.RoleAgent, ActiveAt: graceEnd})
			if !slices.Equal(live, []string{"forge-1-r1", "anvil-1-r2"}) {
				t.Fatalf("live agent tokens after the grace: %v", live)
			}
		}},
		{"OnlyTheNamedSubjects", func(t *testing.T, h *harness) {
			h.createToken(newToken("forge-1", store.RoleAgent, "forge"))
			h.createToken(newToken("anvil-1", store.RoleAgent, "anvil"))
			h.createToken(newToken("scout-1", store.RoleAgent, "scout"))
			res, err := h.rotate(&store.TokenRotateParams{Role: store.RoleAgent, Subjects: []string{"scout", "forge", "nobody"}, GraceEnd: h.now().Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			if olds, _ := rotatedIDs(res); !slices.Equal(olds, []string{"forge-1", "scout-1"}) {
				t.Fatalf("rotated %v, want forge-1, scout-1", olds)
			}
			if got := h.tokenByHash("hash-of-anvil-1"); !got.ExpiresAt.IsZero() {
				t.Fatalf("anvil's token got an expiry")
			}
		}},
		{"NeverExtendsAnEarlierExpiry", func(t *testing.T, h *harness) {
			soon := newToken("soon", store.RoleAgent, "forge")
			soon.ExpiresAt = h.now().Add(30 * time.Minute)
			h.createToken(soon)
			later := newToken("later", store.RoleAgent, "anvil")
			later.ExpiresAt = h.now().Add(48 * time.Hour)
			h.createToken(later)
			graceEnd := h.now().Add(time.Hour)
			res, err := h.rotate(&store.TokenRotateParams{Role: store.RoleAgent, GraceEnd: graceEnd})
			if err != nil {
				t.Fatal(err)
			}
			// A token about to expire is still replaced (its holder needs
			// one), but keeps its own, earlier, end.
			olds, skipped := rotatedIDs(res)
			if !slices.Equal(olds, []string{"soon", "later"}) || len(skipped) != 0 {
				t.Fatalf("rotated %v, skipped %v; want both rotated", olds, skipped)
			}
			requireTime(t, "soon's expiry", h.tokenByHash("hash-of-soon").ExpiresAt, soon.ExpiresAt)
			requireTime(t, "soon's expiry as returned", res.Rotated[0].Old.ExpiresAt, soon.ExpiresAt)
			requireTime(t, "later's expiry", h.tokenByHash("hash-of-later").ExpiresAt, graceEnd)
			// A replacement lives as long as the old one was made to.
			requireTime(t, "soon's replacement's expiry", res.Rotated[0].New.ExpiresAt, h.now().Add(30*time.Minute))
			requireTime(t, "later's replacement's expiry", res.Rotated[1].New.ExpiresAt, h.now().Add(48*time.Hour))
		}},
		{"RotatingAgainInTheGraceSkipsTheOldTokens", func(t *testing.T, h *harness) {
			h.createToken(newToken("forge-1", store.RoleAgent, "forge"))
			if _, err := h.rotate(&store.TokenRotateParams{Role: store.RoleAgent, GraceEnd: h.now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			h.clock.Advance(time.Minute)
			res, err := h.rotate(&store.TokenRotateParams{Role: store.RoleAgent, GraceEnd: h.now().Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			olds, skipped := rotatedIDs(res)
			if !slices.Equal(olds, []string{"forge-1-r1"}) || !slices.Equal(skipped, []string{"forge-1"}) {
				t.Fatalf("rotated %v, skipped %v; want the first replacement rotated and the original skipped", olds, skipped)
			}
		}},
		{"ZeroGraceEndsOldTokensNow", func(t *testing.T, h *harness) {
			h.createToken(newToken("forge-1", store.RoleAgent, "forge"))
			if _, err := h.rotate(&store.TokenRotateParams{Role: store.RoleAgent, GraceEnd: h.now()}); err != nil {
				t.Fatal(err)
			}
			if h.tokenByHash("hash-of-forge-1").ActiveAt(h.now()) {
				t.Fatal("old token still works after a rotation without grace")
			}
		}},
		{"RefusesOperatorsAndAFailedIssueChangesNothing", func(t *testing.T, h *harness) {
			h.createToken(newToken("ops-1", store.RoleOperator, "ops"))
			h.createToken(newToken("forge-1", store.RoleAgent, "forge"))
			h.createToken(newToken("anvil-1", store.RoleAgent, "anvil"))
			_, err := h.rotate(&store.TokenRotateParams{Role: store.RoleOperator, GraceEnd: h.now().Add(time.Hour)})
			requireFieldError(t, err, "role")

			boom := errors.New("no entropy")
			_, err = h.s.TokenRotate(h.ctx, &store.TokenRotateParams{Role: store.RoleAgent, Now: h.now(), GraceEnd: h.now().Add(time.Hour),
				Issue: func(old *store.Token) (string, string, error) {
					if old.ID == "anvil-1" {
						return "", "", boom
					}
					return "new-" + old.ID, "hash-of-new-" + old.ID, nil
				}})
			if !errors.Is(err, boom) {
				t.Fatalf("TokenRotate with a failing Issue: %v, want %v", err, boom)
			}
			// All or nothing: forge's token was not shortened, nor replaced.
			if got := h.tokenByHash("hash-of-forge-1"); !got.ExpiresAt.IsZero() {
				t.Fatalf("forge-1 got an expiry from a rotation that failed")
			}
			if _, err := h.s.TokenGetByHash(h.ctx, &store.TokenGetByHashParams{Hash: "hash-of-new-forge-1"}); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("replacement from a failed rotation: %v, want not found", err)
			}
		}},
	})
}

func (s *suite) testCreateHistory(t *testing.T) {
	s.runCases(t, []testCase{
		{"AttemptLastErrorAndProgressAreKept", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "imported", MaxAttempts: 5, History: store.TaskHistory{Attempt: 2, LastError: "rate limited", Progress: "half way"}},
				&store.TaskCreate{ID: "fresh"},
			)
			for _, tc := range []struct {
				id   string
				want store.TaskHistory
			}{{"imported", store.TaskHistory{Attempt: 2, LastError: "rate limited", Progress: "half way"}}, {"fresh", store.TaskHistory{}}} {
				got := h.get(tc.id)
				if have := (store.TaskHistory{Attempt: got.Attempt, LastError: got.LastError, Progress: got.Progress}); have != tc.want {
					t.Fatalf("%s: history %+v, want %+v", tc.id, have, tc.want)
				}
			}
			// The next claim is the third attempt.
			if got := h.claimOne("forge", "imported"); got.Attempt != 3 {
				t.Fatalf("claim of the imported task: attempt %d, want 3", got.Attempt)
			}
		}},
		{"ReturnedAsStored", func(t *testing.T, h *harness) {
			ch := h.create(&store.TaskCreate{ID: "a", History: store.TaskHistory{Attempt: 1, LastError: "x"}})
			if ch[0].Task.Attempt != 1 || ch[0].Task.LastError != "x" {
				t.Fatalf("returned task: attempt %d, last error %q", ch[0].Task.Attempt, ch[0].Task.LastError)
			}
		}},
		{"AttemptBeyondMaxAttemptsIsRefused", func(t *testing.T, h *harness) {
			_, err := h.s.TaskCreate(h.ctx, &store.TaskCreateParams{Now: h.now(), Tasks: []*store.TaskCreate{
				{ID: "a", Title: "a", History: store.TaskHistory{Attempt: store.DefaultMaxAttempts + 1}},
			}})
			requireFieldError(t, err, "attempt")
		}},
	})
}
