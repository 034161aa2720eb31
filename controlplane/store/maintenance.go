package store

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
)

// MaintenanceStore is what operating the store itself needs: integrity
// checks, online snapshots, and the maintenance switch that survives a
// restart.
type MaintenanceStore interface {
	// IntegrityCheck checks the database (SQLite: PRAGMA integrity_check;
	// PostgreSQL: a round trip) and reads the schema's migration version.
	// A database found damaged is a report with OK false, not an error.
	IntegrityCheck(ctx context.Context) (*IntegrityReport, error)

	// SnapshotTo writes a consistent copy of the whole database to path, a
	// file that must not exist, while the store keeps working (SQLite:
	// VACUUM INTO). A driver that cannot is ErrSnapshotUnsupported; its
	// backups are dumps.
	SnapshotTo(ctx context.Context, path string) error

	// MaintenanceGet returns the maintenance switch (Active false when
	// off).
	MaintenanceGet(ctx context.Context) (*MaintenanceState, error)

	// MaintenanceSet stores the switch as given; Active false clears the
	// rest.
	MaintenanceSet(ctx context.Context, state *MaintenanceState) error
}

// ErrSnapshotUnsupported is a SnapshotTo the driver cannot take.
var ErrSnapshotUnsupported = errors.New("the store cannot take a file snapshot; back up with a dump")

// IntegrityReport is IntegrityCheck's finding.
type IntegrityReport struct {
	// Driver is "sqlite" or "postgres".
	Driver string
	// OK is false when the database reported damage; Problems says what.
	OK       bool
	Problems []string
	// MigrationVersion is the schema's applied version; LatestMigration is
	// the newest the binary knows.
	MigrationVersion int64
	LatestMigration  int64
}

// MaintenanceState is the maintenance switch.
type MaintenanceState struct {
	Active    bool
	Reason    string
	StartedAt time.Time
	StartedBy string
	// PausedQueue is set when the start paused the queue, so that the end
	// resumes it; a queue paused before the start stays paused.
	PausedQueue bool
}

// LatestMigration returns the highest version among the goose migration
// files ("00008_maintenance.sql") in dir of fsys.
func LatestMigration(fsys fs.FS, dir string) (int64, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return 0, err
	}
	var latest int64
	for _, e := range entries {
		name := path.Base(e.Name())
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		if !ok {
			continue
		}
		v, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			continue
		}
		latest = max(latest, v)
	}
	return latest, nil
}
