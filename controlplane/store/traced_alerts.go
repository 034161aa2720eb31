package store

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
)

func (t *traced) AlertSave(ctx context.Context, p *AlertSaveParams) (err error) {
	ctx, span := t.start(ctx, "AlertSave")
	defer func() { end(span, err) }()
	if p != nil {
		span.SetAttributes(attribute.Int("factory.alerts", len(p.Alerts)))
	}
	return t.s.AlertSave(ctx, p)
}

func (t *traced) AlertList(ctx context.Context, p *AlertListParams) (_ []*Alert, err error) {
	ctx, span := t.start(ctx, "AlertList")
	defer func() { end(span, err) }()
	return t.s.AlertList(ctx, p)
}

func (t *traced) AlertAck(ctx context.Context, p *AlertAckParams) (_ *Alert, err error) {
	ctx, span := t.start(ctx, "AlertAck")
	defer func() { end(span, err) }()
	return t.s.AlertAck(ctx, p)
}

func (t *traced) SilenceCreate(ctx context.Context, p *SilenceCreateParams) (_ *Silence, err error) {
	ctx, span := t.start(ctx, "SilenceCreate")
	defer func() { end(span, err) }()
	return t.s.SilenceCreate(ctx, p)
}

func (t *traced) SilenceList(ctx context.Context, p *SilenceListParams) (_ []*Silence, err error) {
	ctx, span := t.start(ctx, "SilenceList")
	defer func() { end(span, err) }()
	return t.s.SilenceList(ctx, p)
}

func (t *traced) SilenceExpire(ctx context.Context, p *SilenceExpireParams) (_ *Silence, err error) {
	ctx, span := t.start(ctx, "SilenceExpire")
	defer func() { end(span, err) }()
	return t.s.SilenceExpire(ctx, p)
}
