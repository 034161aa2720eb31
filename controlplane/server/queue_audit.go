package server

import (
	"context"
	"fmt"

	"github.com/factory/factory/controlplane/access"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// auditedQueue is the QueueService as registered: the queue adapter, plus
// the audit notes of its mutating calls. Notes are taken only on calls the
// policy audits (an operator's, or one made on another party's behalf);
// on an agent's own claims and completions, the hot path, access.Auditing
// is false and this layer costs a context lookup.
type auditedQueue struct {
	*queueServer
	// limit, when set, is the per-caller rate limit, applied to each
	// request on a Work stream as the interceptor applies it to a call.
	limit func(context.Context) error
	// audit writes the audit entries of one audited request on a Work
	// stream (the authorizer's, which does it for calls).
	audit func(ctx context.Context, c access.Caller, method string, rec *access.Record)
}

// maxNotedIDs caps the ids a batch call's audit entry lists; the count is
// always there.
const maxNotedIDs = 100

// taskAudit is what the audit log keeps of a task: where it is and who
// holds it, not its payload.
func taskAudit(t *factoryv1.Task) map[string]any {
	if t == nil {
		return nil
	}
	m := map[string]any{"state": stateName(t.GetState()), "priority": t.GetPriority(), "attempt": t.GetAttempt()}
	if l := t.GetLease(); l != nil {
		m["lease_holder"], m["fencing_token"] = l.GetHolder(), l.GetToken()
	}
	if t.GetAssignee() != "" {
		m["assignee"] = t.GetAssignee()
	}
	return m
}

func stateName(s factoryv1.TaskState) string {
	const prefix = len("TASK_STATE_")
	if n := s.String(); len(n) > prefix {
		return n[prefix:]
	}
	return s.String()
}

// before reads a task's state ahead of an audited change. It is read
// outside the change's transaction, so a change racing this one can fall
// between the two; the after state is exact.
func (s *auditedQueue) before(ctx context.Context, id string) map[string]any {
	if !access.Auditing(ctx) {
		return nil
	}
	t, err := s.q.Get(ctx, id)
	if err != nil {
		return nil
	}
	return taskAudit(taskToProto(t))
}

// noteTasks notes a call that changed several tasks as one entry: one
// task by its id, more by their count.
func noteTasks(ctx context.Context, tasks []*factoryv1.Task) {
	if !access.Auditing(ctx) || len(tasks) == 0 {
		return
	}
	if len(tasks) == 1 {
		access.Note(ctx, tasks[0].GetId(), nil, taskAudit(tasks[0]))
		return
	}
	ids := make([]string, 0, min(len(tasks), maxNotedIDs))
	for _, t := range tasks[:min(len(tasks), maxNotedIDs)] {
		ids = append(ids, t.GetId())
	}
	access.Note(ctx, fmt.Sprintf("%d tasks", len(tasks)), nil, map[string]any{"count": len(tasks), "ids": ids})
}

func (s *auditedQueue) CreateTask(ctx context.Context, r *factoryv1.CreateTaskRequest) (*factoryv1.CreateTaskResponse, error) {
	resp, err := s.queueServer.CreateTask(ctx, r)
	if err == nil {
		noteTasks(ctx, []*factoryv1.Task{resp.GetTask()})
	}
	return resp, err
}

func (s *auditedQueue) CreateTasks(ctx context.Context, r *factoryv1.CreateTasksRequest) (*factoryv1.CreateTasksResponse, error) {
	resp, err := s.queueServer.CreateTasks(ctx, r)
	if err == nil {
		noteTasks(ctx, resp.GetTasks())
	}
	return resp, err
}

func (s *auditedQueue) ClaimTask(ctx context.Context, r *factoryv1.ClaimTaskRequest) (*factoryv1.ClaimTaskResponse, error) {
	resp, err := s.queueServer.ClaimTask(ctx, r)
	if err == nil {
		noteTasks(ctx, resp.GetTasks())
	}
	return resp, err
}

func (s *auditedQueue) RenewLease(ctx context.Context, r *factoryv1.RenewLeaseRequest) (*factoryv1.RenewLeaseResponse, error) {
	before := s.before(ctx, r.GetTaskId())
	resp, err := s.queueServer.RenewLease(ctx, r)
	if err == nil {
		access.Note(ctx, r.GetTaskId(), before, taskAudit(resp.GetTask()))
	}
	return resp, err
}

func (s *auditedQueue) CompleteTask(ctx context.Context, r *factoryv1.CompleteTaskRequest) (*factoryv1.CompleteTaskResponse, error) {
	before := s.before(ctx, r.GetTaskId())
	resp, err := s.queueServer.CompleteTask(ctx, r)
	if err == nil {
		access.Note(ctx, r.GetTaskId(), before, taskAudit(resp.GetTask()))
	}
	return resp, err
}

func (s *auditedQueue) CompleteTasks(ctx context.Context, r *factoryv1.CompleteTasksRequest) (*factoryv1.CompleteTasksResponse, error) {
	resp, err := s.queueServer.CompleteTasks(ctx, r)
	if err == nil {
		var done []*factoryv1.Task
		for _, res := range resp.GetResults() {
			if res.GetTask() != nil && res.GetErrorCode() == "" {
				done = append(done, res.GetTask())
			}
		}
		noteTasks(ctx, done)
	}
	return resp, err
}

func (s *auditedQueue) FailTask(ctx context.Context, r *factoryv1.FailTaskRequest) (*factoryv1.FailTaskResponse, error) {
	before := s.before(ctx, r.GetTaskId())
	resp, err := s.queueServer.FailTask(ctx, r)
	if err == nil {
		access.Note(ctx, r.GetTaskId(), before, taskAudit(resp.GetTask()))
	}
	return resp, err
}

func (s *auditedQueue) MoveTask(ctx context.Context, r *factoryv1.MoveTaskRequest) (*factoryv1.MoveTaskResponse, error) {
	before := s.before(ctx, r.GetTaskId())
	resp, err := s.queueServer.MoveTask(ctx, r)
	if err == nil {
		after := taskAudit(resp.GetTask())
		if after != nil {
			after["reason"] = r.GetReason()
		}
		access.Note(ctx, r.GetTaskId(), before, after)
	}
	return resp, err
}

func (s *auditedQueue) SetPriority(ctx context.Context, r *factoryv1.SetPriorityRequest) (*factoryv1.SetPriorityResponse, error) {
	before := s.before(ctx, r.GetTaskId())
	resp, err := s.queueServer.SetPriority(ctx, r)
	if err == nil {
		access.Note(ctx, r.GetTaskId(), before, taskAudit(resp.GetTask()))
	}
	return resp, err
}

// queueAudit is the queue's switch as the audit log records it.
func (s *auditedQueue) queueAudit(ctx context.Context) map[string]any {
	if !access.Auditing(ctx) {
		return nil
	}
	st, _, err := s.q.Stats(ctx)
	if err != nil {
		return nil
	}
	m := map[string]any{"paused": st.Paused}
	if st.PauseReason != "" {
		m["reason"] = st.PauseReason
	}
	return m
}

func (s *auditedQueue) PauseQueue(ctx context.Context, r *factoryv1.PauseQueueRequest) (*factoryv1.PauseQueueResponse, error) {
	before := s.queueAudit(ctx)
	resp, err := s.queueServer.PauseQueue(ctx, r)
	if err == nil && access.Auditing(ctx) {
		after := s.queueAudit(ctx)
		if after != nil {
			after["tasks_paused"] = resp.GetPaused()
			if id := resp.GetPauseId(); id != "" {
				after["pause_id"], after["filter"] = id, filterText(r.GetFilter())
			}
		}
		access.Note(ctx, "queue", before, after)
	}
	return resp, err
}

func (s *auditedQueue) ResumeQueue(ctx context.Context, r *factoryv1.ResumeQueueRequest) (*factoryv1.ResumeQueueResponse, error) {
	before := s.queueAudit(ctx)
	resp, err := s.queueServer.ResumeQueue(ctx, r)
	if err == nil && access.Auditing(ctx) {
		after := s.queueAudit(ctx)
		if after != nil {
			after["tasks_resumed"] = resp.GetResumed()
			if ended := resp.GetEndedPauses(); len(ended) > 0 {
				after["ended_pauses"] = ended
			}
		}
		access.Note(ctx, "queue", before, after)
	}
	return resp, err
}

func (s *auditedQueue) RequeueStuck(ctx context.Context, r *factoryv1.RequeueStuckRequest) (*factoryv1.RequeueStuckResponse, error) {
	resp, err := s.queueServer.RequeueStuck(ctx, r)
	if err == nil && access.Auditing(ctx) {
		ids := make([]string, 0, min(len(resp.GetTasks()), maxNotedIDs))
		for _, t := range resp.GetTasks()[:min(len(resp.GetTasks()), maxNotedIDs)] {
			ids = append(ids, t.GetId())
		}
		access.Note(ctx, "queue", nil, map[string]any{
			"older_than": durationOf(r.GetOlderThan()).String(), "dry_run": r.GetDryRun(), "requeued": len(resp.GetTasks()), "ids": ids,
		})
	}
	return resp, err
}
