package server

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// queueServer adapts QueueService calls to the queue domain; it holds no
// logic of its own beyond translating messages. Requests reach it only
// after the validation interceptor has checked their field rules.
type queueServer struct {
	factoryv1.UnimplementedQueueServiceServer
	q        *queue.Service
	log      *slog.Logger
	stopping <-chan struct{}
	// fleet, when set, hears an agent's own claims, renewals and
	// completions: signs of life, and the task it works on.
	fleet *fleet.Registry
}

var _ factoryv1.QueueServiceServer = (*queueServer)(nil)

func (s *queueServer) err(ctx context.Context, err error) error { return toStatus(ctx, s.log, err) }

func (s *queueServer) CreateTask(ctx context.Context, r *factoryv1.CreateTaskRequest) (*factoryv1.CreateTaskResponse, error) {
	tasks, err := s.q.Create(ctx, []*store.TaskCreate{createFromProto(r)})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.CreateTaskResponse{Task: taskToProto(tasks[0])}, nil
}

func (s *queueServer) CreateTasks(ctx context.Context, r *factoryv1.CreateTasksRequest) (*factoryv1.CreateTasksResponse, error) {
	in := make([]*store.TaskCreate, len(r.GetTasks()))
	for i, t := range r.GetTasks() {
		in[i] = createFromProto(t)
	}
	tasks, err := s.q.Create(ctx, in)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.CreateTasksResponse{Tasks: tasksToProto(tasks)}, nil
}

func (s *queueServer) GetTask(ctx context.Context, r *factoryv1.GetTaskRequest) (*factoryv1.GetTaskResponse, error) {
	t, err := s.q.Get(ctx, r.GetTaskId())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	pt := taskToProto(t)
	switch {
	case readsResults(ctx):
		withResult(pt, t)
	case holds(ctx, t):
		if err := withDependencyResults(ctx, s.q, []*factoryv1.Task{pt}, []*store.Task{t}, queue.HolderDependencyBytes); err != nil {
			return nil, s.err(ctx, err)
		}
	}
	return &factoryv1.GetTaskResponse{Task: pt}, nil
}

func (s *queueServer) ListTasks(ctx context.Context, r *factoryv1.ListTasksRequest) (*factoryv1.ListTasksResponse, error) {
	filter, err := s.listFilter(r)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	res, err := s.q.List(ctx, queue.ListParams{
		States: statesFromProto(r.GetStates()), Role: r.GetRole(), Assignee: r.GetAssignee(),
		Labels: r.GetLabels(), Kind: r.GetKind(), MinAttempt: int(r.GetMinAttempt()),
		PageSize: int(r.GetPageSize()), PageToken: r.GetPageToken(),
		Summary:     r.GetView() != factoryv1.TaskView_TASK_VIEW_FULL,
		NewestFirst: r.GetNewestFirst(), IDPrefix: r.GetIdPrefix(), Filter: filter,
	})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.ListTasksResponse{Tasks: withResultsFor(ctx, tasksToProto(res.Tasks), res.Tasks), NextPageToken: res.NextCursor}, nil
}

func (s *queueServer) ClaimTask(ctx context.Context, r *factoryv1.ClaimTaskRequest) (*factoryv1.ClaimTaskResponse, error) {
	tasks, err := s.q.Claim(ctx, queue.ClaimParams{
		Agent: r.GetAgent(), Roles: r.GetRoles(), Wait: durationOf(r.GetWait()),
		MaxTasks: int(r.GetMaxTasks()), LeaseDuration: durationOf(r.GetLeaseDuration()),
	})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	// Committed: if the response cannot be sent, claimDelivery hands
	// the tasks back.
	// The holder reads what its tasks' dependencies handed on. Should
	// the read fail, the claim is handed back and the call fails.
	out := tasksToProto(tasks)
	if err := withDependencyResults(ctx, s.q, out, tasks, queue.ClaimDependencyBytes); err != nil {
		releaseUndelivered(ctx, s.q, s.log, tasks, err)
		return nil, s.err(ctx, err)
	}
	noteClaimed(ctx, tasks)
	if s.fleet != nil {
		// An empty claim is a sign of life too: an agent polling an idle
		// queue is alive, not OFFLINE.
		current := ""
		if len(tasks) > 0 {
			current = tasks[0].ID
		}
		s.fleet.AgentSeen(r.GetAgent(), current)
	}
	return &factoryv1.ClaimTaskResponse{Tasks: out}, nil
}

