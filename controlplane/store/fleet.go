package store

import (
	"context"
	"time"
)

// FleetStore keeps the fleet events that must not be lost (model swaps,
// log-watch counts): a sidecar spools them on disk until the control plane
// acks them, and acks only after FleetEventsAppend returns. It is part of
// Store, so every driver implements it and passes the conformance suite.
type FleetStore interface {
	// FleetEventsAppend inserts events, all in one transaction, ignoring
	// any whose ID is already stored: a sidecar replays unacked events
	// with their original ids after a reconnect, and a replay must count
	// once. It returns how many were new. An event without an ID, Host or
	// Kind is a FieldError.
	FleetEventsAppend(ctx context.Context, params *FleetEventsAppendParams) (int, error)

	// FleetEventsList returns events oldest first (by Time, then ID),
	// filtered by Host and Kind when set and by Time >= Since when set, at
	// most Limit (0: all).
	FleetEventsList(ctx context.Context, params *FleetEventsListParams) ([]*FleetEvent, error)
}

// FleetEvent is one event a sidecar reported.
type FleetEvent struct {
	// ID is chosen by the sidecar (a UUIDv7) and unique across the fleet.
	ID string
	// Host is the sidecar's host.
	Host string
	// Kind says what happened ("model_swap", "log_count").
	Kind string
	// Time is when it happened, by the sidecar's clock.
	Time time.Time
	// Attributes are the event's details.
	Attributes map[string]string
}

// FleetEventsAppendParams are FleetEventsAppend's arguments.
type FleetEventsAppendParams struct {
	Events []*FleetEvent
}

// FleetEventsListParams are FleetEventsList's arguments.
type FleetEventsListParams struct {
	Host  string
	Kind  string
	Since time.Time
	Limit int
}

// CheckFleetEvents validates events before a driver stores them.
func CheckFleetEvents(events []*FleetEvent) error {
	for i, e := range events {
		switch {
		case e == nil:
			return InvalidField("events", "event %d is missing", i)
		case e.ID == "":
			return InvalidField("id", "event %d has no id", i)
		case e.Host == "":
			return InvalidField("host", "event %d has no host", i)
		case e.Kind == "":
			return InvalidField("kind", "event %d has no kind", i)
		}
	}
	return nil
}
