package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/factory/factory/controlplane/store"
)

// txn is one transaction on a pooled connection. It is opened lazily in
// the same round trip as its first statements, and committed in the same
// round trip as its notifications, so a transaction that reads, decides in
// Go and writes costs two round trips.
type txn struct {
	ctx   context.Context
	conn  *pgxpool.Conn
	s     *Store
	begun bool
	// committing is set once COMMIT may have reached the server: a
	// connection lost after that leaves the outcome unknown, so the
	// transaction must not be run again.
	committing bool
	done       bool
	changes    []store.RemoteChange
}

// batch returns a new batch that opens the transaction first if nothing
// has been sent yet.
func (t *txn) batch() *pgx.Batch {
	b := &pgx.Batch{}
	if !t.begun {
		b.Queue("BEGIN")
	}
	return b
}

// send runs b's statements in one round trip; their callbacks see the
// results in order, and the first error stops the rest.
func (t *txn) send(b *pgx.Batch) error {
	t.begun = true
	return t.conn.SendBatch(t.ctx, b).Close()
}

// rows runs one statement that yields task rows.
func (t *txn) rows(sql string, args ...any) ([]*row, error) {
	var out []*row
	b := t.batch()
	queueRows(b, &out, sql, args...)
	err := t.send(b)
	return out, err
}

// queueRows queues a statement whose task rows are appended to out.
func queueRows(b *pgx.Batch, out *[]*row, sql string, args ...any) {
	b.Queue(sql, args...).Query(func(rs pgx.Rows) error {
		rows, err := scanRows(rs)
		*out = append(*out, rows...)
		return err
	})
}

// announce records changes to notify other replicas of at commit.
func (t *txn) announce(changes []store.TaskChange) {
	for _, c := range changes {
		t.changes = append(t.changes, store.RemoteChange{TaskID: c.Task.ID, PreviousState: c.PreviousState, State: c.Task.State})
	}
}

// commit sends the notifications and COMMIT, after extra, in one round
// trip. Statements in extra are known in advance to be the last writes
// (their results are read by their own callbacks).
func (t *txn) commit(extra ...func(b *pgx.Batch)) error {
	if t.done {
		// fn committed itself, to send its last writes with COMMIT.
		return nil
	}
	if !t.begun && len(extra) == 0 {
		// Nothing was sent: there is nothing to commit.
		t.done = true
		return nil
	}
	b := t.batch()
	for _, q := range extra {
		q(b)
	}
	if payloads := notifyPayloads(t.s.cfg.ReplicaID, t.changes); len(payloads) > 0 {
		b.Queue(qNotify, t.s.channel, payloads)
	}
	b.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		// COMMIT of a transaction that failed answers ROLLBACK, not an
		// error.
		if tag.String() != "COMMIT" {
			return errors.New("transaction was rolled back")
		}
		return nil
	})
	t.committing = true
	err := t.send(b)
	t.done = err == nil
	return err
}

// finish rolls back a transaction that did not commit and returns the
// connection to the pool. A connection left mid-transaction (or closed) is
// destroyed by the pool rather than reused.
func (t *txn) finish() {
	if t.begun && !t.done && !t.conn.Conn().IsClosed() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), 5*time.Second)
		_, _ = t.conn.Exec(ctx, "ROLLBACK")
		cancel()
	}
	t.conn.Release()
}

// inTx runs fn in a transaction and commits it, running it again after a
// deadlock, a serialization failure or a connection lost before COMMIT
// was sent. fn must only build its results from what it reads in this
// attempt.
func (s *Store) inTx(ctx context.Context, op string, fn func(t *txn) error) error {
	for attempt := 0; ; attempt++ {
		committing, err := s.tryTx(ctx, fn)
		if err == nil {
			return nil
		}
		if committing && isConnErr(err) {
			return fmt.Errorf("postgres %s: %w: connection lost while committing, the outcome is unknown: %w", op, store.ErrUnavailable, err)
		}
		if attempt >= len(retryDelays) || !(isConnErr(err) || isConflict(err)) || ctx.Err() != nil {
			return dbErr(op, err)
		}
		if err := sleepCtx(ctx, retryDelays[attempt]); err != nil {
			return dbErr(op, err)
		}
	}
}

// tryTx makes one attempt; committing reports whether COMMIT may have
// reached the server.
func (s *Store) tryTx(ctx context.Context, fn func(t *txn) error) (committing bool, err error) {
	if s.life.Err() != nil {
		return false, errStoreClosed
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	t := &txn{ctx: ctx, conn: conn, s: s}
	defer t.finish()
	if err := fn(t); err != nil {
		return t.committing, err
	}
	err = t.commit()
	return t.committing, err
}

// read runs a read-only statement (which is its own snapshot) with the
// same retries.
func (s *Store) read(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	if s.life.Err() != nil {
		return dbErr(op, errStoreClosed)
	}
	return retryConn(ctx, op, func() error { return fn(ctx) })
}