func (s *queueServer) RenewLease(ctx context.Context, r *factoryv1.RenewLeaseRequest) (*factoryv1.RenewLeaseResponse, error) {
	ref := store.LeaseRef{TaskID: r.GetTaskId(), Agent: r.GetAgent(), FencingToken: r.GetFencingToken()}
	t, err := s.q.Renew(ctx, ref, durationOf(r.GetLeaseDuration()), r.GetProgress())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	if s.fleet != nil {
		s.fleet.AgentSeen(r.GetAgent(), t.ID)
	}
	return &factoryv1.RenewLeaseResponse{Task: taskToProto(t)}, nil
}

func completeItem(r *factoryv1.CompleteTaskRequest) store.TaskCompleteItem {
	return store.TaskCompleteItem{
		Lease:  store.LeaseRef{TaskID: r.GetTaskId(), Agent: r.GetAgent(), FencingToken: r.GetFencingToken()},
		Review: r.GetReview(),
		Note:   r.GetNote(),

		ResultJSON: r.GetResultJson(),
	}
}

func (s *queueServer) CompleteTask(ctx context.Context, r *factoryv1.CompleteTaskRequest) (*factoryv1.CompleteTaskResponse, error) {
	res, err := s.q.Complete(ctx, []store.TaskCompleteItem{completeItem(r)})
	if err != nil {
		return nil, s.err(ctx, err)
	}
	if res[0].Err != nil {
		return nil, s.err(ctx, res[0].Err)
	}
	if s.fleet != nil {
		s.fleet.AgentIdle(r.GetAgent())
	}
	// The completer reads back the result it completed the task with.
	return &factoryv1.CompleteTaskResponse{Task: withResult(taskToProto(res[0].Task), res[0].Task)}, nil
}

func (s *queueServer) CompleteTasks(ctx context.Context, r *factoryv1.CompleteTasksRequest) (*factoryv1.CompleteTasksResponse, error) {
	items := make([]store.TaskCompleteItem, len(r.GetItems()))
	for i, it := range r.GetItems() {
		items[i] = completeItem(it)
	}
	res, err := s.q.Complete(ctx, items)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &factoryv1.CompleteTasksResponse{Results: make([]*factoryv1.CompleteTaskResult, len(res))}
	for i, r := range res {
		item := &factoryv1.CompleteTaskResult{TaskId: items[i].Lease.TaskID, Task: taskSummaryToProto(r.Task)}
		if r.Err != nil {
			st := status.Convert(s.err(ctx, r.Err))
			item.ErrorCode, item.ErrorMessage = codeName(st.Code()), st.Message()
		}
		out.Results[i] = item
	}
	return out, nil
}

// codeName renders a code as the API's constant name, e.g. FAILED_PRECONDITION.
func codeName(c codes.Code) string {
	names := map[codes.Code]string{
		codes.InvalidArgument: "INVALID_ARGUMENT", codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
		codes.FailedPrecondition: "FAILED_PRECONDITION", codes.PermissionDenied: "PERMISSION_DENIED",
		codes.ResourceExhausted: "RESOURCE_EXHAUSTED", codes.Unavailable: "UNAVAILABLE", codes.Internal: "INTERNAL",
	}
	if n, ok := names[c]; ok {
		return n
	}
	return c.String()
}

