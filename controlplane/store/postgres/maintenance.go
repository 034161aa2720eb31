package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

const (
	qMigrationVersion = `-- name: MigrationVersion
SELECT COALESCE(MAX(version_id), 0) FROM goose_db_version WHERE is_applied`
	qMaintenanceGet = `-- name: MaintenanceGet
SELECT active, reason, started_at, started_by, paused_queue FROM maintenance WHERE id = 1`
	qMaintenanceSet = `-- name: MaintenanceSet
UPDATE maintenance SET active = $1, reason = $2, started_at = $3, started_by = $4, paused_queue = $5 WHERE id = 1`
)

// IntegrityCheck implements store.MaintenanceStore. PostgreSQL guards its
// own pages (checksums, WAL); what can go wrong from here is reaching it
// and the schema's version, which one round trip each shows.
func (s *Store) IntegrityCheck(ctx context.Context) (*store.IntegrityReport, error) {
	latest, err := store.LatestMigration(migrationsFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("postgres: migrations: %w", err)
	}
	rep := &store.IntegrityReport{Driver: "postgres", LatestMigration: latest}
	err = s.read(ctx, "IntegrityCheck", func(ctx context.Context) error {
		var one int
		if err := s.pool.QueryRow(ctx, "-- name: IntegrityCheck\nSELECT 1").Scan(&one); err != nil {
			return err
		}
		return s.pool.QueryRow(ctx, qMigrationVersion).Scan(&rep.MigrationVersion)
	})
	if err != nil {
		return nil, dbErr("IntegrityCheck", err)
	}
	rep.OK = true
	return rep, nil
}

// SnapshotTo implements store.MaintenanceStore: a PostgreSQL database is
// backed up by a dump (or by pg_dump, outside the control plane).
func (s *Store) SnapshotTo(context.Context, string) error {
	return store.ErrSnapshotUnsupported
}

// MaintenanceGet implements store.MaintenanceStore.
func (s *Store) MaintenanceGet(ctx context.Context) (*store.MaintenanceState, error) {
	var (
		m       store.MaintenanceState
		started pgtype.Timestamptz
	)
	err := s.read(ctx, "MaintenanceGet", func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, qMaintenanceGet).Scan(&m.Active, &m.Reason, &started, &m.StartedBy, &m.PausedQueue)
	})
	if err != nil {
		return nil, dbErr("MaintenanceGet", err)
	}
	m.StartedAt = fromTS(started)
	return &m, nil
}

// MaintenanceSet implements store.MaintenanceStore.
func (s *Store) MaintenanceSet(ctx context.Context, m *store.MaintenanceState) error {
	if m == nil || !m.Active {
		m = &store.MaintenanceState{}
	}
	return s.inTx(ctx, "MaintenanceSet", func(tx *txn) error {
		b := tx.batch()
		b.Queue(qMaintenanceSet, m.Active, storable(m.Reason), ts(norm(m.StartedAt)), storable(m.StartedBy), m.PausedQueue)
		return tx.send(b)
	})
}
