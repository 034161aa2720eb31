package sqlite

import (
	"context"
	"database/sql"

	"github.com/factory/factory/controlplane/store"
)

// QueuePause implements store.Store.
func (s *Store) QueuePause(ctx context.Context, p *store.QueuePauseParams) ([]store.TaskChange, error) {
	now := norm(p.Now)
	var out []store.TaskChange
	err := s.writeTx(ctx, "QueuePause", func(w *wtx) error {
		paused, _, err := w.paused()
		if err != nil || paused {
			// Already paused: the first reason stands and nothing moves.
			return err
		}
		if _, err := w.exec(qPauseSet, p.Reason, toNanos(now)); err != nil {
			return err
		}
		rows, err := w.rows(qPauseTasks, toNanos(now))
		if err != nil {
			return err
		}
		bySeq(rows)
		out = changes(rows, store.StateReady)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// QueueResume implements store.Store.
func (s *Store) QueueResume(ctx context.Context, p *store.QueueResumeParams) ([]store.TaskChange, error) {
	now := norm(p.Now)
	var out []store.TaskChange
	err := s.writeTx(ctx, "QueueResume", func(w *wtx) error {
		if _, err := w.exec(qResumeSet); err != nil {
			return err
		}
		rows, err := w.rows(qResumeTasks, toNanos(now))
		if err != nil {
			return err
		}
		bySeq(rows)
		out = changes(rows, store.StatePaused)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// qQueueOldest reads the oldest READY and IN_PROGRESS tasks' times: one
// probe each of tasks_ready_since and tasks_claimed_since (migration 00017).
var qQueueOldest = q(`SELECT
	(SELECT COALESCE(MIN(state_changed_at), 0) FROM tasks WHERE state = {READY}),
	(SELECT COALESCE(MIN(claimed_at), 0) FROM tasks WHERE state = {IN_PROGRESS}),
	paused, pause_reason
FROM queue_settings WHERE id = 1`)

// QueueStats implements store.Store.
func (s *Store) QueueStats(ctx context.Context) (*store.QueueStats, error) {
	st := &store.QueueStats{Counts: make(map[store.TaskState]int64, len(store.AllStates))}
	for _, state := range store.AllStates {
		st.Counts[state] = 0
	}
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		rs, err := tx.QueryContext(ctx, `SELECT state, n, retrying FROM task_counts`)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var state, n, retrying int64
			if err := rs.Scan(&state, &n, &retrying); err != nil {
				return err
			}
			st.Counts[store.TaskState(state)] = n
			if store.TaskState(state) != store.StateDone {
				st.Retrying += retrying
			}
		}
		if err := rs.Err(); err != nil {
			return err
		}
		var oldestReady, oldestClaimed int64
		err = tx.QueryRowContext(ctx, qQueueOldest).Scan(&oldestReady, &oldestClaimed, &st.Paused, &st.PauseReason)
		if err != nil {
			return err
		}
		st.OldestReadySince, st.OldestClaimedAt = fromNanos(oldestReady), fromNanos(oldestClaimed)
		st.Pauses, err = queuePauses(ctx, tx)
		return err
	})
	if err != nil {
		return nil, dbErr("QueueStats", err)
	}
	return st, nil
}
