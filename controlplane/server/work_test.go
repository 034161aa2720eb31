package server

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// workStream is one agent's Work stream in a test.
type workStream struct {
	t *testing.T
	s grpc.BidiStreamingClient[factoryv1.WorkRequest, factoryv1.WorkResponse]
}

func openWork(t *testing.T, q factoryv1.QueueServiceClient) *workStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	s, err := q.Work(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &workStream{t: t, s: s}
}

func (w *workStream) send(req *factoryv1.WorkRequest) {
	w.t.Helper()
	if err := w.s.Send(req); err != nil {
		w.t.Fatalf("send ref %d: %v", req.GetRef(), err)
	}
}

func (w *workStream) recv(ref uint64) *factoryv1.WorkResponse {
	w.t.Helper()
	resp, err := w.s.Recv()
	if err != nil {
		w.t.Fatalf("waiting for ref %d: %v", ref, err)
	}
	if resp.GetRef() != ref {
		w.t.Fatalf("got the response to ref %d, want ref %d (responses come in request order)", resp.GetRef(), ref)
	}
	return resp
}

func claimReq(ref uint64, agent string, roles ...string) *factoryv1.WorkRequest {
	return &factoryv1.WorkRequest{Ref: ref, Call: &factoryv1.WorkRequest_Claim{Claim: &factoryv1.ClaimTaskRequest{
		Agent: agent, Roles: roles, LeaseDuration: durationpb.New(time.Minute)}}}
}

func completeReq(ref uint64, agent string, task *factoryv1.Task) *factoryv1.WorkRequest {
	return &factoryv1.WorkRequest{Ref: ref, Call: &factoryv1.WorkRequest_Complete{Complete: &factoryv1.CompleteTaskRequest{
		TaskId: task.GetId(), Agent: agent, FencingToken: task.GetLease().GetToken()}}}
}

// TestWorkStream: an agent's claims, completions, renewals and failures on
// one stream answer as the unary calls do, in order and by ref; a failed
// call answers with its status and the stream goes on; what the policy
// refuses ends the stream.
func TestWorkStream(t *testing.T) {
	b := setup(t, nil)
	for i := range 3 {
		create(t, b, &factoryv1.CreateTaskRequest{Title: "task", Role: "builder", Priority: int32(3 - i)})
	}
	secret, _ := b.mintToken(t, store.RoleAgent, "forge", "builder")
	forge := b.clientsAs(t, secret)
	w := openWork(t, forge.q)

	w.send(claimReq(1, "forge", "builder"))
	first := w.recv(1).GetClaim().GetTasks()
	if len(first) != 1 || first[0].GetPriority() != 3 {
		t.Fatalf("first claim: %v, want the priority-3 task", first)
	}

	// The completion and the next claim go together: one round trip.
	w.send(completeReq(2, "forge", first[0]))
	w.send(claimReq(3, "forge", "builder"))
	if got := w.recv(2).GetComplete().GetTask(); got.GetState() != factoryv1.TaskState_TASK_STATE_DONE {
		t.Fatalf("completion: %v, want DONE", got)
	}
	second := w.recv(3).GetClaim().GetTasks()
	if len(second) != 1 || second[0].GetPriority() != 2 {
		t.Fatalf("second claim: %v, want the priority-2 task", second)
	}

	// A stale fencing token: FAILED_PRECONDITION for that call alone.
	stale := completeReq(4, "forge", second[0])
	stale.GetComplete().FencingToken++
	w.send(stale)
	if e := w.recv(4).GetError(); codes.Code(e.GetCode()) != codes.FailedPrecondition || e.GetMessage() == "" {
		t.Fatalf("completion with a wrong fencing token answered %v, want FAILED_PRECONDITION", e)
	}
	w.send(&factoryv1.WorkRequest{Ref: 5, Call: &factoryv1.WorkRequest_Renew{Renew: &factoryv1.RenewLeaseRequest{
		TaskId: second[0].GetId(), Agent: "forge", FencingToken: second[0].GetLease().GetToken(), Progress: "half way"}}})
	if got := w.recv(5).GetRenew().GetTask(); got.GetProgress() != "half way" {
		t.Fatalf("renewal: %v", got)
	}
	w.send(&factoryv1.WorkRequest{Ref: 6, Call: &factoryv1.WorkRequest_Fail{Fail: &factoryv1.FailTaskRequest{
		TaskId: second[0].GetId(), Agent: "forge", FencingToken: second[0].GetLease().GetToken(), Error: "flaky", Permanent: true}}})
	if got := w.recv(6).GetFail().GetTask(); got.GetState() != factoryv1.TaskState_TASK_STATE_FAILED {
		t.Fatalf("failure: %v, want FAILED", got)
	}

	// Acting as another agent ends the stream, as the unary call is refused.
	w.send(claimReq(7, "hammer", "builder"))
	if _, err := w.s.Recv(); err == nil {
		t.Fatal("a claim as another agent was answered; want the stream ended")
	} else {
		wantCode(t, err, codes.PermissionDenied)
	}
	// So does a role the token does not grant, on a new stream.
	w = openWork(t, forge.q)
	w.send(claimReq(1, "forge", "deployer"))
	_, err := w.s.Recv()
	wantCode(t, err, codes.PermissionDenied)
	// And a request that breaks the API's rules.
	w = openWork(t, forge.q)
	w.send(&factoryv1.WorkRequest{Ref: 1})
	_, err = w.s.Recv()
	wantCode(t, err, codes.InvalidArgument)

	// The call inside is checked by its own rules.
	w = openWork(t, forge.q)
	bad := completeReq(1, "forge", second[0])
	bad.GetComplete().TaskId = "not an id!"
	w.send(bad)
	_, err = w.s.Recv()
	if st := wantCode(t, err, codes.InvalidArgument); fieldOf(st) != "complete.task_id" {
		t.Fatalf("a completion with a bad task id: %v, want a violation of complete.task_id", st)
	}

	// The last task was never touched by the refused requests.
	res, err := b.client.ListTasks(context.Background(), &factoryv1.ListTasksRequest{States: []factoryv1.TaskState{factoryv1.TaskState_TASK_STATE_READY}})
	if err != nil || len(res.GetTasks()) != 1 || res.GetTasks()[0].GetPriority() != 1 {
		t.Fatalf("READY after the stream: %v %v, want the priority-1 task alone", res.GetTasks(), err)
	}
}

