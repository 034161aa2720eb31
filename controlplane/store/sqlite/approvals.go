package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// approvalCols is the column list every approval read selects or returns,
// in the order scanApproval expects.
const approvalCols = `seq, id, what, why, agent, risk, tier, kind, payload_json, payload_sha256, deadline,
	default_on_timeout, task_id, reminder_at, state, auto_approved, outcome, decided_by, decided_at, reason,
	instructions, reminded_at, created_at`

var (
	qApprovalGet    = `SELECT ` + approvalCols + ` FROM approvals WHERE id = ?`
	qApprovalInsert = `INSERT INTO approvals (id, what, why, agent, risk, tier, kind, payload_json, payload_sha256,
	deadline, default_on_timeout, task_id, reminder_at, state, auto_approved, outcome, decided_by, decided_at, created_at)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	// qApprovalDecide is the decision's condition and write in one
	// statement: only a PENDING request changes, so of two decisions the
	// second finds nothing to update.
	qApprovalDecide = `UPDATE approvals SET state = ?2, outcome = ?3, decided_by = ?4, decided_at = ?5, reason = ?6,
	instructions = ?7 WHERE id = ?1 AND state = 1 RETURNING ` + approvalCols
	qApprovalOverdue = `SELECT ` + approvalCols + ` FROM approvals INDEXED BY approvals_pending_deadline
	WHERE state = 1 AND deadline <= ? ORDER BY deadline, seq LIMIT ?`
	qApprovalRemind = `UPDATE approvals SET reminded_at = ?1
	WHERE state = 1 AND reminder_at > 0 AND reminder_at <= ?1 AND reminded_at = 0 RETURNING ` + approvalCols
	qApprovalNextDue = `SELECT MIN(d) FROM (
		SELECT MIN(deadline) AS d FROM approvals WHERE state = 1
		UNION ALL SELECT MIN(reminder_at) FROM approvals WHERE state = 1 AND reminder_at > 0 AND reminded_at = 0)`
	qTaskDepsPending = q(`SELECT COUNT(*) FROM task_deps d JOIN tasks t ON t.id = d.depends_on
	WHERE d.task_id = ? AND t.state <> {DONE}`)
	qTaskApprovalClear = `UPDATE tasks SET approval_pending = 0 WHERE seq = ?`
	qTaskExists        = `SELECT COUNT(*) FROM tasks WHERE id = ?`
)

type approvalRow struct {
	seq int64
	a   *store.Approval
}

func scanApproval(sc scanner) (*approvalRow, error) {
	var (
		r                                                      approvalRow
		a                                                      store.Approval
		risk, tier, def, state, outcome                        int64
		deadline, reminderAt, decidedAt, remindedAt, createdAt int64
		autoApproved                                           bool
	)
	err := sc.Scan(&r.seq, &a.ID, &a.What, &a.Why, &a.Agent, &risk, &tier, &a.Kind, &a.PayloadJSON, &a.PayloadSHA256,
		&deadline, &def, &a.TaskID, &reminderAt, &state, &autoApproved, &outcome, &a.DecidedBy, &decidedAt, &a.Reason,
		&a.Instructions, &remindedAt, &createdAt)
	if err != nil {
		return nil, err
	}
	a.Risk, a.Tier, a.DefaultOnTimeout = store.ApprovalRisk(risk), int32(tier), store.ApprovalDecision(def)
	a.State, a.Outcome, a.AutoApproved = store.ApprovalState(state), store.ApprovalDecision(outcome), autoApproved
	a.Deadline, a.ReminderAt, a.DecidedAt = fromNanos(deadline), fromNanos(reminderAt), fromNanos(decidedAt)
	a.RemindedAt, a.CreatedAt = fromNanos(remindedAt), fromNanos(createdAt)
	r.a = &a
	return &r, nil
}

func scanApprovals(rs *sql.Rows, op string) ([]*approvalRow, error) {
	defer rs.Close()
	var out []*approvalRow
	for rs.Next() {
		r, err := scanApproval(rs)
		if err != nil {
			return nil, dbErr(op, err)
		}
		out = append(out, r)
	}
	return out, dbErr(op, rs.Err())
}

func approvalNotFound(id string) error { return fmt.Errorf("approval %q: %w", id, store.ErrNotFound) }

// ApprovalCreate implements store.ApprovalStore.
func (s *Store) ApprovalCreate(ctx context.Context, p *store.ApprovalCreateParams) (*store.Approval, error) {
	if p == nil {
		return nil, store.InvalidField("approval", "is missing")
	}
	if err := store.CheckApprovalCreate(p.Approval); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var out *store.Approval
	err := s.writeTx(ctx, "ApprovalCreate", func(w *wtx) error {
		if id := p.Approval.TaskID; id != "" {
			var n int64
			rs, err := w.query(qTaskExists, id)
			if err != nil {
				return err
			}
			if rs.Next() {
				err = rs.Scan(&n)
			}
			rs.Close()
			if err != nil {
				return dbErr(w.op, err)
			}
			if n == 0 {
				return store.InvalidField("task_id", "no task %q", id)
			}
		}
		a, err := w.insertApproval(p.Approval, now)
		out = a
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// insertApproval stores a new request, or ErrAlreadyExists.
func (w *wtx) insertApproval(c *store.ApprovalCreate, now time.Time) (*store.Approval, error) {
	a := c.Approval(now)
	a.Deadline, a.ReminderAt, a.DecidedAt = norm(a.Deadline), norm(a.ReminderAt), norm(a.DecidedAt)
	res, err := w.exec(qApprovalInsert, a.ID, a.What, a.Why, a.Agent, int32(a.Risk), a.Tier, a.Kind, a.PayloadJSON,
		a.PayloadSHA256, toNanos(a.Deadline), int32(a.DefaultOnTimeout), a.TaskID, toNanos(a.ReminderAt), int32(a.State),
		boolInt(a.AutoApproved), int32(a.Outcome), a.DecidedBy, toNanos(a.DecidedAt), toNanos(now))
	if err != nil {
		return nil, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return nil, dbErr(w.op, err)
	} else if n == 0 {
		return nil, fmt.Errorf("approval %q: %w", a.ID, store.ErrAlreadyExists)
	}
	return a, nil
}

// ApprovalGet implements store.ApprovalStore.
func (s *Store) ApprovalGet(ctx context.Context, id string) (*store.Approval, error) {
	st, err := s.rs.get(ctx, qApprovalGet)
	if err != nil {
		return nil, dbErr("ApprovalGet", err)
	}
	rs, err := st.QueryContext(ctx, id)
	if err != nil {
		return nil, dbErr("ApprovalGet", err)
	}
	rows, err := scanApprovals(rs, "ApprovalGet")
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, approvalNotFound(id)
	}
	return rows[0].a, nil
}

// ApprovalList implements store.ApprovalStore.
func (s *Store) ApprovalList(ctx context.Context, p *store.ApprovalListParams) (*store.ApprovalListResult, error) {
	if p == nil {
		p = &store.ApprovalListParams{}
	}
	group, at, err := store.ParseApprovalCursor(p.Cursor, p.NewestFirst)
	if err != nil {
		return nil, err
	}
	var filter strings.Builder
	var filterArgs []any
	if len(p.States) > 0 {
		filter.WriteString(" AND state IN (SELECT value FROM json_each(?))")
		filterArgs = append(filterArgs, jsonText(p.States))
	}
	if p.Agent != "" {
		filter.WriteString(" AND agent = ?")
		filterArgs = append(filterArgs, p.Agent)
	}
	if p.IDPrefix != "" {
		filter.WriteString(idPrefixFilter(p.IDPrefix, &filterArgs))
	}
	// One row past the page says whether there is a next page.
	limit := -1
	if p.Limit > 0 && p.Limit < math.MaxInt32 {
		limit = p.Limit + 1
	}
	var (
		query string
		args  []any
	)
	if p.NewestFirst {
		query, args = approvalListNewest(store.NewestApprovalScans(p.States, group, at), filter.String(), filterArgs, limit)
		if query == "" {
			return &store.ApprovalListResult{}, nil
		}
	} else {
		query = "SELECT " + approvalCols + " FROM approvals WHERE ((state <> 1) > ? OR ((state <> 1) = ? AND seq > ?))" +
			filter.String() + " ORDER BY (state <> 1), seq LIMIT ?"
		args = append(append([]any{group, group, at}, filterArgs...), limit)
	}
	st, err := s.rs.get(ctx, query)
	if err != nil {
		return nil, dbErr("ApprovalList", err)
	}
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, dbErr("ApprovalList", err)
	}
	rows, err := scanApprovals(rs, "ApprovalList")
	if err != nil {
		return nil, err
	}
	if p.NewestFirst {
		sortNewestFirst(rows)
	}
	res := &store.ApprovalListResult{}
	if limit > 0 && len(rows) >= limit {
		rows = rows[:p.Limit]
		last := rows[len(rows)-1]
		res.NextCursor = store.FormatApprovalCursor(last.a.State, last.seq, p.NewestFirst)
	}
	res.Approvals = make([]*store.Approval, len(rows))
	for i, r := range rows {
		res.Approvals[i] = r.a
	}
	return res, nil
}

// approvalListNewest is the query of a newest-first list: one arm per
// group scan, each a backward range scan of approvals_list limited on its
// own, joined in one statement so that the page is one snapshot. It is
// empty when there is nothing to scan.
func approvalListNewest(scans []store.ApprovalGroupScan, filter string, filterArgs []any, limit int) (string, []any) {
	var (
		b    strings.Builder
		args []any
	)
	for i, sc := range scans {
		if i > 0 {
			b.WriteString(" UNION ALL ")
		}
		rest := "1"
		if sc.Pending {
			rest = "0"
		}
		b.WriteString("SELECT * FROM (SELECT " + approvalCols + " FROM approvals WHERE (state <> 1) = " + rest +
			" AND seq < ?" + filter + " ORDER BY seq DESC LIMIT ?)")
		args = append(append(append(args, sc.Before), filterArgs...), limit)
	}
	return b.String(), args
}

// sortNewestFirst puts the rows of a newest-first list in order: PENDING
// first, then the rest, each newest first. A compound SELECT promises no
// order of its own, and this sorts at most two pages, never the table.
func sortNewestFirst(rows []*approvalRow) {
	slices.SortFunc(rows, func(x, y *approvalRow) int {
		xp, yp := x.a.State == store.ApprovalPending, y.a.State == store.ApprovalPending
		if xp != yp {
			if xp {
				return -1
			}
			return 1
		}
		return cmp.Compare(y.seq, x.seq)
	})
}

// ApprovalDecide implements store.ApprovalStore.
func (s *Store) ApprovalDecide(ctx context.Context, p *store.ApprovalDecideParams) (*store.ApprovalDecideResult, error) {
	if err := store.CheckDecide(p); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var out *store.ApprovalDecideResult
	err := s.writeTx(ctx, "ApprovalDecide", func(w *wtx) error {
		a := &store.Approval{}
		a.ApplyDecision(p.Decision, p.DecidedBy, p.Reason, p.Instructions, now)
		rs, err := w.query(qApprovalDecide, p.ID, int32(a.State), int32(a.Outcome), a.DecidedBy, toNanos(now), a.Reason, a.Instructions)
		if err != nil {
			return err
		}
		rows, err := scanApprovals(rs, w.op)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			cur, err := w.approval(p.ID)
			if err != nil {
				return err
			}
			return &store.DecidedError{ID: cur.ID, State: cur.State, By: cur.DecidedBy}
		}
		out = &store.ApprovalDecideResult{Approval: rows[0].a}
		out.TaskChanges, err = w.applyToTask(rows[0].a, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ApprovalExpire implements store.ApprovalStore.
func (s *Store) ApprovalExpire(ctx context.Context, p *store.ApprovalExpireParams) ([]*store.ApprovalDecideResult, error) {
	now := norm(p.Now)
	limit := p.Limit
	if limit <= 0 {
		limit = 100
	}
	var out []*store.ApprovalDecideResult
	err := s.writeTx(ctx, "ApprovalExpire", func(w *wtx) error {
		out = nil
		rs, err := w.query(qApprovalOverdue, toNanos(now), limit)
		if err != nil {
			return err
		}
		rows, err := scanApprovals(rs, w.op)
		if err != nil {
			return err
		}
		for _, r := range rows {
			a := r.a
			a.Expire(now)
			if _, err := w.exec(qApprovalDecide, a.ID, int32(a.State), int32(a.Outcome), a.DecidedBy, toNanos(now), a.Reason, ""); err != nil {
				return err
			}
			changes, err := w.applyToTask(a, now)
			if err != nil {
				return err
			}
			out = append(out, &store.ApprovalDecideResult{Approval: a, TaskChanges: changes})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ApprovalTakeReminders implements store.ApprovalStore.
func (s *Store) ApprovalTakeReminders(ctx context.Context, p *store.ApprovalRemindParams) ([]*store.Approval, error) {
	now := norm(p.Now)
	var out []*store.Approval
	err := s.writeTx(ctx, "ApprovalTakeReminders", func(w *wtx) error {
		rs, err := w.query(qApprovalRemind, toNanos(now))
		if err != nil {
			return err
		}
		rows, err := scanApprovals(rs, w.op)
		if err != nil {
			return err
		}
		out = make([]*store.Approval, len(rows))
		for i, r := range rows {
			out[i] = r.a
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ApprovalNextDue implements store.ApprovalStore.
func (s *Store) ApprovalNextDue(ctx context.Context) (time.Time, bool, error) {
	st, err := s.rs.get(ctx, qApprovalNextDue)
	if err != nil {
		return time.Time{}, false, dbErr("ApprovalNextDue", err)
	}
	var next sql.NullInt64
	if err := st.QueryRowContext(ctx).Scan(&next); err != nil {
		return time.Time{}, false, dbErr("ApprovalNextDue", err)
	}
	if !next.Valid || next.Int64 == 0 {
		return time.Time{}, false, nil
	}
	return fromNanos(next.Int64), true, nil
}

// approval loads one request on the writer, or ErrNotFound.
func (w *wtx) approval(id string) (*store.Approval, error) {
	rs, err := w.query(qApprovalGet, id)
	if err != nil {
		return nil, err
	}
	rows, err := scanApprovals(rs, w.op)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, approvalNotFound(id)
	}
	return rows[0].a, nil
}

// applyToTask moves the task a just-decided request gates, if any.
func (w *wtx) applyToTask(a *store.Approval, now time.Time) ([]store.TaskChange, error) {
	if a.TaskID == "" {
		return nil, nil
	}
	rows, err := w.rows(qGetByID, a.TaskID)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	r := rows[0]
	if r.t.ApprovalID != a.ID || !r.t.ApprovalPending {
		return nil, nil
	}
	var pending int64
	rs, err := w.query(qTaskDepsPending, r.t.ID)
	if err != nil {
		return nil, err
	}
	if rs.Next() {
		err = rs.Scan(&pending)
	}
	rs.Close()
	if err != nil {
		return nil, dbErr(w.op, err)
	}
	paused, _, err := w.paused()
	if err != nil {
		return nil, err
	}
	from := r.t.State
	r.t.ApplyApproval(a.Outcome, a.Reason, a.Instructions, pending == 0, paused, now)
	if err := w.save(r); err != nil {
		return nil, err
	}
	if _, err := w.exec(qTaskApprovalClear, r.seq); err != nil {
		return nil, err
	}
	return []store.TaskChange{{Task: r.t.Clone(), PreviousState: from}}, nil
}
