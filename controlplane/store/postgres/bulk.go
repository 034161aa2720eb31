package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

// writeFilter appends f's conditions (each starting " AND ") to b, with
// arg numbering their parameters: the one translation of a
// store.TaskFilter, used by TaskList and by the bulk calls alike.
func writeFilter(b *strings.Builder, f *store.TaskFilter, arg func(any) string) {
	if len(f.States) > 0 {
		states := make([]int16, len(f.States))
		for i, st := range f.States {
			states[i] = int16(st)
		}
		b.WriteString(" AND state = ANY(" + arg(states) + "::smallint[])")
	}
	if f.Role != "" {
		b.WriteString(" AND role = " + arg(f.Role))
	}
	if f.Assignee != "" {
		n := arg(f.Assignee)
		b.WriteString(" AND (assignee = " + n + " OR lease_holder = " + n + ")")
	}
	if len(f.Labels) > 0 {
		b.WriteString(" AND labels @> " + arg(jsonText(f.Labels)) + "::jsonb")
	}
	if f.Kind != "" {
		b.WriteString(" AND kind = " + arg(f.Kind))
	}
	if f.Tier != "" {
		b.WriteString(" AND tier = " + arg(f.Tier))
	}
	if f.MinAttempt > 0 {
		// attempt is an integer column: a larger bound matches nothing.
		b.WriteString(" AND attempt >= " + arg(int64(f.MinAttempt)) + "::bigint")
	}
	if f.MinPriority != nil {
		b.WriteString(" AND priority >= " + arg(*f.MinPriority) + "::int")
	}
	if f.MaxPriority != nil {
		b.WriteString(" AND priority <= " + arg(*f.MaxPriority) + "::int")
	}
	if !f.CreatedBefore.IsZero() {
		b.WriteString(" AND created_at <= " + arg(norm(f.CreatedBefore)) + "::timestamptz")
	}
	if !f.StateChangedBefore.IsZero() {
		b.WriteString(" AND state_changed_at <= " + arg(norm(f.StateChangedBefore)) + "::timestamptz")
	}
}

// checkFilter refuses filter texts PostgreSQL cannot hold.
func checkFilter(f *store.TaskFilter) error {
	if err := checkText("role", f.Role, "assignee", f.Assignee, "kind", f.Kind, "tier", f.Tier); err != nil {
		return err
	}
	for k, v := range f.Labels {
		if err := checkText("labels", k, "labels", v); err != nil {
			return err
		}
	}
	return nil
}

