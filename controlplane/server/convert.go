package server

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func timeOf(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

func durationOf(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

func taskToProto(t *store.Task) *factoryv1.Task {
	if t == nil {
		return nil
	}
	pt := &factoryv1.Task{
		Id:             t.ID,
		Title:          t.Title,
		Kind:           t.Kind,
		PayloadJson:    t.PayloadJSON,
		Role:           t.Role,
		Assignee:       t.Assignee,
		Priority:       t.Priority,
		State:          factoryv1.TaskState(t.State),
		Attempt:        t.Attempt,
		MaxAttempts:    t.MaxAttempts,
		RunAfter:       ts(t.RunAfter),
		DependsOn:      t.DependsOn,
		ApprovalTier:   t.ApprovalTier,
		Tier:           t.Tier,
		Labels:         t.Labels,
		LastError:      t.LastError,
		Progress:       t.Progress,
		Note:           t.Note,
		CreatedAt:      ts(t.CreatedAt),
		UpdatedAt:      ts(t.UpdatedAt),
		StateChangedAt: ts(t.StateChangedAt),
		// A task is gated when it names an approval request.
		RequiresApproval: t.ApprovalID != "",
		ApprovalId:       t.ApprovalID,
		ApprovalPending:  t.ApprovalPending,
		PayloadBytes:     t.PayloadSize(),
	}
	if t.State == store.StateInProgress {
		pt.Lease = &factoryv1.Lease{
			Holder:    t.LeaseHolder,
			Token:     t.FencingToken,
			ExpiresAt: ts(t.LeaseExpiresAt),
			ClaimedAt: ts(t.ClaimedAt),
			RenewedAt: ts(t.RenewedAt),
		}
	}
	return pt
}

func tasksToProto(ts []*store.Task) []*factoryv1.Task {
	out := make([]*factoryv1.Task, len(ts))
	for i, t := range ts {
		out[i] = taskToProto(t)
	}
	return out
}

// taskSummaryToProto is the task as TASK_VIEW_BASIC shows it: without
// payload, last error, progress and note, which can be large, so that a
// response listing many tasks stays small.
func taskSummaryToProto(t *store.Task) *factoryv1.Task {
	pt := taskToProto(t)
	if pt != nil {
		pt.PayloadJson, pt.LastError, pt.Progress, pt.Note = "", "", "", ""
	}
	return pt
}

func taskSummariesToProto(ts []*store.Task) []*factoryv1.Task {
	out := make([]*factoryv1.Task, len(ts))
	for i, t := range ts {
		out[i] = taskSummaryToProto(t)
	}
	return out
}

func createFromProto(r *factoryv1.CreateTaskRequest) *store.TaskCreate {
	return &store.TaskCreate{
		ID:           r.GetTaskId(),
		Title:        r.GetTitle(),
		Kind:         r.GetKind(),
		PayloadJSON:  r.GetPayloadJson(),
		Role:         r.GetRole(),
		Assignee:     r.GetAssignee(),
		Priority:     r.GetPriority(),
		MaxAttempts:  r.GetMaxAttempts(),
		DependsOn:    r.GetDependsOn(),
		ApprovalTier: r.GetApprovalTier(),
		Tier:         r.GetTier(),
		Labels:       r.GetLabels(),
		InitialState: store.TaskState(r.GetInitialState()),
		RunAfter:     timeOf(r.GetRunAfter()),

		RequiresApproval: r.GetRequiresApproval(),
		History:          store.TaskHistory{Attempt: r.GetAttempt(), LastError: r.GetLastError(), Progress: r.GetProgress()},
	}
}

func statesFromProto(in []factoryv1.TaskState) []store.TaskState {
	out := make([]store.TaskState, len(in))
	for i, s := range in {
		out[i] = store.TaskState(s)
	}
	return out
}
