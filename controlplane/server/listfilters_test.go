package server

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// listTaskIDs pages through ListTasks with req and returns every task's id
// and how many pages it took.
func listTaskIDs(t *testing.T, b *testBundle, req *factoryv1.ListTasksRequest) (ids []string, pages int) {
	t.Helper()
	for ; ; pages++ {
		if pages > 10 {
			t.Fatalf("paging did not end: %v", ids)
		}
		res, err := b.client.ListTasks(context.Background(), req)
		if err != nil {
			t.Fatalf("ListTasks(%v): %v", req, err)
		}
		for _, task := range res.GetTasks() {
			ids = append(ids, task.GetId())
		}
		if req.PageToken = res.GetNextPageToken(); req.PageToken == "" {
			return ids, pages + 1
		}
	}
}

func TestListTasksByKindAndMinAttempt(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	create(t, b, &factoryv1.CreateTaskRequest{TaskId: "b1", Title: "build one", Kind: "build"})
	create(t, b, &factoryv1.CreateTaskRequest{TaskId: "r1", Title: "research", Kind: "research"})
	create(t, b, &factoryv1.CreateTaskRequest{TaskId: "b2", Title: "build two", Kind: "build"})
	create(t, b, &factoryv1.CreateTaskRequest{TaskId: "b3", Title: "build three", Kind: "build", Priority: 10})
	// The claim takes b3, the highest priority: attempt 1.
	claimed, err := b.client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge"})
	if err != nil || len(claimed.GetTasks()) != 1 || claimed.GetTasks()[0].GetId() != "b3" {
		t.Fatalf("claim: %v, %v; want b3", claimed.GetTasks(), err)
	}

	for _, c := range []struct {
		name      string
		req       *factoryv1.ListTasksRequest
		want      string
		wantPages int
	}{
		{"kind", &factoryv1.ListTasksRequest{Kind: "build"}, "b1,b2,b3", 1},
		{"kind, a page each", &factoryv1.ListTasksRequest{Kind: "build", PageSize: 1}, "b1,b2,b3", 3},
		{"min attempt", &factoryv1.ListTasksRequest{MinAttempt: 1}, "b3", 1},
		{"min attempt past every task", &factoryv1.ListTasksRequest{MinAttempt: 2}, "", 1},
		{"kind and min attempt", &factoryv1.ListTasksRequest{Kind: "research", MinAttempt: 1}, "", 1},
		{"kind and state", &factoryv1.ListTasksRequest{Kind: "build", States: []factoryv1.TaskState{factoryv1.TaskState_TASK_STATE_READY}}, "b1,b2", 1},
		{"kind, min attempt and state", &factoryv1.ListTasksRequest{Kind: "build", MinAttempt: 1, States: []factoryv1.TaskState{factoryv1.TaskState_TASK_STATE_IN_PROGRESS}}, "b3", 1},
	} {
		ids, pages := listTaskIDs(t, b, c.req)
		if got := strings.Join(ids, ","); got != c.want || pages != c.wantPages {
			t.Errorf("%s: %q in %d pages, want %q in %d", c.name, got, pages, c.want, c.wantPages)
		}
	}

	for _, c := range []struct {
		req   *factoryv1.ListTasksRequest
		field string
	}{
		{&factoryv1.ListTasksRequest{MinAttempt: -1}, "min_attempt"},
		{&factoryv1.ListTasksRequest{MinAttempt: 1000001}, "min_attempt"},
		{&factoryv1.ListTasksRequest{Kind: strings.Repeat("k", 101)}, "kind"},
	} {
		_, err := b.client.ListTasks(ctx, c.req)
		if st := wantCode(t, err, codes.InvalidArgument); fieldOf(st) != c.field {
			t.Errorf("ListTasks(%v): violation on %q, want %q", c.req, fieldOf(st), c.field)
		}
	}
}

func TestListAuditByTarget(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	create(t, b, &factoryv1.CreateTaskRequest{TaskId: "job", Title: "job"})
	create(t, b, &factoryv1.CreateTaskRequest{TaskId: "other", Title: "other"})
	for _, p := range []int32{5, 7} {
		if _, err := b.client.SetPriority(ctx, &factoryv1.SetPriorityRequest{TaskId: "job", Priority: p}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.client.SetPriority(ctx, &factoryv1.SetPriorityRequest{TaskId: "other", Priority: 1}); err != nil {
		t.Fatal(err)
	}

	// The task's history, newest first, and nothing of the other task's.
	entries := auditOf(t, b, &factoryv1.ListAuditRequest{Target: "job"})
	var rpcs []string
	for _, e := range entries {
		if e.GetTarget() != "job" {
			t.Fatalf("entry for target %q in job's history", e.GetTarget())
		}
		rpcs = append(rpcs, e.GetRpc())
	}
	want := []string{factoryv1.QueueService_SetPriority_FullMethodName, factoryv1.QueueService_SetPriority_FullMethodName, factoryv1.QueueService_CreateTask_FullMethodName}
	if strings.Join(rpcs, ",") != strings.Join(want, ",") {
		t.Fatalf("job's history: %v, want %v", rpcs, want)
	}

	// Paged one entry at a time, with another filter beside it.
	var paged []string
	req := &factoryv1.ListAuditRequest{Target: "job", Who: "tok-none-such", PageSize: 1}
	if got := auditOf(t, b, req); len(got) != 0 {
		t.Fatalf("target and an unknown caller: %v", got)
	}
	req.Who = ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatalf("paging did not end: %v", paged)
		}
		res, err := factoryv1.NewAccessServiceClient(b.conn).ListAudit(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.GetEntries()) != 1 {
			t.Fatalf("page %d has %d entries, want 1", pages, len(res.GetEntries()))
		}
		paged = append(paged, res.GetEntries()[0].GetId())
		if req.PageToken = res.GetNextPageToken(); req.PageToken == "" {
			break
		}
	}
	if len(paged) != 3 || paged[0] != entries[0].GetId() || paged[2] != entries[2].GetId() {
		t.Fatalf("paged ids %v, want those of %v", paged, entries)
	}

	// Targets the control plane writes with a space are valid filters;
	// control characters are not.
	if got := auditOf(t, b, &factoryv1.ListAuditRequest{Target: "agent forge"}); len(got) != 0 {
		t.Fatalf("no agent was placed, yet: %v", got)
	}
	for _, target := range []string{"job\n", "job;--", strings.Repeat("t", 301)} {
		_, err := factoryv1.NewAccessServiceClient(b.conn).ListAudit(ctx, &factoryv1.ListAuditRequest{Target: target})
		if st := wantCode(t, err, codes.InvalidArgument); fieldOf(st) != "target" {
			t.Errorf("ListAudit(target %q): violation on %q, want target", target, fieldOf(st))
		}
	}
}

