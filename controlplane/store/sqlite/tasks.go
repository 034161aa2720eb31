package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

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
	now := norm(p.Now)
	var out []store.TaskChange
	err := s.writeTx(ctx, "TaskCreate", func(w *wtx) error {
		// One lookup answers both questions: which new ids are taken, and
		// what state each dependency outside the batch is in.
		lookup := make([]string, 0, len(p.Tasks))
		for _, c := range p.Tasks {
			lookup = append(lookup, c.ID)
			lookup = append(lookup, c.DependsOn...)
		}
		stored, err := w.states(lookup)
		if err != nil {
			return err
		}
		paused, _, err := w.paused()
		if err != nil {
			return err
		}

		batch := make(map[string]store.TaskState, len(p.Tasks))
		insert := make([]any, 0, len(p.Tasks)*insertCols)
		var deps []any
		out = make([]store.TaskChange, 0, len(p.Tasks))
		for _, c := range p.Tasks {
			if _, ok := stored[c.ID]; ok {
				return fmt.Errorf("task %q: %w", c.ID, store.ErrAlreadyExists)
			}
			if _, ok := batch[c.ID]; ok {
				return fmt.Errorf("task %q: %w", c.ID, store.ErrAlreadyExists)
			}
			allDone := true
			for i, d := range c.DependsOn {
				st, ok := batch[d]
				if !ok {
					st, ok = stored[d]
				}
				if !ok {
					return store.InvalidField("depends_on", "task %s: dependency %q is neither a stored task nor one earlier in the batch", c.ID, d)
				}
				allDone = allDone && st == store.StateDone
				deps = append(deps, c.ID, i, d)
			}
			t := &store.Task{
				ID:             c.ID,
				Title:          c.Title,
				Kind:           c.Kind,
				PayloadJSON:    c.PayloadJSON,
				Role:           c.Role,
				Assignee:       c.Assignee,
				Priority:       c.Priority,
				State:          c.InitialState,
				MaxAttempts:    c.MaxAttempts,
				ApprovalTier:   c.ApprovalTier,
				Tier:           c.Tier,
				RunAfter:       norm(c.RunAfter),
				Note:           c.Note,
				CreatedAt:      now,
				UpdatedAt:      now,
				StateChangedAt: now,
			}
			if len(c.DependsOn) > 0 {
				t.DependsOn = slices.Clone(c.DependsOn)
			}
			if len(c.Labels) > 0 {
				t.Labels = maps.Clone(c.Labels)
			}
			if t.MaxAttempts == 0 {
				t.MaxAttempts = store.DefaultMaxAttempts
			}
			t.Attempt, t.LastError, t.Progress = c.History.Attempt, c.History.LastError, c.History.Progress
			if c.Approval != nil {
				if err := t.Gate(c.Approval); err != nil {
					return err
				}
			}
			if t.State == store.StateUnspecified || t.State == store.StateReady {
				if allDone {
					t.State, t.PausedByQueue = store.ReadyState(paused)
				} else {
					t.State = store.StateBacklog
				}
			}
			batch[t.ID] = t.State
			dependsOn, labels := "[]", "{}"
			if t.DependsOn != nil {
				dependsOn = jsonText(t.DependsOn)
			}
			if t.Labels != nil {
				labels = jsonText(t.Labels)
			}
			insert = append(insert,
				t.ID, t.Title, t.Kind, t.PayloadJSON, t.Role, t.Assignee, t.Priority, int32(t.State), t.MaxAttempts,
				dependsOn, t.ApprovalTier, labels, t.Note, toNanos(t.RunAfter),
				toNanos(now), toNanos(now), toNanos(now), boolInt(t.PausedByQueue), t.ApprovalID, boolInt(t.ApprovalPending),
				t.Tier,
			)
			out = append(out, store.TaskChange{Task: t})
		}
		if err := w.execBatch(qInsertTasks, insertCols, insert); err != nil {
			return err
		}
		if err := w.execBatch(qInsertDeps, 3, deps); err != nil {
			return err
		}
		if err := w.keepHistory(p.Tasks); err != nil {
			return err
		}
		// Gated tasks' requests, after the tasks they name.
		for _, c := range p.Tasks {
			if c.Approval != nil {
				if _, err := w.insertApproval(c.Approval, now); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The inserted records were built here; hand out copies so the caller
	// owns what it gets.
	for i := range out {
		out[i].Task = out[i].Task.Clone()
	}
	return out, nil
}

// TaskGet implements store.Store.
func (s *Store) TaskGet(ctx context.Context, id string) (*store.Task, error) {
	rows, err := s.readRows(ctx, "TaskGet", qGetByID, id)
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
	// Newest first is the same scan of the seq key, backwards.
	next, order := " seq > ?", " ORDER BY seq"
	if p.NewestFirst {
		next, order = " seq < ?", " ORDER BY seq DESC"
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
		b.WriteString("WITH page AS (SELECT seq, " + size + " AS size FROM tasks WHERE" + next)
	} else {
		b.WriteString("SELECT " + taskCols + " FROM tasks WHERE" + next)
	}
	args := []any{at}
	filter := p.Filter()
	writeFilter(&b, &filter, &args)
	if len(p.IDs) > 0 {
		b.WriteString(" AND id IN (SELECT value FROM json_each(?))")
		args = append(args, jsonText(p.IDs))
	}
	if p.IDPrefix != "" {
		b.WriteString(idPrefixFilter(p.IDPrefix, &args))
	}
	// One row past the page says whether there is a next page.
	limit := -1
	if p.Limit > 0 && p.Limit < math.MaxInt32 {
		limit = p.Limit + 1
	}
	b.WriteString(order + " LIMIT ?")
	args = append(args, limit)
	if bounded {
		return s.taskListBounded(ctx, p, &b, args, limit, order)
	}

	rows, err := s.readRows(ctx, "TaskList", b.String(), args...)
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
// range the id index answers (LIKE could not use it), then the exact
// comparison; substr counts characters, as RuneCountInString does.
func idPrefixFilter(prefix string, args *[]any) string {
	lo, hi := store.IDPrefixRange(prefix)
	cond := " AND id >= ?"
	*args = append(*args, lo)
	if hi != "" {
		cond += " AND id < ?"
		*args = append(*args, hi)
	}
	*args = append(*args, utf8.RuneCountInString(prefix), prefix)
	return cond + " AND substr(id, 1, ?) = ?"
}

// summaryCols is taskCols with the large fields left out.
var summaryCols = strings.NewReplacer(" payload_json,", " '',", " last_error,", " '',", " progress,", " '',", " note,", " '',", " result_json,", " '',").Replace(taskCols)

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
	b.WriteString(`), sums AS (SELECT seq, size, SUM(size) OVER (` + order + `) AS run, COUNT(*) OVER () AS n FROM page)
	SELECT ` + cols + `, octet_length(payload_json), sums.n FROM sums JOIN tasks USING (seq)
	WHERE run <= ? OR run = size` + order)
	args = append(args, budget)

	st, err := s.rs.get(ctx, b.String())
	if err != nil {
		return nil, dbErr("TaskList", err)
	}
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, dbErr("TaskList", err)
	}
	defer rs.Close()
	var (
		rows       []*row
		candidates int
	)
	for rs.Next() {
		var payloadBytes int64
		r, err := scanRow(rs, &payloadBytes, &candidates)
		if err != nil {
			return nil, dbErr("TaskList", err)
		}
		if p.Summary {
			r.t.Summary, r.t.PayloadBytes = true, payloadBytes
		}
		rows = append(rows, r)
	}
	if err := rs.Err(); err != nil {
		return nil, dbErr("TaskList", err)
	}
	res := &store.TaskListResult{}
	if limit > 0 && len(rows) == limit {
		rows = rows[:p.Limit]
	}
	// A candidate left out, by the limit or the budget, starts the next page.
	if len(rows) < candidates {
		res.NextCursor = store.FormatTaskCursor(rows[len(rows)-1].seq, p.NewestFirst)
	}
	res.Tasks = make([]*store.Task, len(rows))
	for i, r := range rows {
		res.Tasks[i] = r.t
	}
	return res, nil
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
	now := norm(p.Now)
	slots := claimRoleSlots(p.Roles)
	budget := p.MaxBytes
	if budget <= 0 {
		budget = math.MaxInt64
	}
	var claimed []*row
	err := s.writeTx(ctx, "TaskClaim", func(w *wtx) error {
		n := p.Max
		if p.MaxHeld > 0 {
			// One writer: nothing can claim between this count and the claim.
			held, err := w.heldBy(p.Agent)
			if err != nil {
				return err
			}
			if n, err = p.LeaseRoom(held, n); err != nil {
				return err
			}
		}
		var err error
		args := append([]any{p.Agent, toNanos(now), toNanos(now.Add(p.LeaseDuration)), n, budget}, slots...)
		args = append(args, excludeTiersJSON(p.ExcludeTiers))
		query := claimSQL(len(slots))
		if n == 1 {
			query = claimOneSQL(len(slots))
		}
		claimed, err = w.rows(query, args...)
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(claimed, func(a, b *row) int {
		if a.t.Priority != b.t.Priority {
			return cmpInt64(int64(b.t.Priority), int64(a.t.Priority))
		}
		return cmpInt64(a.seq, b.seq)
	})
	return changes(claimed, store.StateReady), nil
}

// TaskRelease implements store.Store.
func (s *Store) TaskRelease(ctx context.Context, p *store.TaskReleaseParams) ([]store.TaskChange, error) {
	if len(p.Leases) == 0 {
		return nil, nil
	}
	now := norm(p.Now)
	var out []store.TaskChange
	err := s.writeTx(ctx, "TaskRelease", func(w *wtx) error {
		out = nil
		paused, _, err := w.paused()
		if err != nil {
			return err
		}
		var held []*row
		for _, ref := range p.Leases {
			r, err := w.held(ref, now)
			if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrStaleLease) {
				continue
			}
			if err != nil {
				return err
			}
			r.t.Release(paused, now)
			held = append(held, r)
		}
		out = changes(held, store.StateInProgress)
		return w.save(held...)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TaskNextRunAfter implements store.Store.
func (s *Store) TaskNextRunAfter(ctx context.Context, now time.Time) (time.Time, bool, error) {
	st, err := s.rs.get(ctx, qNextRunAfter)
	if err != nil {
		return time.Time{}, false, dbErr("TaskNextRunAfter", err)
	}
	var next sql.NullInt64
	if err := st.QueryRowContext(ctx, toNanos(now)).Scan(&next); err != nil {
		return time.Time{}, false, dbErr("TaskNextRunAfter", err)
	}
	if !next.Valid {
		return time.Time{}, false, nil
	}
	return fromNanos(next.Int64), true, nil
}

// TaskRenew implements store.Store.
func (s *Store) TaskRenew(ctx context.Context, p *store.TaskRenewParams) (*store.Task, error) {
	if p.LeaseDuration <= 0 {
		return nil, store.InvalidField("lease_duration", "must be positive, got %s", p.LeaseDuration)
	}
	now := norm(p.Now)
	var out *store.Task
	err := s.writeTx(ctx, "TaskRenew", func(w *wtx) error {
		r, err := w.held(p.Lease, now)
		if err != nil {
			return err
		}
		t := r.t
		t.LeaseExpiresAt = now.Add(p.LeaseDuration)
		t.RenewedAt = now
		t.UpdatedAt = now
		if p.Progress != "" {
			t.Progress = p.Progress
		}
		out = t.Clone()
		return w.save(r)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TaskComplete implements store.Store.
func (s *Store) TaskComplete(ctx context.Context, p *store.TaskCompleteParams) (*store.TaskCompleteResult, error) {
	now := norm(p.Now)
	res := &store.TaskCompleteResult{Results: make([]store.TaskCompleteItemResult, len(p.Items))}
	err := s.writeTx(ctx, "TaskComplete", func(w *wtx) error {
		// Pass 1: the first item naming each task, in set-based statements
		// that check the lease and complete in one go.
		var (
			later []int // items left for pass 2, in order
			args  []any
			index = make(map[string]int, len(p.Items)) // task id → its first item
			done  []string
		)
		for i, it := range p.Items {
			if _, dup := index[it.Lease.TaskID]; dup {
				later = append(later, i)
				continue
			}
			index[it.Lease.TaskID] = i
			to := store.StateDone
			if it.Review {
				to = store.StateReview
			}
			args = append(args, it.Lease.TaskID, it.Lease.FencingToken, it.Lease.Agent, int32(to), it.Note, it.ResultJSON)
		}
		const cols = 6
		for len(args) > 0 {
			n := min(len(args)/cols, maxBatchRows)
			rs, err := w.query(qComplete(n), append([]any{toNanos(now)}, args[:n*cols]...)...)
			if err != nil {
				return err
			}
			for rs.Next() {
				var deps bool
				r, err := scanRow(rs, &deps)
				if err != nil {
					rs.Close()
					return dbErr(w.op, err)
				}
				res.Results[index[r.t.ID]].Task = r.t
				if r.t.State == store.StateDone && deps {
					done = append(done, r.t.ID)
				}
			}
			if err := rs.Close(); err != nil {
				return dbErr(w.op, err)
			}
			if err := rs.Err(); err != nil {
				return dbErr(w.op, err)
			}
			args = args[n*cols:]
		}

		// Pass 2, in item order: first items that failed (to say why) and
		// items naming a task again, which see it as earlier items left it.
		for i, it := range p.Items {
			if res.Results[i].Task == nil && index[it.Lease.TaskID] == i {
				later = append(later, i)
			}
		}
		slices.Sort(later)
		for _, i := range later {
			it := p.Items[i]
			r, err := w.byID(it.Lease.TaskID)
			if errors.Is(err, store.ErrNotFound) {
				res.Results[i].Err = err
				continue
			}
			if err != nil {
				return err
			}
			if err := store.CheckLease(r.t, it.Lease, now); err != nil {
				ended, endedErr := w.ended(it.Lease.TaskID)
				if endedErr != nil {
					return endedErr
				}
				if err := store.CheckCompleteReplay(r.t, ended, it, err); err != nil {
					res.Results[i].Err = err
				} else {
					res.Results[i].Task, res.Results[i].Replay = r.t, true
				}
				continue
			}
			to := store.StateDone
			if it.Review {
				to = store.StateReview
			}
			t := r.t
			holder := t.LeaseHolder
			t.SetState(to, now)
			t.EndLease()
			if it.Note != "" {
				t.Note = it.Note
			}
			if err := w.save(r); err != nil {
				return err
			}
			if it.ResultJSON != "" {
				t.ResultJSON = it.ResultJSON
				if _, err := w.exec(qSetResult, t.ResultJSON, r.seq); err != nil {
					return err
				}
			}
			if err := w.setEnded(r, holder); err != nil {
				return err
			}
			if to == store.StateDone {
				done = append(done, t.ID)
			}
			res.Results[i].Task = t.Clone()
		}

		for _, r := range res.Results {
			if r.Task != nil && !r.Replay {
				res.Changes = append(res.Changes, store.TaskChange{Task: r.Task.Clone(), PreviousState: store.StateInProgress})
			}
		}
		promoted, err := w.promote(done, now)
		if err != nil {
			return err
		}
		res.Changes = append(res.Changes, changes(promoted, store.StateBacklog)...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// TaskFail implements store.Store.
func (s *Store) TaskFail(ctx context.Context, p *store.TaskFailParams) ([]store.TaskChange, error) {
	now := norm(p.Now)
	var out []store.TaskChange
	err := s.writeTx(ctx, "TaskFail", func(w *wtx) error {
		r, err := w.byID(p.Lease.TaskID)
		if err != nil {
			return err
		}
		if err := store.CheckLease(r.t, p.Lease, now); err != nil {
			ended, endedErr := w.ended(r.t.ID)
			if endedErr != nil {
				return endedErr
			}
			if err := store.CheckFailReplay(r.t, ended, p, err); err != nil {
				return err
			}
			out = []store.TaskChange{{Task: r.t, PreviousState: r.t.State}}
			return nil
		}
		paused, _, err := w.paused()
		if err != nil {
			return err
		}
		t := r.t
		holder := t.LeaseHolder
		t.LastError = p.Error
		t.EndLease()
		t.Retry(p.Permanent, paused, p.Backoff, now)
		out = []store.TaskChange{{Task: t.Clone(), PreviousState: store.StateInProgress}}
		if err := w.save(r); err != nil {
			return err
		}
		return w.setEnded(r, holder)
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
	now := norm(p.Now)
	var out []store.TaskChange
	err := s.writeTx(ctx, "TaskMove", func(w *wtx) error {
		r, err := w.byID(p.TaskID)
		if err != nil {
			return err
		}
		t := r.t
		from := t.State
		if err := store.OperatorMove(t, p.To, p.Reason, now); err != nil {
			return err
		}
		if err := w.save(r); err != nil {
			return err
		}
		out = []store.TaskChange{{Task: t.Clone(), PreviousState: from}}
		if p.To == store.StateDone {
			promoted, err := w.promote([]string{t.ID}, now)
			if err != nil {
				return err
			}
			out = append(out, changes(promoted, store.StateBacklog)...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TaskSetPriority implements store.Store.
func (s *Store) TaskSetPriority(ctx context.Context, p *store.TaskSetPriorityParams) (*store.Task, error) {
	now := norm(p.Now)
	var out *store.Task
	err := s.writeTx(ctx, "TaskSetPriority", func(w *wtx) error {
		rows, err := w.rows(qSetPriority, p.Priority, toNanos(now), p.TaskID)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return notFound(p.TaskID)
		}
		out = rows[0].t
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TaskRescueExpired implements store.Store.
func (s *Store) TaskRescueExpired(ctx context.Context, p *store.TaskRescueExpiredParams) ([]store.TaskChange, error) {
	now := norm(p.Now)
	var out []store.TaskChange
	err := s.writeTx(ctx, "TaskRescueExpired", func(w *wtx) error {
		rows, err := w.rows(qExpired, toNanos(now))
		if err != nil || len(rows) == 0 {
			return err
		}
		paused, _, err := w.paused()
		if err != nil {
			return err
		}
		for _, r := range rows {
			t := r.t
			t.LastError = fmt.Sprintf("lease held by %s expired at %s", t.LeaseHolder, t.LeaseExpiresAt.Format(time.RFC3339Nano))
			t.EndLease()
			t.Retry(false, paused, p.Backoff, now)
		}
		out = changes(rows, store.StateInProgress)
		return w.save(rows...)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TaskRequeueStuck implements store.Store.
func (s *Store) TaskRequeueStuck(ctx context.Context, p *store.TaskRequeueStuckParams) ([]store.TaskChange, error) {
	now := norm(p.Now)
	var out []store.TaskChange
	err := s.writeTx(ctx, "TaskRequeueStuck", func(w *wtx) error {
		rows, err := w.rows(qStuck, toNanos(now.Add(-p.OlderThan)))
		if err != nil || len(rows) == 0 {
			return err
		}
		if p.DryRun {
			out = changes(rows, store.StateInProgress)
			return nil
		}
		paused, _, err := w.paused()
		if err != nil {
			return err
		}
		for _, r := range rows {
			r.t.EndLease()
			st, byQueue := store.ReadyState(paused)
			r.t.SetState(st, now)
			r.t.PausedByQueue = byQueue
		}
		out = changes(rows, store.StateInProgress)
		return w.save(rows...)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// byID loads one task for update, or ErrNotFound.
func (w *wtx) byID(id string) (*row, error) {
	rows, err := w.rows(qGetByID, id)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, notFound(id)
	}
	return rows[0], nil
}

// held loads the task a lease names and applies the fencing rule.
func (w *wtx) held(ref store.LeaseRef, now time.Time) (*row, error) {
	r, err := w.byID(ref.TaskID)
	if err != nil {
		return nil, err
	}
	if err := store.CheckLease(r.t, ref, now); err != nil {
		return nil, err
	}
	return r, nil
}

// ended reads the lease a completion or failure of the task last ended.
func (w *wtx) ended(id string) (store.EndedLease, error) {
	rs, err := w.query(qEnded, id)
	if err != nil {
		return store.EndedLease{}, err
	}
	defer rs.Close()
	var e store.EndedLease
	if rs.Next() {
		err = rs.Scan(&e.Holder, &e.FencingToken)
	}
	if err == nil {
		err = rs.Err()
	}
	return e, dbErr(w.op, err)
}

// setEnded records that holder's lease on r, under r's token, was ended by
// a completion or failure.
func (w *wtx) setEnded(r *row, holder string) error {
	_, err := w.exec(qSetEnded, holder, r.t.FencingToken, r.seq)
	return err
}

// states returns the stored state of each named task that exists.
func (w *wtx) states(ids []string) (map[string]store.TaskState, error) {
	rs, err := w.query(qStates, jsonText(ids))
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	m := make(map[string]store.TaskState)
	for rs.Next() {
		var (
			id string
			st int64
		)
		if err := rs.Scan(&id, &st); err != nil {
			return nil, dbErr(w.op, err)
		}
		m[id] = store.TaskState(st)
	}
	return m, dbErr(w.op, rs.Err())
}

// heldBy counts the IN_PROGRESS tasks whose lease agent holds.
func (w *wtx) heldBy(agent string) (n int, err error) {
	rs, err := w.query(qHeldBy, agent)
	if err != nil {
		return 0, err
	}
	defer rs.Close()
	if rs.Next() {
		err = rs.Scan(&n)
	}
	if err == nil {
		err = rs.Err()
	}
	return n, dbErr(w.op, err)
}

func (w *wtx) paused() (paused bool, reason string, err error) {
	rs, err := w.query(qPaused)
	if err != nil {
		return false, "", err
	}
	defer rs.Close()
	if rs.Next() {
		err = rs.Scan(&paused, &reason)
	}
	if err == nil {
		err = rs.Err()
	}
	return paused, reason, dbErr(w.op, err)
}

// save writes back the mutable columns of rows changed in Go.
func (w *wtx) save(rows ...*row) error {
	args := make([]any, 0, len(rows)*saveCols)
	for _, r := range rows {
		t := r.t
		args = append(args,
			r.seq, t.Priority, int32(t.State), t.Attempt, t.LastError, t.Progress, t.Note,
			t.LeaseHolder, t.FencingToken, toNanos(t.LeaseExpiresAt), toNanos(t.ClaimedAt), toNanos(t.RenewedAt),
			toNanos(t.RunAfter), toNanos(t.UpdatedAt), toNanos(t.StateChangedAt), boolInt(t.PausedByQueue),
		)
	}
	return w.execBatch(qSave, saveCols, args)
}

// saveCols is the width of a qSave row.
const saveCols = 16

// execBatch runs a batchSQL statement over args, cols values per row, in
// as few statements as maxBatchRows allows.
func (w *wtx) execBatch(text func(n int) string, cols int, args []any) error {
	for len(args) > 0 {
		n := min(len(args)/cols, maxBatchRows)
		if _, err := w.exec(text(n), args[:n*cols]...); err != nil {
			return err
		}
		args = args[n*cols:]
	}
	return nil
}

// promote moves the BACKLOG dependents of the tasks in done that are now
// ready to go, in creation order.
func (w *wtx) promote(done []string, now time.Time) ([]*row, error) {
	if len(done) == 0 {
		return nil, nil
	}
	rows, err := w.rows(qPromote, toNanos(now), jsonText(done))
	if err != nil {
		return nil, err
	}
	bySeq(rows)
	return rows, nil
}

// excludeTiersJSON is a claim's excluded tiers as the JSON array its
// statement reads.
func excludeTiersJSON(tiers []string) string {
	if len(tiers) == 0 {
		return "[]"
	}
	return jsonText(tiers)
}
