package postgres

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

// taskCols is the column list every task read selects or returns, in the
// order scanRow expects.
const taskCols = `seq, id, title, kind, payload_json, role, assignee, priority, state, attempt, max_attempts,
	depends_on, approval_tier, labels, last_error, progress, note, result_json, lease_holder, fencing_token,
	lease_expires_at, claimed_at, renewed_at, run_after, created_at, updated_at, state_changed_at, paused_by_queue,
	approval_id, approval_pending, tier`

// row is a task with its creation sequence, which orders claims and pages.
type row struct {
	seq int64
	t   *store.Task
}

// scanRow reads one task row; extra receives columns selected before the
// task's.
func scanRow(rs pgx.Rows, extra ...any) (*row, error) {
	var (
		r                                    row
		t                                    store.Task
		state                                int16
		dependsOn                            []string
		labels                               []byte
		leaseExp, claimed, renewed, runAfter pgtype.Timestamptz
		created, updated, stateChanged       time.Time
	)
	dest := append(extra, &r.seq, &t.ID, &t.Title, &t.Kind, &t.PayloadJSON, &t.Role, &t.Assignee, &t.Priority, &state, &t.Attempt, &t.MaxAttempts,
		&dependsOn, &t.ApprovalTier, &labels, &t.LastError, &t.Progress, &t.Note, &t.ResultJSON, &t.LeaseHolder, &t.FencingToken,
		&leaseExp, &claimed, &renewed, &runAfter, &created, &updated, &stateChanged, &t.PausedByQueue,
		&t.ApprovalID, &t.ApprovalPending, &t.Tier)
	if err := rs.Scan(dest...); err != nil {
		return nil, err
	}
	t.State = store.TaskState(state)
	if len(dependsOn) > 0 {
		t.DependsOn = dependsOn
	}
	// The empty form is by far the most common; skip the JSON decoder.
	if len(labels) > 0 && string(labels) != "{}" {
		if err := json.Unmarshal(labels, &t.Labels); err != nil {
			return nil, fmt.Errorf("task %s: labels: %w", t.ID, err)
		}
	}
	t.LeaseExpiresAt, t.ClaimedAt, t.RenewedAt, t.RunAfter = fromTS(leaseExp), fromTS(claimed), fromTS(renewed), fromTS(runAfter)
	t.CreatedAt, t.UpdatedAt, t.StateChangedAt = created.UTC(), updated.UTC(), stateChanged.UTC()
	r.t = &t
	return &r, nil
}

// scanRows reads every row of rs and closes it.
func scanRows(rs pgx.Rows) ([]*row, error) {
	defer rs.Close()
	var out []*row
	for rs.Next() {
		r, err := scanRow(rs)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rs.Err()
}

// bySeq sorts rows in creation order: RETURNING gives no order.
func bySeq(rows []*row) {
	slices.SortFunc(rows, func(a, b *row) int { return cmpInt64(a.seq, b.seq) })
}

// byClaimOrder sorts rows as a claim takes them: priority DESC, then
// creation.
func byClaimOrder(rows []*row) {
	slices.SortFunc(rows, func(a, b *row) int {
		if a.t.Priority != b.t.Priority {
			return cmpInt64(int64(b.t.Priority), int64(a.t.Priority))
		}
		return cmpInt64(a.seq, b.seq)
	})
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// changes turns rows into TaskChanges with one previous state, each a copy.
func changes(rows []*row, prev store.TaskState) []store.TaskChange {
	out := make([]store.TaskChange, len(rows))
	for i, r := range rows {
		out[i] = store.TaskChange{Task: r.t.Clone(), PreviousState: prev}
	}
	return out
}

// norm gives t the form a stored time reads back as: UTC, microseconds
// (PostgreSQL's resolution), no monotonic reading. Results built in Go
// then equal what a later read returns.
func norm(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// ts is an optional time as a parameter: the zero time is NULL.
func ts(t time.Time) pgtype.Timestamptz {
	if t.IsZero() {
		return pgtype.Timestamptz{}
	}
	return pgtype.Timestamptz{Time: t, Valid: true}
}

func fromTS(v pgtype.Timestamptz) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return v.Time.UTC()
}
