package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (h *harness) appendEvents(events ...*store.FleetEvent) int {
	h.t.Helper()
	n, err := h.s.FleetEventsAppend(h.ctx, &store.FleetEventsAppendParams{Events: events})
	if err != nil {
		h.t.Fatalf("FleetEventsAppend: %v", err)
	}
	return n
}

func (h *harness) listEvents(p *store.FleetEventsListParams) []*store.FleetEvent {
	h.t.Helper()
	got, err := h.s.FleetEventsList(h.ctx, p)
	if err != nil {
		h.t.Fatalf("FleetEventsList: %v", err)
	}
	return got
}

func eventIDs(events []*store.FleetEvent) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func (s *suite) testFleetEvents(t *testing.T) {
	s.runCases(t, []testCase{
		{"AppendThenListRoundTrips", func(t *testing.T, h *harness) {
			at := h.now().Add(-time.Minute)
			in := &store.FleetEvent{ID: "ev-1", Host: "gpu-1", Kind: "model_swap", Time: at,
				Attributes: map[string]string{"from": "qwen3-8b.gguf", "to": "llama-3.1-8b.gguf"}}
			if n := h.appendEvents(in); n != 1 {
				t.Fatalf("appended %d new, want 1", n)
			}
			got := h.listEvents(nil)
			if len(got) != 1 {
				t.Fatalf("listed %d events, want 1", len(got))
			}
			g := got[0]
			if g.ID != "ev-1" || g.Host != "gpu-1" || g.Kind != "model_swap" || !g.Time.Equal(at) ||
				g.Attributes["from"] != "qwen3-8b.gguf" || g.Attributes["to"] != "llama-3.1-8b.gguf" || len(g.Attributes) != 2 {
				t.Errorf("round trip: %+v", g)
			}
		}},
		{"ReplayedIDsCountOnce", func(t *testing.T, h *harness) {
			ev := func(id string) *store.FleetEvent {
				return &store.FleetEvent{ID: id, Host: "h", Kind: "model_swap", Time: h.now()}
			}
			if n := h.appendEvents(ev("a"), ev("b")); n != 2 {
				t.Fatalf("first append: %d new, want 2", n)
			}
			// A reconnecting sidecar replays a and b with c; a batch may
			// also repeat an id within itself.
			if n := h.appendEvents(ev("a"), ev("b"), ev("c"), ev("c")); n != 1 {
				t.Fatalf("replay: %d new, want 1", n)
			}
			if got := eventIDs(h.listEvents(nil)); fmt.Sprint(got) != "[a b c]" {
				t.Errorf("stored %v, want [a b c]", got)
			}
		}},
		{"ReplayKeepsTheFirstCopy", func(t *testing.T, h *harness) {
			h.appendEvents(&store.FleetEvent{ID: "x", Host: "h", Kind: "k", Time: h.now(), Attributes: map[string]string{"v": "1"}})
			h.appendEvents(&store.FleetEvent{ID: "x", Host: "h", Kind: "k", Time: h.now(), Attributes: map[string]string{"v": "2"}})
			if got := h.listEvents(nil); len(got) != 1 || got[0].Attributes["v"] != "1" {
				t.Errorf("after a replay: %+v", got)
			}
		}},
		{"FiltersAndOrder", func(t *testing.T, h *harness) {
			base := h.now()
			h.appendEvents(
				&store.FleetEvent{ID: "3", Host: "a", Kind: "model_swap", Time: base.Add(3 * time.Minute)},
				&store.FleetEvent{ID: "1", Host: "a", Kind: "model_swap", Time: base.Add(1 * time.Minute)},
				&store.FleetEvent{ID: "2", Host: "b", Kind: "model_swap", Time: base.Add(2 * time.Minute)},
				&store.FleetEvent{ID: "4", Host: "a", Kind: "log_count", Time: base.Add(4 * time.Minute)},
			)
			for _, c := range []struct {
				p    *store.FleetEventsListParams
				want string
			}{
				{&store.FleetEventsListParams{}, "[1 2 3 4]"},
				{&store.FleetEventsListParams{Host: "a"}, "[1 3 4]"},
				{&store.FleetEventsListParams{Host: "a", Kind: "model_swap"}, "[1 3]"},
				{&store.FleetEventsListParams{Kind: "model_swap", Since: base.Add(2 * time.Minute)}, "[2 3]"},
				{&store.FleetEventsListParams{Limit: 2}, "[1 2]"},
				{&store.FleetEventsListParams{Host: "nobody"}, "[]"},
			} {
				if got := fmt.Sprint(eventIDs(h.listEvents(c.p))); got != c.want {
					t.Errorf("FleetEventsList(%+v) = %s, want %s", *c.p, got, c.want)
				}
			}
		}},
		{"RefusesEventsWithoutIDHostOrKind", func(t *testing.T, h *harness) {
			for _, e := range []*store.FleetEvent{
				{Host: "h", Kind: "k"}, {ID: "i", Kind: "k"}, {ID: "i", Host: "h"}, nil,
			} {
				_, err := h.s.FleetEventsAppend(h.ctx, &store.FleetEventsAppendParams{Events: []*store.FleetEvent{
					{ID: "ok", Host: "h", Kind: "k", Time: h.now()}, e}})
				if !errors.Is(err, store.ErrInvalidArgument) {
					t.Errorf("FleetEventsAppend(%+v): %v, want ErrInvalidArgument", e, err)
				}
			}
			// All or none: the good event in each refused batch is not stored.
			if got := h.listEvents(nil); len(got) != 0 {
				t.Errorf("a refused batch stored %d events", len(got))
			}
		}},
	})
}
