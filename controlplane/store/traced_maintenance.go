package store

import (
	"context"
	"errors"
)

func (t *traced) IntegrityCheck(ctx context.Context) (_ *IntegrityReport, err error) {
	ctx, span := t.start(ctx, "IntegrityCheck")
	defer func() { end(span, err) }()
	return t.s.IntegrityCheck(ctx)
}

func (t *traced) SnapshotTo(ctx context.Context, path string) (err error) {
	ctx, span := t.start(ctx, "SnapshotTo")
	defer func() {
		// A driver without file snapshots answers, it does not fail.
		if errors.Is(err, ErrSnapshotUnsupported) {
			span.End()
			return
		}
		end(span, err)
	}()
	return t.s.SnapshotTo(ctx, path)
}

func (t *traced) MaintenanceGet(ctx context.Context) (_ *MaintenanceState, err error) {
	ctx, span := t.start(ctx, "MaintenanceGet")
	defer func() { end(span, err) }()
	return t.s.MaintenanceGet(ctx)
}

func (t *traced) MaintenanceSet(ctx context.Context, m *MaintenanceState) (err error) {
	ctx, span := t.start(ctx, "MaintenanceSet")
	defer func() { end(span, err) }()
	return t.s.MaintenanceSet(ctx, m)
}