// TestWorkStreamAudit: a request on a Work stream is audited as the call
// it carries would be: an operator's completion for an agent is, under
// CompleteTask's name; an agent's own claims and completions are not.
func TestWorkStreamAudit(t *testing.T) {
	b := setup(t, nil)
	mine := create(t, b, &factoryv1.CreateTaskRequest{Title: "mine", Role: "builder", Priority: 2})
	theirs := create(t, b, &factoryv1.CreateTaskRequest{Title: "theirs", Role: "builder", Priority: 1})
	secret, _ := b.mintToken(t, store.RoleAgent, "forge", "builder")
	forge := openWork(t, b.clientsAs(t, secret).q)
	forge.send(claimReq(1, "forge", "builder"))
	forge.send(claimReq(2, "forge", "builder"))
	a, c := forge.recv(1).GetClaim().GetTasks(), forge.recv(2).GetClaim().GetTasks()
	if len(a) != 1 || a[0].GetId() != mine.GetId() || len(c) != 1 || c[0].GetId() != theirs.GetId() {
		t.Fatalf("claims: %v, %v", a, c)
	}
	forge.send(completeReq(3, "forge", a[0]))
	forge.recv(3)

	op := openWork(t, b.client)
	op.send(completeReq(1, "forge", c[0]))
	if got := op.recv(1).GetComplete().GetTask(); got.GetState() != factoryv1.TaskState_TASK_STATE_DONE {
		t.Fatalf("the operator's completion: %v", got)
	}
	entries, err := b.store.AuditList(context.Background(), &store.AuditListParams{})
	if err != nil {
		t.Fatal(err)
	}
	var forTask = map[string][]string{}
	for _, e := range entries.Entries {
		if strings.Contains(e.Target, mine.GetId()) || strings.Contains(e.Target, theirs.GetId()) {
			id := mine.GetId()
			if strings.Contains(e.Target, theirs.GetId()) {
				id = theirs.GetId()
			}
			forTask[id] = append(forTask[id], e.RPC+" "+e.Outcome)
		}
	}
	if got := forTask[theirs.GetId()]; !slices.Contains(got, factoryv1.QueueService_CompleteTask_FullMethodName+" OK") {
		t.Errorf("the operator's completion on a Work stream: audit %v, want a CompleteTask entry", got)
	}
	for _, e := range forTask[mine.GetId()] {
		if !strings.Contains(e, "CreateTask") {
			t.Errorf("the agent's own work was audited: %v", forTask[mine.GetId()])
		}
	}
}

