package postgres

import (
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// migrationsFS holds the versioned schema. Files are never edited once
// released: a change is a new, higher-numbered file.
//
//go:embed migrations/*.sql
var migrationsFS embed.FS

// migrate creates the schema when missing and brings it to the latest
// version. Goose records applied versions in goose_db_version inside the
// schema (search_path puts it first), so running it on every Open is a
// no-op once the database is current.
func (s *Store) migrate(ctx context.Context) error {
	if err := s.createSchema(ctx); err != nil {
		return err
	}
	fsys, err := fs.Sub(migrationsFS, "migrations")
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	// Replicas starting together take turns: the first migrates, the rest
	// find nothing to do. The lock is per schema so that independent
	// queues in one database do not wait for each other, and it is polled
	// every second rather than goose's default five.
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(lockID("goose", s.cfg.Schema)),
		lock.WithLockTimeout(1, 300),
	)
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithDisableGlobalRegistry(true),
		goose.WithSessionLocker(locker),
	)
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return dbErr("migrate", err)
	}
	for _, r := range results {
		s.log.InfoContext(ctx, "postgres migration applied",
			slog.Int64("version", r.Source.Version),
			slog.String("file", r.Source.Path),
			slog.Duration("took", r.Duration))
	}
	return nil
}

// createSchema creates the store's schema. CREATE SCHEMA IF NOT EXISTS
// still fails when two sessions run it at once, so it runs under a
// transaction-scoped advisory lock.
func (s *Store) createSchema(ctx context.Context) error {
	return retryConn(ctx, "create schema", func() error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockID("schema", s.cfg.Schema)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{s.cfg.Schema}.Sanitize())
			return err
		})
	})
}

// lockID derives a 64-bit advisory lock key for one purpose in one schema.
func lockID(purpose, schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("factory/" + purpose + "/" + schema))
	return int64(h.Sum64())
}
