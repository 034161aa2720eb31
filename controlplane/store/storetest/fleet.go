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

func (h *harness) place(agent, host string) *store.Placement {
	h.t.Helper()
	_, after, err := h.s.PlacementSet(h.ctx, &store.PlacementSetParams{Agent: agent, Host: host, PlacedBy: "ops (tok-op)", Now: h.now()})
	if err != nil {
		h.t.Fatalf("PlacementSet(%s, %s): %v", agent, host, err)
	}
	return after
}

// placements lists as "agent@host" in the store's order.
func (h *harness) placements(p *store.PlacementListParams) []string {
	h.t.Helper()
	res, err := h.s.PlacementList(h.ctx, p)
	if err != nil {
		h.t.Fatalf("PlacementList(%+v): %v", p, err)
	}
	out := make([]string, len(res.Placements))
	for i, pl := range res.Placements {
		out[i] = pl.Agent + "@" + pl.Host
	}
	return out
}

// testPlacements covers where agents are placed: one host per agent,
// moved by placing again, read by host or by name, shared by every
// replica because it is in the store.
func (s *suite) testPlacements(t *testing.T) {
	s.runCases(t, []testCase{
		{"PlaceMoveAndUnplace", func(t *testing.T, h *harness) {
			first := h.place("forge", "gpu-01")
			if first.Agent != "forge" || first.Host != "gpu-01" || first.PlacedBy != "ops (tok-op)" {
				t.Fatalf("placed %+v", first)
			}
			requireTime(t, "PlacedAt", first.PlacedAt, h.now())
			h.clock.Advance(time.Minute)
			before, after, err := h.s.PlacementSet(h.ctx, &store.PlacementSetParams{Agent: "forge", Host: "gpu-02", PlacedBy: "ops", Now: h.now()})
			if err != nil {
				t.Fatal(err)
			}
			if before == nil || before.Host != "gpu-01" || after.Host != "gpu-02" {
				t.Fatalf("moving forge: before %+v, after %+v", before, after)
			}
			requireTime(t, "PlacedAt after the move", after.PlacedAt, h.now())
			requireIDs(t, "after the move", h.placements(nil), []string{"forge@gpu-02"})

			removed, err := h.s.PlacementDelete(h.ctx, &store.PlacementDeleteParams{Agent: "forge"})
			if err != nil || removed.Host != "gpu-02" {
				t.Fatalf("PlacementDelete: %+v, %v", removed, err)
			}
			requireIDs(t, "after unplacing", h.placements(nil), nil)
			_, err = h.s.PlacementDelete(h.ctx, &store.PlacementDeleteParams{Agent: "forge"})
			requireIs(t, err, store.ErrNotFound, "unplacing an agent placed nowhere")
		}},
		{"FirstPlacementReplacesNothing", func(t *testing.T, h *harness) {
			before, _, err := h.s.PlacementSet(h.ctx, &store.PlacementSetParams{Agent: "scout", Host: "gpu-01", Now: h.now()})
			if err != nil || before != nil {
				t.Fatalf("first placement: before %+v, %v", before, err)
			}
		}},
		{"ListFiltersAndPages", func(t *testing.T, h *harness) {
			for _, p := range [][2]string{{"scout", "gpu-01"}, {"forge", "gpu-02"}, {"Zed", "gpu-01"}, {"anvil", "gpu-01"}, {"hammer", "gpu-02"}} {
				h.place(p[0], p[1])
			}
			// Byte order, as both drivers sort: upper case first.
			requireIDs(t, "all", h.placements(nil), []string{"Zed@gpu-01", "anvil@gpu-01", "forge@gpu-02", "hammer@gpu-02", "scout@gpu-01"})
			requireIDs(t, "on gpu-01", h.placements(&store.PlacementListParams{Host: "gpu-01"}), []string{"Zed@gpu-01", "anvil@gpu-01", "scout@gpu-01"})
			requireIDs(t, "by name", h.placements(&store.PlacementListParams{Agents: []string{"forge", "scout", "nobody"}}),
				[]string{"forge@gpu-02", "scout@gpu-01"})
			requireIDs(t, "by name on a host", h.placements(&store.PlacementListParams{Host: "gpu-01", Agents: []string{"forge", "scout"}}),
				[]string{"scout@gpu-01"})
			requireIDs(t, "no names", h.placements(&store.PlacementListParams{Agents: []string{}}), nil)

			var got []string
			cursor := ""
			for range 10 {
				res, err := h.s.PlacementList(h.ctx, &store.PlacementListParams{Limit: 2, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range res.Placements {
					got = append(got, p.Agent)
				}
				if cursor = res.NextCursor; cursor == "" {
					break
				}
			}
			requireIDs(t, "paged", got, []string{"Zed", "anvil", "forge", "hammer", "scout"})
			_, err := h.s.PlacementList(h.ctx, &store.PlacementListParams{Cursor: "%%%"})
			requireFieldError(t, err, "page_token")
		}},
		{"BadInput", func(t *testing.T, h *harness) {
			_, _, err := h.s.PlacementSet(h.ctx, &store.PlacementSetParams{Host: "gpu-01", Now: h.now()})
			requireFieldError(t, err, "agent")
			_, _, err = h.s.PlacementSet(h.ctx, &store.PlacementSetParams{Agent: "forge", Now: h.now()})
			requireFieldError(t, err, "host")
			requireIDs(t, "after the refusals", h.placements(nil), nil)
		}},
	})
}
