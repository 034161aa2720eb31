package store

import "context"

func (t *traced) TaskBulk(ctx context.Context, p *TaskBulkParams) (_ *TaskBulkResult, err error) {
	ctx, span := t.start(ctx, "TaskBulk")
	defer func() { end(span, err) }()
	return t.s.TaskBulk(ctx, p)
}

func (t *traced) QueuePauseTasks(ctx context.Context, p *QueuePauseTasksParams) (_ []TaskChange, err error) {
	ctx, span := t.start(ctx, "QueuePauseTasks")
	defer func() { end(span, err) }()
	return t.s.QueuePauseTasks(ctx, p)
}

func (t *traced) QueueResumeTasks(ctx context.Context, p *QueueResumeTasksParams) (_ *QueueResumeTasksResult, err error) {
	ctx, span := t.start(ctx, "QueueResumeTasks")
	defer func() { end(span, err) }()
	return t.s.QueueResumeTasks(ctx, p)
}