func (s *queueServer) FailTask(ctx context.Context, r *factoryv1.FailTaskRequest) (*factoryv1.FailTaskResponse, error) {
	ref := store.LeaseRef{TaskID: r.GetTaskId(), Agent: r.GetAgent(), FencingToken: r.GetFencingToken()}
	t, err := s.q.Fail(ctx, ref, r.GetError(), r.GetPermanent())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.FailTaskResponse{Task: taskToProto(t)}, nil
}

func (s *queueServer) MoveTask(ctx context.Context, r *factoryv1.MoveTaskRequest) (*factoryv1.MoveTaskResponse, error) {
	t, err := s.q.Move(ctx, r.GetTaskId(), store.TaskState(r.GetTo()), r.GetReason())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.MoveTaskResponse{Task: taskToProto(t)}, nil
}

func (s *queueServer) SetPriority(ctx context.Context, r *factoryv1.SetPriorityRequest) (*factoryv1.SetPriorityResponse, error) {
	t, err := s.q.SetPriority(ctx, r.GetTaskId(), r.GetPriority())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.SetPriorityResponse{Task: taskToProto(t)}, nil
}

func (s *queueServer) PauseQueue(ctx context.Context, r *factoryv1.PauseQueueRequest) (*factoryv1.PauseQueueResponse, error) {
	if r.GetFilter() != nil {
		return s.pauseTasks(ctx, r)
	}
	n, err := s.q.Pause(ctx, r.GetReason())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.PauseQueueResponse{Paused: int32(n)}, nil
}

func (s *queueServer) ResumeQueue(ctx context.Context, r *factoryv1.ResumeQueueRequest) (*factoryv1.ResumeQueueResponse, error) {
	if r.GetPauseId() != "" {
		resp := &factoryv1.ResumeQueueResponse{}
		if err := s.resumePauses(ctx, r.GetPauseId(), resp); err != nil {
			return nil, err
		}
		return resp, nil
	}
	n, err := s.q.ResumeByOperator(ctx)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	// The queue's own pause and every selective pause.
	resp := &factoryv1.ResumeQueueResponse{Resumed: int32(n)}
	if err := s.resumePauses(ctx, "", resp); err != nil {
		return nil, err
	}
	return resp, nil
}

func (s *queueServer) RequeueStuck(ctx context.Context, r *factoryv1.RequeueStuckRequest) (*factoryv1.RequeueStuckResponse, error) {
	tasks, err := s.q.RequeueStuck(ctx, durationOf(r.GetOlderThan()), r.GetDryRun())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	return &factoryv1.RequeueStuckResponse{Tasks: taskSummariesToProto(tasks)}, nil
}

func (s *queueServer) GetQueueStats(ctx context.Context, _ *factoryv1.GetQueueStatsRequest) (*factoryv1.GetQueueStatsResponse, error) {
	st, now, err := s.q.Stats(ctx)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &factoryv1.GetQueueStatsResponse{Retrying: st.Retrying, Paused: st.Paused, PauseReason: st.PauseReason, Pauses: pausesToProto(st.Pauses)}
	for _, state := range store.AllStates {
		out.Counts = append(out.Counts, &factoryv1.StateCount{State: factoryv1.TaskState(state), Count: st.Counts[state]})
	}
	if !st.OldestReadySince.IsZero() {
		out.OldestReadyAge = durationpb.New(max(now.Sub(st.OldestReadySince), 0))
	}
	if !st.OldestClaimedAt.IsZero() {
		out.OldestInProgressAge = durationpb.New(max(now.Sub(st.OldestClaimedAt), 0))
	}
	return out, nil
}

