package storetest

import (
	"maps"
	"strings"
	"testing"

	"github.com/factory/factory/controlplane/store"
)

// testResults proves a completion's result: stored on the task, in full
// reads only, kept by a later completion without one, part of a
// completion's replay check, and read back by TaskResults in order,
// bounded by its byte budget.
func (s *suite) testResults(t *testing.T) {
	s.runCases(t, []testCase{
		{"CompleteStoresResult", func(t *testing.T, h *harness) {
			h.createReady("a")
			ref := leaseOf(h.claimOne("agent-1", "a"))
			r, _ := h.completeItem(store.TaskCompleteItem{Lease: ref, Note: "done", ResultJSON: `{"url": "https://x.example"}`})
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			if r.Task.ResultJSON != `{"url": "https://x.example"}` || r.Task.Note != "done" {
				t.Fatalf("completed task: result %q, note %q", r.Task.ResultJSON, r.Task.Note)
			}
			if got := h.get("a").ResultJSON; got != `{"url": "https://x.example"}` {
				t.Fatalf("TaskGet result %q", got)
			}
			full := h.list(&store.TaskListParams{})
			if full.Tasks[0].ResultJSON == "" {
				t.Fatal("a full list leaves the result out")
			}
			sum := h.list(&store.TaskListParams{Summary: true})
			if sum.Tasks[0].ResultJSON != "" {
				t.Fatalf("a summary carries the result %q", sum.Tasks[0].ResultJSON)
			}
		}},
		{"CompletionWithoutResultKeepsIt", func(t *testing.T, h *harness) {
			h.createReady("a")
			ref := leaseOf(h.claimOne("agent-1", "a"))
			if r, _ := h.completeItem(store.TaskCompleteItem{Lease: ref, Review: true, ResultJSON: `[1]`}); r.Err != nil {
				t.Fatal(r.Err)
			}
			h.move("a", store.StateReady) // sent back from review
			ref = leaseOf(h.claimOne("agent-1", "a"))
			r, _ := h.completeItem(store.TaskCompleteItem{Lease: ref})
			if r.Err != nil || r.Task.ResultJSON != `[1]` || h.get("a").ResultJSON != `[1]` {
				t.Fatalf("completion without a result: %+v, stored %q", r, h.get("a").ResultJSON)
			}
		}},
		{"ResultOfALaterItemForTheSameTask", func(t *testing.T, h *harness) {
			// The first item naming the task is stale; the second, which
			// holds the lease, completes it with its result.
			h.createReady("a")
			ref := leaseOf(h.claimOne("agent-1", "a"))
			stale := ref
			stale.FencingToken++
			res, err := h.s.TaskComplete(h.ctx, &store.TaskCompleteParams{Now: h.now(), Items: []store.TaskCompleteItem{
				{Lease: stale, ResultJSON: `"stale"`}, {Lease: ref, ResultJSON: `"good"`},
			}})
			if err != nil {
				t.Fatal(err)
			}
			requireIs(t, res.Results[0].Err, store.ErrStaleLease, "the stale item")
			if res.Results[1].Err != nil || res.Results[1].Task.ResultJSON != `"good"` {
				t.Fatalf("second item: %+v", res.Results[1])
			}
			if got := h.get("a").ResultJSON; got != `"good"` {
				t.Fatalf("stored result %q, want the second item's", got)
			}
		}},
		{"ReplayWithOtherResultRefused", func(t *testing.T, h *harness) {
			h.createReady("a")
			ref := leaseOf(h.claimOne("agent-1", "a"))
			first, _ := h.completeItem(store.TaskCompleteItem{Lease: ref, ResultJSON: `{"v":1}`})
			if first.Err != nil {
				t.Fatal(first.Err)
			}
			again, changes := h.completeItem(store.TaskCompleteItem{Lease: ref, ResultJSON: `{"v":1}`})
			requireReplayOf(t, "repeated completion with its result", first.Task, again.Task, again.Err, again.Replay, changes)
			again, changes = h.completeItem(store.TaskCompleteItem{Lease: ref})
			requireReplayOf(t, "repeated completion without its result", first.Task, again.Task, again.Err, again.Replay, changes)
			differs, _ := h.completeItem(store.TaskCompleteItem{Lease: ref, ResultJSON: `{"v":2}`})
			requireDiffers(t, differs.Err, "different result")
			h.requireUnchanged(first.Task)
		}},
		{"TaskResultsInOrderAndBounded", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "scout", Title: "Research", Kind: "research", Role: "research", Labels: map[string]string{"stage": "scout"}},
				&store.TaskCreate{ID: "atlas", Title: "Plan", Kind: "plan", Role: "architect"},
				&store.TaskCreate{ID: "none", Title: "No result"},
				&store.TaskCreate{ID: "tail", Title: "Small, after the big one"},
				&store.TaskCreate{ID: "open", Title: "Not done"},
			)
			big := `"` + strings.Repeat("x", 100) + `"`
			results := map[string]string{"scout": `{"s":1}`, "atlas": big, "none": "", "tail": `2`}
			roles := map[string]string{"scout": "research", "atlas": "architect"}
			for _, id := range []string{"scout", "atlas", "none", "tail"} {
				task := h.claimAs("agent-1", roles[id], id)
				if r, _ := h.completeItem(store.TaskCompleteItem{Lease: leaseOf(task), ResultJSON: results[id]}); r.Err != nil {
					t.Fatal(r.Err)
				}
			}
			read := func(max int64, ids ...string) []store.TaskResult {
				t.Helper()
				out, err := h.s.TaskResults(h.ctx, &store.TaskResultsParams{IDs: ids, MaxBytes: max})
				if err != nil {
					t.Fatalf("TaskResults: %v", err)
				}
				return out
			}
			got := read(0, "atlas", "missing", "scout", "none", "atlas", "open")
			if len(got) != 4 {
				t.Fatalf("got %d results, want atlas, scout, none, open: %+v", len(got), got)
			}
			want := []store.TaskResult{
				{ID: "atlas", Title: "Plan", Kind: "plan", Role: "architect", State: store.StateDone, ResultJSON: big, ResultBytes: int64(len(big))},
				{ID: "scout", Title: "Research", Kind: "research", Role: "research", State: store.StateDone,
					Labels: map[string]string{"stage": "scout"}, ResultJSON: `{"s":1}`, ResultBytes: 7},
				{ID: "none", Title: "No result", State: store.StateDone},
				{ID: "open", Title: "Not done", State: store.StateReady},
			}
			for i, w := range want {
				g := got[i]
				if g.ID != w.ID || g.Title != w.Title || g.Kind != w.Kind || g.Role != w.Role || g.State != w.State ||
					!maps.Equal(g.Labels, w.Labels) || g.ResultJSON != w.ResultJSON || g.ResultBytes != w.ResultBytes || g.Omitted {
					t.Fatalf("result %d: got %+v, want %+v", i, g, w)
				}
			}

			for _, g := range got[:3] {
				requireTime(t, "a DONE task's state_changed_at", g.StateChangedAt, h.get(g.ID).StateChangedAt)
			}

			// A budget of 400 bytes: scout (256 + 7 + its names, about
			// 300) fits, atlas (256 + 102 + its names) does not, and
			// nothing after it is loaded either: those come with their
			// id, state and size only.
			got = read(400, "scout", "atlas", "tail")
			if len(got) != 3 || got[0].ResultJSON != `{"s":1}` || got[0].Omitted || got[0].Title != "Research" || got[0].Labels["stage"] != "scout" {
				t.Fatalf("within the budget: %+v", got)
			}
			for _, g := range got[1:] {
				if !g.Omitted || g.ResultJSON != "" || g.ResultBytes != int64(len(results[g.ID])) || g.State != store.StateDone ||
					g.Title != "" || g.Kind != "" || g.Role != "" || len(g.Labels) != 0 {
					t.Fatalf("past the budget: %+v, want omitted with its id, state and size only", g)
				}
			}
			if got := read(0); len(got) != 0 {
				t.Fatalf("no ids: %+v", got)
			}
		}},
	})
}
