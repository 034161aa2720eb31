package store

import (
	"context"
	"encoding/base64"
	"time"
)

// FleetStore keeps the fleet events that must not be lost (model swaps,
// log-watch counts): a sidecar spools them on disk until the control plane
// acks them, and acks only after FleetEventsAppend returns. It also keeps
// the operators' placements of agents on hosts. It is part of Store, so
// every driver implements it and passes the conformance suite.
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

	// PlacementSet places Agent on Host (an operator's grant: that host's
	// sidecar may act for the agent), replacing any placement the agent
	// had, and returns the one replaced (nil when none) and the new one.
	// PlacedAt is Now. An empty Agent or Host is a FieldError.
	PlacementSet(ctx context.Context, params *PlacementSetParams) (before, after *Placement, err error)

	// PlacementDelete removes Agent's placement and returns it, or
	// ErrNotFound.
	PlacementDelete(ctx context.Context, params *PlacementDeleteParams) (*Placement, error)

	// PlacementList returns placements sorted by agent after Cursor, at
	// most Limit (0: all), filtered by Host and by Agents when set.
	// NextCursor is empty on the last page. An undecodable cursor is a
	// FieldError on "page_token".
	PlacementList(ctx context.Context, params *PlacementListParams) (*PlacementListResult, error)
}

// Placement is an operator's grant that Agent runs on Host. It lives in
// the store, so every replica answers "may this host's sidecar act for
// this agent" the same way.
type Placement struct {
	Agent    string
	Host     string
	PlacedBy string
	PlacedAt time.Time
}

// PlacementSetParams places an agent.
type PlacementSetParams struct {
	Agent    string
	Host     string
	PlacedBy string
	Now      time.Time
}

// PlacementDeleteParams names the agent to unplace.
type PlacementDeleteParams struct {
	Agent string
}

// PlacementListParams filters and pages PlacementList. Zero values do not
// filter.
type PlacementListParams struct {
	Host string
	// Agents, when set, keeps only these agents' placements.
	Agents []string
	Limit  int
	Cursor string
}

// PlacementListResult is one page.
type PlacementListResult struct {
	Placements []*Placement
	NextCursor string
}

// PlacementCursor is the page token after agent: opaque to callers, so a
// token that was not made here is refused rather than read as a name.
func PlacementCursor(agent string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(agent))
}

// ParsePlacementCursor reads a PlacementCursor; "" is the first page.
func ParsePlacementCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) == 0 {
		return "", InvalidField("page_token", "%q is not a page token from a previous list", c)
	}
	return string(b), nil
}

// CheckPlacementSet validates a placement before a driver stores it.
func CheckPlacementSet(p *PlacementSetParams) error {
	switch {
	case p == nil || p.Agent == "":
		return InvalidField("agent", "is required")
	case p.Host == "":
		return InvalidField("host", "is required")
	}
	return nil
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
