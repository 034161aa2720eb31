package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
)

// maxGroup caps how many write calls share one SQLite transaction.
const maxGroup = 64

// writer owns the one write connection and runs every mutating call on it,
// one goroutine, in call order.
//
// Calls that arrive while a transaction runs are committed together in the
// next one (group commit), each inside its own savepoint. A commit's fixed
// cost (file locks, WAL frame writes for the pages every call touches, such
// as index roots) is paid once per group instead of once per call, which
// is what lets many agents claim and complete at once on a small machine.
// Each call is still all or nothing: a call that fails rolls back to its
// savepoint and the others go on; callers hear back only after the commit.
type writer struct {
	conn   *sql.Conn
	stmts  map[string]*sql.Stmt // prepared on conn
	logger *slog.Logger

	reqs    chan *writeOp
	closing chan struct{}
	stopped chan struct{}
	once    sync.Once
}

type writeOp struct {
	name  string
	fn    func(w *wtx) error
	state atomic.Int32 // opQueued, opRunning or opAbandoned
	err   error
	done  chan struct{}
}

const (
	opQueued int32 = iota
	opRunning
	opAbandoned
)

var errClosed = errors.New("store is closed")

func newWriter(ctx context.Context, db *sql.DB, logger *slog.Logger) (*writer, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	w := &writer{
		conn:    conn,
		stmts:   make(map[string]*sql.Stmt, len(writerQueries)),
		logger:  logger,
		reqs:    make(chan *writeOp, 4*maxGroup),
		closing: make(chan struct{}),
		stopped: make(chan struct{}),
	}
	for _, q := range slices.Concat(writerQueries, txControl) {
		st, err := conn.PrepareContext(ctx, q)
		if err != nil {
			w.closeStmts()
			conn.Close()
			return nil, fmt.Errorf("prepare %q: %w", q, err)
		}
		w.stmts[q] = st
	}
	go w.loop()
	return w, nil
}

// do runs fn as one transaction (a savepoint within a group) and returns
// its error or the commit's. A caller whose ctx ends while its call is
// still queued gets ctx's error and the call never runs; once running, the
// call finishes and reports, so that a claim is never made and then lost.
func (w *writer) do(ctx context.Context, name string, fn func(w *wtx) error) error {
	if err := ctx.Err(); err != nil {
		return dbErr(name, err)
	}
	select {
	case <-w.closing:
		return dbErr(name, errClosed)
	default:
	}
	op := &writeOp{name: name, fn: fn, done: make(chan struct{})}
	select {
	case w.reqs <- op:
	case <-ctx.Done():
		return dbErr(name, ctx.Err())
	case <-w.closing:
		return dbErr(name, errClosed)
	}
	select {
	case <-op.done:
		return op.err
	case <-ctx.Done():
		if op.state.CompareAndSwap(opQueued, opAbandoned) {
			return dbErr(name, ctx.Err())
		}
	case <-w.stopped:
		// Close raced the send: the writer is gone and may never have
		// seen this call.
		if op.state.CompareAndSwap(opQueued, opAbandoned) {
			return dbErr(name, errClosed)
		}
	}
	// The call is running or ran: its answer is on its way.
	<-op.done
	return op.err
}

func (w *writer) loop() {
	defer close(w.stopped)
	group := make([]*writeOp, 0, maxGroup)
	for {
		select {
		case op := <-w.reqs:
			group = append(group[:0], op)
		case <-w.closing:
			w.failQueued()
			return
		}
	gather:
		for len(group) < maxGroup {
			select {
			case op := <-w.reqs:
				group = append(group, op)
			default:
				break gather
			}
		}
		w.run(group)
		clear(group)
	}
}

// failQueued answers every call still queued at Close.
func (w *writer) failQueued() {
	for {
		select {
		case op := <-w.reqs:
			op.err = dbErr(op.name, errClosed)
			close(op.done)
		default:
			return
		}
	}
}

