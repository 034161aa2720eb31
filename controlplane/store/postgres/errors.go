package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"

	"github.com/factory/factory/controlplane/store"
)

// PostgreSQL error codes the driver acts on.
const (
	codeUniqueViolation      = "23505"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
	codeLockNotAvailable     = "55P03"
	codeAdminShutdown        = "57P01"
	codeCrashShutdown        = "57P02"
	codeCannotConnectNow     = "57P03"
	codeTooManyConnections   = "53300"
	codeReadOnlyTransaction  = "25006" // a standby, or a primary being demoted
)

// dbErr wraps a database failure for the caller. A lost or refused
// connection is store.ErrUnavailable (the gRPC layer answers UNAVAILABLE and
// the client retries); a unique violation is store.ErrAlreadyExists;
// context errors and domain errors pass through.
func dbErr(op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrStaleLease),
		errors.Is(err, store.ErrInvalidArgument), errors.Is(err, store.ErrIllegalTransition), errors.Is(err, store.ErrAlreadyExists),
		errors.Is(err, store.ErrLoadRefused), errors.Is(err, store.ErrStorageFull):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("postgres %s: %w", op, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == codeUniqueViolation {
		return fmt.Errorf("postgres %s: %w: %s", op, store.ErrAlreadyExists, pgErr.Detail)
	}
	// 53100 disk_full: the database server has no space for the write.
	if errors.As(err, &pgErr) && pgErr.Code == "53100" {
		return fmt.Errorf("postgres %s: %w: %s", op, store.ErrStorageFull, pgErr.Message)
	}
	if isConnErr(err) || isConflict(err) {
		return fmt.Errorf("postgres %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("postgres %s: %w", op, err)
}

// isConnErr reports whether err means the database could not be reached or
// the connection broke: the server is down, restarting, refusing
// connections or terminated this session.
func isConnErr(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case codeAdminShutdown, codeCrashShutdown, codeCannotConnectNow, codeTooManyConnections, codeReadOnlyTransaction:
			return true
		}
		// Class 08: connection exception.
		return strings.HasPrefix(pgErr.Code, "08")
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr), errors.As(err, &netErr):
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, puddle.ErrClosedPool), errors.Is(err, errStoreClosed):
		return true
	case pgconn.SafeToRetry(err):
		// pgconn marks errors that happened before anything was sent,
		// such as a write to a connection that had already closed.
		return true
	}
	// pgconn reports use of a connection it already closed this way.
	return strings.Contains(err.Error(), "conn closed")
}

// isConflict reports a transaction that lost a race and may simply be run
// again.
func isConflict(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case codeSerializationFailure, codeDeadlockDetected, codeLockNotAvailable:
			return true
		}
	}
	return false
}

var errStoreClosed = fmt.Errorf("%w: the store is closed", store.ErrUnavailable)

// retryDelays is how long to wait before each retry of a transaction
// that failed without committing. Few and short: a caller facing a
// database that is really down should hear so quickly.
var retryDelays = []time.Duration{5 * time.Millisecond, 25 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retryConn runs fn, which must have no effect unless it succeeds (a read,
// or a whole transaction), again after a lost connection or a lost race.
func retryConn(ctx context.Context, op string, fn func() error) error {
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		if attempt >= len(retryDelays) || !(isConnErr(err) || isConflict(err)) || ctx.Err() != nil {
			return dbErr(op, err)
		}
		if err := sleepCtx(ctx, retryDelays[attempt]); err != nil {
			return dbErr(op, err)
		}
	}
}
