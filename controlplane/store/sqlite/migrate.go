package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"io/fs"
	"log/slog"

	"github.com/pressly/goose/v3"
)

// migrationsFS holds the versioned schema. Files are never edited once
// released: a change is a new, higher-numbered file.
//
//go:embed migrations/*.sql
var migrationsFS embed.FS

// migrate brings the schema to the latest version. Goose records applied
// versions in goose_db_version, so running it on every Open is a no-op once
// the database is current.
func migrate(ctx context.Context, db *sql.DB, logger *slog.Logger) error {
	fsys, err := fs.Sub(migrationsFS, "migrations")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return err
	}
	results, err := p.Up(ctx)
	if err != nil {
		return err
	}
	for _, r := range results {
		logger.InfoContext(ctx, "sqlite migration applied",
			slog.Int64("version", r.Source.Version),
			slog.String("file", r.Source.Path),
			slog.Duration("took", r.Duration))
	}
	return nil
}
