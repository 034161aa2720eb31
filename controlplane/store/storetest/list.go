package storetest

import (
	"fmt"
	"strings"
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
		{"IDPrefix", func(t *testing.T, h *harness) {
			// "0190abc:" and "0190abca-..." sit inside the index range of
			// "0190abc9" ('9' steps to 'a'); the exact comparison keeps
			// them out.
			ids := []string{
				"0190abc9-1111", "0190abca-0000", "0190abc9-2222", "0190abc:", "0190abd0",
				"deploy-api", "deploy", "deploy.x", "deploy-db", "f", "fz", "fa", "g0",
			}
			for _, id := range ids {
				h.create(&store.TaskCreate{ID: id})
			}
			h.move("deploy-db", store.StateFailed)
			for _, c := range []struct {
				prefix string
				states []store.TaskState
				want   []string
			}{
				{"0190abc9", nil, []string{"0190abc9-1111", "0190abc9-2222"}},
				{"0190abc9-", nil, []string{"0190abc9-1111", "0190abc9-2222"}},
				{"0190abc9-2", nil, []string{"0190abc9-2222"}},
				{"0190abc", nil, []string{"0190abc9-1111", "0190abca-0000", "0190abc9-2222", "0190abc:"}},
				{"0190abc9-1111", nil, []string{"0190abc9-1111"}},
				{"0190abc9-11110", nil, nil},
				{"deploy", nil, []string{"deploy-api", "deploy", "deploy.x", "deploy-db"}},
				{"deploy-", nil, []string{"deploy-api", "deploy-db"}},
				{"deploy-", []store.TaskState{store.StateFailed}, []string{"deploy-db"}},
				{"f", nil, []string{"f", "fz", "fa"}},
				{"fz", nil, []string{"fz"}},
				{"F", nil, nil},
				{"x", nil, nil},
			} {
				res := h.list(&store.TaskListParams{IDPrefix: c.prefix, States: c.states, Limit: 100})
				requireIDs(t, "prefix "+c.prefix, taskIDs(res.Tasks), c.want)
			}
			// A page of the prefix's tasks continues with its cursor.
			first := h.list(&store.TaskListParams{IDPrefix: "deploy", Limit: 3, Summary: true})
			requireIDs(t, "first page", taskIDs(first.Tasks), []string{"deploy-api", "deploy", "deploy.x"})
			rest := h.list(&store.TaskListParams{IDPrefix: "deploy", Limit: 3, Cursor: first.NextCursor})
			requireIDs(t, "second page", taskIDs(rest.Tasks), []string{"deploy-db"})
			newest := h.list(&store.TaskListParams{IDPrefix: "f", NewestFirst: true, Limit: 100})
			requireIDs(t, "newest first", taskIDs(newest.Tasks), []string{"fa", "fz", "f"})
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
		{"SummaryLeavesLargeFieldsOut", func(t *testing.T, h *harness) {
			payload := jsonString(5000)
			h.create(&store.TaskCreate{ID: "dep", InitialState: store.StateDone})
			h.create(&store.TaskCreate{ID: "a", Title: "the task", Kind: "build", PayloadJSON: payload, Note: "a note",
				Labels: map[string]string{"team": "core"}, DependsOn: []string{"dep"}, MaxAttempts: 5})
			h.fail(h.claimOne("agent-1", "a"), "flaky", false, noBackoff)

			full := h.list(&store.TaskListParams{IDs: []string{"a"}}).Tasks[0]
			if full.Summary || full.PayloadJSON != payload || full.LastError != "flaky" || full.PayloadSize() != int64(len(payload)) {
				t.Fatalf("full task: summary %v, payload %d bytes, last error %q", full.Summary, len(full.PayloadJSON), full.LastError)
			}
			res := h.list(&store.TaskListParams{IDs: []string{"a"}, Summary: true, Limit: 10})
			requireIDs(t, "summary", taskIDs(res.Tasks), []string{"a"})
			sum := res.Tasks[0]
			if !sum.Summary || sum.PayloadJSON != "" || sum.LastError != "" || sum.Note != "" || sum.Progress != "" {
				t.Fatalf("summary carries large fields: payload %d bytes, last error %q, note %q, progress %q", len(sum.PayloadJSON), sum.LastError, sum.Note, sum.Progress)
			}
			if sum.PayloadBytes != int64(len(payload)) || sum.PayloadSize() != int64(len(payload)) {
				t.Fatalf("summary says the payload has %d bytes, want %d", sum.PayloadBytes, len(payload))
			}
			// Everything else is as stored.
			want := full.Clone()
			want.PayloadJSON, want.LastError, want.Note, want.Progress = "", "", "", ""
			want.Summary, want.PayloadBytes = true, int64(len(payload))
			if d := diffTask(sum, want); len(d) > 0 {
				t.Fatalf("summary differs from the stored task:\n%s", strings.Join(d, "\n"))
			}
		}},
		{"ByteBudgetShrinksPages", func(t *testing.T, h *harness) {
			// About 100 KiB each; a 250 KiB page holds two. One task is
			// larger than the budget: it comes alone.
			var want []string
			for i := range 7 {
				id := fmt.Sprintf("t-%d", i)
				size := 100 << 10
				if i == 4 {
					size = 300 << 10
				}
				h.create(&store.TaskCreate{ID: id, PayloadJSON: jsonString(size)})
				want = append(want, id)
			}
			var pages [][]string
			cursor := ""
			for {
				if len(pages) > 10 {
					t.Fatalf("paging did not end: %v", pages)
				}
				res := h.list(&store.TaskListParams{Limit: 100, Cursor: cursor, MaxBytes: 250 << 10})
				pages = append(pages, taskIDs(res.Tasks))
				if cursor = res.NextCursor; cursor == "" {
					break
				}
			}
			wantPages := [][]string{{"t-0", "t-1"}, {"t-2", "t-3"}, {"t-4"}, {"t-5", "t-6"}}
			if fmt.Sprint(pages) != fmt.Sprint(wantPages) {
				t.Fatalf("pages %v, want %v", pages, wantPages)
			}
			// Summaries leave the payloads out, and so fit one page.
			res := h.list(&store.TaskListParams{Limit: 100, MaxBytes: 250 << 10, Summary: true})
			requireIDs(t, "summaries within 250 KiB", taskIDs(res.Tasks), want)
			if res.NextCursor != "" {
				t.Fatalf("a complete page of summaries has cursor %q", res.NextCursor)
			}
			// The count still ends a page that fits the budget.
			res = h.list(&store.TaskListParams{Limit: 3, MaxBytes: 250 << 10, Summary: true})
			requireIDs(t, "three summaries", taskIDs(res.Tasks), want[:3])
			if res.NextCursor == "" {
				t.Fatal("a page cut by its limit has no cursor")
			}
		}},
		{"KindAndAttemptFilters", func(t *testing.T, h *harness) {
			// Each task has its own role, so a claim can pick it out.
			for _, c := range []struct {
				id, kind string
				failures int
			}{{"k1", "build", 0}, {"k2", "research", 1}, {"k3", "build", 2}, {"k4", "build", 0}, {"k5", "build", 3}} {
				h.create(&store.TaskCreate{ID: c.id, Role: c.id, Kind: c.kind, MaxAttempts: 3})
				h.failAttempts(c.id, c.failures)
			}
			// k4 is held: attempt 1, IN_PROGRESS. k5 used its attempts: FAILED.
			h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Roles: []string{"k4"}, Max: 1, LeaseDuration: defaultLease, Now: h.now()})
			h.requireState("k5", store.StateFailed)
			if got := h.get("k3").Attempt; got != 2 {
				t.Fatalf("k3 attempt = %d, want 2", got)
			}

			cases := []struct {
				name string
				p    store.TaskListParams
				want []string
			}{
				{"kind", store.TaskListParams{Kind: "build"}, []string{"k1", "k3", "k4", "k5"}},
				{"other kind", store.TaskListParams{Kind: "research"}, []string{"k2"}},
				{"unknown kind", store.TaskListParams{Kind: "Build"}, nil},
				{"min attempt 1", store.TaskListParams{MinAttempt: 1}, []string{"k2", "k3", "k4", "k5"}},
				{"min attempt 2", store.TaskListParams{MinAttempt: 2}, []string{"k3", "k5"}},
				{"min attempt past every task", store.TaskListParams{MinAttempt: 4}, nil},
				{"min attempt past int32", store.TaskListParams{MinAttempt: 1 << 40}, nil},
				{"kind and min attempt", store.TaskListParams{Kind: "build", MinAttempt: 1}, []string{"k3", "k4", "k5"}},
				{"kind, min attempt and state", store.TaskListParams{Kind: "build", MinAttempt: 1, States: []store.TaskState{store.StateReady}}, []string{"k3"}},
				{"kind and states", store.TaskListParams{Kind: "build", States: []store.TaskState{store.StateInProgress, store.StateFailed}}, []string{"k4", "k5"}},
				{"kind and role", store.TaskListParams{Kind: "build", Role: "k3"}, []string{"k3"}},
			}
			for _, c := range cases {
				// Summaries take the byte-bounded path: both must filter.
				for _, summary := range []bool{false, true} {
					p := c.p
					p.Limit, p.Summary = 100, summary
					res := h.list(&p)
					requireIDs(t, fmt.Sprintf("filter %s (summary %v)", c.name, summary), taskIDs(res.Tasks), c.want)
					if res.NextCursor != "" {
						t.Fatalf("filter %s: a complete page has cursor %q", c.name, res.NextCursor)
					}
				}
			}
		}},
		{"PagingWithKindAndAttempt", func(t *testing.T, h *harness) {
			// Every other task is of kind "a", every third has failed once:
			// each filter, alone and together, spans several pages.
			var wantKind, wantAttempt, wantBoth []string
			for i := range 24 {
				id := fmt.Sprintf("t-%02d", 23-i)
				kind := []string{"a", "b"}[i%2]
				h.create(&store.TaskCreate{ID: id, Role: id, Kind: kind, MaxAttempts: 3})
				if i%3 == 0 {
					h.failAttempts(id, 1)
					wantAttempt = append(wantAttempt, id)
				}
				if kind == "a" {
					wantKind = append(wantKind, id)
					if i%3 == 0 {
						wantBoth = append(wantBoth, id)
					}
				}
			}
			for _, c := range []struct {
				name string
				p    store.TaskListParams
				want []string
			}{
				{"kind", store.TaskListParams{Kind: "a", Limit: 5}, wantKind},
				{"min attempt", store.TaskListParams{MinAttempt: 1, Limit: 3}, wantAttempt},
				{"kind and min attempt", store.TaskListParams{Kind: "a", MinAttempt: 1, Limit: 3}, wantBoth},
				{"kind and min attempt, summaries", store.TaskListParams{Kind: "a", MinAttempt: 1, Limit: 3, Summary: true}, wantBoth},
			} {
				var got []string
				p := c.p
				for pages := 0; ; pages++ {
					if pages > 10 {
						t.Fatalf("%s: paging did not end: %v", c.name, got)
					}
					res := h.list(&p)
					if len(res.Tasks) > c.p.Limit {
						t.Fatalf("%s: page of %d tasks with Limit %d", c.name, len(res.Tasks), c.p.Limit)
					}
					got = append(got, taskIDs(res.Tasks)...)
					if p.Cursor = res.NextCursor; p.Cursor == "" {
						if pages == 0 {
							t.Fatalf("%s: %d tasks in one page of %d", c.name, len(got), c.p.Limit)
						}
						break
					}
				}
				requireIDs(t, c.name+" paged", got, c.want)
			}
		}},
		{"GarbageCursor", func(t *testing.T, h *harness) {
			h.createReady("a")
			for _, cursor := range []string{"!!! not a cursor !!!", "\x00\xff", "eyJicm9rZW4iOg", "n", "nn1", "n-1", "-1"} {
				for _, newest := range []bool{false, true} {
					_, err := h.s.TaskList(h.ctx, &store.TaskListParams{Limit: 10, Cursor: cursor, NewestFirst: newest})
					requireFieldError(t, err, "page_token")
				}
			}
		}},
		{"NewestFirstWithFilters", func(t *testing.T, h *harness) {
			// Ids against creation order, so that the order must come
			// from creation, not ids.
			h.create(
				&store.TaskCreate{ID: "n5", Role: "builder", Kind: "build", Labels: map[string]string{"team": "core"}},
				&store.TaskCreate{ID: "n4", Role: "tester", Kind: "test", InitialState: store.StateBacklog},
				&store.TaskCreate{ID: "n3", Role: "builder", Kind: "build", InitialState: store.StateDone, Labels: map[string]string{"team": "core"}},
				&store.TaskCreate{ID: "n2", Role: "builder", Kind: "build", Assignee: "agent-2"},
				&store.TaskCreate{ID: "n1", Role: "tester", Kind: "build", InitialState: store.StateFailed, Labels: map[string]string{"team": "core"}},
			)
			cases := []struct {
				name string
				p    store.TaskListParams
				want []string
			}{
				{"none", store.TaskListParams{}, []string{"n1", "n2", "n3", "n4", "n5"}},
				{"states", store.TaskListParams{States: []store.TaskState{store.StateReady, store.StateFailed}}, []string{"n1", "n2", "n5"}},
				{"role", store.TaskListParams{Role: "builder"}, []string{"n2", "n3", "n5"}},
				{"assignee", store.TaskListParams{Assignee: "agent-2"}, []string{"n2"}},
				{"label", store.TaskListParams{Labels: map[string]string{"team": "core"}}, []string{"n1", "n3", "n5"}},
				{"kind and role", store.TaskListParams{Kind: "build", Role: "builder"}, []string{"n2", "n3", "n5"}},
				{"ids", store.TaskListParams{IDs: []string{"n5", "n4", "missing"}}, []string{"n4", "n5"}},
			}
			for _, c := range cases {
				// Summaries take the byte-bounded path: both must order.
				for _, summary := range []bool{false, true} {
					p := c.p
					p.Limit, p.Summary, p.NewestFirst = 100, summary, true
					res := h.list(&p)
					requireIDs(t, fmt.Sprintf("filter %s (summary %v)", c.name, summary), taskIDs(res.Tasks), c.want)
					if res.NextCursor != "" {
						t.Fatalf("filter %s: a complete page has cursor %q", c.name, res.NextCursor)
					}
				}
			}
		}},
		{"PagingInBothOrders", func(t *testing.T, h *harness) {
			// Ids are a permutation of creation order and batches share a
			// timestamp: both orders must follow creation, not ids or times.
			var oldest, odd []string
			for batch := range 4 {
				var tasks []*store.TaskCreate
				for i := range 4 {
					n := batch*4 + i
					id := fmt.Sprintf("p-%02d", n*7%16)
					parity := []string{"even", "odd"}[n%2]
					tasks = append(tasks, &store.TaskCreate{ID: id, Labels: map[string]string{"parity": parity}})
					oldest = append(oldest, id)
					if parity == "odd" {
						odd = append(odd, id)
					}
				}
				h.create(tasks...)
			}
			newest, newestOdd := reversed(oldest), reversed(odd)
			for _, c := range []struct {
				name string
				p    store.TaskListParams
				want []string
			}{
				{"oldest", store.TaskListParams{Limit: 5}, oldest},
				{"newest", store.TaskListParams{Limit: 5, NewestFirst: true}, newest},
				{"newest, summaries", store.TaskListParams{Limit: 3, NewestFirst: true, Summary: true}, newest},
				{"newest, byte budget", store.TaskListParams{Limit: 100, NewestFirst: true, MaxBytes: 3 * store.TaskSizeFixed}, newest},
				{"newest, label", store.TaskListParams{Limit: 3, NewestFirst: true, Labels: map[string]string{"parity": "odd"}}, newestOdd},
				{"oldest, label", store.TaskListParams{Limit: 3, Labels: map[string]string{"parity": "odd"}}, odd},
			} {
				var got []string
				p := c.p
				for pages := 0; ; pages++ {
					if pages > 20 {
						t.Fatalf("%s: paging did not end: %v", c.name, got)
					}
					res := h.list(&p)
					if len(res.Tasks) > p.Limit {
						t.Fatalf("%s: page of %d tasks with Limit %d", c.name, len(res.Tasks), p.Limit)
					}
					got = append(got, taskIDs(res.Tasks)...)
					if p.Cursor = res.NextCursor; p.Cursor == "" {
						if pages == 0 {
							t.Fatalf("%s: %d tasks in one page", c.name, len(got))
						}
						break
					}
				}
				requireIDs(t, c.name+" paged", got, c.want)
			}
		}},
		{"NewestFirstPagesAreStable", func(t *testing.T, h *harness) {
			// A task created while an operator pages newest first lands
			// before the first page, not in the middle of the next one.
			h.createReady("a", "b", "c", "d")
			res := h.list(&store.TaskListParams{Limit: 2, NewestFirst: true})
			requireIDs(t, "first page", taskIDs(res.Tasks), []string{"d", "c"})
			h.createReady("late")
			res = h.list(&store.TaskListParams{Limit: 2, NewestFirst: true, Cursor: res.NextCursor})
			requireIDs(t, "second page", taskIDs(res.Tasks), []string{"b", "a"})
			if res.NextCursor != "" {
				t.Fatalf("the last page has cursor %q", res.NextCursor)
			}
			requireIDs(t, "from the start", taskIDs(h.list(&store.TaskListParams{Limit: 1, NewestFirst: true}).Tasks), []string{"late"})
		}},
		{"CursorOfTheOtherOrderIsRefused", func(t *testing.T, h *harness) {
			h.createReady("a", "b", "c")
			for _, summary := range []bool{false, true} {
				for _, newest := range []bool{false, true} {
					res := h.list(&store.TaskListParams{Limit: 1, NewestFirst: newest, Summary: summary})
					if res.NextCursor == "" {
						t.Fatal("a page cut by its limit has no cursor")
					}
					_, err := h.s.TaskList(h.ctx, &store.TaskListParams{Limit: 1, Cursor: res.NextCursor, NewestFirst: !newest, Summary: summary})
					requireFieldError(t, err, "page_token")
				}
			}
		}},
	})
}

// failAttempts claims task id (its role is its id) and fails it n times,
// each failure retryable and at once claimable again: attempt ends at n.
func (h *harness) failAttempts(id string, n int) {
	h.t.Helper()
	for range n {
		got := h.claimParams(&store.TaskClaimParams{Agent: "agent-" + id, Roles: []string{id}, Max: 1, LeaseDuration: defaultLease, Now: h.now()})
		if len(got) != 1 || got[0].ID != id {
			h.t.Fatalf("claim of %s got %v", id, taskIDs(got))
		}
		h.fail(got[0], "flaky", false, noBackoff)
	}
}
