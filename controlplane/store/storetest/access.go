package storetest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// newToken is a token record as the access domain would make one. The hash
// is a stand-in: drivers store whatever they are given.
func newToken(id string, role store.Role, subject string) *store.Token {
	return &store.Token{ID: id, Hash: "hash-of-" + id, Role: role, Subject: subject, Description: "for " + subject, CreatedBy: "test"}
}

func (h *harness) createToken(tok *store.Token) *store.Token {
	h.t.Helper()
	got, err := h.s.TokenCreate(h.ctx, &store.TokenCreateParams{Token: tok, Now: h.now()})
	if err != nil {
		h.t.Fatalf("TokenCreate(%s): %v", tok.ID, err)
	}
	return got
}

func (h *harness) tokenByHash(hash string) *store.Token {
	h.t.Helper()
	got, err := h.s.TokenGetByHash(h.ctx, &store.TokenGetByHashParams{Hash: hash})
	if err != nil {
		h.t.Fatalf("TokenGetByHash(%s): %v", hash, err)
	}
	return got
}

func (h *harness) tokenIDs(p *store.TokenListParams) []string {
	h.t.Helper()
	toks := h.mustListTokens(p)
	ids := make([]string, len(toks))
	for i, tok := range toks {
		ids[i] = tok.ID
	}
	return ids
}

func (h *harness) mustListTokens(p *store.TokenListParams) []*store.Token {
	h.t.Helper()
	res, err := h.s.TokenList(h.ctx, p)
	if err != nil {
		h.t.Fatalf("TokenList(%+v): %v", p, err)
	}
	return res.Tokens
}

