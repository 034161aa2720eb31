package spend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
	"github.com/factory/factory/sidecar/spool"
)

// maxBatch is the most events one ReportSpendBatch carries (the API's
// limit).
const maxBatch = 1000

// RelayConfig configures the relay.
type RelayConfig struct {
	// Conn is the connection to the control plane. Required.
	Conn grpc.ClientConnInterface
	// CallOptions go with every call: the sidecar's bearer token.
	CallOptions []grpc.CallOption
	// Spool holds the events to deliver. Required.
	Spool *spool.Spool
	// MinBackoff and MaxBackoff bound the wait after a failed delivery
	// (defaults 500ms and 30s).
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds one call (default 30s).
	CallTimeout time.Duration
	Logger      *slog.Logger
}

// Relay delivers spooled spend events to BudgetService.ReportSpendBatch
// and drops each from the spool only once the control plane stored it (a
// duplicate is stored too: it was stored before).
type Relay struct {
	cfg    RelayConfig
	client factoryv1.BudgetServiceClient
}

// NewRelay checks cfg.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.Conn == nil || cfg.Spool == nil {
		return nil, errors.New("spend relay: Conn and Spool are required")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Relay{cfg: cfg, client: factoryv1.NewBudgetServiceClient(cfg.Conn)}, nil
}

// Run delivers until ctx ends: whatever is spooled at start (a previous
// run's leftovers), then each append as it comes, backing off while the
// control plane is unreachable.
func (r *Relay) Run(ctx context.Context) error {
	backoff := r.cfg.MinBackoff
	failing := false
	for {
		err := r.Flush(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var wait <-chan time.Time
		if err != nil {
			if !failing {
				r.cfg.Logger.Warn("spend relay: delivery failed; events stay spooled and are retried", "pending", r.cfg.Spool.Len(), "err", err)
			}
			failing = true
			wait = time.After(backoff/2 + time.Duration(rand.Int64N(int64(backoff)+1)))
			backoff = min(backoff*2, r.cfg.MaxBackoff)
		} else {
			if failing {
				r.cfg.Logger.Info("spend relay: delivering again")
			}
			failing, backoff = false, r.cfg.MinBackoff
		}
		if wait != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-wait:
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.cfg.Spool.Notify():
		}
	}
}

// Flush delivers everything pending now, in batches; it returns the first
// failure, with the undelivered events still spooled.
func (r *Relay) Flush(ctx context.Context) error {
	pending := r.cfg.Spool.Pending()
	for len(pending) > 0 {
		n := min(len(pending), maxBatch)
		if err := r.deliver(ctx, pending[:n]); err != nil {
			return err
		}
		pending = pending[n:]
	}
	return nil
}

func (r *Relay) deliver(ctx context.Context, batch []spool.Event) error {
	events := make([]*factoryv1.SpendEvent, 0, len(batch))
	ids := make([]string, 0, len(batch))
	var broken []string
	for _, s := range batch {
		ev, err := fromSpool(s)
		if err != nil {
			// Not a spend event the relay can read: it can never be
			// delivered, and holding it would hold back the rest.
			r.cfg.Logger.Error("spend relay: dropping an unreadable spooled event", "id", s.ID, "err", err)
			broken = append(broken, s.ID)
			continue
		}
		events = append(events, ev.Proto())
		ids = append(ids, s.ID)
	}
	if len(broken) > 0 {
		if err := r.cfg.Spool.Ack(broken); err != nil {
			return err
		}
	}
	if len(events) == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
	defer cancel()
	resp, err := r.client.ReportSpendBatch(cctx, &factoryv1.ReportSpendBatchRequest{Events: events}, r.cfg.CallOptions...)
	if err == nil {
		// A conflict is an id the agent already used for other content:
		// resending cannot change that, so it is dropped, loudly.
		for _, c := range resp.GetConflicts() {
			r.cfg.Logger.Error("spend relay: the control plane refused a rewrite of a recorded event; dropped",
				"id", c.GetId(), "agent", c.GetAgent(), "differs", c.GetFields())
		}
		return r.cfg.Spool.Ack(ids)
	}
	if status.Code(err) != codes.InvalidArgument && status.Code(err) != codes.PermissionDenied {
		return err
	}
	// The batch was refused as a whole for one event's sake: find which
	// one, one call each, so the good ones are stored.
	return r.deliverOneByOne(ctx, events)
}

// deliverOneByOne reports each event alone. An event refused as invalid,
// or as a rewrite of a recorded id, is dropped (logged): it can never be stored. One refused because the
// host does not run its agent stays spooled (the sidecar's config may
// declare the agent after a restart) and the error is returned.
func (r *Relay) deliverOneByOne(ctx context.Context, events []*factoryv1.SpendEvent) error {
	var firstErr error
	for _, ev := range events {
		cctx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
		_, err := r.client.ReportSpend(cctx, &factoryv1.ReportSpendRequest{Event: ev}, r.cfg.CallOptions...)
		cancel()
		switch status.Code(err) {
		case codes.OK:
		case codes.InvalidArgument, codes.AlreadyExists:
			// Invalid, or a rewrite of an id the agent already used: no
			// retry can store it, and holding it would hold back the rest.
			r.cfg.Logger.Error("spend relay: the control plane refused an event; dropped", "id", ev.GetId(), "agent", ev.GetAgent(), "err", err)
		case codes.PermissionDenied:
			r.cfg.Logger.Error("spend relay: the control plane refused an event: does this host run the agent? it stays spooled",
				"id", ev.GetId(), "agent", ev.GetAgent(), "err", err)
			if firstErr == nil {
				firstErr = fmt.Errorf("event %s: %w", ev.GetId(), err)
			}
			continue
		default:
			return err
		}
		if aerr := r.cfg.Spool.Ack([]string{ev.GetId()}); aerr != nil {
			return aerr
		}
	}
	return firstErr
}
