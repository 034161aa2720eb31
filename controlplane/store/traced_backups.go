package store

import "context"

func (t *traced) BackupRecord(ctx context.Context, p *BackupRecordParams) (err error) {
	ctx, span := t.start(ctx, "BackupRecord")
	defer func() { end(span, err) }()
	return t.s.BackupRecord(ctx, p)
}

func (t *traced) BackupList(ctx context.Context, p *BackupListParams) (_ []*BackupRun, err error) {
	ctx, span := t.start(ctx, "BackupList")
	defer func() { end(span, err) }()
	return t.s.BackupList(ctx, p)
}

func (t *traced) BackupMarkRemoved(ctx context.Context, p *BackupMarkRemovedParams) (err error) {
	ctx, span := t.start(ctx, "BackupMarkRemoved")
	defer func() { end(span, err) }()
	return t.s.BackupMarkRemoved(ctx, p)
}

func (t *traced) BackupSummary(ctx context.Context) (_ *BackupSummary, err error) {
	ctx, span := t.start(ctx, "BackupSummary")
	defer func() { end(span, err) }()
	return t.s.BackupSummary(ctx)
}

func (t *traced) Vacuum(ctx context.Context) (_ *VacuumReport, err error) {
	ctx, span := t.start(ctx, "Vacuum")
	defer func() { end(span, err) }()
	return t.s.Vacuum(ctx)
}
