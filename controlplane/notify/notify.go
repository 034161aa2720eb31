// Package notify carries what an operator must hear about (alerts,
// approval requests and decisions, the morning digest, the emergency stop)
// to the configured webhooks and to the WatchEvents stream the orchestrator
// agent relays to chat.
package notify

import (
	"context"
	"time"
)

// Kind says what an event is about.
type Kind string

// The kinds of event.
const (
	KindAlert         Kind = "alert"
	KindSpendAlert    Kind = "spend_alert"
	KindApproval      Kind = "approval"
	KindDigest        Kind = "digest"
	KindEmergencyStop Kind = "emergency_stop"
	KindMaintenance   Kind = "maintenance"
)

// Event is one notification.
type Event struct {
	Kind Kind
	// ID is unique per event, so a receiver can drop a redelivery.
	ID   string
	Time time.Time
	// Title is one line; Text is the card, plain text on several lines,
	// ready to paste into chat.
	Title string
	Text  string
	// Attributes are the machine-readable fields (ids, scopes, amounts).
	Attributes map[string]string
}

// Publisher sends events on. Publish must not block on slow receivers: it
// queues and returns.
type Publisher interface {
	Publish(ctx context.Context, e Event)
}

// PublisherFunc adapts a function to Publisher.
type PublisherFunc func(ctx context.Context, e Event)

// Publish calls f.
func (f PublisherFunc) Publish(ctx context.Context, e Event) { f(ctx, e) }

// Discard drops every event: the publisher of a service built without one.
var Discard Publisher = PublisherFunc(func(context.Context, Event) {})
