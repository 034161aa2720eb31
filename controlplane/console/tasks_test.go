package console

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func TestTaskFilterRequest(t *testing.T) {
	q, err := url.ParseQuery("state=ready&state=TASK_STATE_IN_PROGRESS&state=ready&role=builder&agent=a1" +
		"&label=team%3Dcore&label=&label=+env%3Dprod+&kind=deploy&min_attempt=2&page_token=tok")
	if err != nil {
		t.Fatal(err)
	}
	f, err := parseTaskFilter(q)
	if err != nil {
		t.Fatal(err)
	}
	got := f.request()
	want := &factoryv1.ListTasksRequest{
		States:     []factoryv1.TaskState{factoryv1.TaskState_TASK_STATE_READY, factoryv1.TaskState_TASK_STATE_IN_PROGRESS},
		Role:       "builder",
		Assignee:   "a1",
		Labels:     []string{"team=core", "env=prod"},
		Kind:       "deploy",
		MinAttempt: 2,
		PageSize:   taskPageSize, PageToken: "tok",
		// Newest first unless the query asks for the oldest.
		NewestFirst: true,
	}
	if !proto.Equal(got, want) {
		t.Fatalf("request:\n got %v\nwant %v", got, want)
	}
	// The pager's links carry every filter but the page token.
	if got, want := tasksHref(f.query()), "/tasks?agent=a1&kind=deploy&label=team%3Dcore&label=env%3Dprod&min_attempt=2&role=builder&state=READY&state=IN_PROGRESS"; got != want {
		t.Fatalf("href:\n got %s\nwant %s", got, want)
	}
	d := tasksData{Filter: f}
	if got, want := d.WithLabel("a", "b=c"), "/tasks?agent=a1&kind=deploy&label=team%3Dcore&label=env%3Dprod&label=a%3Db%3Dc&min_attempt=2&role=builder&state=READY&state=IN_PROGRESS"; got != want {
		t.Fatalf("label href:\n got %s\nwant %s", got, want)
	}
}

func TestTaskListOrder(t *testing.T) {
	for _, c := range []struct {
		raw    string
		newest bool
		href   string
	}{
		{"", true, "/tasks"},
		{"order=newest", true, "/tasks"},
		{"order=oldest&page_token=tok", false, "/tasks?order=oldest"},
		{"order=Oldest&state=READY", false, "/tasks?order=oldest&state=READY"},
	} {
		q, _ := url.ParseQuery(c.raw)
		f, err := parseTaskFilter(q)
		if err != nil {
			t.Fatalf("%s: %v", c.raw, err)
		}
		if got := f.request().GetNewestFirst(); got != c.newest {
			t.Errorf("%s: newest_first %v, want %v", c.raw, got, c.newest)
		}
		// The pager's and the label links' base keeps the order.
		if got := tasksHref(f.query()); got != c.href {
			t.Errorf("%s: href %s, want %s", c.raw, got, c.href)
		}
	}
	// The order alone is not a filter: an empty list says the queue is.
	q, _ := url.ParseQuery("order=oldest")
	if f, _ := parseTaskFilter(q); f.Filtered() || f.Order() != orderOldest {
		t.Errorf("order=oldest: filtered %v, order %q", f.Filtered(), f.Order())
	}
}

// The pager's words follow the order: newest first pages to older tasks.
func TestTaskPagerFollowsOrder(t *testing.T) {
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		query       string
		first, next string
	}{
		{"page_token=n5", "← Newest", "Older →"},
		{"order=oldest&page_token=5", "← Oldest", "Newer →"},
	} {
		q, _ := url.ParseQuery(c.query)
		f, err := parseTaskFilter(q)
		if err != nil {
			t.Fatal(err)
		}
		next := f.query()
		next.Set("page_token", "x")
		d := tasksData{
			Filter: f, Stats: &factoryv1.GetQueueStatsResponse{},
			Tasks:    []*factoryv1.Task{{Id: "t1", Title: "one", State: factoryv1.TaskState_TASK_STATE_READY}},
			NextPage: tasksHref(next),
		}
		var b strings.Builder
		if err := pages.byName["tasks"].ExecuteTemplate(&b, "main", view{D: d}); err != nil {
			t.Fatal(err)
		}
		body := b.String()
		for _, want := range []string{">" + c.first + "</a>", `rel="next">` + c.next + "</a>"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s: no %q in the pager", c.query, want)
			}
		}
		wantSelected := `<option value="newest" selected>`
		if f.Oldest {
			wantSelected = `<option value="oldest" selected>`
		}
		if !strings.Contains(body, wantSelected) {
			t.Errorf("%s: the order select does not show the order", c.query)
		}
	}
}

func TestTaskFilterParseErrors(t *testing.T) {
	for _, raw := range []string{"state=SOMEWHERE", "min_attempt=two", "min_attempt=99999999999", "order=sideways"} {
		q, _ := url.ParseQuery(raw)
		if _, err := parseTaskFilter(q); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: got %v, want INVALID_ARGUMENT", raw, err)
		}
	}
	q, _ := url.ParseQuery("state=any")
	f, err := parseTaskFilter(q)
	if err != nil || len(f.States) != 0 || f.Filtered() {
		t.Fatalf("state=any: %+v %v", f, err)
	}
}

// The task page's move choices copy the store's transition table; this
// keeps the copy from drifting.
func TestOperatorMovesMirrorStore(t *testing.T) {
	for _, from := range store.AllStates {
		var want []factoryv1.TaskState
		for _, to := range store.OperatorMoves(from) {
			want = append(want, factoryv1.TaskState(to))
		}
		got := operatorMoves[factoryv1.TaskState(from)]
		if !slices.Equal(got, want) && (len(got) != 0 || len(want) != 0) {
			t.Errorf("from %s: console offers %v, the store allows %v", from, got, want)
		}
	}
}

func TestHistoryChange(t *testing.T) {
	for _, c := range []struct{ before, after, want string }{
		{`{"state":"READY","priority":0}`, `{"state":"FAILED","priority":0}`, "READY → FAILED"},
		{`{"state":"READY","priority":0}`, `{"state":"READY","priority":5}`, "priority 0 → 5"},
		{``, `{"state":"READY","priority":0}`, "→ READY"},
		{``, `{"role":"OPERATOR"}`, ""},
	} {
		h := historyOf(&factoryv1.AuditEntry{Rpc: "/factory.v1.QueueService/MoveTask", BeforeJson: c.before, AfterJson: c.after})
		if h.Change != c.want || h.Method != "MoveTask" {
			t.Errorf("%s → %s: got %q (%s), want %q", c.before, c.after, h.Change, h.Method, c.want)
		}
	}
}

func TestClip(t *testing.T) {
	if s, cut := clipHead("héllo", 2); s != "h" || !cut {
		t.Errorf("clipHead: %q %v", s, cut)
	}
	if s, cut := clipTail("hellé", 1); s != "" || !cut {
		t.Errorf("clipTail: %q %v", s, cut)
	}
	if s, cut := clipTail("hellé", 3); s != "lé" || !cut {
		t.Errorf("clipTail: %q %v", s, cut)
	}
	if s, _ := indentJSON(`{"a":[1,2]}`, 100); s != "{\n  \"a\": [\n    1,\n    2\n  ]\n}" {
		t.Errorf("indentJSON: %q", s)
	}
}
