package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/factory/factory/controlplane/queue"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func TestBulkUpdateTasksRefusals(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	kill := &factoryv1.BulkUpdateTasksRequest_To{To: factoryv1.TaskState_TASK_STATE_FAILED}
	for name, req := range map[string]*factoryv1.BulkUpdateTasksRequest{
		"no filter":       {Change: kill},
		"empty filter":    {Filter: &factoryv1.TaskFilter{}, Change: kill},
		"zero age only":   {Filter: &factoryv1.TaskFilter{MinAge: durationpb.New(0)}, Change: kill},
		"priority upside": {Filter: &factoryv1.TaskFilter{MinPriority: new(int32(5)), MaxPriority: new(int32(1))}, Change: kill},
		"no change":       {Filter: &factoryv1.TaskFilter{Role: "x"}},
	} {
		_, err := b.client.BulkUpdateTasks(ctx, req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	_, err := b.client.ListTasks(ctx, &factoryv1.ListTasksRequest{Role: "x", Filter: &factoryv1.TaskFilter{Kind: "y"}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "filter") {
		t.Errorf("ListTasks with filter and role: %v", err)
	}
	_, err = b.client.PauseQueue(ctx, &factoryv1.PauseQueueRequest{Filter: &factoryv1.TaskFilter{States: []factoryv1.TaskState{factoryv1.TaskState_TASK_STATE_READY}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("selective pause by state alone: %v", err)
	}
	_, err = b.client.ResumeQueue(ctx, &factoryv1.ResumeQueueRequest{PauseId: "no-such-pause"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("resume of an unknown pause: %v", err)
	}
}

// One call changes at most queue.MaxBulkTasks tasks: more matching is
// FAILED_PRECONDITION saying how many, and nothing changes.
func TestBulkUpdateTasksIsBounded(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	for i := 0; i <= queue.MaxBulkTasks; i += 1000 {
		var reqs []*factoryv1.CreateTaskRequest
		for j := i; j < min(i+1000, queue.MaxBulkTasks+1); j++ {
			reqs = append(reqs, &factoryv1.CreateTaskRequest{TaskId: fmt.Sprintf("t%05d", j), Title: "t", Role: "many"})
		}
		if _, err := b.client.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: reqs}); err != nil {
			t.Fatal(err)
		}
	}
	req := &factoryv1.BulkUpdateTasksRequest{Filter: &factoryv1.TaskFilter{Role: "many"},
		Change: &factoryv1.BulkUpdateTasksRequest_To{To: factoryv1.TaskState_TASK_STATE_FAILED}}
	_, err := b.client.BulkUpdateTasks(ctx, req)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "matches 10001 tasks") || !strings.Contains(err.Error(), "narrow the filter") {
		t.Fatalf("bulk kill of 10001 tasks: %v", err)
	}
	got, err := b.client.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: "t00000"})
	if err != nil || got.GetTask().GetState() != factoryv1.TaskState_TASK_STATE_READY {
		t.Fatalf("t00000 after a refused call: %v, %v", got, err)
	}
	// A narrower filter goes through.
	req.DryRun = true
	if _, err := b.client.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: []*factoryv1.CreateTaskRequest{{TaskId: "low", Title: "t", Role: "many", Priority: 1}}}); err != nil {
		t.Fatal(err)
	}
	req.Filter.MinPriority = new(int32(1))
	res, err := b.client.BulkUpdateTasks(ctx, req)
	if err != nil || res.GetMatched() != 1 || res.GetChanged() != 1 || res.GetTasks()[0].GetId() != "low" {
		t.Fatalf("dry run of role=many,priority>=1: %v, %v", res, err)
	}
}
