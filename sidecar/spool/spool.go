// Package spool is the sidecar's on-disk holding place for events that
// must not be lost (model swaps, log-watch counts): each event is appended
// to a JSON-lines file and fsynced before Append returns, and stays there
// until the control plane acks its id. A sidecar killed with -9, a control
// plane restart or a network cut loses nothing: on reconnect every unacked
// event is replayed with its original id, and the server stores one copy
// per id.
//
// The file holds two kinds of line: an event, and an ack naming ids that
// are done. Once every event is acked the file is truncated; while some
// stay pending and the acked ones pile up, it is rewritten with only the
// pending ones (write a temporary file, fsync, rename), so a crash during
// compaction leaves either the old file or the new one.
package spool

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Event is one spooled event.
type Event struct {
	// ID is unique across the fleet (a UUIDv7 from NewID); replays keep it.
	ID string `json:"id"`
	// Kind says what happened ("model_swap", "log_count").
	Kind string `json:"kind"`
	// Time is when it happened.
	Time time.Time `json:"time"`
	// Attributes are its details.
	Attributes map[string]string `json:"attributes,omitempty"`
}

// NewID returns a fresh event id: a UUIDv7, so ids sort by creation.
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		// NewV7 fails only when the system's randomness does; a random
		// UUID still serves as a unique id.
		return uuid.NewString()
	}
	return id.String()
}

// line is one line of the file: an event or an ack.
type line struct {
	Event *Event   `json:"e,omitempty"`
	Ack   []string `json:"ack,omitempty"`
}

// compactAfter is how many acked events may stay in the file beside
// pending ones before it is rewritten.
const compactAfter = 1024

// Spool is an open spool file. Its methods are safe for concurrent use.
type Spool struct {
	mu      sync.Mutex
	path    string
	f       *os.File
	size    int64
	pending []Event        // unacked events, in append order
	index   map[string]int // id -> position in pending
	dead    int            // acked events still in the file
	notify  chan struct{}
	// write replaces the file write in tests (a full disk).
	write func(f *os.File, b []byte) (int, error)
	// Skipped is how many unreadable lines Open dropped (a torn last
	// append, or damage); reported so the sidecar can log it.
	Skipped int
}

