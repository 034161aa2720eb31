package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// Cursor is where the event sits in this replica's event stream; a
	// watch resumed from it continues with the next event.
	Cursor string

	memo *eventMemo
}

type eventMemo struct {
	once sync.Once
	v    any
}

// Memo returns what make returns for this event, calling it once however
// many watchers ask: every watcher sends the same bytes, so they are
// encoded once. Outside a hub's ring (an event never published) it just
// calls make.
func (e Event) Memo(make func() any) any {
	if e.memo == nil {
		return make()
	}
	e.memo.once.Do(func() { e.memo.v = make() })
	return e.memo.v
}

// ErrWatchBehind ends a subscription whose reader fell so far behind that
// the events it had not read left the replica's buffer. The *BehindError
// that wraps it says where to resume.
var ErrWatchBehind = errors.New("watcher fell behind the event stream")

// ErrCursorTooOld refuses a resume whose cursor this replica cannot
// continue from: its events left the buffer, or it was issued by another
// replica or before a restart. Watch again without a cursor.
var ErrCursorTooOld = errors.New("cannot resume from this cursor")

// BehindError is ErrWatchBehind with the cursor to resume from.
type BehindError struct {
	// Resume is the cursor of the last event delivered (or of the start
	// of the watch): a watch resumed from it misses nothing, as long as
	// it comes before the buffer moves past it.
	Resume string
}

func (e *BehindError) Error() string {
	return fmt.Sprintf("%v: it lagged more events than a watcher may; resume from cursor %q (resume_cursor) to get the rest, or watch again for a fresh snapshot", ErrWatchBehind, e.Resume)
}

func (e *BehindError) Unwrap() error { return ErrWatchBehind }

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

// Default bounds of the recent-event buffer; see Config.WatchBuffer.
const (
	DefaultWatchBuffer      = 4096
	defaultWatchBufferBytes = 64 << 20
	// ringPerWatcher is how many times a watcher's allowance the ring
	// holds: a watcher cut off at its allowance can still resume from its
	// cursor while the ring fills the rest.
	ringPerWatcher = 4
	// maxBatch bounds what one Next returns, so a watcher far behind
	// sends in slices and notices a close between them.
	maxBatch = 256
	// lagCheckEvery spaces out the publisher's look for watchers that
	// fell behind: the scan costs a load per watcher, so it runs at most
	// this often rather than on every write.
	lagCheckEvery = 100 * time.Millisecond
)

// hub fans events out to watchers without the publisher ever waiting for
// a watcher. Events go into one ring shared by every watcher (the bounded
// buffer each reads from at its own cursor); a watcher costs a cursor, not
// a buffer, so thousands of idle watchers cost little, and one that stops
// reading holds nothing back: once it is maxLag events behind it is told
// so, with the cursor to resume from, and the ring (ringPerWatcher times
// larger) still holds what it missed while it resumes.
//
// Watchers come in two kinds. Broad ones (no role or task filter) hear
// nearly everything: a publish wakes them all at once by closing one
// channel, and their lag is the distance to the newest event. Narrow ones
// (a role or task ids) are indexed by what they watch: a publish visits
// only those an event may match, counts it against their allowance and
// rings their own bell, so a watcher waiting for one task costs nothing
// while the rest of the queue churns.
type hub struct {
	epoch    string // tells this process's cursors from another's
	capacity int
	maxLag   uint64
	maxBytes int

	mu    sync.Mutex
	ring  []Event // ring[seq % capacity] holds event seq, for first <= seq < next
	sizes []int   // approximate bytes of each held event, same indexing
	bytes int
	first uint64 // oldest event held
	next  uint64 // the sequence number the next event gets; starts at 1
	wake  chan struct{}

	broad  map[*Subscription]struct{}
	byRole map[string]map[*Subscription]struct{}
	byTask map[string]map[*Subscription]struct{}
	count  int

	lastLagCheck time.Time
}

func newHub() *hub { return newHubSized(DefaultWatchBuffer, defaultWatchBufferBytes) }