func TestListNewestFirst(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	for _, id := range []string{"t3", "t1", "t4", "t2"} {
		create(t, b, &factoryv1.CreateTaskRequest{TaskId: id, Title: "task " + id, Kind: "build"})
	}
	for _, c := range []struct {
		name string
		req  *factoryv1.ListTasksRequest
		want string
	}{
		{"tasks oldest first", &factoryv1.ListTasksRequest{PageSize: 3}, "t3,t1,t4,t2"},
		{"tasks newest first", &factoryv1.ListTasksRequest{NewestFirst: true, PageSize: 3}, "t2,t4,t1,t3"},
		{"tasks newest first, filtered", &factoryv1.ListTasksRequest{NewestFirst: true, Kind: "build", PageSize: 1}, "t2,t4,t1,t3"},
	} {
		if ids, pages := listTaskIDs(t, b, c.req); strings.Join(ids, ",") != c.want || pages < 2 {
			t.Errorf("%s: %v in %d pages, want %s over several pages", c.name, ids, pages, c.want)
		}
	}
	first, err := b.client.ListTasks(ctx, &factoryv1.ListTasksRequest{NewestFirst: true, PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.client.ListTasks(ctx, &factoryv1.ListTasksRequest{PageSize: 1, PageToken: first.GetNextPageToken()})
	if st := wantCode(t, err, codes.InvalidArgument); fieldOf(st) != "page_token" {
		t.Errorf("a newest-first token listed oldest first: violation on %q, want page_token", fieldOf(st))
	}

	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	forge := b.approvalAs(t, forgeSecret)
	op := b.approvalAs(t, b.operator)
	var ids []string
	for range 5 {
		ids = append(ids, requestTier2(t, forge, "forge").GetId())
	}
	for _, i := range []int{3, 0, 1} {
		if _, err := op.ap.Decide(ctx, approve(ids[i])); err != nil {
			t.Fatal(err)
		}
	}
	listApprovals := func(req *factoryv1.ListApprovalsRequest) (got []string, pages int) {
		t.Helper()
		for ; ; pages++ {
			if pages > 10 {
				t.Fatalf("paging did not end: %v", got)
			}
			res, err := op.ap.ListApprovals(ctx, req)
			if err != nil {
				t.Fatalf("ListApprovals(%v): %v", req, err)
			}
			for _, a := range res.GetApprovals() {
				got = append(got, a.GetId())
			}
			if req.PageToken = res.GetNextPageToken(); req.PageToken == "" {
				return got, pages + 1
			}
		}
	}
	decided := []factoryv1.ApprovalState{factoryv1.ApprovalState_APPROVAL_STATE_APPROVED, factoryv1.ApprovalState_APPROVAL_STATE_REJECTED,
		factoryv1.ApprovalState_APPROVAL_STATE_MODIFIED, factoryv1.ApprovalState_APPROVAL_STATE_EXPIRED}
	for _, c := range []struct {
		name string
		req  *factoryv1.ListApprovalsRequest
		want []int
	}{
		{"approvals oldest first", &factoryv1.ListApprovalsRequest{PageSize: 2}, []int{2, 4, 0, 1, 3}},
		{"approvals newest first", &factoryv1.ListApprovalsRequest{NewestFirst: true, PageSize: 2}, []int{4, 2, 3, 1, 0}},
		{"decided newest first", &factoryv1.ListApprovalsRequest{NewestFirst: true, States: decided, PageSize: 2}, []int{3, 1, 0}},
		{"agent newest first", &factoryv1.ListApprovalsRequest{NewestFirst: true, Agent: "forge", PageSize: 3}, []int{4, 2, 3, 1, 0}},
	} {
		var want []string
		for _, i := range c.want {
			want = append(want, ids[i])
		}
		if got, pages := listApprovals(c.req); strings.Join(got, ",") != strings.Join(want, ",") || pages < 2 {
			t.Errorf("%s: %v in %d pages, want %v over several pages", c.name, got, pages, want)
		}
	}
	page, err := op.ap.ListApprovals(ctx, &factoryv1.ListApprovalsRequest{PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = op.ap.ListApprovals(ctx, &factoryv1.ListApprovalsRequest{NewestFirst: true, PageToken: page.GetNextPageToken()})
	if st := wantCode(t, err, codes.InvalidArgument); fieldOf(st) != "page_token" {
		t.Errorf("an oldest-first token listed newest first: violation on %q, want page_token", fieldOf(st))
	}
}
