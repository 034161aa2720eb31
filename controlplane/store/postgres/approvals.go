package postgres

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

// approvalCols is the column list every approval read selects or returns,
// in the order scanApproval expects.
const approvalCols = `seq, id, what, why, agent, risk, tier, kind, payload_json, payload_sha256, deadline,
	default_on_timeout, task_id, reminder_at, state, auto_approved, outcome, decided_by, decided_at, reason,
	instructions, reminded_at, created_at`

var (
	qApprovalGet = `-- name: ApprovalGet
SELECT ` + approvalCols + ` FROM approvals WHERE id = $1`
	qApprovalInsert = `-- name: ApprovalInsert
INSERT INTO approvals (id, what, why, agent, risk, tier, kind, payload_json, payload_sha256, deadline,
	default_on_timeout, task_id, reminder_at, state, auto_approved, outcome, decided_by, decided_at, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
RETURNING ` + approvalCols
	// qApprovalDecide is the decision's condition and write in one
	// statement: the row lock makes a second decision wait for the first
	// and then find the request no longer PENDING.
	qApprovalDecide = `-- name: ApprovalDecide
UPDATE approvals SET state = $2, outcome = $3, decided_by = $4, decided_at = $5, reason = $6, instructions = $7
WHERE id = $1 AND state = 1 RETURNING ` + approvalCols
	// qApprovalOverdue skips requests another sweeper or a decision holds:
	// they are being dealt with.
	qApprovalOverdue = `-- name: ApprovalOverdue
SELECT ` + approvalCols + ` FROM approvals WHERE state = 1 AND deadline <= $1 ORDER BY deadline, seq LIMIT $2
FOR UPDATE SKIP LOCKED`
	qApprovalRemind = `-- name: ApprovalRemind
UPDATE approvals SET reminded_at = $1
WHERE state = 1 AND reminder_at <= $1 AND reminded_at IS NULL RETURNING ` + approvalCols
	qApprovalNextDue = `-- name: ApprovalNextDue
SELECT least((SELECT min(deadline) FROM approvals WHERE state = 1),
	(SELECT min(reminder_at) FROM approvals WHERE state = 1 AND reminded_at IS NULL))`
	qTaskDepsPending = q(`-- name: TaskDepsPending
SELECT count(*) FROM task_deps d JOIN tasks t ON t.id = d.depends_on WHERE d.task_id = $1 AND t.state <> {DONE}`)
	qTaskApprovalClear = `-- name: TaskApprovalClear
UPDATE tasks SET approval_pending = false WHERE seq = $1`
	qTaskExistsShare = `-- name: TaskExists
SELECT count(*) FROM (SELECT 1 FROM tasks WHERE id = $1 FOR SHARE) AS t`
)

type approvalRow struct {
	seq int64
	a   *store.Approval
}

func scanApprovals(rs pgx.Rows) ([]*approvalRow, error) {
	defer rs.Close()
	var out []*approvalRow
	for rs.Next() {
		var (
			r                               approvalRow
			a                               store.Approval
			risk, def, state, outcome       int16
			deadline, created               time.Time
			reminderAt, decidedAt, reminded pgtype.Timestamptz
		)
		err := rs.Scan(&r.seq, &a.ID, &a.What, &a.Why, &a.Agent, &risk, &a.Tier, &a.Kind, &a.PayloadJSON, &a.PayloadSHA256,
			&deadline, &def, &a.TaskID, &reminderAt, &state, &a.AutoApproved, &outcome, &a.DecidedBy, &decidedAt, &a.Reason,
			&a.Instructions, &reminded, &created)
		if err != nil {
			return nil, err
		}
		a.Risk, a.DefaultOnTimeout, a.State, a.Outcome = store.ApprovalRisk(risk), store.ApprovalDecision(def), store.ApprovalState(state), store.ApprovalDecision(outcome)
		a.Deadline, a.CreatedAt = deadline.UTC(), created.UTC()
		a.ReminderAt, a.DecidedAt, a.RemindedAt = fromTS(reminderAt), fromTS(decidedAt), fromTS(reminded)
		r.a = &a
		out = append(out, &r)
	}
	return out, rs.Err()
}

func queueApprovals(b *pgx.Batch, out *[]*approvalRow, sql string, args ...any) {
	b.Queue(sql, args...).Query(func(rs pgx.Rows) error {
		rows, err := scanApprovals(rs)
		*out = append(*out, rows...)
		return err
	})
}

func approvalNotFound(id string) error { return fmt.Errorf("approval %q: %w", id, store.ErrNotFound) }

// checkApprovalText checks the text of a new request.
func checkApprovalText(c *store.ApprovalCreate) error {
	return checkText("approval_id", c.ID, "what", c.What, "why", c.Why, "agent", c.Agent, "kind", c.Kind,
		"payload_json", c.PayloadJSON, "payload_sha256", c.PayloadSHA256, "task_id", c.TaskID, "decided_by", c.DecidedBy)
}

