package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/factory/factory/controlplane/store"
)

// Clock tells the time; tests pass a fake one.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now().UTC() }

// Retention says which scheduled backups are kept: those younger than
// MaxAge (when set) and among the newest Count (when set). A backup that
// fails either limit is deleted, except the last good one, which is kept
// whatever its age: a factory whose backups have been failing for a month
// still has one to restore.
type Retention struct {
	MaxAge time.Duration
	Count  int
}

// DefaultRetention is the runbook's (§7.1): 30 days.
var DefaultRetention = Retention{MaxAge: 30 * 24 * time.Hour}

// ParseRetention reads a retention: an age ("720h", "30d"), a count
// ("120"), or both separated by a comma ("30d,120"). Empty is
// DefaultRetention.
func ParseRetention(s string) (Retention, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return DefaultRetention, nil
	}
	var r Retention
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if n, err := strconv.Atoi(part); err == nil {
			if n < 1 || r.Count != 0 {
				return Retention{}, fmt.Errorf("backup retention %q: a count must be at least 1, given once", s)
			}
			r.Count = n
			continue
		}
		d, err := parseAge(part)
		if err != nil || d <= 0 || r.MaxAge != 0 {
			return Retention{}, fmt.Errorf("backup retention %q: want an age (720h, 30d), a count of backups (120), or both (30d,120)", s)
		}
		r.MaxAge = d
	}
	return r, nil
}

