package server

import (
	"context"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Who reads a task's result (Task.result_json): an operator, in full
// reads (GetTask, ListTasks with TASK_VIEW_FULL); the agent completing a
// task, in CompleteTask's answer, which holds what it sent. An agent
// reads other tasks' results only as the dependency results of a task it
// holds: in its claims and in GetTask while it holds the task. Watch
// events and summaries carry no result.

// readsResults reports whether the caller may read any task's result.
func readsResults(ctx context.Context) bool {
	c, ok := access.FromContext(ctx)
	return ok && c.Role == store.RoleOperator
}

// withResult puts t's result on pt.
func withResult(pt *factoryv1.Task, t *store.Task) *factoryv1.Task {
	if pt != nil && t != nil {
		pt.ResultJson = t.ResultJSON
	}
	return pt
}

// withResultsFor puts the tasks' results on their protos when the caller
// may read them.
func withResultsFor(ctx context.Context, pts []*factoryv1.Task, ts []*store.Task) []*factoryv1.Task {
	if !readsResults(ctx) {
		return pts
	}
	for i := range pts {
		withResult(pts[i], ts[i])
	}
	return pts
}

// holds reports whether the caller is the agent holding t's lease.
func holds(ctx context.Context, t *store.Task) bool {
	c, ok := access.FromContext(ctx)
	return ok && c.Role == store.RoleAgent && t.State == store.StateInProgress && t.LeaseHolder == c.Subject
}

// withDependencyResults reads the dependency results of tasks (one store
// read, at most maxBytes of results) and puts them on their protos, which
// are in the same order.
func withDependencyResults(ctx context.Context, q *queue.Service, pts []*factoryv1.Task, ts []*store.Task, maxBytes int64) error {
	results, err := q.DependencyResults(ctx, ts, maxBytes)
	if err != nil || len(results) == 0 {
		return err
	}
	for i, t := range ts {
		for _, r := range results[t.ID] {
			pts[i].DependencyResults = append(pts[i].DependencyResults, dependencyResultToProto(r))
		}
	}
	return nil
}

func dependencyResultToProto(r queue.DependencyResult) *factoryv1.DependencyResult {
	return &factoryv1.DependencyResult{
		TaskId: r.ID, Title: r.Title, Kind: r.Kind, Role: r.Role, Stage: r.Labels["stage"],
		State: factoryv1.TaskState(r.State), ResultJson: r.ResultJSON, Omitted: r.Omitted, ResultBytes: r.ResultBytes,
		Withheld: r.Withheld,
	}
}
