package store

import (
	"context"
	"time"
)

// BackupStore records the control plane's scheduled backups, so that every
// replica can tell when the last good one was, and tidies the database
// itself (VACUUM).
//
// A run is one attempt: where it was written, how big it is, and whether it
// verified. Runs stay recorded after their files are deleted (RemovedAt
// set): they are a few rows a day, and the failures among them are what
// factory_backup_failures_total counts.
type BackupStore interface {
	// BackupRecord stores a finished run. A run without ID or StartedAt is a
	// FieldError; an ID that exists is ErrAlreadyExists.
	BackupRecord(ctx context.Context, params *BackupRecordParams) error

	// BackupList returns runs newest first (StartedAt, then ID), at most
	// Limit (all when 0); with Present set, only those whose files were not
	// removed.
	BackupList(ctx context.Context, params *BackupListParams) ([]*BackupRun, error)

	// BackupMarkRemoved sets RemovedAt to Now on the runs in IDs that are
	// not marked already; unknown IDs are ignored.
	BackupMarkRemoved(ctx context.Context, params *BackupMarkRemovedParams) error

	// BackupSummary returns the newest verified run, the newest run, the
	// oldest run's start and the number of runs that failed.
	BackupSummary(ctx context.Context) (*BackupSummary, error)

	// Vacuum compacts the database and refreshes the planner's statistics
	// (SQLite: VACUUM and ANALYZE; PostgreSQL: VACUUM (ANALYZE) of every
	// table of the store's schema, outside any transaction), reporting the
	// database's size before and after.
	Vacuum(ctx context.Context) (*VacuumReport, error)
}

// BackupRun is one backup attempt.
type BackupRun struct {
	ID         string
	StartedAt  time.Time
	FinishedAt time.Time
	// Path is the backup's directory; empty when the attempt failed before
	// making one.
	Path string
	// Bytes is the size of the backup's files.
	Bytes int64
	// Verified is true when the backup was read back and checked: only a
	// verified run is a good backup.
	Verified bool
	// Error says why the run failed (empty when Verified).
	Error string
	// RemovedAt is when retention deleted the files (zero while present).
	RemovedAt time.Time
}

// BackupRecordParams holds a run to store.
type BackupRecordParams struct {
	Run *BackupRun
}

// BackupListParams filters BackupList.
type BackupListParams struct {
	Present bool
	Limit   int
}

// BackupMarkRemovedParams names runs whose files were deleted.
type BackupMarkRemovedParams struct {
	IDs []string
	Now time.Time
}

// BackupSummary is where the backups stand.
type BackupSummary struct {
	// LastGood is the newest verified run, nil when none verified.
	LastGood *BackupRun
	// Last is the newest run, nil when none ran.
	Last *BackupRun
	// FirstStartedAt is the oldest run's start (zero when none ran).
	FirstStartedAt time.Time
	// Failures counts the runs that did not verify.
	Failures int64
}

// VacuumReport is what Vacuum did.
type VacuumReport struct {
	Driver      string
	BytesBefore int64
	BytesAfter  int64
	Took        time.Duration
	// Tables is how many tables were vacuumed (PostgreSQL; 0 for SQLite,
	// which vacuums the whole file).
	Tables int
}

// CheckBackupRecord checks a run before it is stored: the input check
// every driver's BackupRecord makes.
func CheckBackupRecord(p *BackupRecordParams) error {
	if p == nil {
		return InvalidField("run", "a run is required")
	}
	r := p.Run
	switch {
	case r == nil:
		return InvalidField("run", "a run is required")
	case r.ID == "":
		return InvalidField("id", "a backup run id is required")
	case r.StartedAt.IsZero():
		return InvalidField("started_at", "a backup run needs its start time")
	case r.Bytes < 0:
		return InvalidField("bytes", "must not be negative, got %d", r.Bytes)
	}
	return nil
}
