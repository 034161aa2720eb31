package fleet

import (
	"context"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// Event kinds a sidecar reports.
const (
	// KindModelSwap is one model loaded in place of another on a host's
	// inference server.
	KindModelSwap = "model_swap"
	// KindLogCount is a log watcher's match count over one window.
	KindLogCount = "log_count"
)

// MaxSwapsPerHour is the model-swap rate above which a host thrashes: each
// swap evicts a model from VRAM and stalls every agent using it (the
// runbook alerts above 20 per hour).
const MaxSwapsPerHour = 20

// SwapWindow is the window the swap rate counts over.
const SwapWindow = time.Hour

// Events records the fleet events that must not be lost and answers
// questions about them. Unlike the Registry's readings they live in the
// store: a swap rate must survive a control plane restart.
type Events struct {
	store store.FleetStore
	clock Clock
}

// NewEvents returns Events on st; a nil clock is the system clock.
func NewEvents(st store.FleetStore, clock Clock) *Events {
	if clock == nil {
		clock = SystemClock
	}
	return &Events{store: st, clock: clock}
}

// Record stores a host's events, ignoring ids already stored, and returns
// how many were new. Once it returns nil every event is durable, so the
// caller may ack all their ids, replays included.
func (e *Events) Record(ctx context.Context, host string, events []*store.FleetEvent) (int, error) {
	for _, ev := range events {
		if ev != nil {
			ev.Host = host
		}
	}
	return e.store.FleetEventsAppend(ctx, &store.FleetEventsAppendParams{Events: events})
}

// List returns stored events (see store.FleetEventsListParams).
func (e *Events) List(ctx context.Context, p *store.FleetEventsListParams) ([]*store.FleetEvent, error) {
	return e.store.FleetEventsList(ctx, p)
}

// SwapRates returns each host's model swaps in the last SwapWindow, by
// event time; hosts with none are absent.
func (e *Events) SwapRates(ctx context.Context) (map[string]int, error) {
	evs, err := e.store.FleetEventsList(ctx, &store.FleetEventsListParams{
		Kind: KindModelSwap, Since: e.clock.Now().Add(-SwapWindow)})
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, ev := range evs {
		out[ev.Host]++
	}
	return out, nil
}

// SwapRate returns one host's model swaps in the last SwapWindow.
func (e *Events) SwapRate(ctx context.Context, host string) (int, error) {
	evs, err := e.store.FleetEventsList(ctx, &store.FleetEventsListParams{
		Host: host, Kind: KindModelSwap, Since: e.clock.Now().Add(-SwapWindow)})
	return len(evs), err
}
