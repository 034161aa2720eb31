package queue

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// EventType says what an Event reports.
type EventType int

const (
	EventCreated EventType = iota + 1
	EventStateChanged
	EventUpdated
)

// Event is one task change, as published to watchers.
type Event struct {
	Type          EventType
	Task          *store.Task
	PreviousState store.TaskState
	Time          time.Time
}

// ErrWatchBehind ends a subscription whose reader fell too far behind; the
// client should watch again (and gets a fresh snapshot).
var ErrWatchBehind = errors.New("watch fell behind the event stream; watch again")

// Filter selects events. Zero fields match everything.
type Filter struct {
	States  []store.TaskState
	Role    string
	TaskIDs []string
}

// Match reports whether t passes the filter.
func (f Filter) Match(t *store.Task) bool {
	if len(f.States) > 0 && !slices.Contains(f.States, t.State) {
		return false
	}
	if f.Role != "" && t.Role != f.Role {
		return false
	}
	if len(f.TaskIDs) > 0 && !slices.Contains(f.TaskIDs, t.ID) {
		return false
	}
	return true
}

// Subscription receives matching events on C until Close, or until it
// falls behind, when C is closed and Err returns ErrWatchBehind.
type Subscription struct {
	C      <-chan Event
	c      chan Event
	filter Filter
	hub    *hub
	err    error
}

// Err says why C was closed by the hub; nil after Close.
func (s *Subscription) Err() error {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.err
}

// Close ends the subscription.
func (s *Subscription) Close() { s.hub.remove(s, nil) }

// hub fans events out to subscribers without ever blocking the publisher:
// a subscriber whose buffer is full is cut off rather than slowing the
// queue for everyone.
type hub struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
}

func newHub() *hub { return &hub{subs: make(map[*Subscription]struct{})} }

func (h *hub) subscribe(f Filter, buffer int) *Subscription {
	c := make(chan Event, buffer)
	s := &Subscription{C: c, c: c, filter: f, hub: h}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

func (h *hub) remove(s *Subscription, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; !ok {
		return
	}
	delete(h.subs, s)
	s.err = err
	close(s.c)
}

func (h *hub) hasSubscribers() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) > 0
}

func (h *hub) publish(events []Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		for _, e := range events {
			if !s.filter.Match(e.Task) {
				continue
			}
			select {
			case s.c <- e:
			default:
				delete(h.subs, s)
				s.err = ErrWatchBehind
				close(s.c)
			}
			if s.err != nil {
				break
			}
		}
	}
}