func (s *queueServer) WatchTasks(r *factoryv1.WatchTasksRequest, stream grpc.ServerStreamingServer[factoryv1.WatchTasksResponse]) error {
	ctx := stream.Context()
	filter := queue.Filter{States: statesFromProto(r.GetStates()), Role: r.GetRole(), TaskIDs: r.GetTaskIds()}
	// The cursor of the last event handed to gRPC, where a watcher that
	// falls behind resumes to miss nothing; nil until the watch is synced.
	var sent atomic.Pointer[string]
	behind := func() error {
		if c := sent.Load(); c != nil {
			return status.Errorf(codes.ResourceExhausted, "%v: it did not read fast enough and lagged more events than a watcher may; "+
				"watch again with resume_cursor set to the cursor of the last event you received (at least %q) to get every event after it, "+
				"or without it for a fresh snapshot", queue.ErrWatchBehind, *c)
		}
		return status.Errorf(codes.ResourceExhausted, "%v during its snapshot: it did not read fast enough; watch again for a fresh snapshot", queue.ErrWatchBehind)
	}
	var sub *queue.Subscription
	resume := r.GetResumeCursor()
	if resume != "" {
		var err error
		if sub, err = s.q.ResumeWatch(filter, resume); err != nil {
			return status.Error(codes.OutOfRange, err.Error())
		}
		sent.Store(&resume)
	} else {
		// Subscribe before the snapshot: a change racing the snapshot then
		// shows up twice (harmless, events carry the whole task) rather
		// than never.
		sub = s.q.Subscribe(filter)
	}
	defer sub.Close()
	// A watcher blocked sending to a client that does not read cannot see
	// that it fell behind; the publisher tells it, and the stream ends.
	sub.OnBehind(func(error) { closeStream(ctx, behind()) })
	if resume == "" {
		if !r.GetChangesOnly() {
			sub.Snapshotting()
			if err := s.sendSnapshot(ctx, stream, filter); err != nil {
				return err
			}
			sub.Synced()
		}
		start := sub.Cursor()
		if err := stream.Send(&factoryv1.WatchTasksResponse{Type: factoryv1.TaskEventType_TASK_EVENT_TYPE_SYNCED, Time: timestamppb.Now(), Cursor: start}); err != nil {
			return err
		}
		sent.Store(&start)
	}
	for {
		events, err := sub.Next(ctx, s.stopping)
		switch {
		case errors.Is(err, queue.ErrWatchBehind):
			return behind()
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return status.Error(codes.Unavailable, "control plane is shutting down; watch again with resume_cursor "+*sent.Load())
		}
		for _, e := range events {
			if err := stream.SendMsg(encodedEvent(e)); err != nil {
				return err
			}
			sent.Store(&e.Cursor)
		}
	}
}

// sendSnapshot sends the tasks matching f as they are now, a page at a
// time, at the pace snapshotPace allows the caller.
func (s *queueServer) sendSnapshot(ctx context.Context, stream grpc.ServerStreamingServer[factoryv1.WatchTasksResponse], f queue.Filter) error {
	token := ""
	for {
		page, err := snapshotPage(ctx, func() (*store.TaskListResult, error) {
			return s.q.List(ctx, queue.ListParams{States: f.States, Role: f.Role, IDs: f.TaskIDs, PageSize: snapshotPageSize, PageToken: token})
		})
		if err != nil {
			return s.err(ctx, err)
		}
		for _, t := range page.Tasks {
			if !f.Match(t) {
				continue
			}
			if err := stream.Send(&factoryv1.WatchTasksResponse{Type: factoryv1.TaskEventType_TASK_EVENT_TYPE_SNAPSHOT, Task: taskToProto(t), Time: ts(t.UpdatedAt)}); err != nil {
				return err
			}
		}
		if token = page.NextCursor; token == "" {
			return nil
		}
	}
}

func eventType(t queue.EventType) factoryv1.TaskEventType {
	switch t {
	case queue.EventCreated:
		return factoryv1.TaskEventType_TASK_EVENT_TYPE_CREATED
	case queue.EventStateChanged:
		return factoryv1.TaskEventType_TASK_EVENT_TYPE_STATE_CHANGED
	default:
		return factoryv1.TaskEventType_TASK_EVENT_TYPE_UPDATED
	}
}
