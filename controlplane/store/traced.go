package store

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// WithTracing wraps s so that every call is a span named "store.<Method>"
// under the caller's span, tagged with the driver's name (db.system).
func WithTracing(s Store, tp trace.TracerProvider, system string) Store {
	return &traced{s: s, tracer: tp.Tracer("github.com/factory/factory/controlplane/store"), system: attribute.String("db.system.name", system)}
}

type traced struct {
	s      Store
	tracer trace.Tracer
	system attribute.KeyValue
}

func (t *traced) start(ctx context.Context, name string) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, "store."+name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(t.system))
}

// end records err on the span. Expected domain outcomes (not found, a stale
// lease, a refused move or load) are answers, not faults, so they don't mark
// the span as an error.
func end(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrStaleLease) && !errors.Is(err, ErrIllegalTransition) &&
			!errors.Is(err, ErrInvalidArgument) && !errors.Is(err, ErrAlreadyExists) && !errors.Is(err, ErrLoadRefused) {
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

func (t *traced) TaskCreate(ctx context.Context, p *TaskCreateParams) (_ []TaskChange, err error) {
	ctx, span := t.start(ctx, "TaskCreate")
	defer func() { end(span, err) }()
	span.SetAttributes(attribute.Int("factory.tasks", len(p.Tasks)))
	return t.s.TaskCreate(ctx, p)
}

func (t *traced) TaskGet(ctx context.Context, id string) (_ *Task, err error) {
	ctx, span := t.start(ctx, "TaskGet")
	defer func() { end(span, err) }()
	return t.s.TaskGet(ctx, id)
}

func (t *traced) TaskList(ctx context.Context, p *TaskListParams) (_ *TaskListResult, err error) {
	ctx, span := t.start(ctx, "TaskList")
	defer func() { end(span, err) }()
	return t.s.TaskList(ctx, p)
}

func (t *traced) TaskClaim(ctx context.Context, p *TaskClaimParams) (_ []TaskChange, err error) {
	ctx, span := t.start(ctx, "TaskClaim")
	defer func() { end(span, err) }()
	return t.s.TaskClaim(ctx, p)
}

func (t *traced) TaskRelease(ctx context.Context, p *TaskReleaseParams) (_ []TaskChange, err error) {
	ctx, span := t.start(ctx, "TaskRelease")
	defer func() { end(span, err) }()
	return t.s.TaskRelease(ctx, p)
}

func (t *traced) TaskNextRunAfter(ctx context.Context, now time.Time) (_ time.Time, _ bool, err error) {
	ctx, span := t.start(ctx, "TaskNextRunAfter")
	defer func() { end(span, err) }()
	return t.s.TaskNextRunAfter(ctx, now)
}

func (t *traced) TaskRenew(ctx context.Context, p *TaskRenewParams) (_ *Task, err error) {
	ctx, span := t.start(ctx, "TaskRenew")
	defer func() { end(span, err) }()
	return t.s.TaskRenew(ctx, p)
}

func (t *traced) TaskComplete(ctx context.Context, p *TaskCompleteParams) (_ *TaskCompleteResult, err error) {
	ctx, span := t.start(ctx, "TaskComplete")
	defer func() { end(span, err) }()
	span.SetAttributes(attribute.Int("factory.tasks", len(p.Items)))
	return t.s.TaskComplete(ctx, p)
}

func (t *traced) TaskFail(ctx context.Context, p *TaskFailParams) (_ []TaskChange, err error) {
	ctx, span := t.start(ctx, "TaskFail")
	defer func() { end(span, err) }()
	return t.s.TaskFail(ctx, p)
}

func (t *traced) TaskMove(ctx context.Context, p *TaskMoveParams) (_ []TaskChange, err error) {
	ctx, span := t.start(ctx, "TaskMove")
	defer func() { end(span, err) }()
	return t.s.TaskMove(ctx, p)
}

func (t *traced) TaskResults(ctx context.Context, p *TaskResultsParams) (_ []TaskResult, err error) {
	ctx, span := t.start(ctx, "TaskResults")
	defer func() { end(span, err) }()
	return t.s.TaskResults(ctx, p)
}

func (t *traced) TaskSetPriority(ctx context.Context, p *TaskSetPriorityParams) (_ *Task, err error) {
	ctx, span := t.start(ctx, "TaskSetPriority")
	defer func() { end(span, err) }()
	return t.s.TaskSetPriority(ctx, p)
}

func (t *traced) TaskRescueExpired(ctx context.Context, p *TaskRescueExpiredParams) (_ []TaskChange, err error) {
	ctx, span := t.start(ctx, "TaskRescueExpired")
	defer func() { end(span, err) }()
	return t.s.TaskRescueExpired(ctx, p)
}

func (t *traced) TaskRequeueStuck(ctx context.Context, p *TaskRequeueStuckParams) (_ []TaskChange, err error) {
	ctx, span := t.start(ctx, "TaskRequeueStuck")
	defer func() { end(span, err) }()
	return t.s.TaskRequeueStuck(ctx, p)
}

func (t *traced) QueuePause(ctx context.Context, p *QueuePauseParams) (_ []TaskChange, err error) {
	ctx, span := t.start(ctx, "QueuePause")
	defer func() { end(span, err) }()
	return t.s.QueuePause(ctx, p)
}

func (t *traced) QueueResume(ctx context.Context, p *QueueResumeParams) (_ []TaskChange, err error) {
	ctx, span := t.start(ctx, "QueueResume")
	defer func() { end(span, err) }()
	return t.s.QueueResume(ctx, p)
}

func (t *traced) QueueStats(ctx context.Context) (_ *QueueStats, err error) {
	ctx, span := t.start(ctx, "QueueStats")
	defer func() { end(span, err) }()
	return t.s.QueueStats(ctx)
}

func (t *traced) Close() error { return t.s.Close() }

func (t *traced) TokenCreate(ctx context.Context, p *TokenCreateParams) (_ *Token, err error) {
	ctx, span := t.start(ctx, "TokenCreate")
	defer func() { end(span, err) }()
	return t.s.TokenCreate(ctx, p)
}

func (t *traced) TokenGetByHash(ctx context.Context, p *TokenGetByHashParams) (_ *Token, err error) {
	ctx, span := t.start(ctx, "TokenGetByHash")
	defer func() { end(span, err) }()
	return t.s.TokenGetByHash(ctx, p)
}

func (t *traced) TokenList(ctx context.Context, p *TokenListParams) (_ *TokenListResult, err error) {
	ctx, span := t.start(ctx, "TokenList")
	defer func() { end(span, err) }()
	return t.s.TokenList(ctx, p)
}

func (t *traced) TokenRevoke(ctx context.Context, p *TokenRevokeParams) (_ *Token, err error) {
	ctx, span := t.start(ctx, "TokenRevoke")
	defer func() { end(span, err) }()
	return t.s.TokenRevoke(ctx, p)
}

func (t *traced) TokenTouch(ctx context.Context, p *TokenTouchParams) (err error) {
	ctx, span := t.start(ctx, "TokenTouch")
	defer func() { end(span, err) }()
	return t.s.TokenTouch(ctx, p)
}

func (t *traced) AuditAppend(ctx context.Context, p *AuditAppendParams) (err error) {
	ctx, span := t.start(ctx, "AuditAppend")
	defer func() { end(span, err) }()
	span.SetAttributes(attribute.Int("factory.entries", len(p.Entries)))
	return t.s.AuditAppend(ctx, p)
}

func (t *traced) AuditList(ctx context.Context, p *AuditListParams) (_ *AuditListResult, err error) {
	ctx, span := t.start(ctx, "AuditList")
	defer func() { end(span, err) }()
	return t.s.AuditList(ctx, p)
}

func (t *traced) DumpRead(ctx context.Context, fn func(*DumpRecord) error) (err error) {
	ctx, span := t.start(ctx, "DumpRead")
	defer func() { end(span, err) }()
	var n DumpCounts
	defer func() {
		span.SetAttributes(attribute.Int64("factory.tasks", n.Tasks), attribute.Int64("factory.tokens", n.Tokens),
			attribute.Int64("factory.entries", n.Audit))
	}()
	return t.s.DumpRead(ctx, func(r *DumpRecord) error {
		n.Add(r.Kind())
		return fn(r)
	})
}

func (t *traced) DumpLoad(ctx context.Context, p *DumpLoadParams) (_ *DumpCounts, err error) {
	ctx, span := t.start(ctx, "DumpLoad")
	defer func() { end(span, err) }()
	span.SetAttributes(attribute.Bool("factory.merge", p != nil && p.Merge))
	n, err := t.s.DumpLoad(ctx, p)
	if n != nil {
		span.SetAttributes(attribute.Int64("factory.tasks", n.Tasks), attribute.Int64("factory.tokens", n.Tokens),
			attribute.Int64("factory.entries", n.Audit))
	}
	return n, err
}

func (t *traced) FleetEventsAppend(ctx context.Context, p *FleetEventsAppendParams) (_ int, err error) {
	ctx, span := t.start(ctx, "FleetEventsAppend")
	defer func() { end(span, err) }()
	if p != nil {
		span.SetAttributes(attribute.Int("factory.events", len(p.Events)))
	}
	return t.s.FleetEventsAppend(ctx, p)
}

func (t *traced) FleetEventsList(ctx context.Context, p *FleetEventsListParams) (_ []*FleetEvent, err error) {
	ctx, span := t.start(ctx, "FleetEventsList")
	defer func() { end(span, err) }()
	return t.s.FleetEventsList(ctx, p)
}

func (t *traced) TelemetryAppend(ctx context.Context, p *TelemetryAppendParams) (err error) {
	ctx, span := t.start(ctx, "TelemetryAppend")
	defer func() { end(span, err) }()
	if p != nil {
		span.SetAttributes(attribute.Int("factory.samples", len(p.Samples)))
	}
	return t.s.TelemetryAppend(ctx, p)
}

func (t *traced) TelemetryList(ctx context.Context, p *TelemetryListParams) (_ []*TelemetrySample, err error) {
	ctx, span := t.start(ctx, "TelemetryList")
	defer func() { end(span, err) }()
	return t.s.TelemetryList(ctx, p)
}

func (t *traced) TelemetryPrune(ctx context.Context, p *TelemetryPruneParams) (n int, err error) {
	ctx, span := t.start(ctx, "TelemetryPrune")
	defer func() {
		span.SetAttributes(attribute.Int("factory.deleted", n))
		end(span, err)
	}()
	return t.s.TelemetryPrune(ctx, p)
}
