package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"

	"github.com/jackc/pgx/v5"

	"github.com/factory/factory/controlplane/store"
)

var _ store.EventRelay = (*Store)(nil)

const qRelayEvent = `-- name: RelayEvent
SELECT pg_notify($1, $2)`

// eventEnvelope is a relayed event's notification: the sending replica,
// so that it skips its own, and the payload.
type eventEnvelope struct {
	Replica string          `json:"r"`
	Event   json.RawMessage `json:"e"`
}

// eventChannel is the schema's event channel, next to its change channel.
func eventChannel(schema string) string {
	const prefix = "factory_events_"
	if len(prefix)+len(schema) <= 63 {
		return prefix + schema
	}
	h := fnv.New64a()
	h.Write([]byte(schema))
	return fmt.Sprintf("%s%016x", prefix, h.Sum64())
}

// RelayEvent implements store.EventRelay with NOTIFY on the schema's event
// channel. payload must be JSON.
func (s *Store) RelayEvent(ctx context.Context, payload []byte) error {
	if len(payload) > store.MaxRelayPayload {
		return store.InvalidField("payload", "%d bytes, more than %d", len(payload), store.MaxRelayPayload)
	}
	if !json.Valid(payload) {
		return store.InvalidField("payload", "not JSON")
	}
	b, err := json.Marshal(eventEnvelope{Replica: s.cfg.ReplicaID, Event: payload})
	if err != nil {
		return err
	}
	channel := eventChannel(s.cfg.Schema)
	return s.read(ctx, "RelayEvent", func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, qRelayEvent, channel, string(b))
		return err
	})
}

// ListenEvents implements store.EventRelay on a connection of its own with
// LISTEN on the event channel, reconnecting with backoff. It returns nil
// when ctx ends and an error only when the store is closed.
func (s *Store) ListenEvents(parent context.Context, fn func(payload []byte)) error {
	if !s.goBackground() {
		return fmt.Errorf("postgres ListenEvents: %w", errStoreClosed)
	}
	defer s.bg.Done()
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	stop := context.AfterFunc(s.life, cancel)
	defer stop()
	backoff := minBackoff
	for {
		err := s.listenEventsOnce(ctx, func() { backoff = minBackoff }, fn)
		if ctx.Err() != nil {
			if parent.Err() == nil {
				return fmt.Errorf("postgres ListenEvents: %w", errStoreClosed)
			}
			return nil
		}
		s.log.WarnContext(ctx, "event relay connection lost; reconnecting", slog.Any("err", err), slog.Duration("backoff", backoff))
		if sleepCtx(ctx, backoff/2+rand.N(backoff/2+1)) != nil {
			continue
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (s *Store) listenEventsOnce(ctx context.Context, onListening func(), fn func([]byte)) error {
	conn, err := s.dedicatedConn(ctx)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{eventChannel(s.cfg.Schema)}.Sanitize()); err != nil {
		return err
	}
	onListening()
	for {
		wctx, cancel := context.WithTimeout(ctx, listenIdlePing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed() {
				pctx, cancel := context.WithTimeout(ctx, pingTimeout)
				err = conn.Ping(pctx)
				cancel()
				if err == nil {
					continue
				}
			}
			return err
		}
		var env eventEnvelope
		if err := json.Unmarshal([]byte(n.Payload), &env); err != nil {
			s.log.WarnContext(ctx, "undecodable relayed event; dropped", slog.Any("err", err))
			continue
		}
		if env.Replica == s.cfg.ReplicaID {
			continue
		}
		fn(env.Event)
	}
}
