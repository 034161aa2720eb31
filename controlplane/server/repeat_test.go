package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// An agent whose CompleteTask reply was lost retries it: the repeat is OK
// with the task as the first call left it, while the same ref from another
// agent, or a repeat asking for something else, is still refused.
func TestCompleteTaskRepeatedAfterSuccessIsOK(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 12, 6, 17, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	ctx := context.Background()
	task := create(t, b, &factoryv1.CreateTaskRequest{Title: "ship", Role: "builder"})
	res, err := b.client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge", Roles: []string{"builder"}, LeaseDuration: durationpb.New(time.Minute)})
	if err != nil || len(res.GetTasks()) != 1 {
		t.Fatalf("claim: %v %v", res, err)
	}
	token := res.GetTasks()[0].GetLease().GetToken()
	req := &factoryv1.CompleteTaskRequest{TaskId: task.GetId(), Agent: "forge", FencingToken: token, Note: "shipped"}
	first, err := b.client.CompleteTask(ctx, req)
	if err != nil {
		t.Fatal(err)
	}

	clock.Advance(time.Second)
	again, err := b.client.CompleteTask(ctx, req)
	if err != nil {
		t.Fatalf("repeated CompleteTask: %v", err)
	}
	if !proto.Equal(first.GetTask(), again.GetTask()) {
		t.Fatalf("repeated CompleteTask answered %v, want the first answer %v", again.GetTask(), first.GetTask())
	}
	batch, err := b.client.CompleteTasks(ctx, &factoryv1.CompleteTasksRequest{Items: []*factoryv1.CompleteTaskRequest{req}})
	if err != nil || batch.GetResults()[0].GetErrorCode() != "" || batch.GetResults()[0].GetTask().GetState() != factoryv1.TaskState_TASK_STATE_DONE {
		t.Fatalf("repeated completion in CompleteTasks: %v, %v", batch, err)
	}

	_, err = b.client.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: task.GetId(), Agent: "scout", FencingToken: token, Note: "shipped"})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = b.client.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: task.GetId(), Agent: "forge", FencingToken: token, Review: true})
	if st := wantCode(t, err, codes.FailedPrecondition); !strings.Contains(st.Message(), "task is now DONE; the repeated completion asks for REVIEW") {
		t.Fatalf("a repeat asking for REVIEW: %q, want it to say what differs", st.Message())
	}
}
