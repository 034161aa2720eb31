package server

import (
	"context"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// maxBulkTasksInResponse caps the tasks a BulkUpdateTasks response lists;
// the counts are always whole.
const maxBulkTasksInResponse = 1000

// filterFromProto is the store's filter for f at the queue's clock.
func (s *queueServer) filterFromProto(f *factoryv1.TaskFilter) store.TaskFilter {
	spec := queue.FilterSpec{
		TaskFilter: store.TaskFilter{
			States: statesFromProto(f.GetStates()), Role: f.GetRole(), Assignee: f.GetAgent(),
			Labels: queue.ParseLabels(f.GetLabels()), Kind: f.GetKind(), Tier: f.GetTier(), MinAttempt: int(f.GetMinAttempt()),
		},
		MinAge: durationOf(f.GetMinAge()), MinStateAge: durationOf(f.GetMinStateAge()),
	}
	if f.MinPriority != nil {
		spec.MinPriority = new(f.GetMinPriority())
	}
	if f.MaxPriority != nil {
		spec.MaxPriority = new(f.GetMaxPriority())
	}
	return s.q.Filter(spec)
}

// filterText is a filter as the audit log and a selective pause keep it.
func filterText(f *factoryv1.TaskFilter) string {
	b, err := protojson.Marshal(f)
	if err != nil {
		return ""
	}
	return string(b)
}

// listFilter is ListTasks' filter: the filter message, or nil when the
// request uses the older fields. Both at once is refused.
func (s *queueServer) listFilter(r *factoryv1.ListTasksRequest) (*store.TaskFilter, error) {
	if r.GetFilter() == nil {
		return nil, nil
	}
	if len(r.GetStates()) > 0 || r.GetRole() != "" || r.GetAssignee() != "" || len(r.GetLabels()) > 0 || r.GetKind() != "" || r.GetMinAttempt() != 0 {
		return nil, store.InvalidField("filter", "set either filter or states, role, assignee, labels, kind and min_attempt, not both")
	}
	f := s.filterFromProto(r.GetFilter())
	return &f, nil
}

func (s *queueServer) BulkUpdateTasks(ctx context.Context, r *factoryv1.BulkUpdateTasksRequest) (*factoryv1.BulkUpdateTasksResponse, error) {
	p := queue.BulkParams{Filter: s.filterFromProto(r.GetFilter()), Reason: r.GetReason(), DryRun: r.GetDryRun()}
	switch c := r.GetChange().(type) {
	case *factoryv1.BulkUpdateTasksRequest_To:
		p.To = store.TaskState(c.To)
	case *factoryv1.BulkUpdateTasksRequest_Priority:
		p.Priority = new(c.Priority)
	}
	res, err := s.q.Bulk(ctx, p)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &factoryv1.BulkUpdateTasksResponse{
		Matched: int32(res.Matched), Changed: int32(res.Changed), Promoted: int32(len(res.Changes) - res.Changed), DryRun: r.GetDryRun(),
	}
	for _, st := range store.AllStates {
		if n := res.Skipped[st]; n > 0 {
			out.Skipped = append(out.Skipped, &factoryv1.StateCount{State: factoryv1.TaskState(st), Count: int64(n)})
		}
	}
	tasks := make([]*store.Task, 0, min(res.Changed, maxBulkTasksInResponse))
	for _, c := range res.Changes[:min(res.Changed, maxBulkTasksInResponse)] {
		tasks = append(tasks, c.Task)
	}
	out.Tasks = taskSummariesToProto(tasks)
	return out, nil
}

// pauseTasks is PauseQueue with a filter: a selective pause.
func (s *queueServer) pauseTasks(ctx context.Context, r *factoryv1.PauseQueueRequest) (*factoryv1.PauseQueueResponse, error) {
	id, n, err := s.q.PauseTasks(ctx, r.GetReason(), s.filterFromProto(r.GetFilter()), filterText(r.GetFilter()))
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.PauseQueueResponse{Paused: int32(n), PauseId: id}, nil
}

// resumePauses ends the selective pause id (every one when id is empty)
// and adds what it did to resp.
func (s *queueServer) resumePauses(ctx context.Context, id string, resp *factoryv1.ResumeQueueResponse) error {
	res, err := s.q.ResumePauses(ctx, id)
	if err != nil {
		return s.err(ctx, err)
	}
	resp.Resumed += int32(len(res.Changes))
	resp.EndedPauses = append(resp.EndedPauses, res.Ended...)
	return nil
}

// pausesToProto is the active selective pauses for GetQueueStats.
func pausesToProto(in []store.QueuePauseInfo) []*factoryv1.QueuePause {
	out := make([]*factoryv1.QueuePause, len(in))
	for i, p := range in {
		f := &factoryv1.TaskFilter{}
		_ = protojson.Unmarshal([]byte(p.FilterText), f)
		out[i] = &factoryv1.QueuePause{Id: p.ID, Reason: p.Reason, Filter: f, CreatedAt: timestamppb.New(p.CreatedAt), Held: p.Held}
	}
	return out
}

func (s *auditedQueue) BulkUpdateTasks(ctx context.Context, r *factoryv1.BulkUpdateTasksRequest) (*factoryv1.BulkUpdateTasksResponse, error) {
	resp, err := s.queueServer.BulkUpdateTasks(ctx, r)
	if err == nil && access.Auditing(ctx) {
		ids := make([]string, 0, min(len(resp.GetTasks()), maxNotedIDs))
		for _, t := range resp.GetTasks()[:min(len(resp.GetTasks()), maxNotedIDs)] {
			ids = append(ids, t.GetId())
		}
		after := map[string]any{
			"filter": filterText(r.GetFilter()), "matched": resp.GetMatched(), "count": resp.GetChanged(),
			"dry_run": r.GetDryRun(), "ids": ids,
		}
		if c, ok := r.GetChange().(*factoryv1.BulkUpdateTasksRequest_To); ok {
			after["to"] = stateName(c.To)
		} else {
			after["priority"] = r.GetPriority()
		}
		if r.GetReason() != "" {
			after["reason"] = r.GetReason()
		}
		if len(resp.GetSkipped()) > 0 {
			skipped := map[string]int64{}
			for _, sc := range resp.GetSkipped() {
				skipped[stateName(sc.GetState())] = sc.GetCount()
			}
			after["skipped"] = skipped
		}
		if resp.GetPromoted() > 0 {
			after["promoted"] = resp.GetPromoted()
		}
		access.Note(ctx, "tasks", nil, after)
	}
	return resp, err
}
