package store

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
)

func (t *traced) TokenSetRoles(ctx context.Context, p *TokenSetRolesParams) (_, _ *Token, err error) {
	ctx, span := t.start(ctx, "TokenSetRoles")
	defer func() { end(span, err) }()
	return t.s.TokenSetRoles(ctx, p)
}

func (t *traced) TokenRotate(ctx context.Context, p *TokenRotateParams) (_ *TokenRotateResult, err error) {
	ctx, span := t.start(ctx, "TokenRotate")
	defer func() { end(span, err) }()
	return t.s.TokenRotate(ctx, p)
}

func (t *traced) PlacementSet(ctx context.Context, p *PlacementSetParams) (_, _ *Placement, err error) {
	ctx, span := t.start(ctx, "PlacementSet")
	defer func() { end(span, err) }()
	return t.s.PlacementSet(ctx, p)
}

func (t *traced) PlacementDelete(ctx context.Context, p *PlacementDeleteParams) (_ *Placement, err error) {
	ctx, span := t.start(ctx, "PlacementDelete")
	defer func() { end(span, err) }()
	return t.s.PlacementDelete(ctx, p)
}

func (t *traced) PlacementList(ctx context.Context, p *PlacementListParams) (_ *PlacementListResult, err error) {
	ctx, span := t.start(ctx, "PlacementList")
	defer func() { end(span, err) }()
	if p != nil {
		span.SetAttributes(attribute.Int("factory.agents", len(p.Agents)))
	}
	return t.s.PlacementList(ctx, p)
}
