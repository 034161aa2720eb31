package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

func notFound(id string) error { return fmt.Errorf("task %q: %w", id, store.ErrNotFound) }

// TaskCreate implements store.Store.
func (s *Store) TaskCreate(ctx context.Context, p *store.TaskCreateParams) ([]store.TaskChange, error) {
	if p == nil || len(p.Tasks) == 0 {
		return nil, nil
	}
	if err := store.CheckTaskCreates(p.Tasks); err != nil {
		return nil, err
	}
	for _, c := range p.Tasks {
		if err := checkText("id", c.ID, "title", c.Title, "kind", c.Kind, "payload_json", c.PayloadJSON,
			"role", c.Role, "assignee", c.Assignee, "note", c.Note,
			"last_error", c.History.LastError, "progress", c.History.Progress); err != nil {
			return nil, err
		}
		if err := checkTexts("depends_on", c.DependsOn); err != nil {
			return nil, err
		}
		for k, v := range c.Labels {
			if err := checkText("labels", k, "labels", v); err != nil {
				return nil, err
			}
		}
	}
	now := norm(p.Now)
	// One lookup answers both questions: which new ids are taken, and
	// what state each dependency outside the batch is in.
	lookup := make([]string, 0, len(p.Tasks))
	seen := make(map[string]bool, len(p.Tasks))
	for _, c := range p.Tasks {
		for _, id := range append([]string{c.ID}, c.DependsOn...) {
			if !seen[id] {
				seen[id] = true
				lookup = append(lookup, id)
			}
		}
	}

	var out []store.TaskChange
	err := s.inTx(ctx, "TaskCreate", func(t *txn) error {
		var paused bool
		stored := make(map[string]store.TaskState)
		b := t.batch()
		b.Queue(qPausedShare).QueryRow(func(r pgx.Row) error { return r.Scan(&paused) })
		b.Queue(qStatesShare, lookup).Query(func(rs pgx.Rows) error {
			var (
				id    string
				state int16
			)
			_, err := pgx.ForEachRow(rs, []any{&id, &state}, func() error {
				stored[id] = store.TaskState(state)
				return nil
			})
			return err
		})
		if err := t.send(b); err != nil {
			return err
		}

		// The new rows travel as one array per column.
		n := len(p.Tasks)
		text := func() []string { return make([]string, n) }
		ints := func() []int32 { return make([]int32, n) }
		var (
			ids, titles, kinds, payloads, roles = text(), text(), text(), text(), text()
			assignees, deps, labels, notes      = text(), text(), text(), text()
			priorities, maxAttempts, tiers      = ints(), ints(), ints()
			states                              = make([]int16, n)
			runAfter                            = make([]pgtype.Timestamptz, n)
			byQueue, gatedPending               = make([]bool, n), make([]bool, n)
			approvalIDs, spendTiers             = text(), text()
			depTask, depOn                      []string
			depPos                              []int32
		)
		batch := make(map[string]store.TaskState, n)
		t.changes = t.changes[:0]
		for i, c := range p.Tasks {
			if _, ok := stored[c.ID]; ok {
				return fmt.Errorf("task %q: %w", c.ID, store.ErrAlreadyExists)
			}
			if _, ok := batch[c.ID]; ok {
				return fmt.Errorf("task %q: %w", c.ID, store.ErrAlreadyExists)
			}
			allDone := true
			for pos, d := range c.DependsOn {
				st, ok := batch[d]
				if !ok {
					st, ok = stored[d]
				}
				if !ok {
					return store.InvalidField("depends_on", "task %s: dependency %q is neither a stored task nor one earlier in the batch", c.ID, d)
				}
				allDone = allDone && st == store.StateDone
				depTask, depPos, depOn = append(depTask, c.ID), append(depPos, int32(pos)), append(depOn, d)
			}
			state := c.InitialState
			if c.Approval != nil {
				gate := &store.Task{ID: c.ID, State: state}
				if err := gate.Gate(c.Approval); err != nil {
					return err
				}
				if err := checkApprovalText(c.Approval); err != nil {
					return err
				}
				state, approvalIDs[i], gatedPending[i] = gate.State, gate.ApprovalID, gate.ApprovalPending
			}
			if state == store.StateUnspecified || state == store.StateReady {
				switch {
				case !allDone:
					state = store.StateBacklog
				case paused:
					state, byQueue[i] = store.StatePaused, true
				default:
					state = store.StateReady
				}
			}
			batch[c.ID] = state
			ids[i], titles[i], kinds[i], payloads[i], roles[i], assignees[i], notes[i] = c.ID, c.Title, c.Kind, c.PayloadJSON, c.Role, c.Assignee, c.Note
			spendTiers[i] = c.Tier
			priorities[i], maxAttempts[i], tiers[i], states[i] = c.Priority, c.MaxAttempts, c.ApprovalTier, int16(state)
			if maxAttempts[i] == 0 {
				maxAttempts[i] = store.DefaultMaxAttempts
			}
			deps[i], labels[i] = "[]", "{}"
			if len(c.DependsOn) > 0 {
				deps[i] = jsonText(c.DependsOn)
			}
			if len(c.Labels) > 0 {
				labels[i] = jsonText(c.Labels)
			}
			runAfter[i] = ts(norm(c.RunAfter))
			t.changes = append(t.changes, store.RemoteChange{TaskID: c.ID, State: state})
		}

		var rows []*row
		err := t.commit(func(b *pgx.Batch) {
			queueRows(b, &rows, qInsertTasks, ids, titles, kinds, payloads, roles, assignees, priorities, states, maxAttempts,
				deps, tiers, labels, notes, runAfter, now, byQueue, approvalIDs, gatedPending, spendTiers)
			if len(depTask) > 0 {
				b.Queue(qInsertDeps, depTask, depPos, depOn)
			}
			queueHistory(b, p.Tasks)
			// Gated tasks' requests, after the tasks they name.
			for _, c := range p.Tasks {
				if c.Approval != nil {
					queueApprovalInsert(b, c.Approval, now)
				}
			}
		})
		if err != nil {
			return err
		}
		bySeq(rows)
		withHistory(rows, p.Tasks)
		out = changes(rows, store.StateUnspecified)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TaskGet implements store.Store.
func (s *Store) TaskGet(ctx context.Context, id string) (*store.Task, error) {
	if !pgText(id) {
		return nil, notFound(id)
	}
	var rows []*row
	err := s.read(ctx, "TaskGet", func(ctx context.Context) error {
		rs, err := s.pool.Query(ctx, qGetByID, id)
		if err != nil {
			return err
		}
		rows, err = scanRows(rs)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, notFound(id)
	}
	return rows[0].t, nil
}

// TaskList implements store.Store.
func (s *Store) TaskList(ctx context.Context, p *store.TaskListParams) (*store.TaskListResult, error) {
	if p == nil {
		p = &store.TaskListParams{}
	}
	at, err := store.ParseTaskCursor(p.Cursor, p.NewestFirst)
	if err != nil {
		return nil, err
	}
	// Newest first is the same scan of the primary key, backwards.
	next, order := " seq > $1", " ORDER BY seq"
	if p.NewestFirst {
		next, order = " seq < $1", " ORDER BY seq DESC"
	}
	if err := checkText("role", p.Role, "assignee", p.Assignee, "kind", p.Kind, "id_prefix", p.IDPrefix); err != nil {
		return nil, err
	}
	if err := checkTexts("ids", p.IDs); err != nil {
		return nil, err
	}
	for k, v := range p.Labels {
		if err := checkText("labels", k, "labels", v); err != nil {
			return nil, err
		}
	}

	bounded := p.MaxBytes > 0 || p.Summary
	var b strings.Builder
	if bounded {
		// The page's rows are chosen from their sizes alone; only those
		// that fit are then read.
		size := sizeFull
		if p.Summary {
			size = sizeSummary
		}
		b.WriteString("-- name: TaskList\nWITH page AS (SELECT seq, " + size + " AS size FROM tasks WHERE" + next)
	} else {
		b.WriteString("-- name: TaskList\nSELECT " + taskCols + " FROM tasks WHERE" + next)
	}
	args := []any{at}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	filter := p.Filter()
	writeFilter(&b, &filter, arg)
	if len(p.IDs) > 0 {
		b.WriteString(" AND id = ANY(" + arg(p.IDs) + "::text[])")
	}
	if p.IDPrefix != "" {
		b.WriteString(idPrefixFilter(p.IDPrefix, arg))
	}
	b.WriteString(order)
	// One row past the page says whether there is a next page.
	limit := 0
	if p.Limit > 0 && p.Limit < math.MaxInt32 {
		limit = p.Limit + 1
		b.WriteString(" LIMIT " + arg(limit))
	}
	if bounded {
		return s.taskListBounded(ctx, p, &b, args, limit, order)
	}

	var rows []*row
	err = s.read(ctx, "TaskList", func(ctx context.Context) error {
		rs, err := s.pool.Query(ctx, b.String(), args...)
		if err != nil {
			return err
		}
		rows, err = scanRows(rs)
		return err
	})
	if err != nil {
		return nil, err
	}
	res := &store.TaskListResult{}
	if limit > 0 && len(rows) == limit {
		rows = rows[:p.Limit]
		res.NextCursor = store.FormatTaskCursor(rows[len(rows)-1].seq, p.NewestFirst)
	}
	res.Tasks = make([]*store.Task, len(rows))
	for i, r := range rows {
		res.Tasks[i] = r.t
	}
	return res, nil
}

// idPrefixFilter is the condition keeping ids that start with prefix: a
// range the id index answers (in the database's collation, which LIKE
// could not use), then the exact comparison. arg adds a parameter.
func idPrefixFilter(prefix string, arg func(any) string) string {
	lo, hi := store.IDPrefixRange(prefix)
	cond := " AND id >= " + arg(lo) + "::text"
	if hi != "" {
		cond += " AND id < " + arg(hi) + "::text"
	}
	n := arg(prefix)
	return cond + " AND left(id, char_length(" + n + "::text)) = " + n + "::text"
}

// summaryCols is taskCols with the large fields left out.
var summaryCols = strings.NewReplacer(" payload_json,", " ''::text,", " last_error,", " ''::text,", " progress,", " ''::text,", " note,", " ''::text,", " result_json,", " ''::text,").Replace(taskCols)

// taskListBounded finishes a TaskList whose page is bounded by bytes or
// made of summaries: b holds the page's candidates (seq and size, up to
// limit) as the CTE "page"; the rows kept are those whose running size
// fits MaxBytes, and always the first, in the list's order (" ORDER BY
// seq" or " ORDER BY seq DESC").
func (s *Store) taskListBounded(ctx context.Context, p *store.TaskListParams, b *strings.Builder, args []any, limit int, order string) (*store.TaskListResult, error) {
	cols := taskCols
	if p.Summary {
		cols = summaryCols
	}
	budget := p.MaxBytes
	if budget <= 0 {
		budget = math.MaxInt64
	}
	args = append(args, budget)
	b.WriteString(`), sums AS (SELECT seq, size, sum(size) OVER (` + order + `) AS run, count(*) OVER () AS n FROM page)
SELECT octet_length(payload_json), sums.n, ` + cols + ` FROM sums JOIN tasks USING (seq)
WHERE run <= $` + strconv.Itoa(len(args)) + `::bigint OR run = size` + order)

	var (
		rows       []*row
		candidates int64
	)
	err := s.read(ctx, "TaskList", func(ctx context.Context) error {
		rows, candidates = nil, 0
		rs, err := s.pool.Query(ctx, b.String(), args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var payloadBytes int64
			r, err := scanRow(rs, &payloadBytes, &candidates)
			if err != nil {
				return err
			}
			if p.Summary {
				r.t.Summary, r.t.PayloadBytes = true, payloadBytes
			}
			rows = append(rows, r)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, err
	}
	res := &store.TaskListResult{}
	if limit > 0 && len(rows) == limit {
		rows = rows[:p.Limit]
	}
	// A candidate left out, by the limit or the budget, starts the next page.
	if int64(len(rows)) < candidates {
		res.NextCursor = store.FormatTaskCursor(rows[len(rows)-1].seq, p.NewestFirst)
	}
	res.Tasks = make([]*store.Task, len(rows))
	for i, r := range rows {
		res.Tasks[i] = r.t
	}
	return res, nil
}

// claimReq is one TaskClaim call.
type claimReq struct {
	request
	p   *store.TaskClaimParams
	now time.Time
	out []*row
	// n is how many tasks the claim may take (Max, less under MaxHeld);
	// capErr refuses it when its agent holds MaxHeld already.
	n      int
	capErr error
}

// TaskClaim implements store.Store.
func (s *Store) TaskClaim(ctx context.Context, p *store.TaskClaimParams) ([]store.TaskChange, error) {
	switch {
	case p.Agent == "":
		return nil, store.InvalidField("agent", "required")
	case p.Max <= 0:
		return nil, store.InvalidField("max", "must be positive, got %d", p.Max)
	case p.LeaseDuration <= 0:
		return nil, store.InvalidField("lease_duration", "must be positive, got %s", p.LeaseDuration)
	case len(p.Roles) > store.MaxClaimRoles:
		return nil, store.InvalidField("roles", "at most %d, got %d", store.MaxClaimRoles, len(p.Roles))
	}
	if err := firstErr(checkText("agent", p.Agent), checkTexts("roles", p.Roles)); err != nil {
		return nil, err
	}
	r := &claimReq{request: newRequest(ctx), p: p, now: norm(p.Now)}
	if err := s.ops.do(r); err != nil {
		return nil, err
	}
	byClaimOrder(r.out)
	return changes(r.out, store.StateReady), nil
}

// TaskRelease implements store.Store.
func (s *Store) TaskRelease(ctx context.Context, p *store.TaskReleaseParams) ([]store.TaskChange, error) {
	if len(p.Leases) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(p.Leases))
	for _, ref := range p.Leases {
		if err := checkLease(ref); err != nil {
			return nil, err
		}
		ids = append(ids, ref.TaskID)
	}
	now := norm(p.Now)
	var out []store.TaskChange
	err := s.inTx(ctx, "TaskRelease", func(t *txn) error {
		out = nil
		var (
			paused bool
			rows   []*row
		)
		b := t.batch()
		b.Queue(qPausedShare).QueryRow(func(r pgx.Row) error { return r.Scan(&paused) })
		queueRows(b, &rows, qGetManyForUpdate, ids)
		if err := t.send(b); err != nil {
			return err
		}
		byID := make(map[string]*row, len(rows))
		for _, r := range rows {
			byID[r.t.ID] = r
		}
		var held []*row
		for _, ref := range p.Leases {
			r := byID[ref.TaskID]
			if r == nil || store.CheckLease(r.t, ref, now) != nil {
				continue
			}
			r.t.Release(paused, now)
			held = append(held, r)
		}
		if len(held) == 0 {
			return nil
		}
		out = changes(held, store.StateInProgress)
		t.announce(out)
		return t.commit(queueSave(held...))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TaskNextRunAfter implements store.Store.
func (s *Store) TaskNextRunAfter(ctx context.Context, now time.Time) (time.Time, bool, error) {
	var next pgtype.Timestamptz
	err := s.read(ctx, "TaskNextRunAfter", func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, qNextRunAfter, norm(now)).Scan(&next)
	})
	if err != nil || !next.Valid {
		return time.Time{}, false, err
	}
	return next.Time.UTC(), true, nil
}

// TaskRenew implements store.Store.
func (s *Store) TaskRenew(ctx context.Context, p *store.TaskRenewParams) (*store.Task, error) {
	if p.LeaseDuration <= 0 {
		return nil, store.InvalidField("lease_duration", "must be positive, got %s", p.LeaseDuration)
	}
	if err := firstErr(checkLease(p.Lease), checkText("progress", p.Progress)); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var out *store.Task
	err := s.inTx(ctx, "TaskRenew", func(t *txn) error {
		ref := p.Lease
		rows, err := t.rows(qRenew, ref.TaskID, ref.FencingToken, ref.Agent, now, norm(now.Add(p.LeaseDuration)), p.Progress)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return t.leaseError(ref, now)
		}
		out = rows[0].t
		t.announce([]store.TaskChange{{Task: out, PreviousState: out.State}})
		return nil
	})
	return out, err
}

// leaseError explains why a lease check in SQL matched nothing.
func (t *txn) leaseError(ref store.LeaseRef, now time.Time) error {
	rows, err := t.rows(qGetByID, ref.TaskID)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return notFound(ref.TaskID)
	}
	if err := store.CheckLease(rows[0].t, ref, now); err != nil {
		return err
	}
	// The lease holds now but did not when the statement ran: it changed
	// underneath (a lost race the caller may retry).
	return fmt.Errorf("task %s: %w: the lease changed while the call ran", ref.TaskID, store.ErrStaleLease)
}

// completeReq is one TaskComplete call.
type completeReq struct {
	request
	p   *store.TaskCompleteParams
	now time.Time
	// bad holds the error of each item that cannot be sent to the
	// database; those items fail alone.
	bad map[int]error
	res *store.TaskCompleteResult
}

// TaskComplete implements store.Store.
func (s *Store) TaskComplete(ctx context.Context, p *store.TaskCompleteParams) (*store.TaskCompleteResult, error) {
	if len(p.Items) == 0 {
		return &store.TaskCompleteResult{Results: []store.TaskCompleteItemResult{}}, nil
	}
	r := &completeReq{request: newRequest(ctx), p: p, now: norm(p.Now)}
	for i, it := range p.Items {
		if err := firstErr(checkLease(it.Lease), checkText("note", it.Note), checkText("result_json", it.ResultJSON)); err != nil {
			if r.bad == nil {
				r.bad = make(map[int]error)
			}
			r.bad[i] = err
		}
	}
	if err := s.ops.do(r); err != nil {
		return nil, err
	}
	return r.res, nil
}

// TaskFail implements store.Store.
func (s *Store) TaskFail(ctx context.Context, p *store.TaskFailParams) ([]store.TaskChange, error) {
	if err := firstErr(checkLease(p.Lease), checkText("error", p.Error)); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var out []store.TaskChange
	err := s.inTx(ctx, "TaskFail", func(t *txn) error {
		var paused bool
		var rows []*row
		b := t.batch()
		b.Queue(qPausedShare).QueryRow(func(r pgx.Row) error { return r.Scan(&paused) })
		queueRows(b, &rows, qGetForUpdate, p.Lease.TaskID)
		if err := t.send(b); err != nil {
			return err
		}
		if len(rows) == 0 {
			return notFound(p.Lease.TaskID)
		}
		r := rows[0]
		if err := store.CheckLease(r.t, p.Lease, now); err != nil {
			ended, endedErr := t.ended([]string{r.t.ID})
			if endedErr != nil {
				return endedErr
			}
			if err := store.CheckFailReplay(r.t, ended[r.t.ID], p, err); err != nil {
				return err
			}
			out = []store.TaskChange{{Task: r.t, PreviousState: r.t.State}}
			return nil
		}
		holder := r.t.LeaseHolder
		r.t.LastError = p.Error
		r.t.EndLease()
		r.t.Retry(p.Permanent, paused, p.Backoff, now)
		r.t.RunAfter = norm(r.t.RunAfter) // PostgreSQL keeps microseconds
		out = []store.TaskChange{{Task: r.t.Clone(), PreviousState: store.StateInProgress}}
		t.announce(out)
		return t.commit(queueSave(r), queueSetEnded(r, holder))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TaskMove implements store.Store.
func (s *Store) TaskMove(ctx context.Context, p *store.TaskMoveParams) ([]store.TaskChange, error) {
	if !p.To.Valid() {
		return nil, store.InvalidField("to", "unknown state %s", p.To)
	}
	if !pgText(p.TaskID) {
		return nil, notFound(p.TaskID)
	}
	if err := checkText("reason", p.Reason); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var out []store.TaskChange
	err := s.inTx(ctx, "TaskMove", func(t *txn) error {
		var rows []*row
		b := t.batch()
		queueRows(b, &rows, qGetForUpdate, p.TaskID)
		if p.To == store.StateDone {
			// Lock the dependents before the task can be seen DONE; see
			// qComplete.
			b.Queue(qLockDependents, p.TaskID)
		}
		if err := t.send(b); err != nil {
			return err
		}
		if len(rows) == 0 {
			return notFound(p.TaskID)
		}
		r := rows[0]
		task := r.t
		from := task.State
		if err := store.OperatorMove(task, p.To, p.Reason, now); err != nil {
			return err
		}
		out = []store.TaskChange{{Task: task.Clone(), PreviousState: from}}
		if p.To == store.StateDone {
			var promoted []*row
			b := t.batch()
			queueSave(r)(b)
			queueRows(b, &promoted, qPromote, now, []string{task.ID})
			if err := t.send(b); err != nil {
				return err
			}
			bySeq(promoted)
			out = append(out, changes(promoted, store.StateBacklog)...)
			t.announce(out)
			return t.commit()
		}
		t.announce(out)
		return t.commit(queueSave(r))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TaskSetPriority implements store.Store.
func (s *Store) TaskSetPriority(ctx context.Context, p *store.TaskSetPriorityParams) (*store.Task, error) {
	if !pgText(p.TaskID) {
		return nil, notFound(p.TaskID)
	}
	now := norm(p.Now)
	var out *store.Task
	err := s.inTx(ctx, "TaskSetPriority", func(t *txn) error {
		rows, err := t.rows(qSetPriority, p.TaskID, p.Priority, now)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return notFound(p.TaskID)
		}
		out = rows[0].t
		t.announce([]store.TaskChange{{Task: out, PreviousState: out.State}})
		return nil
	})
	return out, err
}

// TaskRescueExpired implements store.Store.
func (s *Store) TaskRescueExpired(ctx context.Context, p *store.TaskRescueExpiredParams) ([]store.TaskChange, error) {
	now := norm(p.Now)
	var out []store.TaskChange
	err := s.inTx(ctx, "TaskRescueExpired", func(t *txn) error {
		out = nil
		var paused bool
		var rows []*row
		b := t.batch()
		b.Queue(qPausedShare).QueryRow(func(r pgx.Row) error { return r.Scan(&paused) })
		queueRows(b, &rows, qExpired, now)
		if err := t.send(b); err != nil || len(rows) == 0 {
			return err
		}
		for _, r := range rows {
			task := r.t
			task.LastError = fmt.Sprintf("lease held by %s expired at %s", task.LeaseHolder, task.LeaseExpiresAt.Format(time.RFC3339Nano))
			task.EndLease()
			task.Retry(false, paused, p.Backoff, now)
			task.RunAfter = norm(task.RunAfter) // PostgreSQL keeps microseconds
		}
		out = changes(rows, store.StateInProgress)
		t.announce(out)
		return t.commit(queueSave(rows...))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TaskRequeueStuck implements store.Store.
func (s *Store) TaskRequeueStuck(ctx context.Context, p *store.TaskRequeueStuckParams) ([]store.TaskChange, error) {
	now := norm(p.Now)
	cut := norm(now.Add(-p.OlderThan))
	var out []store.TaskChange
	if p.DryRun {
		var rows []*row
		err := s.read(ctx, "TaskRequeueStuck", func(ctx context.Context) error {
			rs, err := s.pool.Query(ctx, strings.TrimSuffix(qStuck, " FOR UPDATE"), cut)
			if err != nil {
				return err
			}
			rows, err = scanRows(rs)
			return err
		})
		if err != nil {
			return nil, err
		}
		return changes(rows, store.StateInProgress), nil
	}
	err := s.inTx(ctx, "TaskRequeueStuck", func(t *txn) error {
		out = nil
		var paused bool
		var rows []*row
		b := t.batch()
		b.Queue(qPausedShare).QueryRow(func(r pgx.Row) error { return r.Scan(&paused) })
		queueRows(b, &rows, qStuck, cut)
		if err := t.send(b); err != nil || len(rows) == 0 {
			return err
		}
		for _, r := range rows {
			r.t.EndLease()
			st, byQueue := store.ReadyState(paused)
			r.t.SetState(st, now)
			r.t.PausedByQueue = byQueue
		}
		out = changes(rows, store.StateInProgress)
		t.announce(out)
		return t.commit(queueSave(rows...))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// queueSave queues the statement that writes rows back.
func queueSave(rows ...*row) func(b *pgx.Batch) {
	n := len(rows)
	var (
		seqs, tokens                                         = make([]int64, n), make([]int64, n)
		priorities, attempts                                 = make([]int32, n), make([]int32, n)
		states                                               = make([]int16, n)
		lastErrors, progress, notes, holders                 = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		expires, claimed, renewed, runAfter, updated, change = make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n),
			make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n)
		byQueue = make([]bool, n)
	)
	for i, r := range rows {
		t := r.t
		seqs[i], tokens[i], priorities[i], attempts[i], states[i] = r.seq, t.FencingToken, t.Priority, t.Attempt, int16(t.State)
		lastErrors[i], progress[i], notes[i], holders[i] = t.LastError, t.Progress, t.Note, t.LeaseHolder
		expires[i], claimed[i], renewed[i], runAfter[i] = ts(t.LeaseExpiresAt), ts(t.ClaimedAt), ts(t.RenewedAt), ts(t.RunAfter)
		updated[i], change[i] = ts(t.UpdatedAt), ts(t.StateChangedAt)
		byQueue[i] = t.PausedByQueue
	}
	return func(b *pgx.Batch) {
		b.Queue(qSave, seqs, priorities, states, attempts, lastErrors, progress, notes, holders, tokens,
			expires, claimed, renewed, runAfter, updated, change, byQueue)
	}
}

// queueSetEnded records that holder's lease on r, under r's token, was
// ended by a completion or failure.
func queueSetEnded(r *row, holder string) func(b *pgx.Batch) {
	return func(b *pgx.Batch) { b.Queue(qSetEnded, r.seq, holder, r.t.FencingToken) }
}

// queueEnded queues the read of the leases that completions or failures
// of the tasks last ended, into out.
func queueEnded(b *pgx.Batch, out map[string]store.EndedLease, ids []string) {
	b.Queue(qEnded, ids).Query(func(rs pgx.Rows) error {
		defer rs.Close()
		for rs.Next() {
			var (
				id string
				e  store.EndedLease
			)
			if err := rs.Scan(&id, &e.Holder, &e.FencingToken); err != nil {
				return err
			}
			out[id] = e
		}
		return rs.Err()
	})
}

// ended reads the leases that completions or failures of the tasks last
// ended.
func (t *txn) ended(ids []string) (map[string]store.EndedLease, error) {
	out := make(map[string]store.EndedLease, len(ids))
	b := t.batch()
	queueEnded(b, out, ids)
	return out, t.send(b)
}

// jsonText encodes v as a JSON parameter.
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only strings and maps and slices of strings are encoded here.
		panic(fmt.Sprintf("postgres: encode parameter: %v", err))
	}
	return string(b)
}
