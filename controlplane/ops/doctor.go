package ops

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// Verdict is a check's outcome.
type Verdict int

// Verdicts, worst last.
const (
	OK Verdict = iota + 1
	Warn
	Fail
)

func (v Verdict) String() string {
	switch v {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	case Fail:
		return "fail"
	}
	return "unknown"
}

// Check is one doctor check's finding.
type Check struct {
	Name    string
	Verdict Verdict
	Detail  string
}

// overdueLease is how far past its expiry an IN_PROGRESS lease may be
// before the doctor says the sweeper is not rescuing it.
const overdueLease = 5 * time.Minute

// Doctor runs the store's checks: its integrity, its migration version
// against the binary's, and the queue's sanity at now. A check that could
// not run is a Fail naming why, so the rest still report.
func (s *Service) Doctor(ctx context.Context, now time.Time) []Check {
	var out []Check
	rep, err := s.store.IntegrityCheck(ctx)
	switch {
	case err != nil:
		out = append(out, Check{"store_integrity", Fail, err.Error()})
	case !rep.OK:
		out = append(out, Check{"store_integrity", Fail, rep.Driver + ": " + strings.Join(rep.Problems, "; ")})
	case rep.Driver == "sqlite":
		out = append(out, Check{"store_integrity", OK, "sqlite: PRAGMA integrity_check ok"})
	default:
		out = append(out, Check{"store_integrity", OK, rep.Driver + ": reachable"})
	}
	if err == nil {
		switch {
		case rep.MigrationVersion == rep.LatestMigration:
			out = append(out, Check{"migration_version", OK, fmt.Sprintf("schema at version %d, the binary's latest", rep.MigrationVersion)})
		case rep.MigrationVersion > rep.LatestMigration:
			out = append(out, Check{"migration_version", Warn, fmt.Sprintf("schema at version %d, newer than this binary's %d: a newer control plane migrated it", rep.MigrationVersion, rep.LatestMigration)})
		default:
			out = append(out, Check{"migration_version", Fail, fmt.Sprintf("schema at version %d, behind this binary's %d", rep.MigrationVersion, rep.LatestMigration)})
		}
	}
	return append(out, s.queueSanity(ctx, now))
}

// queueSanity checks the IN_PROGRESS tasks: each must hold a lease (a
// holder, a fencing token, an expiry), and no lease may be long expired
// (the sweeper rescues those).
func (s *Service) queueSanity(ctx context.Context, now time.Time) Check {
	var (
		n                int
		noLease, overdue []string
	)
	cursor := ""
	for {
		// Summaries: the check reads leases, not payloads.
		res, err := s.store.TaskList(ctx, &store.TaskListParams{States: []store.TaskState{store.StateInProgress}, Limit: 1000, Cursor: cursor, Summary: true})
		if err != nil {
			return Check{"queue_sanity", Fail, err.Error()}
		}
		for _, t := range res.Tasks {
			n++
			switch {
			case t.LeaseHolder == "" || t.FencingToken <= 0 || t.LeaseExpiresAt.IsZero():
				noLease = append(noLease, t.ID)
			case now.Sub(t.LeaseExpiresAt) > overdueLease:
				overdue = append(overdue, t.ID)
			}
		}
		if res.NextCursor == "" {
			break
		}
		cursor = res.NextCursor
	}
	switch {
	case len(noLease) > 0:
		return Check{"queue_sanity", Fail, fmt.Sprintf("%d IN_PROGRESS task(s) without a lease: %s", len(noLease), firstFew(noLease))}
	case len(overdue) > 0:
		return Check{"queue_sanity", Warn, fmt.Sprintf("%d lease(s) expired over %s ago and not rescued (is the sweeper running?): %s", len(overdue), overdueLease, firstFew(overdue))}
	}
	return Check{"queue_sanity", OK, fmt.Sprintf("%d IN_PROGRESS task(s), every one under a live lease", n)}
}

func firstFew(ids []string) string {
	if len(ids) > 5 {
		return strings.Join(ids[:5], ", ") + fmt.Sprintf(" and %d more", len(ids)-5)
	}
	return strings.Join(ids, ", ")
}
