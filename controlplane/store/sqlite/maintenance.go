package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"

	"github.com/factory/factory/controlplane/store"
)

const (
	qMigrationVersion = `SELECT COALESCE(MAX(version_id), 0) FROM goose_db_version WHERE is_applied`
	qMaintenanceGet   = `SELECT active, reason, started_at, started_by, paused_queue FROM maintenance WHERE id = 1`
	qMaintenanceSet   = `UPDATE maintenance SET active = ?, reason = ?, started_at = ?, started_by = ?, paused_queue = ? WHERE id = 1`
)

// IntegrityCheck implements store.MaintenanceStore.
func (s *Store) IntegrityCheck(ctx context.Context) (*store.IntegrityReport, error) {
	latest, err := store.LatestMigration(migrationsFS, "migrations")
	if err != nil {
		return nil, fmt.Errorf("sqlite: migrations: %w", err)
	}
	rep := &store.IntegrityReport{Driver: "sqlite", LatestMigration: latest}
	err = s.readTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, qMigrationVersion).Scan(&rep.MigrationVersion); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `PRAGMA integrity_check`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				return err
			}
			if line != "ok" {
				rep.Problems = append(rep.Problems, line)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, dbErr("IntegrityCheck", err)
	}
	rep.OK = len(rep.Problems) == 0
	return rep, nil
}

// SnapshotTo implements store.MaintenanceStore with VACUUM INTO, which
// reads one snapshot, so writers carry on while it copies. It runs on a
// reader connection, whose query_only switch is lifted for the statement:
// the database itself is only read.
func (s *Store) SnapshotTo(ctx context.Context, path string) error {
	if _, err := os.Stat(path); err == nil {
		return store.InvalidField("path", "%s exists; a snapshot writes a new file", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return dbErr("SnapshotTo", err)
	}
	conn, err := s.r.Conn(ctx)
	if err != nil {
		return dbErr("SnapshotTo", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA query_only = 0`); err != nil {
		return dbErr("SnapshotTo", err)
	}
	_, verr := conn.ExecContext(ctx, `VACUUM INTO ?`, path)
	// The connection goes back to the pool: it must be read-only again,
	// or be dropped.
	if _, err := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA query_only = 1`); err != nil {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		return dbErr("SnapshotTo", errors.Join(verr, err))
	}
	return dbErr("SnapshotTo", verr)
}

// MaintenanceGet implements store.MaintenanceStore.
func (s *Store) MaintenanceGet(ctx context.Context) (*store.MaintenanceState, error) {
	var (
		m       store.MaintenanceState
		started int64
	)
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, qMaintenanceGet).Scan(&m.Active, &m.Reason, &started, &m.StartedBy, &m.PausedQueue)
	})
	if err != nil {
		return nil, dbErr("MaintenanceGet", err)
	}
	m.StartedAt = fromNanos(started)
	return &m, nil
}

// MaintenanceSet implements store.MaintenanceStore.
func (s *Store) MaintenanceSet(ctx context.Context, m *store.MaintenanceState) error {
	if m == nil || !m.Active {
		m = &store.MaintenanceState{}
	}
	return s.writeTx(ctx, "MaintenanceSet", func(w *wtx) error {
		_, err := w.exec(qMaintenanceSet, m.Active, m.Reason, toNanos(m.StartedAt), m.StartedBy, m.PausedQueue)
		return err
	})
}
