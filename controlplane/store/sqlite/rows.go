package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

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

type scanner interface{ Scan(dest ...any) error }

// scanRow reads one task row; extra receives columns selected after
// taskCols.
func scanRow(sc scanner, extra ...any) (*row, error) {
	var (
		r                                             row
		t                                             store.Task
		priority, state, attempt, maxAttempts, tier   int64
		dependsOn, labels                             string
		leaseExp, claimed, renewed, runAfter, created int64
		updated, stateChanged                         int64
		pausedByQueue, approvalPending                bool
	)
	dest := append(make([]any, 0, 30+len(extra)), &r.seq, &t.ID, &t.Title, &t.Kind, &t.PayloadJSON, &t.Role, &t.Assignee,
		&priority, &state, &attempt, &maxAttempts, &dependsOn, &tier, &labels, &t.LastError, &t.Progress, &t.Note, &t.ResultJSON,
		&t.LeaseHolder, &t.FencingToken, &leaseExp, &claimed, &renewed, &runAfter, &created, &updated, &stateChanged,
		&pausedByQueue, &t.ApprovalID, &approvalPending, &t.Tier)
	err := sc.Scan(append(dest, extra...)...)
	if err != nil {
		return nil, err
	}
	t.Priority, t.State, t.Attempt, t.MaxAttempts, t.ApprovalTier = int32(priority), store.TaskState(state), int32(attempt), int32(maxAttempts), int32(tier)
	// The empty forms are by far the most common; skip the JSON decoder.
	if dependsOn != "[]" && dependsOn != "" {
		if err := json.Unmarshal([]byte(dependsOn), &t.DependsOn); err != nil {
			return nil, fmt.Errorf("task %s: depends_on: %w", t.ID, err)
		}
	}
	if labels != "{}" && labels != "" {
		if err := json.Unmarshal([]byte(labels), &t.Labels); err != nil {
			return nil, fmt.Errorf("task %s: labels: %w", t.ID, err)
		}
	}
	t.LeaseExpiresAt, t.ClaimedAt, t.RenewedAt, t.RunAfter = fromNanos(leaseExp), fromNanos(claimed), fromNanos(renewed), fromNanos(runAfter)
	t.CreatedAt, t.UpdatedAt, t.StateChangedAt = fromNanos(created), fromNanos(updated), fromNanos(stateChanged)
	t.PausedByQueue = pausedByQueue
	t.ApprovalPending = approvalPending
	r.t = &t
	return &r, nil
}

// scanRows reads every row of rs and closes it.
func scanRows(rs *sql.Rows) ([]*row, error) {
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

// Times are stored as unix nanoseconds with 0 meaning unset, so that range
// scans and comparisons are integer comparisons.
func toNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// norm gives t the form a stored time reads back as (UTC, no monotonic
// reading), so that returned tasks equal what a later read returns.
func norm(t time.Time) time.Time { return fromNanos(toNanos(t)) }

// jsonText encodes v for a json_each(?) parameter or a JSON column.
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only strings, numbers, and slices and maps of them, come here.
		panic(fmt.Sprintf("sqlite: encode parameter: %v", err))
	}
	return string(b)
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// stmtCache prepares reader statements once. Preparing skips SQLite's parse
// and plan on every call, which is most of a small statement's cost;
// database/sql keeps one prepared copy per pooled connection.
type stmtCache struct {
	db *sql.DB
	mu sync.RWMutex
	m  map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, m: make(map[string]*sql.Stmt)}
}

func (c *stmtCache) get(ctx context.Context, query string) (*sql.Stmt, error) {
	c.mu.RLock()
	st := c.m[query]
	c.mu.RUnlock()
	if st != nil {
		return st, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.m[query]; st != nil {
		return st, nil
	}
	// Preparing on the pool borrows a connection only for the prepare;
	// no caller holds a reader connection while it gets here.
	st, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.m[query] = st
	return st, nil
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	clear(c.m)
}
