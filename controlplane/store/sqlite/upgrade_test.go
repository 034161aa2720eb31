package sqlite

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/factory/factory/controlplane/store"
)

// TestUpgradeDeniesOldPendingApprovalsOnTimeout: a request stored before
// approvals failed closed may carry an agent-chosen default of APPROVE;
// after the upgrade every PENDING request is denied by silence, and a
// decided request keeps its record.
func TestUpgradeDeniesOldPendingApprovalsOnTimeout(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "factory.db")
	db, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := fs.Sub(migrationsFS, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 11); err != nil {
		t.Fatal(err)
	}
	const insert = `INSERT INTO approvals (id, what, agent, tier, deadline, default_on_timeout, state, outcome, created_at)
		VALUES (?, 'deploy', 'forge', 3, 1, ?, ?, ?, 1)`
	for _, r := range []struct {
		id                  string
		def, state, outcome int
	}{
		{"old-pending", 1, 1, 0},  // PENDING, default APPROVE
		{"old-approved", 1, 2, 1}, // APPROVED by a person
	} {
		if _, err := db.ExecContext(ctx, insert, r.id, r.def, r.state, r.outcome); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s := openAt(t, path)
	if a, err := s.ApprovalGet(ctx, "old-pending"); err != nil || a.DefaultOnTimeout != store.DecisionReject {
		t.Fatalf("old pending request after the upgrade: %+v, %v; want default REJECT", a, err)
	}
	if a, err := s.ApprovalGet(ctx, "old-approved"); err != nil || a.DefaultOnTimeout != store.DecisionApprove || a.State != store.ApprovalApproved {
		t.Fatalf("decided request after the upgrade: %+v, %v; want it untouched", a, err)
	}
}
