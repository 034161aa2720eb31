package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/factory/factory/controlplane/store"
)

// writeFilter appends f's conditions (each starting " AND ") to b and
// their parameters to args: the one translation of a store.TaskFilter,
// used by TaskList and by the bulk calls alike.
func writeFilter(b *strings.Builder, f *store.TaskFilter, args *[]any) {
	if len(f.States) > 0 {
		b.WriteString(" AND state IN (SELECT value FROM json_each(?))")
		*args = append(*args, jsonText(f.States))
	}
	if f.Role != "" {
		b.WriteString(" AND role = ?")
		*args = append(*args, f.Role)
	}
	if f.Assignee != "" {
		b.WriteString(" AND (assignee = ? OR lease_holder = ?)")
		*args = append(*args, f.Assignee, f.Assignee)
	}
	if len(f.Labels) > 0 {
		// json_each instead of json_extract: a label key may hold
		// characters ('"', '.', '[') that a JSON path cannot quote.
		b.WriteString(` AND (SELECT COUNT(*) FROM json_each(?) AS f JOIN json_each(tasks.labels) AS l
			ON l.key = f.key AND l.value = f.value) = ?`)
		*args = append(*args, jsonText(f.Labels), len(f.Labels))
	}
	if f.Kind != "" {
		b.WriteString(" AND kind = ?")
		*args = append(*args, f.Kind)
	}
	if f.Tier != "" {
		b.WriteString(" AND tier = ?")
		*args = append(*args, f.Tier)
	}
	if f.MinAttempt > 0 {
		b.WriteString(" AND attempt >= ?")
		*args = append(*args, f.MinAttempt)
	}
	if f.MinPriority != nil {
		b.WriteString(" AND priority >= ?")
		*args = append(*args, *f.MinPriority)
	}
	if f.MaxPriority != nil {
		b.WriteString(" AND priority <= ?")
		*args = append(*args, *f.MaxPriority)
	}
	if !f.CreatedBefore.IsZero() {
		b.WriteString(" AND created_at <= ?")
		*args = append(*args, toNanos(norm(f.CreatedBefore)))
	}
	if !f.StateChangedBefore.IsZero() {
		b.WriteString(" AND state_changed_at <= ?")
		*args = append(*args, toNanos(norm(f.StateChangedBefore)))
	}
}

// selectFiltered loads the tasks f selects, in creation order, for a bulk
// change: at most max (0: no bound), else a *store.TooManyError counting
// them all.
func (w *wtx) selectFiltered(f *store.TaskFilter, max int) ([]*row, error) {
	var (
		b    strings.Builder
		args []any
	)
	writeFilter(&b, f, &args)
	cond := b.String()
	text := q("SELECT {COLS} FROM tasks WHERE 1"+cond) + " ORDER BY seq"
	if max > 0 {
		text += " LIMIT ?"
		args = append(args, max+1)
	}
	rows, err := w.rows(text, args...)
	if err != nil || max <= 0 || len(rows) <= max {
		return rows, err
	}
	var n int
	if err := w.w.conn.QueryRowContext(w.ctx, "SELECT COUNT(*) FROM tasks WHERE 1"+cond, args[:len(args)-1]...).Scan(&n); err != nil {
		return nil, dbErr(w.op, err)
	}
	return nil, &store.TooManyError{Matched: n, Max: max}
}

