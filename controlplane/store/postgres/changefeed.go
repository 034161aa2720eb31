package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/factory/factory/controlplane/store"
)

// A notification's payload is compact JSON:
//
//	{"r":"<replica id>","c":[["<task id>",<previous state>,<state>],...]}
//
// PostgreSQL refuses payloads of 8000 bytes or more, so a transaction that
// changed many tasks sends several, all but the last marked "m":1 (more to
// come); the notifications of one transaction are delivered together and
// in order, and the listener joins them into one batch. A change whose id
// alone would not fit is sent as "s":1, which the listener turns into a
// resync.
const maxPayload = 7900

// payloadHead and payloadTail wrap the entries of one notification.
func payloadHead(replica string) []byte {
	b := []byte(`{"r":`)
	b = append(b, jsonText(replica)...)
	return append(b, `,"c":[`...)
}

// notifyPayloads splits changes into notification payloads.
func notifyPayloads(replica string, changes []store.RemoteChange) []string {
	if len(changes) == 0 {
		return nil
	}
	head := payloadHead(replica)
	var (
		out   []string
		cur   = append([]byte(nil), head...)
		empty = true
	)
	flush := func(more bool) {
		b := append(cur, ']')
		if more {
			b = append(b, `,"m":1`...)
		}
		out = append(out, string(append(b, '}')))
		cur, empty = append([]byte(nil), head...), true
	}
	for _, c := range changes {
		entry, err := json.Marshal([]any{c.TaskID, int32(c.PreviousState), int32(c.State)})
		if err != nil || len(head)+len(entry)+16 > maxPayload {
			// No room for it anywhere: tell the listeners to look again.
			if !empty {
				flush(true)
			}
			out = append(out, string(append(head[:len(head):len(head)], `],"s":1,"m":1}`...)))
			continue
		}
		if !empty && len(cur)+1+len(entry)+16 > maxPayload {
			flush(true)
		}
		if !empty {
			cur = append(cur, ',')
		}
		cur = append(cur, entry...)
		empty = false
	}
	if !empty {
		flush(false)
	} else {
		// The last notification sent was marked "more"; close the batch
		// with an empty one.
		out = append(out, string(append(head[:len(head):len(head)], "]}"...)))
	}
	return out
}

// notification is a decoded payload.
type notification struct {
	Replica string            `json:"r"`
	Changes []json.RawMessage `json:"c"`
	More    int               `json:"m"`
	Resync  int               `json:"s"`
}

func decodeChange(raw json.RawMessage) (store.RemoteChange, error) {
	var parts []json.RawMessage
	if err := json.Unmarshal(raw, &parts); err != nil || len(parts) != 3 {
		return store.RemoteChange{}, fmt.Errorf("change %s: want [id, previous, state]", raw)
	}
	var (
		c          store.RemoteChange
		prev, next int32
	)
	if err := errors.Join(json.Unmarshal(parts[0], &c.TaskID), json.Unmarshal(parts[1], &prev), json.Unmarshal(parts[2], &next)); err != nil {
		return store.RemoteChange{}, fmt.Errorf("change %s: %w", raw, err)
	}
	c.PreviousState, c.State = store.TaskState(prev), store.TaskState(next)
	return c, nil
}

// Listener timings.
const (
	// listenIdlePing is how long the listener waits for a notification
	// before it checks that its connection is still alive: a dead peer
	// that sent no reset would otherwise go unnoticed.
	listenIdlePing = 15 * time.Second
	pingTimeout    = 5 * time.Second
	minBackoff     = 100 * time.Millisecond
	maxBackoff     = 5 * time.Second
)

// ListenChanges implements store.ChangeFeed. It holds a connection of its
// own (outside the pool) with LISTEN on the schema's channel, skips this
// replica's own notifications, and reconnects with backoff after a lost
// connection. Each time it starts listening, the first time included, it
// calls fn with Resync set. It returns nil when ctx ends
// and an error only when the store is closed.
func (s *Store) ListenChanges(parent context.Context, fn func(batch store.ChangeBatch)) error {
	if !s.goBackground() {
		return fmt.Errorf("postgres ListenChanges: %w", errStoreClosed)
	}
	defer s.bg.Done()
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	stop := context.AfterFunc(s.life, cancel)
	defer stop()

	backoff := minBackoff
	// Every successful LISTEN starts with a resync: notifications sent
	// before it are gone. That holds for the first one too: the replica
	// serves calls before its feed listens, and a claimer parked in that
	// gap would otherwise sleep through work created meanwhile on another
	// replica for its whole wait.
	missed := false
	for {
		err := s.listenOnce(ctx, func() {
			backoff = minBackoff
			if missed {
				s.log.InfoContext(ctx, "change feed listening again; resyncing")
			}
			fn(store.ChangeBatch{Resync: true})
			missed = false
		}, fn)
		missed = true
		if ctx.Err() != nil {
			if parent.Err() == nil {
				return fmt.Errorf("postgres ListenChanges: %w", errStoreClosed)
			}
			return nil
		}
		s.log.WarnContext(ctx, "change feed connection lost; reconnecting", slog.Any("err", err), slog.Duration("backoff", backoff))
		// Jitter spreads the replicas' reconnects after a server restart.
		if sleepCtx(ctx, backoff/2+rand.N(backoff/2+1)) != nil {
			continue
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// listenOnce connects, listens and delivers notifications until the
// connection fails or ctx ends.
func (s *Store) listenOnce(ctx context.Context, onListening func(), fn func(store.ChangeBatch)) error {
	conn, err := s.dedicatedConn(ctx)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
	onListening()

	var pending []store.RemoteChange // a batch split over several notifications
	resync := false
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
		var msg notification
		if err := json.Unmarshal([]byte(n.Payload), &msg); err != nil {
			s.log.WarnContext(ctx, "undecodable change notification; resyncing", slog.Any("err", err))
			pending, resync = nil, true
			continue
		}
		if msg.Replica == s.cfg.ReplicaID {
			continue
		}
		for _, raw := range msg.Changes {
			c, err := decodeChange(raw)
			if err != nil {
				resync = true
				continue
			}
			pending = append(pending, c)
		}
		if msg.Resync != 0 {
			resync = true
		}
		if msg.More != 0 {
			continue
		}
		batch := store.ChangeBatch{Changes: pending, Resync: resync}
		pending, resync = nil, false
		if len(batch.Changes) > 0 || batch.Resync {
			fn(batch)
		}
	}
}

// dedicatedConn opens a connection outside the pool, configured as the
// pool's are, for a session that must stay on one backend (LISTEN, an
// advisory lock).
func (s *Store) dedicatedConn(ctx context.Context) (*pgx.Conn, error) {
	return pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}
