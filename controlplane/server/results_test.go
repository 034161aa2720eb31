package server

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// TestDependencyResultsReachOnlyTheHolder proves who reads a result: the
// holder of a dependent task, in its claim (unary and on the Work stream)
// and in GetTask while it holds the task; an operator in full reads. An
// agent never reads a task's result otherwise: not by GetTask, ListTasks
// or WatchTasks of the task itself, not through a task it does not hold.
func TestDependencyResultsReachOnlyTheHolder(t *testing.T) {
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	scoutSecret, _ := b.mintToken(t, store.RoleAgent, "scout", "researcher")
	atlasSecret, _ := b.mintToken(t, store.RoleAgent, "atlas", "architect")
	rexSecret, _ := b.mintToken(t, store.RoleAgent, "rex", "builder")
	scout, atlas, rex, op := b.clientsAs(t, scoutSecret), b.clientsAs(t, atlasSecret), b.clientsAs(t, rexSecret), b.clientsAs(t, b.operator)

	created, err := op.q.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: []*factoryv1.CreateTaskRequest{
		{TaskId: "research", Title: "research", Role: "researcher", Labels: map[string]string{"stage": "scout"}},
		{TaskId: "secret", Title: "unrelated", Role: "researcher"},
		{TaskId: "plan", Title: "plan", Role: "architect", DependsOn: []string{"research"}},
		{TaskId: "build", Title: "build", Role: "builder", DependsOn: []string{"plan"}},
	}})
	if err != nil || len(created.GetTasks()) != 4 {
		t.Fatal(err)
	}
	claim := func(c clients, agent, role string) *factoryv1.Task {
		t.Helper()
		got, err := c.q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: agent, Roles: []string{role}})
		if err != nil || len(got.GetTasks()) != 1 {
			t.Fatalf("%s claiming %s: %v, %v", agent, role, got, err)
		}
		return got.GetTasks()[0]
	}
	done := func(c clients, agent string, task *factoryv1.Task, result string) {
		t.Helper()
		res, err := c.q.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: task.GetId(), Agent: agent,
			FencingToken: task.GetLease().GetToken(), ResultJson: result})
		if err != nil {
			t.Fatalf("%s completing %s: %v", agent, task.GetId(), err)
		}
		if res.GetTask().GetResultJson() != result {
			t.Fatalf("%s's completion reads back result %q, want %q", agent, res.GetTask().GetResultJson(), result)
		}
	}

	// A result that is not JSON is refused, naming the field.
	research := claim(scout, "scout", "researcher")
	_, err = scout.q.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: research.GetId(), Agent: "scout",
		FencingToken: research.GetLease().GetToken(), ResultJson: "{not json"})
	if st := wantCode(t, err, codes.InvalidArgument); fieldOf(st) != "result_json" {
		t.Fatalf("bad result: field %q, want result_json (%v)", fieldOf(st), st)
	}
	done(scout, "scout", research, `{"competitors":["bit.ly"]}`)
	secret := claim(scout, "scout", "researcher")
	done(scout, "scout", secret, `{"password":"hunter2"}`)

	// Atlas's claim carries research's result, and only that.
	plan := claim(atlas, "atlas", "architect")
	deps := plan.GetDependencyResults()
	if len(deps) != 1 || deps[0].GetTaskId() != "research" || deps[0].GetResultJson() != `{"competitors":["bit.ly"]}` ||
		deps[0].GetStage() != "scout" || deps[0].GetState() != factoryv1.TaskState_TASK_STATE_DONE {
		t.Fatalf("atlas's claim: dependency results %v", deps)
	}
	// GetTask by the holder carries them too; by anyone else, not.
	if got, err := atlas.q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: "plan"}); err != nil || len(got.GetTask().GetDependencyResults()) != 1 {
		t.Fatalf("holder's GetTask: %v, %v", got, err)
	}
	if got, err := rex.q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: "plan"}); err != nil || len(got.GetTask().GetDependencyResults()) != 0 {
		t.Fatalf("another agent's GetTask of a task it does not hold: %v, %v", got, err)
	}
	// No agent reads a task's own result: not the holder of a dependent,
	// not the agent that completed it, not through a list or a watch.
	for name, c := range map[string]clients{"atlas": atlas, "scout": scout, "rex": rex} {
		for _, id := range []string{"research", "secret"} {
			got, err := c.q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: id})
			if err != nil || got.GetTask().GetResultJson() != "" {
				t.Fatalf("%s's GetTask(%s): result %q, %v", name, id, got.GetTask().GetResultJson(), err)
			}
		}
		list, err := c.q.ListTasks(ctx, &factoryv1.ListTasksRequest{View: factoryv1.TaskView_TASK_VIEW_FULL})
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range list.GetTasks() {
			if task.GetResultJson() != "" || len(task.GetDependencyResults()) != 0 {
				t.Fatalf("%s's ListTasks shows %s's result %q / %v", name, task.GetId(), task.GetResultJson(), task.GetDependencyResults())
			}
		}
		watch, err := c.q.WatchTasks(ctx, &factoryv1.WatchTasksRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for {
			ev, err := watch.Recv()
			if err == io.EOF || ev.GetType() == factoryv1.TaskEventType_TASK_EVENT_TYPE_SYNCED {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.GetTask().GetResultJson() != "" {
				t.Fatalf("%s's watch shows %s's result", name, ev.GetTask().GetId())
			}
		}
	}
	// A task made after its dependency was done does not get the
	// dependency's result: scout cannot read a finished task's result by
	// creating a task that depends on it.
	if _, err := scout.q.CreateTask(ctx, &factoryv1.CreateTaskRequest{TaskId: "snoop", Title: "snoop", Role: "researcher", DependsOn: []string{"secret"}}); err != nil {
		t.Fatal(err)
	}
	snoop := claim(scout, "scout", "researcher")
	if d := snoop.GetDependencyResults(); snoop.GetId() != "snoop" || len(d) != 1 || !d[0].GetWithheld() || d[0].GetResultJson() != "" {
		t.Fatalf("a task made after its dependency was done: %v", snoop)
	}
	if got, err := scout.q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: "snoop"}); err != nil || strings.Contains(got.String(), "hunter2") {
		t.Fatalf("holder's GetTask of snoop: %v, %v", got, err)
	}

	// An operator reads results in full reads.
	if got, err := op.q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: "secret"}); err != nil || got.GetTask().GetResultJson() != `{"password":"hunter2"}` {
		t.Fatalf("operator's GetTask: %v, %v", got, err)
	}
	done(atlas, "atlas", plan, `{"plan":["api","db"]}`)

	// Rex reads plan's result through the Work stream's claim, not
	// research's: only the direct dependencies.
	stream, err := rex.q.Work(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&factoryv1.WorkRequest{Ref: 1, Call: &factoryv1.WorkRequest_Claim{Claim: &factoryv1.ClaimTaskRequest{Agent: "rex", Roles: []string{"builder"}}}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	tasks := resp.GetClaim().GetTasks()
	if len(tasks) != 1 || len(tasks[0].GetDependencyResults()) != 1 || tasks[0].GetDependencyResults()[0].GetResultJson() != `{"plan":["api","db"]}` {
		t.Fatalf("rex's Work claim: %v", resp)
	}
	if strings.Contains(resp.String(), "competitors") {
		t.Fatal("rex's claim carries a result of a task its task does not depend on")
	}
}
