package access_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
)

func TestAgentTokensCarryTheRolesTheyMayClaim(t *testing.T) {
	svc, _, _ := newService(t)
	ctx := context.Background()
	// Stored sorted and once each, the form listed and compared.
	tok, secret, err := svc.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "scout", Roles: []string{"writer", "researcher", "writer"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tok.Roles, []string{"researcher", "writer"}) {
		t.Fatalf("roles %q, want [researcher writer]", tok.Roles)
	}
	c, err := svc.Authenticate(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	for role, want := range map[string]bool{"researcher": true, "writer": true, "": true, "deployer": false} {
		if got := c.MayClaim(role); got != want {
			t.Errorf("scout MayClaim(%q) = %v, want %v", role, got, want)
		}
	}

	// A new agent token without roles claims only role-less tasks: no
	// grant is implied.
	_, bare, err := svc.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "bare"})
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := svc.Authenticate(ctx, bare); c.MayClaim("researcher") || !c.MayClaim("") {
		t.Fatalf("an agent token made without roles: MayClaim(researcher)=%v MayClaim(\"\")=%v", c.MayClaim("researcher"), c.MayClaim(""))
	}

	for _, bad := range [][]string{{"*", "writer"}, {"two words"}, {""}} {
		_, _, err := svc.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "x", Roles: bad})
		var fe *store.FieldError
		if !errors.As(err, &fe) || fe.Field != "roles" {
			t.Errorf("roles %q: got %v, want a FieldError on roles", bad, err)
		}
	}
}

func TestSetRolesTakesEffectOnTheNextCallHere(t *testing.T) {
	svc, cs, _ := newService(t)
	ctx := context.Background()
	tok, secret, err := svc.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "scout", Roles: []string{"researcher"}})
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := svc.Authenticate(ctx, secret); c.MayClaim("deployer") {
		t.Fatal("scout may claim deployer before any grant")
	}
	lookups := cs.lookups.Load()
	before, after, err := svc.SetRoles(ctx, tok.ID, []string{"deployer", "researcher"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before.Roles, []string{"researcher"}) || !slices.Equal(after.Roles, []string{"deployer", "researcher"}) {
		t.Fatalf("SetRoles: before %q, after %q", before.Roles, after.Roles)
	}
	// Within the cache TTL, yet the new grant holds: the cached lookup
	// was dropped.
	c, err := svc.Authenticate(ctx, secret)
	if err != nil || !c.MayClaim("deployer") {
		t.Fatalf("after the grant: %+v, %v", c, err)
	}
	if cs.lookups.Load() != lookups+1 {
		t.Fatalf("the grant did not drop the cached lookup")
	}
	// The check itself reads nothing: the roles travel with the caller.
	for range 1000 {
		if _, err := svc.Authenticate(ctx, secret); err != nil {
			t.Fatal(err)
		}
	}
	if cs.lookups.Load() != lookups+1 {
		t.Fatalf("authenticating within the TTL read the store")
	}

	opTok, _, err := svc.Create(ctx, access.CreateParams{Role: store.RoleSidecar, Subject: "gpu-01"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = svc.SetRoles(ctx, opTok.ID, []string{"deployer"})
	var fe *store.FieldError
	if !errors.As(err, &fe) || fe.Field != "token_id" {
		t.Fatalf("roles on a sidecar token: %v, want a FieldError on token_id", err)
	}
}
