// Package sqlite is the embedded store.Store driver: one SQLite database file
// in WAL mode, through the pure-Go modernc.org/sqlite, so the control plane
// needs no cgo and no database server on a single-host factory.
//
// All writes go through one connection, driven by one goroutine, that begins
// IMMEDIATE transactions: writers queue in Go instead of racing for SQLite's
// write lock (no SQLITE_BUSY, and a claim's read-then-update cannot
// interleave with another claim), and calls that queue up are committed
// together (see writer). Reads use a separate pool: under WAL they see the
// last committed state without waiting for the writer.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/factory/factory/controlplane/store"
)

// Config configures Open.
type Config struct {
	// Path is the database file. Its parent directory is created when
	// missing. Required.
	Path string

	// Logger receives migration and lifecycle messages. Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with unset fields given their defaults.
func (c Config) WithDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func (c Config) validate() error {
	switch {
	case strings.TrimSpace(c.Path) == "":
		return errors.New("sqlite: Config.Path is required")
	case c.Path == ":memory:" || strings.HasPrefix(c.Path, "file:"):
		// The reader pool and the writer must share one database, which an
		// in-memory database or a caller-built URI would not guarantee.
		return fmt.Errorf("sqlite: Config.Path %q must be a file path", c.Path)
	case c.Logger == nil:
		return errors.New("sqlite: Config.Logger is nil (use WithDefaults)")
	}
	return nil
}

// Store is the SQLite store.Store.
type Store struct {
	w      *sql.DB // one connection, owned by wr
	wr     *writer
	r      *sql.DB // readers
	rs     *stmtCache
	logger *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open creates or opens the database at cfg.Path and migrates it to the
// latest schema.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sqlite: create directory: %w", err)
	}
	if err := ownerOnly(path); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}

	// The writer opens first: it switches the file to WAL (a persistent
	// setting) and migrates before any reader looks at the schema.
	w, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)
	if err := migrate(ctx, w, cfg.Logger); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: migrate %s: %w", path, err)
	}
	wr, err := newWriter(ctx, w, cfg.Logger)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}

	r, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		wr.close()
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	r.SetConnMaxIdleTime(0)
	r.SetConnMaxLifetime(0)
	if err := r.PingContext(ctx); err != nil {
		wr.close()
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	cfg.Logger.DebugContext(ctx, "sqlite store open", slog.String("path", path))
	return &Store{w: w, wr: wr, r: r, rs: newStmtCache(r), logger: cfg.Logger}, nil
}

// ownerOnly makes the database file (creating it empty, which SQLite
// takes as a new database) and any -wal, -shm or -journal file beside it
// readable by the owner only: they hold token hashes, the ledger and the
// audit log. SQLite creates its -wal and -shm files with the database
// file's mode, so a 0600 database keeps them 0600 too; one made wider (by
// hand, or by a version that let the umask decide) is tightened here.
func ownerOnly(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	err = f.Chmod(0o600)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if err := os.Chmod(path+suffix, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// dsn builds a modernc DSN. synchronous=NORMAL is durable across process
// crashes in WAL mode and skips an fsync per commit; only a power loss can
// drop the last commits.
func dsn(path string, writer bool) string {
	q := []string{"_pragma=busy_timeout(5000)"}
	if writer {
		q = append(q,
			"_pragma=journal_mode(WAL)",
			"_pragma=synchronous(NORMAL)",
			"_pragma=foreign_keys(1)",
			"_pragma=cache_size(-65536)",
			"_txlock=immediate",
		)
	} else {
		q = append(q, "_pragma=query_only(1)")
	}
	// SQLite decodes percent escapes in a file: URI, so the path is escaped.
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + strings.Join(q, "&")
}

// Close stops the writer, answering calls still queued with
// ErrUnavailable, and closes both pools.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		err := s.wr.close()
		s.rs.close()
		s.closeErr = errors.Join(err, s.r.Close(), s.w.Close())
	})
	return s.closeErr
}

// writeTx runs fn as one transaction on the writer.
func (s *Store) writeTx(ctx context.Context, op string, fn func(w *wtx) error) error {
	return s.wr.do(ctx, op, fn)
}

// readTx runs fn in one read transaction: under WAL, every statement in it
// sees the same snapshot.
func (s *Store) readTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a read transaction has nothing to lose
	return fn(tx)
}

// readRows runs one read statement on the reader pool. A single statement
// is its own consistent snapshot.
func (s *Store) readRows(ctx context.Context, op, query string, args ...any) ([]*row, error) {
	st, err := s.rs.get(ctx, query)
	if err != nil {
		return nil, dbErr(op, err)
	}
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, dbErr(op, err)
	}
	out, err := scanRows(rs)
	return out, dbErr(op, err)
}

// dbErr wraps a database failure with the call it broke. Contention, I/O
// trouble and a closed store match ErrUnavailable (worth a retry); context
// errors keep matching their own sentinels. Wrapping twice is a no-op.
func dbErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var de *dbError
	if errors.As(err, &de) {
		return err
	}
	return &dbError{op: op, err: err, unavailable: unavailable(err), full: storageFull(err)}
}

// storageFull is a write that failed for want of space: SQLITE_FULL (the
// file system said ENOSPC) or a failed write (EFBIG past a file-size
// limit is reported as SQLITE_IOERR_WRITE).
func storageFull(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()&0xff == sqlite3.SQLITE_FULL || se.Code() == sqlite3.SQLITE_IOERR_WRITE
	}
	return false
}

func unavailable(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN:
			return true
		}
	}
	// database/sql reports a closed pool only as text.
	return errors.Is(err, errClosed) || errors.Is(err, sql.ErrConnDone) || strings.Contains(err.Error(), "sql: database is closed")
}

type dbError struct {
	op          string
	err         error
	unavailable bool
	full        bool
}

func (e *dbError) Error() string {
	if e.full {
		return "sqlite " + e.op + ": the disk is full or the database reached its file-size limit; free space and retry (" + e.err.Error() + ")"
	}
	return "sqlite " + e.op + ": " + e.err.Error()
}
func (e *dbError) Unwrap() error { return e.err }

// Is makes errors.Is(err, store.ErrUnavailable) true for retryable failures.
// A full disk matches ErrStorageFull rather than ErrUnavailable: the
// client should not retry at once.
func (e *dbError) Is(target error) bool {
	if e.full {
		return target == store.ErrStorageFull
	}
	return e.unavailable && target == store.ErrUnavailable
}
