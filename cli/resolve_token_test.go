package cli_test

import (
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/factory/factory/controlplane/access"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// TestTokenIDPrefixesThroughTheBinary runs the built factory binary
// against a control plane: token revoke and grant take a prefix that one
// token id starts with, refuse one that several start with (listing them,
// changing nothing) and one that none starts with (NOT_FOUND).
func TestTokenIDPrefixesThroughTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the factory binary; skipped under -short")
	}
	bin := factoryBinary(t)
	p := newWorkPlane(t)
	e := &e2e{t: t, bin: bin, addr: p.addr, stateFile: filepath.Join(t.TempDir(), "leases.json"), env: []string{"FACTORY_TOKEN=" + p.token}}
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(access.Bearer{Secret: p.token, Plaintext: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	acc := factoryv1.NewAccessServiceClient(conn)
	// tokens is every token by id, as ListTokens shows it.
	tokens := func() map[string]*factoryv1.Token {
		t.Helper()
		resp, err := acc.ListTokens(p.ctx(), &factoryv1.ListTokensRequest{IncludeInactive: true, PageSize: 1000})
		if err != nil {
			t.Fatalf("list tokens: %v", err)
		}
		byID := map[string]*factoryv1.Token{}
		for _, tok := range resp.GetTokens() {
			byID[tok.GetId()] = tok
		}
		return byID
	}
	wantRevoked := func(want ...string) {
		t.Helper()
		for id, tok := range tokens() {
			revoked := tok.GetRevokedAt() != nil
			wanted := false
			for _, w := range want {
				wanted = wanted || w == id
			}
			if revoked != wanted {
				t.Fatalf("token %s (%s): revoked %v, want %v", id, tok.GetSubject(), revoked, wanted)
			}
		}
	}

	var ids []string
	for _, subject := range []string{"forge", "scout", "anvil", "relay"} {
		var created struct {
			Token struct {
				ID string `json:"id"`
			} `json:"token"`
		}
		e.jsonOf(&created, "token", "create", "--role", "agent", "--subject", subject, "--roles", "builder",
			"--description", subject+" on gpu-1", "-o", "json")
		ids = append(ids, created.Token.ID)
	}
	var all []string
	for id := range tokens() {
		all = append(all, id)
	}

	// UUIDv7s made moments apart share their leading (time) digits.
	shared := commonPrefix(ids[0], ids[1])
	if shared == "" {
		t.Fatalf("token ids %s and %s share no prefix", ids[0], ids[1])
	}
	r := e.run("token", "revoke", shared)
	if r.code != 1 || !strings.Contains(r.stderr, "token id "+shared+" is ambiguous") || !strings.Contains(r.stderr, ids[0]) ||
		!strings.Contains(r.stderr, ids[1]) || !strings.Contains(r.stderr, "agent") || !strings.Contains(r.stderr, "forge: forge on gpu-1") {
		t.Fatalf("token revoke %s (the prefix of two ids): exit %d, want 1 listing both\nstderr: %s", shared, r.code, r.stderr)
	}
	if r := e.run("token", "grant", shared, "--roles", "tester"); r.code != 1 || !strings.Contains(r.stderr, "ambiguous") {
		t.Fatalf("token grant %s: exit %d, want 1\nstderr: %s", shared, r.code, r.stderr)
	}
	wantRevoked()

	revoke := uniquePrefix(ids[2], all, 8)
	if out := e.ok("token", "revoke", revoke); !strings.Contains(out, ids[2]) || !strings.Contains(out, "anvil") {
		t.Fatalf("token revoke %s: %q does not name %s", revoke, out, ids[2])
	}
	wantRevoked(ids[2])
	// A revoked token still resolves: revoking twice is harmless.
	e.ok("token", "revoke", revoke)
	wantRevoked(ids[2])
	// Candidates say which of them no longer work.
	if pair := commonPrefix(ids[2], ids[3]); pair != "" {
		if r := e.run("token", "revoke", pair); r.code != 1 || !strings.Contains(r.stderr, "agent, revoked") {
			t.Fatalf("token revoke %s: exit %d, want 1 marking %s revoked\nstderr: %s", pair, r.code, ids[2], r.stderr)
		}
		wantRevoked(ids[2])
	}

	grant := uniquePrefix(ids[3], all, 1)
	if out := e.ok("token", "grant", grant, "--roles", "deployer"); !strings.Contains(out, ids[3]) {
		t.Fatalf("token grant %s: %q does not name %s", grant, out, ids[3])
	}
	if got := tokens()[ids[3]].GetRoles(); len(got) != 1 || got[0] != "deployer" {
		t.Fatalf("grant by prefix: roles %v, want [deployer]", got)
	}

	r = e.run("token", "revoke", "fffff")
	if r.code != 1 || !strings.Contains(r.stderr, "no token id starts with fffff") || !strings.Contains(r.stderr, "NOT_FOUND") {
		t.Fatalf("token revoke fffff: exit %d, want 1 with NOT_FOUND\nstderr: %s", r.code, r.stderr)
	}
	wantRevoked(ids[2])

	// A whole id is used as it is.
	e.ok("token", "revoke", ids[1])
	wantRevoked(ids[1], ids[2])
}