// selectFiltered locks and loads the tasks f selects, in creation order,
// for a bulk change: at most max (0: no bound), else a
// *store.TooManyError counting them all.
func (t *txn) selectFiltered(f *store.TaskFilter, max int) ([]*row, error) {
	var (
		b    strings.Builder
		args []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	writeFilter(&b, f, arg)
	cond := b.String()
	text := q("-- name: TaskBulkSelect\nSELECT {COLS} FROM tasks WHERE true" + cond + " ORDER BY seq")
	if max > 0 {
		text += " LIMIT " + arg(max+1)
	}
	rows, err := t.rows(text+" FOR UPDATE", args...)
	if err != nil || max <= 0 || len(rows) <= max {
		return rows, err
	}
	var n int
	bt := t.batch()
	bt.Queue("-- name: TaskBulkCount\nSELECT count(*) FROM tasks WHERE true"+cond, args[:len(args)-1]...).QueryRow(func(r pgx.Row) error {
		return r.Scan(&n)
	})
	if err := t.send(bt); err != nil {
		return nil, err
	}
	return nil, &store.TooManyError{Matched: n, Max: max}
}

// TaskBulk implements store.Store.
func (s *Store) TaskBulk(ctx context.Context, p *store.TaskBulkParams) (*store.TaskBulkResult, error) {
	if err := store.CheckTaskBulk(p); err != nil {
		return nil, err
	}
	if err := errorsJoin(checkFilter(&p.Filter), checkText("reason", p.Reason)); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var res *store.TaskBulkResult
	err := s.inTx(ctx, "TaskBulk", func(t *txn) error {
		rows, err := t.selectFiltered(&p.Filter, p.Max)
		if err != nil {
			return err
		}
		tasks := make([]*store.Task, len(rows))
		for i, r := range rows {
			tasks[i] = r.t
		}
		var (
			changed []int
			done    []string
		)
		res, changed, done = store.ApplyBulk(p, tasks, now)
		if p.DryRun || len(changed) == 0 {
			return nil
		}
		save := make([]*row, len(changed))
		for i, j := range changed {
			save[i] = rows[j]
		}
		if len(done) > 0 {
			// Lock the dependents before the tasks can be seen DONE; see
			// TaskMove.
			b := t.batch()
			for _, id := range done {
				b.Queue(qLockDependents, id)
			}
			queueSave(save...)(b)
			var promoted []*row
			queueRows(b, &promoted, qPromote, now, done)
			if err := t.send(b); err != nil {
				return err
			}
			bySeq(promoted)
			res.Changes = append(res.Changes, changes(promoted, store.StateBacklog)...)
			t.announce(res.Changes)
			return t.commit()
		}
		t.announce(res.Changes)
		return t.commit(queueSave(save...))
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// errorsJoin returns the first error that is not nil.
func errorsJoin(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

const (
	qPauseInsert = `-- name: QueuePauseTasksInsert
INSERT INTO queue_pauses (id, reason, filter, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING`
	qPauseHold = `-- name: QueuePauseTasksHold
INSERT INTO task_pauses (task_id, pause_id) SELECT unnest($1::text[]), $2`
	qPauseIDs = `-- name: QueueResumeTasksAll
SELECT id FROM queue_pauses ORDER BY created_at, id FOR UPDATE`
	qPauseDelete = `-- name: QueueResumeTasksDelete
DELETE FROM queue_pauses WHERE id = $1`
	qPausesList = `-- name: QueuePausesList
SELECT p.id, p.reason, p.filter, p.created_at, (SELECT count(*) FROM task_pauses h WHERE h.pause_id = p.id)
FROM queue_pauses p ORDER BY p.created_at, p.id`
)

var qPauseRelease = q(`-- name: QueueResumeTasksRelease
UPDATE tasks SET state = $2, paused_by_queue = $3, updated_at = $1, state_changed_at = $1
WHERE state = {PAUSED} AND NOT paused_by_queue AND id IN (SELECT task_id FROM task_pauses WHERE pause_id = $4)
RETURNING {COLS}`)

// QueuePauseTasks implements store.Store.
func (s *Store) QueuePauseTasks(ctx context.Context, p *store.QueuePauseTasksParams) ([]store.TaskChange, error) {
	f, err := store.CheckQueuePauseTasks(p)
	if err != nil {
		return nil, err
	}
	if err := errorsJoin(checkFilter(&f), checkText("pause_id", p.ID, "reason", p.Reason, "filter", p.FilterText)); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var out []store.TaskChange
	err = s.inTx(ctx, "QueuePauseTasks", func(t *txn) error {
		out = nil
		var inserted bool
		b := t.batch()
		b.Queue(qPauseInsert, p.ID, p.Reason, p.FilterText, now).Exec(func(tag pgconn.CommandTag) error {
			inserted = tag.RowsAffected() == 1
			return nil
		})
		if err := t.send(b); err != nil {
			return err
		}
		if !inserted {
			return fmt.Errorf("pause %q: %w", p.ID, store.ErrAlreadyExists)
		}
		rows, err := t.selectFiltered(&f, p.Max)
		if err != nil {
			return err
		}
		ids := make([]string, len(rows))
		for i, r := range rows {
			r.t.SetState(store.StatePaused, now)
			r.t.PausedByQueue = false
			ids[i] = r.t.ID
		}
		out = changes(rows, store.StateReady)
		t.announce(out)
		if len(rows) == 0 {
			return nil
		}
		return t.commit(queueSave(rows...), func(b *pgx.Batch) { b.Queue(qPauseHold, ids, p.ID) })
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// QueueResumeTasks implements store.Store.
func (s *Store) QueueResumeTasks(ctx context.Context, p *store.QueueResumeTasksParams) (*store.QueueResumeTasksResult, error) {
	if err := checkText("pause_id", p.ID); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var res *store.QueueResumeTasksResult
	err := s.inTx(ctx, "QueueResumeTasks", func(t *txn) error {
		res = &store.QueueResumeTasksResult{}
		var (
			paused bool
			ids    = []string{p.ID}
		)
		b := t.batch()
		b.Queue(qPausedShare).QueryRow(func(r pgx.Row) error { return r.Scan(&paused) })
		if p.ID == "" {
			ids = nil
			b.Queue(qPauseIDs).Query(func(rs pgx.Rows) error {
				var err error
				ids, err = pgx.CollectRows(rs, pgx.RowTo[string])
				return err
			})
		}
		if err := t.send(b); err != nil {
			return err
		}
		st, byQueue := store.ReadyState(paused)
		for _, id := range ids {
			var (
				rows    []*row
				deleted bool
			)
			b := t.batch()
			queueRows(b, &rows, qPauseRelease, now, int16(st), byQueue, id)
			b.Queue(qPauseDelete, id).Exec(func(tag pgconn.CommandTag) error {
				deleted = tag.RowsAffected() == 1
				return nil
			})
			if err := t.send(b); err != nil {
				return err
			}
			if !deleted {
				return fmt.Errorf("pause %q: %w", id, store.ErrNotFound)
			}
			bySeq(rows)
			res.Ended = append(res.Ended, id)
			res.Changes = append(res.Changes, changes(rows, store.StatePaused)...)
		}
		t.announce(res.Changes)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// queuePauses reads the active selective pauses for QueueStats.
func (s *Store) queuePauses(ctx context.Context) ([]store.QueuePauseInfo, error) {
	var out []store.QueuePauseInfo
	err := s.read(ctx, "QueueStats", func(ctx context.Context) error {
		out = nil
		rs, err := s.pool.Query(ctx, qPausesList)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var (
				p  store.QueuePauseInfo
				at pgtype.Timestamptz
			)
			if err := rs.Scan(&p.ID, &p.Reason, &p.FilterText, &at, &p.Held); err != nil {
				return err
			}
			p.CreatedAt = fromTS(at)
			out = append(out, p)
		}
		return rs.Err()
	})
	return out, err
}
