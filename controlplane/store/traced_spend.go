package store

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

func (t *traced) SpendRecord(ctx context.Context, p *SpendRecordParams) (_ *SpendRecordResult, err error) {
	ctx, span := t.start(ctx, "SpendRecord")
	defer func() { end(span, err) }()
	if p != nil {
		span.SetAttributes(attribute.Int("factory.spend_events", len(p.Events)))
	}
	return t.s.SpendRecord(ctx, p)
}

func (t *traced) SpendGet(ctx context.Context, agent, id string) (_ *SpendEvent, err error) {
	ctx, span := t.start(ctx, "SpendGet")
	defer func() { end(span, err) }()
	return t.s.SpendGet(ctx, agent, id)
}

func (t *traced) SpendVoid(ctx context.Context, p *SpendVoidParams) (_ *SpendEvent, err error) {
	ctx, span := t.start(ctx, "SpendVoid")
	defer func() { end(span, err) }()
	return t.s.SpendVoid(ctx, p)
}

func (t *traced) SpendRollupQuery(ctx context.Context, p *SpendRollupQueryParams) (_ *SpendRollupResult, err error) {
	ctx, span := t.start(ctx, "SpendRollupQuery")
	defer func() { end(span, err) }()
	return t.s.SpendRollupQuery(ctx, p)
}

func (t *traced) SpendRollupAdd(ctx context.Context, rows []SpendRollup) (err error) {
	ctx, span := t.start(ctx, "SpendRollupAdd")
	defer func() { end(span, err) }()
	return t.s.SpendRollupAdd(ctx, rows)
}

func (t *traced) SpendStanding(ctx context.Context, p *SpendStandingParams) (_ *SpendStanding, err error) {
	ctx, span := t.start(ctx, "SpendStanding")
	defer func() { end(span, err) }()
	return t.s.SpendStanding(ctx, p)
}

func (t *traced) SpendReserve(ctx context.Context, p *SpendReserveParams) (_ *SpendReservation, err error) {
	ctx, span := t.start(ctx, "SpendReserve")
	defer func() { endQuota(span, err) }()
	return t.s.SpendReserve(ctx, p)
}

func (t *traced) SpendRelease(ctx context.Context, p *SpendReleaseParams) (_ *SpendReservation, err error) {
	ctx, span := t.start(ctx, "SpendRelease")
	defer func() { end(span, err) }()
	return t.s.SpendRelease(ctx, p)
}

func (t *traced) SpendReservationGet(ctx context.Context, id string) (_ *SpendReservation, err error) {
	ctx, span := t.start(ctx, "SpendReservationGet")
	defer func() { end(span, err) }()
	return t.s.SpendReservationGet(ctx, id)
}

func (t *traced) BudgetSet(ctx context.Context, b *Budget) (_ *Budget, err error) {
	ctx, span := t.start(ctx, "BudgetSet")
	defer func() { end(span, err) }()
	return t.s.BudgetSet(ctx, b)
}

func (t *traced) BudgetList(ctx context.Context) (_ []*Budget, err error) {
	ctx, span := t.start(ctx, "BudgetList")
	defer func() { end(span, err) }()
	return t.s.BudgetList(ctx)
}

func (t *traced) SpendAlertRaise(ctx context.Context, a *SpendAlert) (_ bool, err error) {
	ctx, span := t.start(ctx, "SpendAlertRaise")
	defer func() { end(span, err) }()
	return t.s.SpendAlertRaise(ctx, a)
}

func (t *traced) SpendAlertList(ctx context.Context, day string) (_ []*SpendAlert, err error) {
	ctx, span := t.start(ctx, "SpendAlertList")
	defer func() { end(span, err) }()
	return t.s.SpendAlertList(ctx, day)
}

func (t *traced) EmergencyStopGet(ctx context.Context) (_ *EmergencyStop, err error) {
	ctx, span := t.start(ctx, "EmergencyStopGet")
	defer func() { end(span, err) }()
	return t.s.EmergencyStopGet(ctx)
}

func (t *traced) EmergencyStopStart(ctx context.Context, p *EmergencyStopStartParams) (_ *EmergencyStop, _ bool, err error) {
	ctx, span := t.start(ctx, "EmergencyStopStart")
	defer func() { end(span, err) }()
	return t.s.EmergencyStopStart(ctx, p)
}

func (t *traced) EmergencyStopNotePaused(ctx context.Context, p *EmergencyStopNotePausedParams) (err error) {
	ctx, span := t.start(ctx, "EmergencyStopNotePaused")
	defer func() { end(span, err) }()
	return t.s.EmergencyStopNotePaused(ctx, p)
}

func (t *traced) EmergencyStopRearm(ctx context.Context, p *EmergencyStopRearmParams) (_ *EmergencyStop, err error) {
	ctx, span := t.start(ctx, "EmergencyStopRearm")
	defer func() { end(span, err) }()
	return t.s.EmergencyStopRearm(ctx, p)
}

// endQuota ends a span whose call a cap may refuse: the refusal is an
// answer, recorded without marking the span failed.
func endQuota(span trace.Span, err error) {
	if errors.Is(err, ErrQuotaExceeded) {
		span.RecordError(err)
		span.End()
		return
	}
	end(span, err)
}
