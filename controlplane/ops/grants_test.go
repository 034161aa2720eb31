package ops_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/factory/factory/controlplane/ops"
	"github.com/factory/factory/controlplane/store"
)

// A dump written before grants existed has no roles key: its agent tokens
// load with every role, as the migration that introduced grants gave
// them; a dump that says roles keeps exactly them.
func TestTokensOfDumpsBeforeGrantsClaimEveryRole(t *testing.T) {
	const (
		old   = `{"kind":"token","token":{"id":"t1","hash":"h1","role":"agent","subject":"forge","description":"","created_by":"","created_at":"2026-01-02T03:04:05.000000Z","expires_at":null,"revoked_at":null,"last_used_at":null}}`
		none  = `{"kind":"token","token":{"id":"t2","hash":"h2","role":"agent","subject":"scout","description":"","created_by":"","created_at":"2026-01-02T03:04:05.000000Z","expires_at":null,"revoked_at":null,"last_used_at":null,"roles":[]}}`
		op    = `{"kind":"token","token":{"id":"t3","hash":"h3","role":"operator","subject":"ops","description":"","created_by":"","created_at":"2026-01-02T03:04:05.000000Z","expires_at":null,"revoked_at":null,"last_used_at":null}}`
		dump  = `{"format":"factory-dump","version":1}` + "\n" + old + "\n" + none + "\n" + op + "\n"
		limit = 3
	)
	r := ops.NewReader(strings.NewReader(dump))
	want := map[string][]string{"forge": {store.AnyRole}, "scout": nil, "ops": nil}
	for range limit {
		rec, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		tok := rec.Token
		if w := want[tok.Subject]; !slices.Equal(tok.Roles, w) {
			t.Errorf("%s: roles %q, want %q", tok.Subject, tok.Roles, w)
		}
	}
}