// queueApprovalInsert queues a new request's insert; a taken id fails the
// transaction with ErrAlreadyExists.
func queueApprovalInsert(b *pgx.Batch, c *store.ApprovalCreate, now time.Time) {
	b.Queue(qApprovalInsert, c.ID, c.What, c.Why, c.Agent, int16(c.Risk), c.Tier, c.Kind, c.PayloadJSON, c.PayloadSHA256,
		norm(c.Deadline), int16(c.DefaultOnTimeout), c.TaskID, ts(norm(c.ReminderAt)), int16(c.State), c.AutoApproved,
		int16(c.Outcome), c.DecidedBy, ts(norm(c.DecidedAt)), now)
}

// ApprovalCreate implements store.ApprovalStore.
func (s *Store) ApprovalCreate(ctx context.Context, p *store.ApprovalCreateParams) (*store.Approval, error) {
	if p == nil {
		return nil, store.InvalidField("approval", "is missing")
	}
	if err := store.CheckApprovalCreate(p.Approval); err != nil {
		return nil, err
	}
	if err := checkApprovalText(p.Approval); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var out *store.Approval
	err := s.inTx(ctx, "ApprovalCreate", func(t *txn) error {
		if id := p.Approval.TaskID; id != "" {
			var n int64
			b := t.batch()
			b.Queue(qTaskExistsShare, id).QueryRow(func(r pgx.Row) error { return r.Scan(&n) })
			if err := t.send(b); err != nil {
				return err
			}
			if n == 0 {
				return store.InvalidField("task_id", "no task %q", id)
			}
		}
		var rows []*approvalRow
		b := t.batch()
		queueApprovals(b, &rows, qApprovalInsert, p.Approval.ID, p.Approval.What, p.Approval.Why, p.Approval.Agent,
			int16(p.Approval.Risk), p.Approval.Tier, p.Approval.Kind, p.Approval.PayloadJSON, p.Approval.PayloadSHA256,
			norm(p.Approval.Deadline), int16(p.Approval.DefaultOnTimeout), p.Approval.TaskID, ts(norm(p.Approval.ReminderAt)),
			int16(p.Approval.State), p.Approval.AutoApproved, int16(p.Approval.Outcome), p.Approval.DecidedBy,
			ts(norm(p.Approval.DecidedAt)), now)
		if err := t.send(b); err != nil {
			return err
		}
		if len(rows) == 1 {
			out = rows[0].a
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ApprovalGet implements store.ApprovalStore.
func (s *Store) ApprovalGet(ctx context.Context, id string) (*store.Approval, error) {
	if !pgText(id) {
		return nil, approvalNotFound(id)
	}
	var rows []*approvalRow
	err := s.read(ctx, "ApprovalGet", func(ctx context.Context) error {
		rs, err := s.pool.Query(ctx, qApprovalGet, id)
		if err != nil {
			return err
		}
		rows, err = scanApprovals(rs)
		return err
	})
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
	if err := checkText("agent", p.Agent, "id_prefix", p.IDPrefix); err != nil {
		return nil, err
	}
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	// The filters' parameters come first, so that every arm of a
	// newest-first list shares them.
	var filter strings.Builder
	if len(p.States) > 0 {
		states := make([]int16, len(p.States))
		for i, st := range p.States {
			states[i] = int16(st)
		}
		filter.WriteString(" AND state = ANY(" + arg(states) + "::smallint[])")
	}
	if p.Agent != "" {
		filter.WriteString(" AND agent = " + arg(p.Agent))
	}
	if p.IDPrefix != "" {
		filter.WriteString(idPrefixFilter(p.IDPrefix, arg))
	}
	// One row past the page says whether there is a next page.
	limit, limitSQL := 0, ""
	if p.Limit > 0 && p.Limit < math.MaxInt32 {
		limit = p.Limit + 1
		limitSQL = " LIMIT " + arg(limit)
	}
	var b strings.Builder
	b.WriteString("-- name: ApprovalList\n")
	if p.NewestFirst {
		// One arm per group, each a backward range scan of approvals_list
		// limited on its own (see store.ApprovalGroupScan), in one
		// statement so that the page is one snapshot.
		scans := store.NewestApprovalScans(p.States, group, at)
		if len(scans) == 0 {
			return &store.ApprovalListResult{}, nil
		}
		for i, sc := range scans {
			if i > 0 {
				b.WriteString(" UNION ALL ")
			}
			// IS FALSE, not = false: the planner rewrites the latter to
			// state = 1, which no longer matches the index's expression.
			group := "(state <> 1) IS TRUE"
			if sc.Pending {
				group = "(state <> 1) IS FALSE"
			}
			b.WriteString("(SELECT " + approvalCols + " FROM approvals WHERE " + group +
				" AND seq < " + arg(sc.Before) + filter.String() + " ORDER BY seq DESC" + limitSQL + ")")
		}
	} else {
		g := arg(group == 1)
		b.WriteString("SELECT " + approvalCols + " FROM approvals WHERE ((state <> 1) > " + g + " OR ((state <> 1) = " + g +
			" AND seq > " + arg(at) + "))" + filter.String() + " ORDER BY (state <> 1), seq" + limitSQL)
	}
	var rows []*approvalRow
	err = s.read(ctx, "ApprovalList", func(ctx context.Context) error {
		rs, err := s.pool.Query(ctx, b.String(), args...)
		if err != nil {
			return err
		}
		rows, err = scanApprovals(rs)
		return err
	})
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

// sortNewestFirst puts the rows of a newest-first list in order: PENDING
// first, then the rest, each newest first. UNION ALL promises no order of
// its own, and this sorts at most two pages, never the table.
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
	if !pgText(p.ID) {
		return nil, approvalNotFound(p.ID)
	}
	if err := checkText("decided_by", p.DecidedBy, "reason", p.Reason, "instructions", p.Instructions); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var out *store.ApprovalDecideResult
	err := s.inTx(ctx, "ApprovalDecide", func(t *txn) error {
		out = nil
		t.changes = t.changes[:0]
		a := &store.Approval{}
		a.ApplyDecision(p.Decision, p.DecidedBy, p.Reason, p.Instructions, now)
		var rows []*approvalRow
		b := t.batch()
		queueApprovals(b, &rows, qApprovalDecide, p.ID, int16(a.State), int16(a.Outcome), a.DecidedBy, now, a.Reason, a.Instructions)
		if err := t.send(b); err != nil {
			return err
		}
		if len(rows) == 0 {
			var cur []*approvalRow
			b := t.batch()
			queueApprovals(b, &cur, qApprovalGet, p.ID)
			if err := t.send(b); err != nil {
				return err
			}
			if len(cur) == 0 {
				return approvalNotFound(p.ID)
			}
			return &store.DecidedError{ID: cur[0].a.ID, State: cur[0].a.State, By: cur[0].a.DecidedBy}
		}
		changes, save, err := t.applyToTask(rows[0].a, now)
		if err != nil {
			return err
		}
		out = &store.ApprovalDecideResult{Approval: rows[0].a, TaskChanges: changes}
		t.announce(changes)
		return t.commit(save...)
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
	err := s.inTx(ctx, "ApprovalExpire", func(t *txn) error {
		out = nil
		t.changes = t.changes[:0]
		var rows []*approvalRow
		b := t.batch()
		queueApprovals(b, &rows, qApprovalOverdue, now, limit)
		if err := t.send(b); err != nil || len(rows) == 0 {
			return err
		}
		for _, r := range rows {
			a := r.a
			a.Expire(now)
			b := t.batch()
			b.Queue(qApprovalDecide, a.ID, int16(a.State), int16(a.Outcome), a.DecidedBy, now, a.Reason, "")
			if err := t.send(b); err != nil {
				return err
			}
			changes, save, err := t.applyToTask(a, now)
			if err != nil {
				return err
			}
			if len(save) > 0 {
				b := t.batch()
				for _, q := range save {
					q(b)
				}
				if err := t.send(b); err != nil {
					return err
				}
			}
			t.announce(changes)
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
	err := s.inTx(ctx, "ApprovalTakeReminders", func(t *txn) error {
		out = nil
		var rows []*approvalRow
		b := t.batch()
		queueApprovals(b, &rows, qApprovalRemind, now)
		if err := t.send(b); err != nil {
			return err
		}
		for _, r := range rows {
			out = append(out, r.a)
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
	var next pgtype.Timestamptz
	err := s.read(ctx, "ApprovalNextDue", func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, qApprovalNextDue).Scan(&next)
	})
	if err != nil {
		return time.Time{}, false, err
	}
	if !next.Valid {
		return time.Time{}, false, nil
	}
	return next.Time.UTC(), true, nil
}

// applyToTask locks the task a just-decided request gates, if any, and
// works out its move; save holds the writes to send before COMMIT. The
// task is locked before its dependencies are read, so a completion of its
// last dependency either commits first (and is seen here) or waits for
// this transaction and then promotes it.
func (t *txn) applyToTask(a *store.Approval, now time.Time) ([]store.TaskChange, []func(b *pgx.Batch), error) {
	if a.TaskID == "" {
		return nil, nil, nil
	}
	var (
		rows   []*row
		paused bool
	)
	b := t.batch()
	b.Queue(qPausedShare).QueryRow(func(r pgx.Row) error { return r.Scan(&paused) })
	queueRows(b, &rows, qGetForUpdate, a.TaskID)
	if err := t.send(b); err != nil {
		return nil, nil, err
	}
	if len(rows) == 0 || rows[0].t.ApprovalID != a.ID || !rows[0].t.ApprovalPending {
		return nil, nil, nil
	}
	r := rows[0]
	var pending int64
	b = t.batch()
	b.Queue(qTaskDepsPending, r.t.ID).QueryRow(func(row pgx.Row) error { return row.Scan(&pending) })
	if err := t.send(b); err != nil {
		return nil, nil, err
	}
	from := r.t.State
	r.t.ApplyApproval(a.Outcome, a.Reason, a.Instructions, pending == 0, paused, now)
	changes := []store.TaskChange{{Task: r.t.Clone(), PreviousState: from}}
	return changes, []func(b *pgx.Batch){queueSave(r), func(b *pgx.Batch) { b.Queue(qTaskApprovalClear, r.seq) }}, nil
}