// parseAge is time.ParseDuration that also takes whole days ("30d").
func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n > 100_000 {
			return 0, fmt.Errorf("bad day count %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

func (r Retention) String() string {
	var parts []string
	if r.MaxAge > 0 {
		if r.MaxAge%(24*time.Hour) == 0 {
			parts = append(parts, fmt.Sprintf("%dd", r.MaxAge/(24*time.Hour)))
		} else {
			parts = append(parts, r.MaxAge.String())
		}
	}
	if r.Count > 0 {
		parts = append(parts, strconv.Itoa(r.Count))
	}
	return strings.Join(parts, ",")
}

// ScheduleConfig configures scheduled backups.
type ScheduleConfig struct {
	// Dir holds the backups, one directory each (factory-YYYYMMDDTHHMMSSZ).
	// With replicas on PostgreSQL it should be storage every replica
	// reaches: whichever is elected writes there.
	Dir string
	// Every is the interval between backups; it must be positive.
	Every time.Duration
	// Keep is the retention (zero: DefaultRetention).
	Keep   Retention
	Clock  Clock
	Logger *slog.Logger
	// After waits (time.After when nil); tests pass a fake clock's.
	After func(time.Duration) <-chan time.Time
	// AfterWrite, when set, runs on each backup's directory once its
	// files are written and before they are verified (tests damage it).
	AfterWrite func(dir string) error
	// OnRun, when set, hears of every recorded run.
	OnRun func(*store.BackupRun)
}

// Scheduler takes a backup every interval, verifies it, records the run
// in the store (where every replica reads it) and deletes backups past
// retention. With replicas, run it on the elected replica alone.
type Scheduler struct {
	svc *Service
	cfg ScheduleConfig
	log *slog.Logger
}

// NewScheduler returns a scheduler over s's store.
func (s *Service) NewScheduler(cfg ScheduleConfig) (*Scheduler, error) {
	switch {
	case cfg.Dir == "":
		return nil, store.InvalidField("backup_dir", "scheduled backups need a directory")
	case cfg.Every <= 0:
		return nil, store.InvalidField("backup_every", "must be positive, got %s", cfg.Every)
	case cfg.Keep.MaxAge < 0 || cfg.Keep.Count < 0:
		return nil, store.InvalidField("backup_keep", "must not be negative")
	}
	if cfg.Keep == (Retention{}) {
		cfg.Keep = DefaultRetention
	}
	if cfg.Clock == nil {
		cfg.Clock = wallClock{}
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Logger == nil {
		cfg.Logger = s.log
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("backup dir: %w", err)
	}
	cfg.Dir = dir
	return &Scheduler{svc: s, cfg: cfg, log: cfg.Logger.With("duty", "backup")}, nil
}

// Run takes a backup whenever one is due until ctx ends: at start when
// the newest recorded run is an interval old or there is none, then every
// interval after the newest run. A failed run is retried an interval
// later; the backup_stale alert fires if none succeeds for two.
func (b *Scheduler) Run(ctx context.Context) error {
	// tried is this process's last attempt: a run the store failed to
	// record must not make the next one due at once.
	var tried time.Time
	for {
		due, err := b.Due(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			b.log.WarnContext(ctx, "backup schedule: reading the last run failed; retrying", "err", err)
			due = b.cfg.Clock.Now().Add(time.Minute)
		}
		if !tried.IsZero() && due.Before(tried.Add(b.cfg.Every)) {
			due = tried.Add(b.cfg.Every)
		}
		if wait := due.Sub(b.cfg.Clock.Now()); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-b.cfg.After(wait):
			}
			continue // the clock may have moved further: look again
		}
		tried = b.cfg.Clock.Now()
		if _, err := b.RunOnce(ctx); err != nil && ctx.Err() == nil {
			b.log.ErrorContext(ctx, "scheduled backup failed", "err", err)
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// Due returns when the next backup is due: an interval after the newest
// run started, or now when none ran.
func (b *Scheduler) Due(ctx context.Context) (time.Time, error) {
	runs, err := b.svc.store.BackupList(ctx, &store.BackupListParams{Limit: 1})
	if err != nil {
		return time.Time{}, err
	}
	if len(runs) == 0 {
		return b.cfg.Clock.Now(), nil
	}
	return runs[0].StartedAt.Add(b.cfg.Every), nil
}

// RunOnce takes a backup now, verifies it, records the run and applies
// retention. The run is returned whether or not it verified; the error is
// the reason it did not (or that it could not be recorded).
func (b *Scheduler) RunOnce(ctx context.Context) (*store.BackupRun, error) {
	start := b.cfg.Clock.Now()
	run := &store.BackupRun{ID: uuid.Must(uuid.NewV7()).String(), StartedAt: start}
	dir, bytes, err := b.write(ctx, start)
	run.Path, run.Bytes = dir, bytes
	if err == nil && b.cfg.AfterWrite != nil {
		err = b.cfg.AfterWrite(dir)
	}
	if err == nil {
		err = b.verify(ctx, dir)
	}
	run.FinishedAt = b.cfg.Clock.Now()
	if err != nil {
		run.Error = err.Error()
	} else {
		run.Verified = true
	}
	rctx := context.WithoutCancel(ctx)
	if rerr := b.svc.store.BackupRecord(rctx, &store.BackupRecordParams{Run: run}); rerr != nil {
		return run, errors.Join(err, fmt.Errorf("recording the backup run: %w", rerr))
	}
	if b.cfg.OnRun != nil {
		b.cfg.OnRun(run)
	}
	if err != nil {
		b.log.ErrorContext(ctx, "backup did not verify: it is not a good backup", "path", dir, "err", err)
	} else {
		b.log.InfoContext(ctx, "backup written and verified", "path", dir, "bytes", bytes, "took", run.FinishedAt.Sub(start).String())
	}
	if _, perr := b.Prune(rctx); perr != nil {
		b.log.WarnContext(ctx, "backup retention failed", "err", perr)
	}
	return run, err
}

// write takes a snapshot and writes it as a backup directory with its
// manifest (written last: a directory with a manifest holds a whole
// backup). It returns the directory and the size of its files.
func (b *Scheduler) write(ctx context.Context, now time.Time) (dir string, size int64, err error) {
	if err := os.MkdirAll(b.cfg.Dir, 0o750); err != nil {
		return "", 0, fmt.Errorf("backup dir: %w", err)
	}
	name := "factory-" + now.UTC().Format("20060102T150405Z")
	dir = filepath.Join(b.cfg.Dir, name)
	for i := 2; ; i++ {
		err := os.Mkdir(dir, 0o750)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrExist) || i > 100 {
			return "", 0, fmt.Errorf("backup dir: %w", err)
		}
		dir = filepath.Join(b.cfg.Dir, fmt.Sprintf("%s-%d", name, i))
	}
	snap, err := b.svc.Backup(ctx, now)
	if err != nil {
		return dir, 0, err
	}
	defer snap.Close()
	m := &Manifest{Format: ManifestFormat, Version: ManifestVersion, CreatedAt: snap.CreatedAt, Driver: snap.Driver,
		MigrationVersion: snap.MigrationVersion, Counts: ManifestCountsOf(snap.Counts), Files: map[string]ManifestFile{}}
	files := map[string]string{DumpFile: snap.Dump}
	if snap.Database != "" {
		files[DatabaseFile] = snap.Database
	}
	for name, from := range files {
		to := filepath.Join(dir, name)
		if err := moveFile(from, to); err != nil {
			return dir, size, fmt.Errorf("backup: %w", err)
		}
		f, err := HashFile(to)
		if err != nil {
			return dir, size, fmt.Errorf("backup: %w", err)
		}
		m.Files[name] = f
		size += f.Bytes
	}
	if err := WriteManifest(dir, m); err != nil {
		return dir, size, fmt.Errorf("backup: %w", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, ManifestName)); err == nil {
		size += fi.Size()
	}
	return dir, size, nil
}

// moveFile renames from to to, copying when they are on different
// filesystems (the snapshot is spooled in the temporary directory).
// The copy is the operator's alone, as the database is.
func moveFile(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		if err := copyFile(from, to); err != nil {
			return err
		}
		if err := os.Remove(from); err != nil {
			return err
		}
	}
	return os.Chmod(to, 0o600)
}

// verify reads the backup back as `factory backup verify` does: checksums,
// a trial restore into a scratch store, and the database copy's integrity.
func (b *Scheduler) verify(ctx context.Context, dir string) error {
	rep, err := VerifyBackup(ctx, dir, quiet(b.log))
	if err == nil {
		return nil
	}
	if rep != nil {
		var failed []string
		for _, c := range rep.Checks {
			if !c.OK {
				failed = append(failed, c.Name+": "+c.Detail)
			}
		}
		if len(failed) > 0 {
			return fmt.Errorf("verify: %s", strings.Join(failed, "; "))
		}
	}
	return fmt.Errorf("verify: %w", err)
}

// Prune deletes the backups past retention at the clock's time and marks
// their runs removed, returning their paths. The last good backup is never
// deleted. Only directories inside the backup directory are deleted.
func (b *Scheduler) Prune(ctx context.Context) ([]string, error) {
	now := b.cfg.Clock.Now()
	runs, err := b.svc.store.BackupList(ctx, &store.BackupListParams{Present: true})
	if err != nil {
		return nil, err
	}
	lastGood := ""
	for _, r := range runs {
		if r.Verified {
			lastGood = r.ID
			break
		}
	}
	var (
		ids, paths []string
		errs       []error
	)
	for i, r := range runs {
		expired := (b.cfg.Keep.MaxAge > 0 && now.Sub(r.StartedAt) > b.cfg.Keep.MaxAge) ||
			(b.cfg.Keep.Count > 0 && i >= b.cfg.Keep.Count)
		if !expired || r.ID == lastGood {
			continue
		}
		if r.Path != "" {
			if !b.inside(r.Path) {
				errs = append(errs, fmt.Errorf("backup %s is outside %s: left alone", r.Path, b.cfg.Dir))
				continue
			}
			if err := os.RemoveAll(r.Path); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		ids, paths = append(ids, r.ID), append(paths, r.Path)
	}
	if err := b.svc.store.BackupMarkRemoved(ctx, &store.BackupMarkRemovedParams{IDs: ids, Now: now}); err != nil {
		errs = append(errs, err)
	}
	if len(paths) > 0 {
		b.log.InfoContext(ctx, "backups past retention deleted", "count", len(paths), "keep", b.cfg.Keep.String())
	}
	return paths, errors.Join(errs...)
}

// inside reports whether path is a directory below the backup directory.
func (b *Scheduler) inside(path string) bool {
	rel, err := filepath.Rel(b.cfg.Dir, path)
	return err == nil && rel != "." && !strings.HasPrefix(rel, "..") && !filepath.IsAbs(rel)
}

// BackupStatus is where the backups stand at a moment.
type BackupStatus struct {
	store.BackupSummary
	// Every is the configured interval (0: no schedule here).
	Every time.Duration
	// Age is how old the last good backup is; with none, how long since
	// the first run (0 when none ran).
	Age time.Duration
	// Stale is set when Every is set and Age is over twice Every.
	Stale bool
}

// StaleAfter is how many intervals without a good backup make it stale.
const StaleAfter = 2

// BackupStatusAt reads the backups' summary and judges it at now against
// the interval every (0 when this control plane schedules none).
func (s *Service) BackupStatusAt(ctx context.Context, now time.Time, every time.Duration) (*BackupStatus, error) {
	sum, err := s.store.BackupSummary(ctx)
	if err != nil {
		return nil, err
	}
	st := &BackupStatus{BackupSummary: *sum, Every: every}
	st.Age, _ = BackupAge(sum, now)
	st.Stale = every > 0 && (sum.LastGood != nil || sum.Last != nil) && st.Age > StaleAfter*every
	return st, nil
}

// BackupAge is how old the last good backup in sum is at now; with none,
// how long since the first run. ok is false when no backup ran yet. The
// console, the status RPC and the backup-age alert all judge by it.
func BackupAge(sum *store.BackupSummary, now time.Time) (age time.Duration, ok bool) {
	switch {
	case sum.LastGood != nil:
		return max(now.Sub(sum.LastGood.StartedAt), 0), true
	case !sum.FirstStartedAt.IsZero():
		return max(now.Sub(sum.FirstStartedAt), 0), true
	}
	return 0, false
}

// RunVacuum vacuums the store every interval until ctx ends (the first
// one an interval after the start), logging what each did.
func (s *Service) RunVacuum(ctx context.Context, every time.Duration, after func(time.Duration) <-chan time.Time) error {
	if after == nil {
		after = time.After
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-after(every):
		}
		if c := s.Vacuum(ctx); c.Verdict != OK && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "scheduled vacuum failed", "detail", c.Detail)
		} else {
			s.log.InfoContext(ctx, "scheduled vacuum", "detail", c.Detail)
		}
	}
}

// Vacuum compacts the store and refreshes its statistics (runbook §11.3),
// as a doctor check reporting the size before and after and the time.
func (s *Service) Vacuum(ctx context.Context) Check {
	rep, err := s.store.Vacuum(ctx)
	if err != nil {
		return Check{"vacuum", Fail, err.Error()}
	}
	what := "VACUUM, ANALYZE, PRAGMA optimize"
	if rep.Driver == "postgres" {
		what = fmt.Sprintf("VACUUM (ANALYZE) of %d tables", rep.Tables)
	}
	return Check{"vacuum", OK, fmt.Sprintf("%s: %s, %s → %s in %s", rep.Driver, what, sizeText(rep.BytesBefore), sizeText(rep.BytesAfter),
		rep.Took.Round(time.Millisecond))}
}

// sizeText is a byte count for people: 1.5 MiB.
func sizeText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