func requireToken(t *testing.T, got, want *store.Token) {
	t.Helper()
	if got.ID != want.ID || got.Hash != want.Hash || got.Role != want.Role || got.Subject != want.Subject ||
		got.Description != want.Description || got.CreatedBy != want.CreatedBy || got.SessionOf != want.SessionOf {
		t.Fatalf("token %+v, want %+v", got, want)
	}
	requireTime(t, "CreatedAt", got.CreatedAt, want.CreatedAt)
	requireTime(t, "ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	requireTime(t, "RevokedAt", got.RevokedAt, want.RevokedAt)
	requireTime(t, "LastUsedAt", got.LastUsedAt, want.LastUsedAt)
}

func (s *suite) testTokens(t *testing.T) {
	s.runCases(t, []testCase{
		{"CreateThenGetByHash", func(t *testing.T, h *harness) {
			tok := newToken("t1", store.RoleAgent, "forge")
			tok.ExpiresAt = h.now().Add(30 * 24 * time.Hour)
			created := h.createToken(tok)
			want := *tok
			want.CreatedAt = h.now()
			requireToken(t, created, &want)
			requireToken(t, h.tokenByHash("hash-of-t1"), &want)

			_, err := h.s.TokenGetByHash(h.ctx, &store.TokenGetByHashParams{Hash: "hash-of-nobody"})
			requireIs(t, err, store.ErrNotFound, "unknown hash")
		}},
		{"DuplicateIDOrHash", func(t *testing.T, h *harness) {
			h.createToken(newToken("t1", store.RoleAgent, "forge"))
			dupID := newToken("t1", store.RoleAgent, "hammer")
			dupID.Hash = "another-hash"
			_, err := h.s.TokenCreate(h.ctx, &store.TokenCreateParams{Token: dupID, Now: h.now()})
			requireIs(t, err, store.ErrAlreadyExists, "same id")
			dupHash := newToken("t2", store.RoleAgent, "hammer")
			dupHash.Hash = "hash-of-t1"
			_, err = h.s.TokenCreate(h.ctx, &store.TokenCreateParams{Token: dupHash, Now: h.now()})
			requireIs(t, err, store.ErrAlreadyExists, "same hash")
			requireIDs(t, "tokens", h.tokenIDs(nil), []string{"t1"})
		}},
		{"BadInput", func(t *testing.T, h *harness) {
			for field, tok := range map[string]*store.Token{
				"id":      {Hash: "h", Role: store.RoleAgent, Subject: "s"},
				"hash":    {ID: "i", Role: store.RoleAgent, Subject: "s"},
				"role":    {ID: "i", Hash: "h", Role: "admin", Subject: "s"},
				"subject": {ID: "i", Hash: "h", Role: store.RoleAgent},
			} {
				_, err := h.s.TokenCreate(h.ctx, &store.TokenCreateParams{Token: tok, Now: h.now()})
				requireFieldError(t, err, field)
			}
			requireIDs(t, "tokens", h.tokenIDs(nil), []string{})
		}},
		{"BadSessionOf", func(t *testing.T, h *harness) {
			h.createToken(newToken("op", store.RoleOperator, "ops"))
			for name, parent := range map[string]string{
				"spaces":     "not a token id",
				"a NUL":      "op\x00",
				"too long":   strings.Repeat("a", 129),
				"a slash":    "op/1",
				"its own id": "sess",
			} {
				t.Run(name, func(t *testing.T) {
					sess := newToken("sess", store.RoleOperator, "ops")
					sess.SessionOf = parent
					_, err := h.s.TokenCreate(h.ctx, &store.TokenCreateParams{Token: sess, Now: h.now()})
					requireFieldError(t, err, "session_of")
				})
			}
			requireIDs(t, "tokens", h.tokenIDs(nil), []string{"op"})
		}},
		{"RevokeTakesItsSessions", func(t *testing.T, h *harness) {
			parent := h.createToken(newToken("op", store.RoleOperator, "ops"))
			sessions := []*store.Token{newToken("sess-1", store.RoleOperator, "ops"), newToken("sess-2", store.RoleOperator, "ops")}
			for _, sess := range sessions {
				sess.SessionOf = "op"
				sess.ExpiresAt = h.now().Add(12 * time.Hour)
				h.createToken(sess)
			}
			h.createToken(newToken("other", store.RoleOperator, "ops"))
			// A session of another token is not this revoke's business.
			theirs := newToken("their-sess", store.RoleOperator, "ops")
			theirs.SessionOf = "other"
			h.createToken(theirs)
			got := h.tokenByHash("hash-of-sess-1")
			if got.SessionOf != "op" {
				t.Fatalf("TokenGetByHash: SessionOf %q, want %q", got.SessionOf, "op")
			}
			if got := h.tokenByHash("hash-of-op").SessionOf; got != "" {
				t.Fatalf("an ordinary token has SessionOf %q", got)
			}

			h.clock.Advance(time.Minute)
			at := h.now()
			revoked, err := h.s.TokenRevoke(h.ctx, &store.TokenRevokeParams{ID: "op", Now: at})
			if err != nil {
				t.Fatal(err)
			}
			// The revoke answers with the token named, not a session.
			want := *parent
			want.RevokedAt = at
			requireToken(t, revoked, &want)
			for _, sess := range sessions {
				got := h.tokenByHash(sess.Hash)
				requireTime(t, sess.ID+" RevokedAt", got.RevokedAt, at)
				if got.SessionOf != "op" {
					t.Fatalf("%s after the revoke: SessionOf %q", sess.ID, got.SessionOf)
				}
			}
			requireIDs(t, "active after revoking op", h.tokenIDs(&store.TokenListParams{ActiveAt: h.now()}), []string{"other", "their-sess"})
			for _, tok := range h.mustListTokens(&store.TokenListParams{}) {
				if want := map[string]string{"sess-1": "op", "sess-2": "op", "their-sess": "other"}[tok.ID]; tok.SessionOf != want {
					t.Fatalf("TokenList: %s has SessionOf %q, want %q", tok.ID, tok.SessionOf, want)
				}
			}
		}},
		{"RevokeKeepsASessionsFirstRevocation", func(t *testing.T, h *harness) {
			h.createToken(newToken("op", store.RoleOperator, "ops"))
			early := newToken("early", store.RoleOperator, "ops")
			early.SessionOf = "op"
			h.createToken(early)
			h.clock.Advance(time.Minute)
			first := h.now()
			if _, err := h.s.TokenRevoke(h.ctx, &store.TokenRevokeParams{ID: "early", Now: first}); err != nil {
				t.Fatal(err)
			}
			h.clock.Advance(time.Minute)
			if _, err := h.s.TokenRevoke(h.ctx, &store.TokenRevokeParams{ID: "op", Now: h.now()}); err != nil {
				t.Fatal(err)
			}
			requireTime(t, "a session revoked before its parent", h.tokenByHash("hash-of-early").RevokedAt, first)

			// A session made from the token after it was revoked (a replica
			// still trusting a cached lookup) dies when the token is revoked
			// again, at that time; the token keeps its first revocation.
			late := newToken("late", store.RoleOperator, "ops")
			late.SessionOf = "op"
			h.createToken(late)
			h.clock.Advance(time.Minute)
			again := h.now()
			tok, err := h.s.TokenRevoke(h.ctx, &store.TokenRevokeParams{ID: "op", Now: again})
			if err != nil {
				t.Fatal(err)
			}
			requireTime(t, "the token revoked twice", tok.RevokedAt, first.Add(time.Minute))
			requireTime(t, "a session made after its parent was revoked", h.tokenByHash("hash-of-late").RevokedAt, again)
		}},
		{"RevokingASessionLeavesItsParent", func(t *testing.T, h *harness) {
			h.createToken(newToken("op", store.RoleOperator, "ops"))
			for _, id := range []string{"sess-1", "sess-2"} {
				sess := newToken(id, store.RoleOperator, "ops")
				sess.SessionOf = "op"
				h.createToken(sess)
			}
			h.clock.Advance(time.Minute)
			revoked, err := h.s.TokenRevoke(h.ctx, &store.TokenRevokeParams{ID: "sess-1", Now: h.now()})
			if err != nil {
				t.Fatal(err)
			}
			if revoked.ID != "sess-1" || revoked.SessionOf != "op" {
				t.Fatalf("revoking sess-1 returned %+v", revoked)
			}
			requireTime(t, "sess-1 RevokedAt", revoked.RevokedAt, h.now())
			requireIDs(t, "active after signing one session out", h.tokenIDs(&store.TokenListParams{ActiveAt: h.now()}), []string{"op", "sess-2"})
		}},
		{"RevokingAnUnknownTokenLeavesSessionsNamingIt", func(t *testing.T, h *harness) {
			// The link is not a foreign key: an import may bring a session
			// without its token. Revoking that id is still not found, and
			// changes nothing.
			orphan := newToken("orphan", store.RoleOperator, "ops")
			orphan.SessionOf = "nobody"
			h.createToken(orphan)
			_, err := h.s.TokenRevoke(h.ctx, &store.TokenRevokeParams{ID: "nobody", Now: h.now()})
			requireIs(t, err, store.ErrNotFound, "revoking an unknown token")
			if got := h.tokenByHash("hash-of-orphan"); !got.RevokedAt.IsZero() {
				t.Fatalf("a refused revoke revoked the session naming it, at %v", got.RevokedAt)
			}
		}},
		{"ListFiltersAndPages", func(t *testing.T, h *harness) {
			h.createToken(newToken("op", store.RoleOperator, "ops"))
			h.clock.Advance(time.Second)
			h.createToken(newToken("a1", store.RoleAgent, "forge"))
			h.clock.Advance(time.Second)
			short := newToken("a2", store.RoleAgent, "hammer")
			short.ExpiresAt = h.now().Add(time.Hour)
			h.createToken(short)
			h.clock.Advance(time.Second)
			h.createToken(newToken("s1", store.RoleSidecar, "gpu-1"))
			h.clock.Advance(time.Second)
			h.createToken(newToken("a3", store.RoleAgent, "anvil"))
			if _, err := h.s.TokenRevoke(h.ctx, &store.TokenRevokeParams{ID: "a3", Now: h.now()}); err != nil {
				t.Fatal(err)
			}

			requireIDs(t, "all", h.tokenIDs(nil), []string{"op", "a1", "a2", "s1", "a3"})
			requireIDs(t, "agents", h.tokenIDs(&store.TokenListParams{Role: store.RoleAgent}), []string{"a1", "a2", "a3"})
			requireIDs(t, "active now", h.tokenIDs(&store.TokenListParams{ActiveAt: h.now()}), []string{"op", "a1", "a2", "s1"})
			requireIDs(t, "active in two hours", h.tokenIDs(&store.TokenListParams{ActiveAt: h.now().Add(2 * time.Hour)}), []string{"op", "a1", "s1"})
			// Expiry is exclusive: at ExpiresAt the token no longer works.
			requireIDs(t, "active at a2's expiry", h.tokenIDs(&store.TokenListParams{Role: store.RoleAgent, ActiveAt: short.ExpiresAt}), []string{"a1"})

			var got []string
			cursor := ""
			for pages := 0; ; pages++ {
				if pages > 5 {
					t.Fatal("paging does not end")
				}
				res, err := h.s.TokenList(h.ctx, &store.TokenListParams{Limit: 2, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Tokens) > 2 {
					t.Fatalf("page of %d tokens with limit 2", len(res.Tokens))
				}
				for _, tok := range res.Tokens {
					got = append(got, tok.ID)
				}
				if cursor = res.NextCursor; cursor == "" {
					break
				}
			}
			requireIDs(t, "paged", got, []string{"op", "a1", "a2", "s1", "a3"})

			_, err := h.s.TokenList(h.ctx, &store.TokenListParams{Cursor: "not-a-cursor"})
			requireFieldError(t, err, "page_token")
		}},
		{"Revoke", func(t *testing.T, h *harness) {
			tok := h.createToken(newToken("t1", store.RoleAgent, "forge"))
			h.clock.Advance(time.Minute)
			first := h.now()
			revoked, err := h.s.TokenRevoke(h.ctx, &store.TokenRevokeParams{ID: "t1", Now: first})
			if err != nil {
				t.Fatal(err)
			}
			want := *tok
			want.RevokedAt = first
			requireToken(t, revoked, &want)
			// The record stays, so a caller can be told its token was
			// revoked rather than that it is unknown.
			requireToken(t, h.tokenByHash("hash-of-t1"), &want)

			h.clock.Advance(time.Minute)
			again, err := h.s.TokenRevoke(h.ctx, &store.TokenRevokeParams{ID: "t1", Now: h.now()})
			if err != nil {
				t.Fatalf("revoking twice: %v", err)
			}
			requireTime(t, "RevokedAt after a second revoke", again.RevokedAt, first)

			_, err = h.s.TokenRevoke(h.ctx, &store.TokenRevokeParams{ID: "nobody", Now: h.now()})
			requireIs(t, err, store.ErrNotFound, "revoking an unknown token")
		}},
		{"RolesAreStoredAndReplaced", func(t *testing.T, h *harness) {
			scout := newToken("scout", store.RoleAgent, "scout")
			scout.Roles = []string{"researcher", "writer"}
			h.createToken(scout)
			h.createToken(newToken("bare", store.RoleAgent, "bare"))
			requireRoles(t, "scout as created", h.tokenByHash("hash-of-scout").Roles, "researcher", "writer")
			requireRoles(t, "an agent token made without roles", h.tokenByHash("hash-of-bare").Roles)

			before, after, err := h.s.TokenSetRoles(h.ctx, &store.TokenSetRolesParams{ID: "scout", Roles: []string{"researcher"}})
			if err != nil {
				t.Fatalf("TokenSetRoles: %v", err)
			}
			requireRoles(t, "before", before.Roles, "researcher", "writer")
			requireRoles(t, "after", after.Roles, "researcher")
			requireRoles(t, "read back", h.tokenByHash("hash-of-scout").Roles, "researcher")
			if after.ID != "scout" || after.Subject != "scout" || after.Role != store.RoleAgent {
				t.Fatalf("TokenSetRoles returned %+v", after)
			}
			if _, _, err := h.s.TokenSetRoles(h.ctx, &store.TokenSetRolesParams{ID: "scout", Roles: []string{store.AnyRole}}); err != nil {
				t.Fatal(err)
			}
			requireRoles(t, "granted every role", h.tokenByHash("hash-of-scout").Roles, store.AnyRole)
			if _, _, err := h.s.TokenSetRoles(h.ctx, &store.TokenSetRolesParams{ID: "scout"}); err != nil {
				t.Fatal(err)
			}
			requireRoles(t, "every role taken away", h.tokenByHash("hash-of-scout").Roles)

			_, _, err = h.s.TokenSetRoles(h.ctx, &store.TokenSetRolesParams{ID: "nobody", Roles: []string{"x"}})
			requireIs(t, err, store.ErrNotFound, "roles of an unknown token")
		}},
		{"OnlyAgentTokensCarryRoles", func(t *testing.T, h *harness) {
			op := newToken("op", store.RoleOperator, "ops")
			op.Roles = []string{"deployer"}
			_, err := h.s.TokenCreate(h.ctx, &store.TokenCreateParams{Token: op, Now: h.now()})
			requireFieldError(t, err, "roles")
			h.createToken(newToken("sc", store.RoleSidecar, "gpu-01"))
			_, _, err = h.s.TokenSetRoles(h.ctx, &store.TokenSetRolesParams{ID: "sc", Roles: []string{"deployer"}})
			requireFieldError(t, err, "token_id")
			requireRoles(t, "the sidecar token after the refusal", h.tokenByHash("hash-of-sc").Roles)
		}},
		{"Touch", func(t *testing.T, h *harness) {
			h.createToken(newToken("t1", store.RoleAgent, "forge"))
			h.clock.Advance(time.Minute)
			used := h.now()
			if err := h.s.TokenTouch(h.ctx, &store.TokenTouchParams{ID: "t1", Now: used}); err != nil {
				t.Fatal(err)
			}
			requireTime(t, "LastUsedAt", h.tokenByHash("hash-of-t1").LastUsedAt, used)
			// A touch that arrives late (an older time) does not move it back.
			if err := h.s.TokenTouch(h.ctx, &store.TokenTouchParams{ID: "t1", Now: used.Add(-time.Second)}); err != nil {
				t.Fatal(err)
			}
			requireTime(t, "LastUsedAt after an older touch", h.tokenByHash("hash-of-t1").LastUsedAt, used)
			if err := h.s.TokenTouch(h.ctx, &store.TokenTouchParams{ID: "nobody", Now: used}); err != nil {
				t.Fatalf("touching an unknown token: %v", err)
			}
		}},
		{"BootstrapOnlyWithoutAnActiveOperator", func(t *testing.T, h *harness) {
			bootstrap := func(id string) error {
				_, err := h.s.TokenCreate(h.ctx, &store.TokenCreateParams{
					Token: newToken(id, store.RoleOperator, "operator"), OnlyIfNoActiveOperator: true, Now: h.now(),
				})
				return err
			}
			// Agents, sidecars and an expired operator do not count.
			h.createToken(newToken("agent", store.RoleAgent, "forge"))
			h.createToken(newToken("sidecar", store.RoleSidecar, "gpu-1"))
			old := newToken("old-op", store.RoleOperator, "ops")
			old.ExpiresAt = h.now().Add(time.Minute)
			h.createToken(old)
			h.clock.Advance(time.Minute)

			if err := bootstrap("boot-1"); err != nil {
				t.Fatalf("first bootstrap: %v", err)
			}
			requireIs(t, bootstrap("boot-2"), store.ErrAlreadyExists, "second bootstrap")
			if _, err := h.s.TokenRevoke(h.ctx, &store.TokenRevokeParams{ID: "boot-1", Now: h.now()}); err != nil {
				t.Fatal(err)
			}
			if err := bootstrap("boot-3"); err != nil {
				t.Fatalf("bootstrap after the operator token was revoked: %v", err)
			}
			requireIDs(t, "operators", h.tokenIDs(&store.TokenListParams{Role: store.RoleOperator}), []string{"old-op", "boot-1", "boot-3"})
		}},
		{"ConcurrentBootstrapsMakeOneToken", func(t *testing.T, h *harness) {
			const n = 8
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() {
					_, errs[i] = h.s.TokenCreate(h.ctx, &store.TokenCreateParams{
						Token: newToken(fmt.Sprintf("boot-%d", i), store.RoleOperator, "operator"), OnlyIfNoActiveOperator: true, Now: h.now(),
					})
				})
			}
			wg.Wait()
			made := 0
			for i, err := range errs {
				switch {
				case err == nil:
					made++
				case !errors.Is(err, store.ErrAlreadyExists):
					t.Fatalf("bootstrap %d: %v", i, err)
				}
			}
			if made != 1 {
				t.Fatalf("%d concurrent bootstraps made %d tokens, want 1", n, made)
			}
			if ids := h.tokenIDs(nil); len(ids) != 1 {
				t.Fatalf("tokens after concurrent bootstraps: %v", ids)
			}
		}},
	})
}

