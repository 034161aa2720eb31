package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

const (
	backupCols    = `id, started_at, finished_at, path, bytes, verified, error, removed_at`
	qBackupInsert = `-- name: BackupRecord
INSERT INTO backup_runs (` + backupCols + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	qBackupList   = `SELECT ` + backupCols + ` FROM backup_runs`
	qBackupOrder  = ` ORDER BY started_at DESC, id DESC`
	qBackupRemove = `-- name: BackupMarkRemoved
UPDATE backup_runs SET removed_at = $1 WHERE removed_at IS NULL AND id = ANY($2)`
	qBackupCounts = `-- name: BackupCounts
SELECT MIN(started_at), COUNT(*) FILTER (WHERE NOT verified) FROM backup_runs`
	qSchemaTables = `-- name: SchemaTables
SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename`
	qSchemaSize = `-- name: SchemaSize
SELECT COALESCE(SUM(pg_total_relation_size(format('%I.%I', schemaname, tablename)::regclass)), 0)::bigint
FROM pg_tables WHERE schemaname = $1`
)

// BackupRecord implements store.BackupStore.
func (s *Store) BackupRecord(ctx context.Context, p *store.BackupRecordParams) error {
	if err := store.CheckBackupRecord(p); err != nil {
		return err
	}
	r := *p.Run
	if err := checkText("id", r.ID); err != nil {
		return err
	}
	r.Path, r.Error = storable(r.Path), storable(r.Error)
	return s.inTx(ctx, "BackupRecord", func(tx *txn) error {
		b := tx.batch()
		b.Queue(qBackupInsert, r.ID, norm(r.StartedAt), ts(norm(r.FinishedAt)), r.Path, r.Bytes, r.Verified, r.Error, ts(norm(r.RemovedAt)))
		if err := tx.send(b); err != nil {
			return dbErr("BackupRecord", err)
		}
		return nil
	})
}

// BackupList implements store.BackupStore.
func (s *Store) BackupList(ctx context.Context, p *store.BackupListParams) ([]*store.BackupRun, error) {
	if p == nil {
		p = &store.BackupListParams{}
	}
	query := "-- name: BackupList\n" + qBackupList
	if p.Present {
		query += ` WHERE removed_at IS NULL`
	}
	query += qBackupOrder
	var args []any
	if p.Limit > 0 {
		query += ` LIMIT $1`
		args = append(args, p.Limit)
	}
	var out []*store.BackupRun
	err := s.read(ctx, "BackupList", func(ctx context.Context) (err error) {
		out, err = s.queryBackups(ctx, query, args...)
		return err
	})
	return out, err
}

func (s *Store) queryBackups(ctx context.Context, query string, args ...any) ([]*store.BackupRun, error) {
	rs, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []*store.BackupRun
	for rs.Next() {
		var (
			r                 store.BackupRun
			started           time.Time
			finished, removed pgtype.Timestamptz
		)
		if err := rs.Scan(&r.ID, &started, &finished, &r.Path, &r.Bytes, &r.Verified, &r.Error, &removed); err != nil {
			return nil, err
		}
		r.StartedAt, r.FinishedAt, r.RemovedAt = started.UTC(), fromTS(finished), fromTS(removed)
		out = append(out, &r)
	}
	return out, rs.Err()
}

// BackupMarkRemoved implements store.BackupStore.
func (s *Store) BackupMarkRemoved(ctx context.Context, p *store.BackupMarkRemovedParams) error {
	if p == nil || len(p.IDs) == 0 {
		return nil
	}
	ids := make([]string, 0, len(p.IDs))
	for _, id := range p.IDs {
		if pgText(id) {
			ids = append(ids, id)
		}
	}
	return s.inTx(ctx, "BackupMarkRemoved", func(tx *txn) error {
		b := tx.batch()
		b.Queue(qBackupRemove, norm(p.Now), ids)
		return dbErr("BackupMarkRemoved", tx.send(b))
	})
}

// BackupSummary implements store.BackupStore.
func (s *Store) BackupSummary(ctx context.Context) (*store.BackupSummary, error) {
	out := &store.BackupSummary{}
	err := s.read(ctx, "BackupSummary", func(ctx context.Context) error {
		good, err := s.queryBackups(ctx, "-- name: BackupLastGood\n"+qBackupList+` WHERE verified`+qBackupOrder+` LIMIT 1`)
		if err != nil {
			return err
		}
		last, err := s.queryBackups(ctx, "-- name: BackupLast\n"+qBackupList+qBackupOrder+` LIMIT 1`)
		if err != nil {
			return err
		}
		out.LastGood, out.Last = nil, nil
		if len(good) > 0 {
			out.LastGood = good[0]
		}
		if len(last) > 0 {
			out.Last = last[0]
		}
		var first pgtype.Timestamptz
		if err := s.pool.QueryRow(ctx, qBackupCounts).Scan(&first, &out.Failures); err != nil {
			return err
		}
		out.FirstStartedAt = fromTS(first)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Vacuum implements store.BackupStore: VACUUM (ANALYZE) of each table of
// the store's schema, one statement at a time on a pooled connection and
// outside any transaction (VACUUM refuses to run in one). Other schemas in
// the database, which may be other factories', are left alone.
func (s *Store) Vacuum(ctx context.Context) (*store.VacuumReport, error) {
	start := time.Now()
	rep := &store.VacuumReport{Driver: "postgres"}
	err := s.read(ctx, "Vacuum", func(ctx context.Context) error {
		if err := s.pool.QueryRow(ctx, qSchemaSize, s.cfg.Schema).Scan(&rep.BytesBefore); err != nil {
			return err
		}
		rows, err := s.pool.Query(ctx, qSchemaTables, s.cfg.Schema)
		if err != nil {
			return err
		}
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, t := range tables {
			if _, err := s.pool.Exec(ctx, "VACUUM (ANALYZE) "+pgx.Identifier{s.cfg.Schema, t}.Sanitize()); err != nil {
				return fmt.Errorf("vacuum %s: %w", t, err)
			}
		}
		rep.Tables = len(tables)
		return s.pool.QueryRow(ctx, qSchemaSize, s.cfg.Schema).Scan(&rep.BytesAfter)
	})
	if err != nil {
		return nil, err
	}
	rep.Took = time.Since(start)
	return rep, nil
}