// newHubSized returns a hub whose watchers may lag maxLag events.
func newHubSized(maxLag, maxBytes int) *hub {
	maxLag = max(maxLag, 1)
	capacity := ringPerWatcher * maxLag
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &hub{
		epoch: hex.EncodeToString(b[:]), capacity: capacity, maxLag: uint64(maxLag), maxBytes: maxBytes,
		ring: make([]Event, capacity), sizes: make([]int, capacity),
		first: 1, next: 1, wake: make(chan struct{}),
		broad: map[*Subscription]struct{}{}, byRole: map[string]map[*Subscription]struct{}{}, byTask: map[string]map[*Subscription]struct{}{},
	}
}

func (h *hub) cursor(seq uint64) string { return h.epoch + "-" + strconv.FormatUint(seq, 10) }

// parseCursor returns the sequence a cursor of this hub names.
func (h *hub) parseCursor(c string) (uint64, error) {
	epoch, seq, ok := strings.Cut(c, "-")
	n, err := strconv.ParseUint(seq, 10, 64)
	switch {
	case !ok || err != nil:
		return 0, fmt.Errorf("%w: %q is not a cursor this control plane issued", ErrCursorTooOld, c)
	case epoch != h.epoch:
		return 0, fmt.Errorf("%w: cursor %q was issued by another replica or before a restart; watch again without resume_cursor for a fresh snapshot", ErrCursorTooOld, c)
	}
	return n, nil
}

// Subscription reads the events that match its filter, from its cursor on.
type Subscription struct {
	hub    *hub
	filter Filter
	narrow bool
	bell   chan struct{} // narrow: rung when a matching event is published

	// next is the sequence of the first event not yet read. Guarded by
	// hub.mu; atomic so Cursor may read it without the lock.
	next atomic.Uint64
	// pending (narrow only, guarded by hub.mu) counts the matching events
	// in [next, hub.next): its lag. oldest is the sequence of the first of
	// them, or an earlier one (0 when none): while it is in the ring, the
	// reader has lost nothing, however far the rest of the queue moved.
	pending, oldest uint64
	// from is where the hub stood when the subscription began: a resumed
	// broad watch may catch up on what came before it plus its allowance.
	// Zero while the watcher sends its snapshot (only the ring bounds it
	// then).
	from     atomic.Uint64
	onBehind atomic.Pointer[func(error)]
	closed   atomic.Bool
	done     chan struct{} // closed by Close
}

// ErrClosed is what Next returns once the subscription was closed.
var ErrClosed = errors.New("subscription closed")

// Close ends the subscription; it is idempotent.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	s.hub.remove(s)
	s.hub.mu.Unlock()
	if !s.closed.Swap(true) {
		close(s.done)
	}
}

// Events delivers the subscription's events on a channel until ctx ends,
// the subscription is closed, or it falls behind (the channel is then
// closed), for readers that select over several sources.
func (s *Subscription) Events(ctx context.Context) <-chan Event {
	ch := make(chan Event)
	go func() {
		defer close(ch)
		for {
			events, err := s.Next(ctx, nil)
			if err != nil {
				return
			}
			for _, e := range events {
				select {
				case ch <- e:
				case <-ctx.Done():
					return
				case <-s.done:
					return
				}
			}
		}
	}()
	return ch
}

// OnBehind registers f to be called, once and from the publisher, when the
// subscription falls behind while its reader is not in Next (for example
// blocked sending to a client that does not read). f must not block.
func (s *Subscription) OnBehind(f func(error)) { s.onBehind.Store(&f) }

// Cursor is the cursor of the last event read (or of the subscription's
// start): resuming from it continues with the next unread event.
func (s *Subscription) Cursor() string { return s.hub.cursor(s.next.Load() - 1) }

// Snapshotting suspends a broad watcher's lag allowance while its reader
// sends a snapshot, which may take longer than the allowance lasts on a
// busy queue; the ring still bounds it. Synced restores it, counted from
// now. (A narrow watcher's allowance counts only its own events.)
func (s *Subscription) Snapshotting() { s.from.Store(0) }

