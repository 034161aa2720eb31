package postgres

import (
	"context"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

// QueuePause implements store.Store.
func (s *Store) QueuePause(ctx context.Context, p *store.QueuePauseParams) ([]store.TaskChange, error) {
	if err := checkText("reason", p.Reason); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var out []store.TaskChange
	err := s.inTx(ctx, "QueuePause", func(t *txn) error {
		out = nil
		var flipped bool
		b := t.batch()
		b.Queue(qPauseSet, p.Reason, now).Exec(func(tag pgconn.CommandTag) error {
			flipped = tag.RowsAffected() == 1
			return nil
		})
		if err := t.send(b); err != nil || !flipped {
			// Already paused: the first reason stands and nothing moves.
			return err
		}
		// A statement of its own: its snapshot is taken after the switch's
		// lock was granted.
		rows, err := t.rows(qPauseTasks, now)
		if err != nil {
			return err
		}
		bySeq(rows)
		out = changes(rows, store.StateReady)
		t.announce(out)
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
	err := s.inTx(ctx, "QueueResume", func(t *txn) error {
		var rows []*row
		// Both statements go in one round trip; the second still takes its
		// snapshot only after the first holds the switch's lock.
		b := t.batch()
		b.Queue(qResumeSet)
		queueRows(b, &rows, qResumeTasks, now)
		if err := t.send(b); err != nil {
			return err
		}
		bySeq(rows)
		out = changes(rows, store.StatePaused)
		t.announce(out)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// QueueStats implements store.Store.
func (s *Store) QueueStats(ctx context.Context) (*store.QueueStats, error) {
	var (
		st                         *store.QueueStats
		states                     []int16
		counts                     []int64
		oldestReady, oldestClaimed pgtype.Timestamptz
	)
	err := s.read(ctx, "QueueStats", func(ctx context.Context) error {
		st = &store.QueueStats{Counts: make(map[store.TaskState]int64, len(store.AllStates))}
		return s.pool.QueryRow(ctx, qStats).Scan(&states, &counts, &oldestReady, &oldestClaimed, &st.Retrying, &st.Paused, &st.PauseReason)
	})
	if err != nil {
		return nil, err
	}
	for _, state := range store.AllStates {
		st.Counts[state] = 0
	}
	for i, state := range states {
		st.Counts[store.TaskState(state)] = counts[i]
	}
	st.OldestReadySince, st.OldestClaimedAt = fromTS(oldestReady), fromTS(oldestClaimed)
	if st.Pauses, err = s.queuePauses(ctx); err != nil {
		return nil, err
	}
	return st, nil
}
