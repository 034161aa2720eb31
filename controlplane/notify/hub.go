package notify

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
)

// ErrSlowSubscriber ends a subscription whose buffer filled up: the
// publisher never waits for a subscriber, so one that cannot keep up is
// cut off and must subscribe again (and read the current state again).
var ErrSlowSubscriber = errors.New("subscriber too slow: events were dropped, subscribe again")

// DefaultHubBuffer is how many events a subscriber may fall behind by.
const DefaultHubBuffer = 256

// Hub fans events out in memory to the WatchEvents streams of this
// process. It is a Publisher; Publish never blocks.
type Hub struct {
	buffer int

	mu   sync.Mutex
	subs map[*Subscription]struct{}
}

// NewHub returns a hub whose subscribers may fall buffer events behind
// (DefaultHubBuffer when buffer <= 0).
func NewHub(buffer int) *Hub {
	if buffer <= 0 {
		buffer = DefaultHubBuffer
	}
	return &Hub{buffer: buffer, subs: map[*Subscription]struct{}{}}
}

// Subscription is one subscriber's feed.
type Subscription struct {
	hub   *Hub
	kinds []Kind
	ch    chan Event
	done  chan struct{}
	once  sync.Once
	err   error // set before done closes
}

// Subscribe returns a feed of the events of the given kinds (every kind
// when none is given). The caller must Close it.
func (h *Hub) Subscribe(kinds ...Kind) *Subscription {
	s := &Subscription{hub: h, kinds: slices.Clone(kinds), ch: make(chan Event, h.buffer), done: make(chan struct{})}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Subscribers is how many subscriptions are open.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Publish implements Publisher: each matching subscriber gets e in its
// buffer, and one whose buffer is full is cut off.
func (h *Hub) Publish(_ context.Context, e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if !s.wants(e.Kind) {
			continue
		}
		select {
		case s.ch <- e:
		default:
			delete(h.subs, s)
			s.end(ErrSlowSubscriber)
		}
	}
}

func (s *Subscription) wants(k Kind) bool {
	return len(s.kinds) == 0 || slices.Contains(s.kinds, k)
}

// Events delivers the events in publish order.
func (s *Subscription) Events() <-chan Event { return s.ch }

// Done is closed when the subscription ends: closed by its owner, or cut
// off (Err says which).
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err is nil while the subscription runs and after Close, and
// ErrSlowSubscriber once it was cut off.
func (s *Subscription) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	delete(s.hub.subs, s)
	s.hub.mu.Unlock()
	s.end(nil)
}

func (s *Subscription) end(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
	})
}

// Fanout publishes each event to every publisher in it, after giving it an
// ID and a Time when it has none, so every sink sees the same event.
type Fanout []Publisher

// Publish implements Publisher.
func (f Fanout) Publish(ctx context.Context, e Event) {
	e = Stamp(e, time.Now)
	for _, p := range f {
		if p != nil {
			p.Publish(ctx, e)
		}
	}
}

// Stamp fills an event's missing ID (a UUIDv7) and Time (from now).
func Stamp(e Event, now func() time.Time) Event {
	if e.ID == "" {
		if id, err := uuid.NewV7(); err == nil {
			e.ID = id.String()
		} else {
			e.ID = uuid.NewString()
		}
	}
	if e.Time.IsZero() {
		e.Time = now().UTC()
	}
	return e
}
