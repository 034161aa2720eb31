package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/factory/factory/controlplane/store"
)

const (
	backupCols    = `id, started_at, finished_at, path, bytes, verified, error, removed_at`
	qBackupInsert = `INSERT INTO backup_runs (` + backupCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	qBackupList   = `SELECT ` + backupCols + ` FROM backup_runs`
	qBackupOrder  = ` ORDER BY started_at DESC, id DESC`
	qBackupRemove = `UPDATE backup_runs SET removed_at = ? WHERE removed_at = 0 AND id IN (SELECT value FROM json_each(?))`
	qBackupCounts = `SELECT COALESCE(MIN(started_at), 0), COUNT(*) FILTER (WHERE NOT verified) FROM backup_runs`
	qDBSize       = `SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`
)

// BackupRecord implements store.BackupStore.
func (s *Store) BackupRecord(ctx context.Context, p *store.BackupRecordParams) error {
	if err := store.CheckBackupRecord(p); err != nil {
		return err
	}
	r := p.Run
	return s.writeTx(ctx, "BackupRecord", func(w *wtx) error {
		res, err := w.exec(qBackupInsert, r.ID, toNanos(r.StartedAt), toNanos(r.FinishedAt), r.Path, r.Bytes, r.Verified, r.Error, toNanos(r.RemovedAt))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return fmt.Errorf("backup run %q: %w", r.ID, store.ErrAlreadyExists)
		}
		return nil
	})
}

// BackupList implements store.BackupStore.
func (s *Store) BackupList(ctx context.Context, p *store.BackupListParams) ([]*store.BackupRun, error) {
	if p == nil {
		p = &store.BackupListParams{}
	}
	query := qBackupList
	if p.Present {
		query += ` WHERE removed_at = 0`
	}
	query += qBackupOrder
	var args []any
	if p.Limit > 0 {
		query += ` LIMIT ?`
		args = append(args, p.Limit)
	}
	var out []*store.BackupRun
	err := s.readTx(ctx, func(tx *sql.Tx) (err error) {
		out, err = queryBackups(ctx, tx, query, args...)
		return err
	})
	return out, dbErr("BackupList", err)
}

func queryBackups(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]*store.BackupRun, error) {
	rs, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []*store.BackupRun
	for rs.Next() {
		var (
			r                          store.BackupRun
			started, finished, removed int64
		)
		if err := rs.Scan(&r.ID, &started, &finished, &r.Path, &r.Bytes, &r.Verified, &r.Error, &removed); err != nil {
			return nil, err
		}
		r.StartedAt, r.FinishedAt, r.RemovedAt = fromNanos(started), fromNanos(finished), fromNanos(removed)
		out = append(out, &r)
	}
	return out, rs.Err()
}

// BackupMarkRemoved implements store.BackupStore.
func (s *Store) BackupMarkRemoved(ctx context.Context, p *store.BackupMarkRemovedParams) error {
	if p == nil || len(p.IDs) == 0 {
		return nil
	}
	return s.writeTx(ctx, "BackupMarkRemoved", func(w *wtx) error {
		_, err := w.exec(qBackupRemove, toNanos(p.Now), jsonText(p.IDs))
		return err
	})
}

// BackupSummary implements store.BackupStore.
func (s *Store) BackupSummary(ctx context.Context) (*store.BackupSummary, error) {
	out := &store.BackupSummary{}
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		good, err := queryBackups(ctx, tx, qBackupList+` WHERE verified`+qBackupOrder+` LIMIT 1`)
		if err != nil {
			return err
		}
		last, err := queryBackups(ctx, tx, qBackupList+qBackupOrder+` LIMIT 1`)
		if err != nil {
			return err
		}
		if len(good) > 0 {
			out.LastGood = good[0]
		}
		if len(last) > 0 {
			out.Last = last[0]
		}
		var first int64
		if err := tx.QueryRowContext(ctx, qBackupCounts).Scan(&first, &out.Failures); err != nil {
			return err
		}
		out.FirstStartedAt = fromNanos(first)
		return nil
	})
	if err != nil {
		return nil, dbErr("BackupSummary", err)
	}
	return out, nil
}

// Vacuum implements store.BackupStore. VACUUM cannot run inside a
// transaction, and the writer's connection always opens one, so it runs as
// SnapshotTo does: on a reader connection whose query_only switch is lifted
// for the statements, waiting (busy_timeout) for the writer between its
// commits. ANALYZE then refreshes the planner's statistics.
func (s *Store) Vacuum(ctx context.Context) (*store.VacuumReport, error) {
	start := time.Now()
	rep := &store.VacuumReport{Driver: "sqlite"}
	conn, err := s.r.Conn(ctx)
	if err != nil {
		return nil, dbErr("Vacuum", err)
	}
	defer conn.Close()
	if err := conn.QueryRowContext(ctx, qDBSize).Scan(&rep.BytesBefore); err != nil {
		return nil, dbErr("Vacuum", err)
	}
	if _, err := conn.ExecContext(ctx, `PRAGMA query_only = 0`); err != nil {
		return nil, dbErr("Vacuum", err)
	}
	var verr error
	for _, stmt := range []string{`VACUUM`, `ANALYZE`, `PRAGMA optimize`} {
		if _, verr = conn.ExecContext(ctx, stmt); verr != nil {
			verr = fmt.Errorf("%s: %w", strings.ToLower(strings.Fields(stmt)[0]), verr)
			break
		}
	}
	if _, err := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA query_only = 1`); err != nil {
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		return nil, dbErr("Vacuum", errors.Join(verr, err))
	}
	if verr != nil {
		return nil, dbErr("Vacuum", verr)
	}
	if err := conn.QueryRowContext(ctx, qDBSize).Scan(&rep.BytesAfter); err != nil {
		return nil, dbErr("Vacuum", err)
	}
	rep.Took = time.Since(start)
	return rep, nil
}
