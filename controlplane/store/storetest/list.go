package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (s *suite) testList(t *testing.T) {
	s.runCases(t, []testCase{
		{"EmptyStore", func(t *testing.T, h *harness) {
			res := h.list(&store.TaskListParams{Limit: 10})
			if len(res.Tasks) != 0 || res.NextCursor != "" {
				t.Fatalf("empty store listed %v, cursor %q", taskIDs(res.Tasks), res.NextCursor)
			}
		}},
		{"Filters", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "f1", Role: "builder", Labels: map[string]string{"team": "core", "env": "prod"}},
				&store.TaskCreate{ID: "f2", Role: "tester", Assignee: "agent-2", Labels: map[string]string{"team": "core"}, InitialState: store.StateBacklog},
				&store.TaskCreate{ID: "f3", Role: "builder", Labels: map[string]string{"env": "prod"}, Priority: 10},
				&store.TaskCreate{ID: "f4", Assignee: "agent-9", Labels: map[string]string{"team": "core", "env": "dev"}, InitialState: store.StateDone},
				&store.TaskCreate{ID: "f5", Role: "builder", Assignee: "agent-2", InitialState: store.StateFailed},
			)
			// f3 is nobody's assignment, but agent-9 holds it.
			h.claimParams(&store.TaskClaimParams{Agent: "agent-9", Roles: []string{"builder"}, Max: 1, LeaseDuration: time.Hour, Now: h.now()})
			h.requireState("f3", store.StateInProgress)

			cases := []struct {
				name string
				p    store.TaskListParams
				want []string
			}{
				{"none", store.TaskListParams{}, []string{"f1", "f2", "f3", "f4", "f5"}},
				{"one state", store.TaskListParams{States: []store.TaskState{store.StateReady}}, []string{"f1"}},
				{"two states", store.TaskListParams{States: []store.TaskState{store.StateDone, store.StateBacklog}}, []string{"f2", "f4"}},
				{"role", store.TaskListParams{Role: "builder"}, []string{"f1", "f3", "f5"}},
				{"assignee or holder", store.TaskListParams{Assignee: "agent-9"}, []string{"f3", "f4"}},
				{"assignee", store.TaskListParams{Assignee: "agent-2"}, []string{"f2", "f5"}},
				{"one label", store.TaskListParams{Labels: map[string]string{"team": "core"}}, []string{"f1", "f2", "f4"}},
				{"two labels", store.TaskListParams{Labels: map[string]string{"team": "core", "env": "prod"}}, []string{"f1"}},
				{"label value", store.TaskListParams{Labels: map[string]string{"env": "prod"}}, []string{"f1", "f3"}},
				{"unknown label", store.TaskListParams{Labels: map[string]string{"team": "edge"}}, nil},
				{"ids", store.TaskListParams{IDs: []string{"f5", "f1", "missing"}}, []string{"f1", "f5"}},
				{"role and states", store.TaskListParams{Role: "builder", States: []store.TaskState{store.StateInProgress, store.StateFailed}}, []string{"f3", "f5"}},
				{"role and label", store.TaskListParams{Role: "builder", Labels: map[string]string{"env": "prod"}}, []string{"f1", "f3"}},
				{"ids and state", store.TaskListParams{IDs: []string{"f1", "f2", "f3"}, States: []store.TaskState{store.StateBacklog}}, []string{"f2"}},
			}
			for _, c := range cases {
				p := c.p
				p.Limit = 100
				res := h.list(&p)
				requireIDs(t, "filter "+c.name, taskIDs(res.Tasks), c.want)
				if res.NextCursor != "" {
					t.Fatalf("filter %s: a complete page has cursor %q", c.name, res.NextCursor)
				}
			}
		}},
		{"PagingVisitsEveryTaskOnce", func(t *testing.T, h *harness) {
			// Ids are a permutation of creation order, several batches
			// share a timestamp, and tasks arrive mid-scan: the cursor must
			// follow creation order, not ids or times.
			var want []string
			for batch := range 5 {
				var tasks []*store.TaskCreate
				for i := range 5 {
					id := fmt.Sprintf("p-%02d", (batch*5+i)*7%25)
					tasks = append(tasks, &store.TaskCreate{ID: id, Priority: int32(i % 3)})
					want = append(want, id)
				}
				h.create(tasks...)
				if batch%2 == 1 {
					h.clock.Advance(time.Second)
				}
			}
			h.claimOne("agent-1", "")
			var got []string
			cursor := ""
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatalf("paging did not end: %v", got)
				}
				res := h.list(&store.TaskListParams{Limit: 7, Cursor: cursor})
				if len(res.Tasks) > 7 {
					t.Fatalf("page of %d tasks with Limit 7", len(res.Tasks))
				}
				got = append(got, taskIDs(res.Tasks)...)
				if pages == 0 {
					h.create(&store.TaskCreate{ID: "late-b"}, &store.TaskCreate{ID: "late-a"})
					want = append(want, "late-b", "late-a")
				}
				if res.NextCursor == "" {
					break
				}
				cursor = res.NextCursor
			}
			requireIDs(t, "paged ids", got, want)
		}},
		{"PagingWithFilter", func(t *testing.T, h *harness) {
			var want []string
			for i := range 12 {
				id := fmt.Sprintf("t-%02d", 11-i)
				labels := map[string]string{"parity": []string{"even", "odd"}[i%2]}
				h.create(&store.TaskCreate{ID: id, Labels: labels})
				if i%2 == 1 {
					want = append(want, id)
				}
			}
			var got []string
			cursor := ""
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatalf("paging did not end: %v", got)
				}
				res := h.list(&store.TaskListParams{Labels: map[string]string{"parity": "odd"}, Limit: 4, Cursor: cursor})
				got = append(got, taskIDs(res.Tasks)...)
				if res.NextCursor == "" {
					break
				}
				cursor = res.NextCursor
			}
			requireIDs(t, "paged ids", got, want)
		}},
		{"GarbageCursor", func(t *testing.T, h *harness) {
			h.createReady("a")
			for _, cursor := range []string{"!!! not a cursor !!!", "\x00\xff", "eyJicm9rZW4iOg"} {
				_, err := h.s.TaskList(h.ctx, &store.TaskListParams{Limit: 10, Cursor: cursor})
				requireFieldError(t, err, "page_token")
			}
		}},
	})
}
