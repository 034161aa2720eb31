package access_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
)

// After a rotation the old secret authenticates until the grace ends,
// even from this replica's cache, and is refused as expired from then on;
// the new one authenticates at once as the same agent with the same grant.
func TestRotateEndsOldSecretsAfterTheGrace(t *testing.T) {
	svc, _, clock := newService(t)
	ctx := context.Background()
	old, oldSecret, err := svc.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "forge", Roles: []string{"builder"}, CreatedBy: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, oldSecret); err != nil { // cached now
		t.Fatal(err)
	}
	res, err := svc.Rotate(ctx, access.RotateParams{Role: store.RoleAgent, Grace: 10 * time.Minute, CreatedBy: "operator ops (op)"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rotated) != 1 || res.Rotated[0].Before.ID != old.ID || !res.Rotated[0].Before.ExpiresAt.IsZero() {
		t.Fatalf("rotated %+v, want forge's token, which had no expiry", res.Rotated)
	}
	c, err := svc.Authenticate(ctx, res.Rotated[0].Secret)
	if err != nil || c.Subject != "forge" || c.TokenID != res.Rotated[0].New.ID || strings.Join(c.Roles, ",") != "builder" {
		t.Fatalf("new secret: %+v, %v", c, err)
	}
	clock.Advance(10*time.Minute - time.Nanosecond)
	if c, err := svc.Authenticate(ctx, oldSecret); err != nil || c.TokenID != old.ID || !c.ExpiresAt.Equal(clock.Now().Add(time.Nanosecond)) {
		t.Fatalf("old secret within the grace: %+v, %v", c, err)
	}
	clock.Advance(time.Nanosecond)
	var authErr *access.AuthError
	if _, err := svc.Authenticate(ctx, oldSecret); !errors.As(err, &authErr) || !strings.Contains(authErr.Reason, "expired at") {
		t.Fatalf("old secret at the grace's end: %v, want expired", err)
	}
	if _, err := svc.Authenticate(ctx, res.Rotated[0].Secret); err != nil {
		t.Fatalf("new secret after the grace: %v", err)
	}

	// Without a grace the old secret fails on its next call here, though
	// this replica had its lookup cached.
	_, hostSecret, err := svc.Create(ctx, access.CreateParams{Role: store.RoleSidecar, Subject: "gpu-1", CreatedBy: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, hostSecret); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Rotate(ctx, access.RotateParams{Role: store.RoleSidecar, Subjects: []string{"gpu-1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, hostSecret); !errors.As(err, &authErr) {
		t.Fatalf("old sidecar secret right after a rotation without grace: %v, want refused", err)
	}

	var fe *store.FieldError
	if _, err := svc.Rotate(ctx, access.RotateParams{Role: store.RoleOperator, Grace: time.Hour}); !errors.As(err, &fe) || fe.Field != "role" {
		t.Fatalf("rotating operators: %v, want a field error on role", err)
	}
	if _, err := svc.Rotate(ctx, access.RotateParams{Role: store.RoleAgent, Grace: -time.Second}); !errors.As(err, &fe) || fe.Field != "grace" {
		t.Fatalf("negative grace: %v, want a field error on grace", err)
	}
}
