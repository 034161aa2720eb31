package ops

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

// Snapshot is a backup taken by Service.Backup, spooled in a temporary
// directory on the server until Close.
type Snapshot struct {
	// Driver is the store's driver: sqlite or postgres.
	Driver string
	// MigrationVersion is the snapshot's schema version.
	MigrationVersion int64
	// CreatedAt is when the backup was asked for.
	CreatedAt time.Time
	// Database is the path of the SQLite copy; empty for a store that
	// cannot copy itself to a file (PostgreSQL).
	Database string
	// Dump is the path of the dump.
	Dump string
	// Counts counts the dump's records.
	Counts store.DumpCounts

	dir string
}

// Close removes the snapshot's files.
func (s *Snapshot) Close() error { return os.RemoveAll(s.dir) }

// Backup takes a consistent snapshot of the store while it keeps working.
// On SQLite the database is copied with VACUUM INTO and the dump is read
// from the copy, so the file and the dump describe the same instant, and
// the copy is checked (PRAGMA integrity_check) before it is handed out. On
// PostgreSQL the dump is read from one snapshot of the live store.
func (s *Service) Backup(ctx context.Context, now time.Time) (_ *Snapshot, err error) {
	dir, err := os.MkdirTemp("", "factory-backup-*")
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	snap := &Snapshot{CreatedAt: now, dir: dir, Dump: filepath.Join(dir, "dump.jsonl")}
	defer func() {
		if err != nil {
			_ = snap.Close()
		}
	}()
	db := filepath.Join(dir, "factory.db")
	switch err := s.store.SnapshotTo(ctx, db); {
	case errors.Is(err, store.ErrSnapshotUnsupported):
		rep, err := s.store.IntegrityCheck(ctx)
		if err != nil {
			return nil, err
		}
		snap.Driver, snap.MigrationVersion = rep.Driver, rep.MigrationVersion
		if snap.Counts, err = dumpTo(ctx, s, snap.Dump); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	default:
		snap.Database = db
		if err := s.dumpSQLite(ctx, snap); err != nil {
			return nil, err
		}
	}
	s.log.InfoContext(ctx, "backup taken", "driver", snap.Driver, "migration_version", snap.MigrationVersion, "counts", CountsText(snap.Counts))
	return snap, nil
}

// dumpSQLite opens the copy in snap.Database, checks it and dumps it.
func (s *Service) dumpSQLite(ctx context.Context, snap *Snapshot) error {
	copyStore, err := sqlite.Open(ctx, sqlite.Config{Path: snap.Database, Logger: quiet(s.log)})
	if err != nil {
		return fmt.Errorf("backup: open the copy: %w", err)
	}
	defer copyStore.Close()
	rep, err := copyStore.IntegrityCheck(ctx)
	if err != nil {
		return fmt.Errorf("backup: check the copy: %w", err)
	}
	if !rep.OK {
		return fmt.Errorf("backup: the copy is damaged: %s", strings.Join(rep.Problems, "; "))
	}
	snap.Driver, snap.MigrationVersion = rep.Driver, rep.MigrationVersion
	snap.Counts, err = dumpTo(ctx, &Service{store: copyStore, log: s.log}, snap.Dump)
	if err != nil {
		return err
	}
	return copyStore.Close()
}

// dumpTo exports svc's store into the file at path.
func dumpTo(ctx context.Context, svc *Service, path string) (store.DumpCounts, error) {
	f, err := os.Create(path)
	if err != nil {
		return store.DumpCounts{}, fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	n, err := svc.Export(ctx, w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		return store.DumpCounts{}, fmt.Errorf("backup: write the dump: %w", err)
	}
	return n, nil
}

// quiet keeps a copy's opening (migrations, open) out of the server's log
// unless it is debugging.
func quiet(log *slog.Logger) *slog.Logger {
	if log.Enabled(context.Background(), slog.LevelDebug) {
		return log
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
