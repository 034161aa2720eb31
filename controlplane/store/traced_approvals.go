package store

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

func (t *traced) ApprovalCreate(ctx context.Context, p *ApprovalCreateParams) (_ *Approval, err error) {
	ctx, span := t.start(ctx, "ApprovalCreate")
	defer func() { end(span, err) }()
	return t.s.ApprovalCreate(ctx, p)
}

func (t *traced) ApprovalGet(ctx context.Context, id string) (_ *Approval, err error) {
	ctx, span := t.start(ctx, "ApprovalGet")
	defer func() { end(span, err) }()
	return t.s.ApprovalGet(ctx, id)
}

func (t *traced) ApprovalList(ctx context.Context, p *ApprovalListParams) (_ *ApprovalListResult, err error) {
	ctx, span := t.start(ctx, "ApprovalList")
	defer func() { end(span, err) }()
	return t.s.ApprovalList(ctx, p)
}

func (t *traced) ApprovalDecide(ctx context.Context, p *ApprovalDecideParams) (_ *ApprovalDecideResult, err error) {
	ctx, span := t.start(ctx, "ApprovalDecide")
	defer func() { end(span, err) }()
	return t.s.ApprovalDecide(ctx, p)
}

func (t *traced) ApprovalExpire(ctx context.Context, p *ApprovalExpireParams) (out []*ApprovalDecideResult, err error) {
	ctx, span := t.start(ctx, "ApprovalExpire")
	defer func() {
		span.SetAttributes(attribute.Int("factory.approvals", len(out)))
		end(span, err)
	}()
	return t.s.ApprovalExpire(ctx, p)
}

func (t *traced) ApprovalTakeReminders(ctx context.Context, p *ApprovalRemindParams) (_ []*Approval, err error) {
	ctx, span := t.start(ctx, "ApprovalTakeReminders")
	defer func() { end(span, err) }()
	return t.s.ApprovalTakeReminders(ctx, p)
}

func (t *traced) ApprovalNextDue(ctx context.Context) (_ time.Time, _ bool, err error) {
	ctx, span := t.start(ctx, "ApprovalNextDue")
	defer func() { end(span, err) }()
	return t.s.ApprovalNextDue(ctx)
}
