package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// Election timings. A dead leader's session ends when its process does
// (the server sees the socket close), which releases its lock; the others
// try every electRetry, so duty moves within about that long.
const (
	electRetry = time.Second
	// electCheck is how often the leader checks its lock's connection, and
	// electCheckTimeout how long that check may take before the leader
	// stands down: a leader that cannot reach the database may already
	// have lost its session, and with it the lock, to the server.
	electCheck        = time.Second
	electCheckTimeout = 2 * time.Second
)

const qTryLock = `-- name: ElectTryLock
SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))`

// RunElected implements store.Elector with a session advisory lock keyed
// by schema and name, held on a connection of its own (outside the pool).
// fn runs while the lock is held, with a context cancelled when the
// connection fails its check (every second) or ctx ends. A replica that is
// not leader tries again every second. If fn returns by itself, the lock
// is released and taken again later, so that another replica may take the
// duty. RunElected returns nil when ctx ends, and an error only when the
// store is closed.
func (s *Store) RunElected(parent context.Context, name string, fn func(ctx context.Context) error) error {
	if !s.goBackground() {
		return fmt.Errorf("postgres RunElected: %w", errStoreClosed)
	}
	defer s.bg.Done()
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	stop := context.AfterFunc(s.life, cancel)
	defer stop()
	log := s.log.With(slog.String("duty", name))

	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	for ctx.Err() == nil {
		if conn == nil {
			c, err := s.dedicatedConn(ctx)
			if err != nil {
				log.DebugContext(ctx, "election: cannot connect", slog.Any("err", err))
				s.electWait(ctx)
				continue
			}
			conn = c
		}
		var leader bool
		if err := conn.QueryRow(ctx, qTryLock, s.cfg.Schema, name).Scan(&leader); err != nil {
			log.DebugContext(ctx, "election: lock attempt failed", slog.Any("err", err))
			closeConn(conn)
			conn = nil
			s.electWait(ctx)
			continue
		}
		if !leader {
			s.electWait(ctx)
			continue
		}
		// Operators (and the replica tests) follow where a duty runs by
		// these two lines.
		log.InfoContext(ctx, "duty acquired", slog.String("replica", s.cfg.ReplicaID))
		healthy := s.lead(ctx, conn, name, fn, log)
		log.InfoContext(ctx, "duty released", slog.String("replica", s.cfg.ReplicaID))
		if !healthy {
			// The session (and so the lock) may be gone; start afresh.
			closeConn(conn)
			conn = nil
		}
		if ctx.Err() == nil {
			s.electWait(ctx)
		}
	}
	if parent.Err() == nil {
		return fmt.Errorf("postgres RunElected: %w", errStoreClosed)
	}
	return nil
}

// lead runs fn while conn stays healthy. It returns whether conn is still
// usable, with the lock released.
func (s *Store) lead(ctx context.Context, conn *pgx.Conn, name string, fn func(context.Context) error, log *slog.Logger) bool {
	fctx, fcancel := context.WithCancel(ctx)
	defer fcancel()
	done := make(chan error, 1)
	go func() { done <- fn(fctx) }()

	tick := time.NewTicker(electCheck)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if ctx.Err() == nil {
				log.WarnContext(ctx, "duty returned while leader; standing down", slog.Any("err", err))
			}
			return s.unlock(conn, name)
		case <-ctx.Done():
			fcancel()
			<-done
			return s.unlock(conn, name)
		case <-tick.C:
			cctx, cancel := context.WithTimeout(ctx, electCheckTimeout)
			err := conn.Ping(cctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				log.WarnContext(ctx, "lost the election lock's connection; standing down", slog.Any("err", err))
				fcancel()
				<-done
				return false
			}
		}
	}
}

// unlock releases the lock and reports whether conn is still usable.
func (s *Store) unlock(conn *pgx.Conn, name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), electCheckTimeout)
	defer cancel()
	_, err := conn.Exec(ctx, `-- name: ElectUnlock
SELECT pg_advisory_unlock(hashtext($1), hashtext($2))`, s.cfg.Schema, name)
	return err == nil
}

// electWait waits about electRetry; the jitter keeps replicas from trying
// in lockstep.
func (s *Store) electWait(ctx context.Context) {
	_ = sleepCtx(ctx, electRetry*3/4+rand.N(electRetry/2))
}
