package queue

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func taskEvent(id string, s store.TaskState) Event {
	return Event{Type: EventStateChanged, Task: &store.Task{ID: id, State: s}}
}

func nextNow(t *testing.T, s *Subscription) ([]Event, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return s.Next(ctx, nil)
}

// A publish never waits for a watcher, however many there are and whether
// or not they read.
func TestPublishNeverWaitsForWatchers(t *testing.T) {
	h := newHubSized(4, 1<<20)
	for range 1000 {
		h.subscribe(Filter{}) // never read
	}
	done := make(chan struct{})
	go func() {
		for i := range 100 {
			h.publish([]Event{taskEvent(fmt.Sprint(i), store.StateReady)})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("publish blocked on watchers that do not read")
	}
}

// A watcher that falls behind is told so with the cursor to resume from,
// and a watch resumed from the last cursor it read misses nothing.
func TestBehindWatcherResumesWithoutMissingAnything(t *testing.T) {
	h := newHubSized(8, 1<<20)
	sub := h.subscribe(Filter{})
	h.publish([]Event{taskEvent("a", store.StateReady), taskEvent("b", store.StateReady)})
	got, err := nextNow(t, sub)
	if err != nil || len(got) != 2 {
		t.Fatalf("first read: %d events, %v", len(got), err)
	}
	last := got[1].Cursor
	var notified error
	sub.OnBehind(func(err error) { notified = err })
	for i := range 20 { // more than the ring holds
		h.lastLagCheck = time.Time{}
		h.publish([]Event{taskEvent(fmt.Sprint("c", i), store.StateReady)})
	}
	if !errors.Is(notified, ErrWatchBehind) {
		t.Fatalf("a watcher that fell behind while not reading was told %v, want ErrWatchBehind", notified)
	}
	_, err = nextNow(t, sub)
	var be *BehindError
	if !errors.As(err, &be) || be.Resume != last {
		t.Fatalf("read after falling behind: %v; want a BehindError resuming from %q", err, last)
	}
	sub.Close()
	// The ring still holds what it missed: a resumed watch gets all of it.
	resumed, err := h.resume(Filter{}, be.Resume)
	if err != nil {
		t.Fatal(err)
	}
	var all []Event
	for len(all) < 20 {
		got, err := nextNow(t, resumed)
		if err != nil {
			t.Fatalf("resumed watch after %d events: %v", len(all), err)
		}
		all = append(all, got...)
	}
	if len(all) != 20 || all[0].Task.ID != "c0" || all[19].Task.ID != "c19" {
		t.Fatalf("resumed watch got %d events, %s to %s; want c0 to c19", len(all), all[0].Task.ID, all[len(all)-1].Task.ID)
	}
	// Once the ring has moved past a cursor, resuming from it is refused
	// clearly.
	for i := range 40 {
		h.publish([]Event{taskEvent(fmt.Sprint("d", i), store.StateReady)})
	}
	if _, err := h.resume(Filter{}, last); !errors.Is(err, ErrCursorTooOld) {
		t.Fatalf("resume from an evicted cursor: %v, want ErrCursorTooOld", err)
	}

	// In time, a resume gets exactly the events after the cursor.
	h2 := newHubSized(64, 1<<20)
	first := h2.subscribe(Filter{})
	for i := range 10 {
		h2.publish([]Event{taskEvent(fmt.Sprint(i), store.StateReady)})
	}
	got, _ = nextNow(t, first)
	first.Close()
	resumed, err = h2.resume(Filter{}, got[3].Cursor)
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := nextNow(t, resumed)
	if len(rest) != 6 || rest[0].Task.ID != "4" || rest[5].Task.ID != "9" {
		t.Fatalf("resumed after event 3, got %d events starting %v", len(rest), rest)
	}
}

func TestResumeRefusesForeignCursors(t *testing.T) {
	a, b := newHub(), newHub()
	a.publish([]Event{taskEvent("x", store.StateReady)})
	sub := a.subscribe(Filter{})
	for _, c := range []string{"garbage", sub.Cursor() + "0", "nope-1"} {
		if _, err := a.resume(Filter{}, c); !errors.Is(err, ErrCursorTooOld) {
			t.Errorf("resume(%q) = %v, want ErrCursorTooOld", c, err)
		}
	}
	if _, err := b.resume(Filter{}, sub.Cursor()); !errors.Is(err, ErrCursorTooOld) {
		t.Errorf("another hub's cursor: %v, want ErrCursorTooOld", err)
	}
}

// Filters apply on read; events that do not match still move the cursor.
func TestFilteredWatcherSkipsOtherEvents(t *testing.T) {
	h := newHub()
	ready := h.subscribe(Filter{States: []store.TaskState{store.StateReady}})
	h.publish([]Event{taskEvent("t", store.StateDone), taskEvent("t", store.StateReady), taskEvent("t", store.StateDone)})
	got, err := nextNow(t, ready)
	if err != nil || len(got) != 1 || got[0].Task.State != store.StateReady {
		t.Fatalf("filtered read: %v, %v", got, err)
	}
	if ready.Cursor() != h.cursor(3) {
		t.Fatalf("cursor %s after reading past 3 events, want %s", ready.Cursor(), h.cursor(3))
	}
}

// The buffer is bounded by bytes too: megabyte payloads cannot pin
// thousands of megabytes.
func TestBufferIsBoundedByBytes(t *testing.T) {
	h := newHubSized(1000, 4<<20)
	big := string(make([]byte, 1<<20))
	for range 20 {
		h.publish([]Event{{Task: &store.Task{ID: "big", PayloadJSON: big}}})
	}
	if h.bytes > 4<<20 || h.next-h.first > 4 {
		t.Fatalf("buffer holds %d events, %d bytes; want at most 4 MiB", h.next-h.first, h.bytes)
	}
}

// A watcher of one task or role is visited only by its own events: the
// rest of the queue churning past its cursor neither wakes it nor makes
// it fall behind, and its allowance counts only its events.
func TestNarrowWatcherIsNotBehindForOthersEvents(t *testing.T) {
	h := newHubSized(4, 1<<20)
	mine := h.subscribe(Filter{TaskIDs: []string{"mine"}})
	builders := h.subscribe(Filter{Role: "builder"})
	for i := range 100 { // many times the ring
		h.publish([]Event{taskEvent(fmt.Sprint("other", i), store.StateReady)})
	}
	if len(mine.bell) != 0 || len(builders.bell) != 0 {
		t.Fatal("other tasks' events rang a narrow watcher's bell")
	}
	h.publish([]Event{taskEvent("mine", store.StateDone)})
	got, err := nextNow(t, mine)
	if err != nil || len(got) != 1 || got[0].Task.ID != "mine" {
		t.Fatalf("narrow watcher after the churn: %v, %v", got, err)
	}
	var notified error
	builders.OnBehind(func(err error) { notified = err })
	for range 5 { // one over its allowance
		h.publish([]Event{{Task: &store.Task{ID: "b", Role: "builder", State: store.StateReady}}})
	}
	if !errors.Is(notified, ErrWatchBehind) {
		t.Fatalf("a narrow watcher 5 of its events behind (allowance 4) was told %v", notified)
	}
	if _, err := nextNow(t, builders); !errors.Is(err, ErrWatchBehind) {
		t.Fatalf("reading after falling behind: %v", err)
	}
}