// Open opens (or creates) the spool at path and loads its unacked events.
// A line that does not parse (the torn tail of an append cut short by a
// crash or a full disk) is skipped, and the file is rewritten without it,
// so later appends never follow a partial line.
func Open(path string) (*Spool, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{path: path, index: map[string]int{}, notify: make(chan struct{}, 1)}
	var events []Event
	acked := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || (l.Event == nil && l.Ack == nil) || (l.Event != nil && l.Event.ID == "") {
			s.Skipped++
			continue
		}
		if l.Event != nil {
			events = append(events, *l.Event)
		}
		for _, id := range l.Ack {
			acked[id] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("spool %s: %w", path, err)
	}
	// A last line without its newline was cut short even if it parses:
	// rewrite so the next append starts on a line of its own.
	torn := len(data) > 0 && data[len(data)-1] != '\n'
	for _, e := range events {
		if acked[e.ID] {
			continue
		}
		if _, dup := s.index[e.ID]; dup {
			continue
		}
		s.index[e.ID] = len(s.pending)
		s.pending = append(s.pending, e)
	}
	if s.Skipped > 0 || torn || len(s.pending) < len(events) {
		if err := s.rewriteLocked(); err != nil {
			return nil, err
		}
		return s, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// The events name agents, tasks and costs: the owner's only, even if
	// the file was made wider by hand or by an older version.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	s.f, s.size = f, int64(len(data))
	return s, nil
}

// Append writes ev and fsyncs it; once it returns nil the event survives
// a crash. An empty ID gets a NewID, a zero Time the current time. On a
// write failure (a full disk) the file is cut back to where it was, so no
// partial line stays behind, and the error says the event was not spooled.
func (s *Spool) Append(ev Event) (Event, error) {
	if ev.ID == "" {
		ev.ID = NewID()
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.Time = ev.Time.UTC()
	b, err := json.Marshal(line{Event: &ev})
	if err != nil {
		return ev, fmt.Errorf("spool: encode event %s: %w", ev.ID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return ev, errors.New("spool: closed")
	}
	if _, dup := s.index[ev.ID]; dup {
		return ev, nil
	}
	if err := s.writeLocked(append(b, '\n')); err != nil {
		return ev, fmt.Errorf("spool: event %s not spooled: %w", ev.ID, err)
	}
	s.index[ev.ID] = len(s.pending)
	s.pending = append(s.pending, ev)
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return ev, nil
}

// writeLocked appends b and fsyncs, undoing a partial write.
func (s *Spool) writeLocked(b []byte) error {
	write := (*os.File).Write
	if s.write != nil {
		write = s.write
	}
	n, err := write(s.f, b)
	if err == nil {
		err = s.f.Sync()
	}
	if err != nil {
		if n > 0 {
			// Best effort: the torn tail is also skipped on the next Open.
			_ = s.f.Truncate(s.size)
		}
		return err
	}
	s.size += int64(n)
	return nil
}

// Ack drops acked events. Ids it does not hold are ignored (an ack for an
// event already dropped, or a second ack of a replay). When nothing is
// pending the file is truncated; otherwise the ack is recorded, and the
// file compacted once enough acked events pile up. The ack line is not
// fsynced: losing it only means a replay, which the server deduplicates.
func (s *Spool) Ack(ids []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return errors.New("spool: closed")
	}
	var hit []string
	for _, id := range ids {
		if _, ok := s.index[id]; ok {
			hit = append(hit, id)
		}
	}
	if len(hit) == 0 {
		return nil
	}
	drop := map[string]bool{}
	for _, id := range hit {
		drop[id] = true
	}
	kept := s.pending[:0:0]
	for _, e := range s.pending {
		if !drop[e.ID] {
			kept = append(kept, e)
		}
	}
	s.pending = kept
	s.index = make(map[string]int, len(kept))
	for i, e := range kept {
		s.index[e.ID] = i
	}
	s.dead += len(hit)
	if len(s.pending) == 0 {
		if err := s.f.Truncate(0); err != nil {
			return fmt.Errorf("spool: compact: %w", err)
		}
		s.size, s.dead = 0, 0
		return nil
	}
	if s.dead >= compactAfter {
		return s.rewriteLocked()
	}
	b, _ := json.Marshal(line{Ack: hit})
	n, err := s.f.Write(append(b, '\n'))
	if err != nil {
		if n > 0 {
			_ = s.f.Truncate(s.size)
		}
		return fmt.Errorf("spool: record ack: %w", err)
	}
	s.size += int64(n)
	return nil
}

// rewriteLocked writes only the pending events to a new file and renames
// it over the old one.
func (s *Spool) rewriteLocked() error {
	var buf bytes.Buffer
	for i := range s.pending {
		b, err := json.Marshal(line{Event: &s.pending[i]})
		if err != nil {
			return fmt.Errorf("spool: encode: %w", err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	tmp := s.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("spool: compact: %w", err)
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("spool: compact: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("spool: compact: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool: compact: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool: compact: %w", err)
	}
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		_ = d.Sync() // the rename's durability; failure leaves the old file, which is also whole
		d.Close()
	}
	nf, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("spool: reopen: %w", err)
	}
	if s.f != nil {
		s.f.Close()
	}
	s.f, s.size, s.dead = nf, int64(buf.Len()), 0
	return nil
}

// Pending returns the unacked events in append order.
func (s *Spool) Pending() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.pending...)
}

// Len is the number of unacked events.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// Notify receives a value after an Append, so a sender can wake up
// instead of polling; one value may stand for several appends.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// Close closes the file; pending events stay in it for the next Open.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
