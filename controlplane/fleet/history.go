package fleet

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// History keeps the fleet's past telemetry readings in the store. The
// latest reading of each host stays in the Registry's memory; History
// stores a downsampled copy (at most one reading per host per
// Config.HistoryEvery), so a fleet streaming telemetry every few seconds
// writes the store once a minute per host, and it prunes readings older
// than Config.HistoryRetention.
type History struct {
	store     store.TelemetryStore
	clock     Clock
	every     time.Duration
	retention time.Duration

	mu sync.Mutex
	// last is when each host's latest stored reading arrived. It is only
	// this replica's view: a sidecar streams to one replica at a time, and
	// after a restart the first reading of each host is stored at once.
	last map[string]time.Time
}

// NewHistory returns History on st with cfg's sampling interval and
// retention (zero fields take the defaults); a nil clock is the system
// clock.
func NewHistory(st store.TelemetryStore, clock Clock, cfg Config) *History {
	if clock == nil {
		clock = SystemClock
	}
	cfg = cfg.withDefaults()
	return &History{store: st, clock: clock, every: cfg.HistoryEvery, retention: cfg.HistoryRetention, last: map[string]time.Time{}}
}

// Record stores host's reading if none of host's was stored within the
// sampling interval, and reports whether it did. reading renders the
// reading as JSON; it is called only when the reading is stored, so the
// readings that are dropped cost a map lookup and nothing more.
func (h *History) Record(ctx context.Context, host string, reading func() (string, error)) (bool, error) {
	now := h.clock.Now()
	h.mu.Lock()
	prev, seen := h.last[host]
	if seen && now.Sub(prev) < h.every {
		h.mu.Unlock()
		return false, nil
	}
	// Taking the slot before the write keeps concurrent readings of one
	// host from both being stored.
	h.last[host] = now
	h.mu.Unlock()

	body, err := reading()
	if err == nil {
		err = h.store.TelemetryAppend(ctx, &store.TelemetryAppendParams{
			Samples: []store.TelemetrySample{{Host: host, Time: now, JSON: body}}})
	}
	if err != nil {
		// Give the slot back so the next reading tries again.
		h.mu.Lock()
		if h.last[host].Equal(now) {
			if seen {
				h.last[host] = prev
			} else {
				delete(h.last, host)
			}
		}
		h.mu.Unlock()
		return false, err
	}
	return true, nil
}

// List returns host's stored readings oldest first (see
// store.TelemetryListParams).
func (h *History) List(ctx context.Context, p *store.TelemetryListParams) ([]*store.TelemetrySample, error) {
	return h.store.TelemetryList(ctx, p)
}

// Prune deletes the readings older than the retention and returns how
// many it deleted.
func (h *History) Prune(ctx context.Context) (int, error) {
	return h.store.TelemetryPrune(ctx, &store.TelemetryPruneParams{Before: h.clock.Now().Add(-h.retention)})
}

// PruneEvery is how often RunRetention prunes: often enough that nothing
// outlives the retention by more than an hour, rarely enough that the
// delete is a batch, not a trickle.
const PruneEvery = time.Hour

// RunRetention prunes at once and then every PruneEvery until ctx ends.
// A failed prune is logged and retried on the next tick: history is not
// worth stopping the control plane for.
func (h *History) RunRetention(ctx context.Context, log *slog.Logger) error {
	every := min(PruneEvery, h.retention)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		n, err := h.Prune(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			log.WarnContext(ctx, "pruning telemetry history failed", "err", err)
		case n > 0:
			log.InfoContext(ctx, "pruned telemetry history", "deleted", n, "retention", h.retention.String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