func (h *harness) appendAudit(entries ...*store.AuditEntry) {
	h.t.Helper()
	if err := h.s.AuditAppend(h.ctx, &store.AuditAppendParams{Entries: entries}); err != nil {
		h.t.Fatalf("AuditAppend: %v", err)
	}
}

func (h *harness) auditList(p *store.AuditListParams) *store.AuditListResult {
	h.t.Helper()
	res, err := h.s.AuditList(h.ctx, p)
	if err != nil {
		h.t.Fatalf("AuditList(%+v): %v", p, err)
	}
	return res
}

func auditTargets(entries []*store.AuditEntry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Target
	}
	return out
}

func (s *suite) testAudit(t *testing.T) {
	s.runCases(t, []testCase{
		{"AppendThenListNewestFirst", func(t *testing.T, h *harness) {
			first := &store.AuditEntry{
				Time: h.now(), Who: "ops", Role: store.RoleOperator, TokenID: "tok-op", RPC: "/factory.v1.QueueService/MoveTask",
				Target: "task-1", BeforeJSON: `{"state":"FAILED"}`, AfterJSON: `{"state":"READY"}`,
				TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Outcome: "OK",
			}
			h.appendAudit(first)
			if first.ID <= 0 {
				t.Fatalf("appended entry got ID %d", first.ID)
			}
			h.clock.Advance(time.Second)
			second := &store.AuditEntry{Time: h.now(), Who: "forge", Role: store.RoleAgent, TokenID: "tok-forge",
				RPC: "/factory.v1.QueueService/PauseQueue", Target: "queue", Outcome: "PERMISSION_DENIED", Detail: "operators only"}
			third := &store.AuditEntry{Time: h.now(), Who: "ops", Role: store.RoleOperator, TokenID: "tok-op",
				RPC: "/factory.v1.AccessService/RevokeToken", Target: "tok-forge", Outcome: "OK"}
			h.appendAudit(second, third)
			if !(first.ID < second.ID && second.ID < third.ID) {
				t.Fatalf("ids %d, %d, %d do not grow with appends", first.ID, second.ID, third.ID)
			}

			res := h.auditList(nil)
			requireIDs(t, "newest first", auditTargets(res.Entries), []string{"tok-forge", "queue", "task-1"})
			if res.NextCursor != "" {
				t.Fatalf("one page, but NextCursor %q", res.NextCursor)
			}
			got := res.Entries[2]
			gotCopy, want := *got, *first
			gotCopy.Time, want.Time = time.Time{}, time.Time{}
			gotCopy.Count, gotCopy.LastSeen = 0, time.Time{} // see AuditCoalesce
			if gotCopy != want {
				t.Fatalf("entry read back as %+v, want %+v", got, first)
			}
			requireTime(t, "Time", got.Time, first.Time)
		}},
		{"FilterAndPage", func(t *testing.T, h *harness) {
			for i := range 5 {
				who, token := "ops", "tok-op"
				if i%2 == 1 {
					who, token = "forge", "tok-forge"
				}
				h.appendAudit(&store.AuditEntry{Time: h.now(), Who: who, Role: store.RoleOperator, TokenID: token,
					RPC: "/factory.v1.QueueService/SetPriority", Target: fmt.Sprintf("task-%d", i), Outcome: "OK"})
				h.clock.Advance(time.Hour)
			}
			requireIDs(t, "by subject", auditTargets(h.auditList(&store.AuditListParams{Who: "forge"}).Entries), []string{"task-3", "task-1"})
			requireIDs(t, "by token id", auditTargets(h.auditList(&store.AuditListParams{Who: "tok-op"}).Entries), []string{"task-4", "task-2", "task-0"})
			requireIDs(t, "since", auditTargets(h.auditList(&store.AuditListParams{Since: baseTime.Add(2 * time.Hour)}).Entries), []string{"task-4", "task-3", "task-2"})
			requireIDs(t, "since and who", auditTargets(h.auditList(&store.AuditListParams{Since: baseTime.Add(2 * time.Hour), Who: "ops"}).Entries), []string{"task-4", "task-2"})

			var got []string
			cursor := ""
			for pages := 0; ; pages++ {
				if pages > 5 {
					t.Fatal("paging does not end")
				}
				res := h.auditList(&store.AuditListParams{Limit: 2, Cursor: cursor})
				if len(res.Entries) > 2 {
					t.Fatalf("page of %d entries with limit 2", len(res.Entries))
				}
				got = append(got, auditTargets(res.Entries)...)
				if cursor = res.NextCursor; cursor == "" {
					break
				}
			}
			requireIDs(t, "paged", got, []string{"task-4", "task-3", "task-2", "task-1", "task-0"})

			_, err := h.s.AuditList(h.ctx, &store.AuditListParams{Cursor: "not-a-cursor"})
			requireFieldError(t, err, "page_token")
		}},
	})
}

func requireRoles(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) || (len(want) > 0 && fmt.Sprint(got) != fmt.Sprint(want)) {
		t.Fatalf("%s: roles %q, want %q", what, got, want)
	}
}