// TaskBulk implements store.Store.
func (s *Store) TaskBulk(ctx context.Context, p *store.TaskBulkParams) (*store.TaskBulkResult, error) {
	if err := store.CheckTaskBulk(p); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var res *store.TaskBulkResult
	err := s.writeTx(ctx, "TaskBulk", func(w *wtx) error {
		rows, err := w.selectFiltered(&p.Filter, p.Max)
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
		if p.DryRun {
			return nil
		}
		save := make([]*row, len(changed))
		for i, j := range changed {
			save[i] = rows[j]
		}
		if err := w.save(save...); err != nil {
			return err
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

var (
	qPauseInsert  = `INSERT INTO queue_pauses (id, reason, filter, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	qPauseHold    = `INSERT INTO task_pauses (task_id, pause_id) SELECT value, ? FROM json_each(?)`
	qPauseIDs     = `SELECT id FROM queue_pauses ORDER BY created_at, id`
	qPauseDelete  = `DELETE FROM queue_pauses WHERE id = ?`
	qPauseRelease = q(`UPDATE tasks SET state = ?2, paused_by_queue = ?3, updated_at = ?1, state_changed_at = ?1
	WHERE state = {PAUSED} AND paused_by_queue = 0 AND id IN (SELECT task_id FROM task_pauses WHERE pause_id = ?4)
	RETURNING {COLS}`)
	qPausesList = `SELECT p.id, p.reason, p.filter, p.created_at, (SELECT COUNT(*) FROM task_pauses h WHERE h.pause_id = p.id)
	FROM queue_pauses p ORDER BY p.created_at, p.id`
)

// QueuePauseTasks implements store.Store.
func (s *Store) QueuePauseTasks(ctx context.Context, p *store.QueuePauseTasksParams) ([]store.TaskChange, error) {
	f, err := store.CheckQueuePauseTasks(p)
	if err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var out []store.TaskChange
	err = s.writeTx(ctx, "QueuePauseTasks", func(w *wtx) error {
		r, err := w.exec(qPauseInsert, p.ID, p.Reason, p.FilterText, toNanos(now))
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return fmt.Errorf("pause %q: %w", p.ID, store.ErrAlreadyExists)
		}
		rows, err := w.selectFiltered(&f, p.Max)
		if err != nil {
			return err
		}
		ids := make([]string, len(rows))
		for i, r := range rows {
			r.t.SetState(store.StatePaused, now)
			r.t.PausedByQueue = false
			ids[i] = r.t.ID
		}
		if err := w.save(rows...); err != nil {
			return err
		}
		if _, err := w.exec(qPauseHold, p.ID, jsonText(ids)); err != nil {
			return err
		}
		out = changes(rows, store.StateReady)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// QueueResumeTasks implements store.Store.
func (s *Store) QueueResumeTasks(ctx context.Context, p *store.QueueResumeTasksParams) (*store.QueueResumeTasksResult, error) {
	now := norm(p.Now)
	var res *store.QueueResumeTasksResult
	err := s.writeTx(ctx, "QueueResumeTasks", func(w *wtx) error {
		res = &store.QueueResumeTasksResult{}
		ids := []string{p.ID}
		if p.ID == "" {
			rs, err := w.query(qPauseIDs)
			if err != nil {
				return err
			}
			ids = nil
			for rs.Next() {
				var id string
				if err := rs.Scan(&id); err != nil {
					rs.Close()
					return dbErr(w.op, err)
				}
				ids = append(ids, id)
			}
			if err := rs.Close(); err != nil {
				return dbErr(w.op, err)
			}
		}
		paused, _, err := w.paused()
		if err != nil {
			return err
		}
		st, byQueue := store.ReadyState(paused)
		for _, id := range ids {
			rows, err := w.rows(qPauseRelease, toNanos(now), int32(st), boolInt(byQueue), id)
			if err != nil {
				return err
			}
			r, err := w.exec(qPauseDelete, id)
			if err != nil {
				return err
			}
			if n, _ := r.RowsAffected(); n == 0 {
				return fmt.Errorf("pause %q: %w", id, store.ErrNotFound)
			}
			bySeq(rows)
			res.Ended = append(res.Ended, id)
			res.Changes = append(res.Changes, changes(rows, store.StatePaused)...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// queuePauses reads the active selective pauses for QueueStats.
func queuePauses(ctx context.Context, tx *sql.Tx) ([]store.QueuePauseInfo, error) {
	rs, err := tx.QueryContext(ctx, qPausesList)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []store.QueuePauseInfo
	for rs.Next() {
		var (
			p  store.QueuePauseInfo
			at int64
		)
		if err := rs.Scan(&p.ID, &p.Reason, &p.FilterText, &at, &p.Held); err != nil {
			return nil, err
		}
		p.CreatedAt = fromNanos(at)
		out = append(out, p)
	}
	return out, rs.Err()
}