// run commits one group. Statements run under a context with no deadline:
// callers' contexts were checked before their calls started, and a
// per-statement cancel watcher would cost more than the statements.
func (w *writer) run(group []*writeOp) {
	live := group[:0:0]
	for _, op := range group {
		if op.state.CompareAndSwap(opQueued, opRunning) {
			live = append(live, op)
		} else {
			close(op.done)
		}
	}
	if len(live) == 0 {
		return
	}
	defer func() {
		for _, op := range live {
			close(op.done)
		}
	}()
	ctx := context.Background()
	fail := func(err error) {
		for _, op := range live {
			op.err = dbErr(op.name, err)
		}
	}
	if err := w.control(ctx, "BEGIN IMMEDIATE"); err != nil {
		fail(err)
		return
	}
	rollback := func() {
		if err := w.control(ctx, "ROLLBACK"); err != nil {
			w.logger.Error("sqlite: rollback failed", slog.Any("error", err))
		}
	}

	// A lone call needs no savepoint: the transaction is the call.
	if len(live) == 1 {
		op := live[0]
		if op.err = w.call(ctx, op); op.err != nil {
			rollback()
			return
		}
	} else {
		for _, op := range live {
			if err := w.control(ctx, "SAVEPOINT op"); err != nil {
				rollback()
				fail(err)
				return
			}
			op.err = w.call(ctx, op)
			if op.err != nil {
				if err := w.control(ctx, "ROLLBACK TO op"); err != nil {
					// The transaction is gone (SQLite rolls back the whole
					// transaction on some I/O errors): nothing of the group
					// landed.
					rollback()
					fail(err)
					return
				}
			}
			if err := w.control(ctx, "RELEASE op"); err != nil {
				rollback()
				fail(err)
				return
			}
		}
	}
	if err := w.control(ctx, "COMMIT"); err != nil {
		rollback()
		for _, op := range live {
			if op.err == nil {
				op.err = dbErr(op.name, err)
			}
		}
	}
}

// control runs a transaction control statement, prepared at Open.
func (w *writer) control(ctx context.Context, stmt string) error {
	_, err := w.stmts[stmt].ExecContext(ctx)
	return err
}

// txControl are the transaction control statements run prepared.
var txControl = []string{"BEGIN IMMEDIATE", "COMMIT", "ROLLBACK", "SAVEPOINT op", "RELEASE op", "ROLLBACK TO op"}

// call runs one op's fn; a panic becomes that call's error rather than the
// end of the writer.
func (w *writer) call(ctx context.Context, op *writeOp) (err error) {
	defer func() {
		if r := recover(); r != nil {
			w.logger.Error("sqlite: panic in write call", slog.String("op", op.name), slog.Any("panic", r))
			err = fmt.Errorf("sqlite %s: panic: %v", op.name, r)
		}
	}()
	return op.fn(&wtx{ctx: ctx, w: w, op: op.name})
}

func (w *writer) close() error {
	w.once.Do(func() { close(w.closing) })
	<-w.stopped
	w.closeStmts()
	return w.conn.Close()
}

func (w *writer) closeStmts() {
	for _, st := range w.stmts {
		st.Close()
	}
	clear(w.stmts)
}

// wtx is one write call's view of the transaction: its helpers run the
// statements prepared at Open and wrap database errors with the call's name.
type wtx struct {
	ctx context.Context
	w   *writer
	op  string
}

// stmt returns query prepared on the write connection. Only the writer
// goroutine gets here, so the map needs no lock, and preparing on the
// connection the transaction holds cannot wait on anything.
func (t *wtx) stmt(query string) (*sql.Stmt, error) {
	if st := t.w.stmts[query]; st != nil {
		return st, nil
	}
	st, err := t.w.conn.PrepareContext(t.ctx, query)
	if err != nil {
		return nil, err
	}
	t.w.stmts[query] = st
	return st, nil
}

func (t *wtx) exec(query string, args ...any) (sql.Result, error) {
	st, err := t.stmt(query)
	if err != nil {
		return nil, dbErr(t.op, err)
	}
	res, err := st.ExecContext(t.ctx, args...)
	return res, dbErr(t.op, err)
}

func (t *wtx) query(query string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(query)
	if err != nil {
		return nil, dbErr(t.op, err)
	}
	rs, err := st.QueryContext(t.ctx, args...)
	return rs, dbErr(t.op, err)
}

// rows runs a statement that yields task rows (a SELECT or a RETURNING).
func (t *wtx) rows(query string, args ...any) ([]*row, error) {
	rs, err := t.query(query, args...)
	if err != nil {
		return nil, err
	}
	out, err := scanRows(rs)
	return out, dbErr(t.op, err)
}