// TestWorkStreamCompletesMany: a batch's completions go as one request,
// each item answered as CompleteTasks answers it.
func TestWorkStreamCompletesMany(t *testing.T) {
	b := setup(t, nil)
	for range 3 {
		create(t, b, &factoryv1.CreateTaskRequest{Title: "task", Role: "builder"})
	}
	secret, _ := b.mintToken(t, store.RoleAgent, "forge", "builder")
	w := openWork(t, b.clientsAs(t, secret).q)
	claim := claimReq(1, "forge", "builder")
	claim.GetClaim().MaxTasks = 3
	w.send(claim)
	tasks := w.recv(1).GetClaim().GetTasks()
	if len(tasks) != 3 {
		t.Fatalf("claimed %d tasks, want 3", len(tasks))
	}
	items := make([]*factoryv1.CompleteTaskRequest, len(tasks))
	for i, task := range tasks {
		items[i] = completeReq(0, "forge", task).GetComplete()
	}
	items[2].FencingToken++ // a stale lease fails alone
	w.send(&factoryv1.WorkRequest{Ref: 2, Call: &factoryv1.WorkRequest_CompleteMany{CompleteMany: &factoryv1.CompleteTasksRequest{Items: items}}})
	res := w.recv(2).GetCompleteMany().GetResults()
	if len(res) != 3 || res[0].GetTask().GetState() != factoryv1.TaskState_TASK_STATE_DONE ||
		res[1].GetTask().GetState() != factoryv1.TaskState_TASK_STATE_DONE || res[2].GetErrorCode() != "FAILED_PRECONDITION" {
		t.Fatalf("batch completion: %v, want two DONE and one FAILED_PRECONDITION", res)
	}
	// Naming another agent in any item ends the stream.
	items = []*factoryv1.CompleteTaskRequest{completeReq(0, "hammer", tasks[2]).GetComplete()}
	w.send(&factoryv1.WorkRequest{Ref: 3, Call: &factoryv1.WorkRequest_CompleteMany{CompleteMany: &factoryv1.CompleteTasksRequest{Items: items}}})
	_, err := w.s.Recv()
	wantCode(t, err, codes.PermissionDenied)
}

// TestWorkStreamCountsEachRequestAgainstTheRateLimit: an agent looping on
// one Work stream spends its rate limit per request, as it would with
// calls; refused requests answer RESOURCE_EXHAUSTED and the stream stays
// open, so the limit cannot be dodged by keeping one stream.
func TestWorkStreamCountsEachRequestAgainstTheRateLimit(t *testing.T) {
	b := setupWith(t, nil, []GRPCOption{WithRateLimit(RateLimit{PerSecond: 1, Burst: 5, Key: callerFromMetadata})})
	ctx, cancel := context.WithTimeout(asCaller("runaway-agent"), 30*time.Second)
	defer cancel()
	s, err := b.client.Work(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := &workStream{t: t, s: s}
	var refused int
	for ref := uint64(1); ref <= 30; ref++ {
		w.send(claimReq(ref, "runaway-agent"))
		resp := w.recv(ref)
		if e := resp.GetError(); e != nil {
			if codes.Code(e.GetCode()) != codes.ResourceExhausted {
				t.Fatalf("ref %d: %v, want RESOURCE_EXHAUSTED or a claim", ref, e)
			}
			refused++
		}
	}
	// The stream's opening and four requests spend the burst of 5; one
	// more may have refilled while the loop ran.
	if refused < 24 {
		t.Fatalf("%d of 30 requests on one stream refused, want at least 24", refused)
	}
}
