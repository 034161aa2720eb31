package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// An event relayed by one replica reaches the other replicas' listeners,
// not its own, and not another schema's.
func TestEventRelayCrossesReplicas(t *testing.T) {
	url := testURL(t)
	schema := testSchema(t, url)
	a := openTest(t, url, schema, Config{ReplicaID: "a"})
	b := openTest(t, url, schema, Config{ReplicaID: "b"})
	other := openTest(t, url, testSchema(t, url), Config{ReplicaID: "c"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listen := func(s *Store) <-chan string {
		ch := make(chan string, 16)
		go func() { _ = s.ListenEvents(ctx, func(p []byte) { ch <- string(p) }) }()
		return ch
	}
	fromA, fromB, fromOther := listen(a), listen(b), listen(other)

	// The listeners connect in the background: relay until b hears.
	deadline := time.Now().Add(20 * time.Second)
	var got string
	for got == "" {
		if time.Now().After(deadline) {
			t.Fatal("replica b never heard replica a's event")
		}
		if err := a.RelayEvent(ctx, []byte(`{"id":"e1","kind":"alert"}`)); err != nil {
			t.Fatal(err)
		}
		select {
		case got = <-fromB:
		case <-time.After(100 * time.Millisecond):
		}
	}
	if got != `{"id":"e1","kind":"alert"}` {
		t.Errorf("b heard %s", got)
	}
	// A second event, once all listen: only b hears it.
	time.Sleep(200 * time.Millisecond) // let the other schema's listener connect too
	for len(fromB) > 0 {
		<-fromB
	}
	if err := a.RelayEvent(ctx, []byte(`{"id":"e2"}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case got = <-fromB:
		if got != `{"id":"e2"}` {
			t.Errorf("b heard %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b did not hear e2")
	}
	select {
	case p := <-fromA:
		t.Errorf("a heard its own event %s", p)
	case p := <-fromOther:
		t.Errorf("another schema heard %s", p)
	case <-time.After(300 * time.Millisecond):
	}

	if err := a.RelayEvent(ctx, []byte(strings.Repeat("x", store.MaxRelayPayload+1))); !errors.Is(err, store.ErrInvalidArgument) {
		t.Errorf("oversized payload: %v", err)
	}
}
