package store

import "context"

// EventRelay carries operator-facing events (notify.Event, as JSON) between
// replicas that share a database, so that a WatchEvents stream on any
// replica hears what another published: the alert evaluator runs on the
// elected replica alone, and approvals or the emergency stop arrive at
// whichever replica a caller reached. A store without it serves a single
// replica, whose in-process hub is the whole truth. Delivery is best
// effort: an event sent while a listener reconnects is not replayed.
type EventRelay interface {
	// RelayEvent sends payload (at most MaxRelayPayload bytes) to the
	// other replicas' listeners.
	RelayEvent(ctx context.Context, payload []byte) error

	// ListenEvents calls fn with each payload other replicas relay (never
	// this one's own), in order, until ctx ends, reconnecting by itself.
	ListenEvents(ctx context.Context, fn func(payload []byte)) error
}

// MaxRelayPayload is the largest payload RelayEvent takes: PostgreSQL's
// notification limit, less room for the envelope.
const MaxRelayPayload = 7000
