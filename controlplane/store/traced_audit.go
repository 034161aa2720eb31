package store

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
)

func (t *traced) AuditBump(ctx context.Context, p *AuditBumpParams) (err error) {
	ctx, span := t.start(ctx, "AuditBump")
	defer func() { end(span, err) }()
	return t.s.AuditBump(ctx, p)
}

func (t *traced) AuditPrune(ctx context.Context, p *AuditPruneParams) (n int64, err error) {
	ctx, span := t.start(ctx, "AuditPrune")
	defer func() {
		span.SetAttributes(attribute.Int64("factory.entries", n))
		end(span, err)
	}()
	return t.s.AuditPrune(ctx, p)
}