// Synced ends Snapshotting.
func (s *Subscription) Synced() {
	s.hub.mu.Lock()
	s.from.Store(s.hub.next)
	s.hub.mu.Unlock()
}

// Next waits for events that match the filter after the cursor and returns
// them (at most maxBatch), advancing the cursor past every event it looked
// at. It returns ctx's error when ctx ends, ErrClosed after Close, and a
// *BehindError once the reader lagged more than its allowance.
func (s *Subscription) Next(ctx context.Context, stop <-chan struct{}) ([]Event, error) {
	h := s.hub
	for {
		h.mu.Lock()
		next := s.next.Load()
		if next < h.first && s.narrow && (s.pending == 0 || s.oldest >= h.first) {
			// Only events it does not watch left the ring.
			next = h.first
		}
		if h.behind(s, next) {
			h.mu.Unlock()
			return nil, &BehindError{Resume: s.Cursor()}
		}
		var out []Event
		for ; next < h.next && len(out) < maxBatch; next++ {
			if e := h.ring[next%uint64(h.capacity)]; s.filter.Match(e.Task) {
				out = append(out, e)
			}
		}
		s.next.Store(next)
		if s.narrow {
			s.pending -= uint64(len(out))
			s.oldest = 0
			if s.pending > 0 {
				s.oldest = next // its next match is no earlier
			}
		}
		wake := h.wake
		h.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		if s.narrow {
			wake = s.bell
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-stop:
			return nil, context.Canceled
		case <-s.done:
			return nil, ErrClosed
		}
	}
}

// behind says whether a reader whose next event is next fell too far
// behind: past its allowance, or past what the ring holds.
func (h *hub) behind(s *Subscription, next uint64) bool {
	if next < h.first {
		return true
	}
	if s.narrow {
		return s.pending > h.maxLag || (s.oldest != 0 && s.oldest < h.first)
	}
	from := s.from.Load()
	return from != 0 && h.next-max(next, from) > h.maxLag
}

func (h *hub) newSubscription(f Filter) *Subscription {
	s := &Subscription{hub: h, filter: f, done: make(chan struct{})}
	if f.Role != "" || len(f.TaskIDs) > 0 {
		s.narrow, s.bell = true, make(chan struct{}, 1)
	}
	return s
}

func (h *hub) add(s *Subscription) {
	h.count++
	index := func(m map[string]map[*Subscription]struct{}, k string) {
		if m[k] == nil {
			m[k] = map[*Subscription]struct{}{}
		}
		m[k][s] = struct{}{}
	}
	switch {
	case len(s.filter.TaskIDs) > 0:
		for _, id := range s.filter.TaskIDs {
			index(h.byTask, id)
		}
	case s.filter.Role != "":
		index(h.byRole, s.filter.Role)
	default:
		h.broad[s] = struct{}{}
	}
}

func (h *hub) remove(s *Subscription) {
	unindex := func(m map[string]map[*Subscription]struct{}, k string) bool {
		set, ok := m[k]
		if !ok {
			return false
		}
		_, had := set[s]
		delete(set, s)
		if len(set) == 0 {
			delete(m, k)
		}
		return had
	}
	had := false
	switch {
	case len(s.filter.TaskIDs) > 0:
		for _, id := range s.filter.TaskIDs {
			had = unindex(h.byTask, id) || had
		}
	case s.filter.Role != "":
		had = unindex(h.byRole, s.filter.Role)
	default:
		_, had = h.broad[s]
		delete(h.broad, s)
	}
	if had {
		h.count--
	}
}

func (h *hub) subscribe(f Filter) *Subscription {
	s := h.newSubscription(f)
	h.mu.Lock()
	s.next.Store(h.next)
	s.from.Store(h.next)
	h.add(s)
	h.mu.Unlock()
	return s
}

