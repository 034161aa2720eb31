package console

import (
	"net/url"
	"slices"
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

func TestTaskFilterParseErrors(t *testing.T) {
	for _, raw := range []string{"state=SOMEWHERE", "min_attempt=two", "min_attempt=99999999999"} {
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