// resume subscribes from just after cursor.
func (h *hub) resume(f Filter, cursor string) (*Subscription, error) {
	seq, err := h.parseCursor(cursor)
	if err != nil {
		return nil, err
	}
	s := h.newSubscription(f)
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case seq >= h.next:
		return nil, fmt.Errorf("%w: cursor %q is ahead of this replica's events; watch again without resume_cursor", ErrCursorTooOld, cursor)
	case seq+1 < h.first:
		return nil, fmt.Errorf("%w: the events after cursor %q have left this replica's buffer (it keeps the last %d events, at most %d MiB); watch again without resume_cursor for a fresh snapshot",
			ErrCursorTooOld, cursor, h.capacity, h.maxBytes>>20)
	}
	s.next.Store(seq + 1)
	s.from.Store(h.next)
	if s.narrow {
		// Its lag is what it has to catch up on.
		for q := seq + 1; q < h.next; q++ {
			if f.Match(h.ring[q%uint64(h.capacity)].Task) {
				if s.pending == 0 {
					s.oldest = q
				}
				s.pending++
			}
		}
		if s.pending > 0 {
			s.bell <- struct{}{}
		}
	}
	h.add(s)
	return s, nil
}

func (h *hub) hasSubscribers() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count > 0
}

// eventBytes estimates what holding e costs: the task's variable fields
// dominate (a payload may be a megabyte).
func eventBytes(e Event) int {
	t := e.Task
	n := 512 + len(t.Title) + len(t.PayloadJSON) + len(t.LastError) + len(t.Progress) + len(t.Note)
	for k, v := range t.Labels {
		n += len(k) + len(v)
	}
	for _, d := range t.DependsOn {
		n += len(d)
	}
	return n
}

// publish appends events to the ring and wakes the readers that may want
// them. It never waits for a reader; its cost grows with the narrow
// watchers an event matches, not with how many watchers there are.
func (h *hub) publish(events []Event) {
	if len(events) == 0 {
		return
	}
	var behind []*Subscription
	h.mu.Lock()
	for _, e := range events {
		if h.next-h.first == uint64(h.capacity) {
			h.dropOldest()
		}
		e.Cursor = h.cursor(h.next)
		e.memo = &eventMemo{}
		i := h.next % uint64(h.capacity)
		h.ring[i], h.sizes[i] = e, eventBytes(e)
		h.bytes += h.sizes[i]
		h.next++
		for h.bytes > h.maxBytes && h.next-h.first > 1 {
			h.dropOldest()
		}
		behind = h.notifyNarrow(e, h.next-1, h.byTask[e.Task.ID], behind)
		behind = h.notifyNarrow(e, h.next-1, h.byRole[e.Task.Role], behind)
	}
	if len(h.broad) > 0 {
		close(h.wake)
		h.wake = make(chan struct{})
		// Broad readers blocked in a send are found by a scan, at most
		// every lagCheckEvery rather than on every write.
		if now := time.Now(); now.Sub(h.lastLagCheck) >= lagCheckEvery {
			h.lastLagCheck = now
			for s := range h.broad {
				if h.behind(s, s.next.Load()) {
					behind = append(behind, s)
				}
			}
		}
	}
	h.mu.Unlock()
	for _, s := range behind {
		if f := s.onBehind.Swap(nil); f != nil && !s.closed.Load() {
			(*f)(&BehindError{Resume: s.Cursor()})
		}
	}
}

// notifyNarrow counts e against each narrow watcher in set it matches and
// rings its bell; it appends those past their allowance to behind.
func (h *hub) notifyNarrow(e Event, seq uint64, set map[*Subscription]struct{}, behind []*Subscription) []*Subscription {
	for s := range set {
		if !s.filter.Match(e.Task) {
			continue
		}
		if s.pending == 0 {
			s.oldest = seq
		}
		s.pending++
		select {
		case s.bell <- struct{}{}:
		default:
		}
		if s.pending == h.maxLag+1 {
			behind = append(behind, s)
		}
	}
	return behind
}

func (h *hub) dropOldest() {
	i := h.first % uint64(h.capacity)
	h.bytes -= h.sizes[i]
	h.ring[i], h.sizes[i] = Event{}, 0
	h.first++
}
