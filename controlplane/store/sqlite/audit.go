package sqlite

import (
	"context"
	"fmt"

	"github.com/factory/factory/controlplane/store"
)

const (
	// A bump never moves last_seen back: flushes from two replicas may
	// arrive out of order.
	qAuditBump  = `UPDATE audit_log SET count = count + ?, last_seen = max(last_seen, ?) WHERE id = ?`
	qAuditPrune = `DELETE FROM audit_log WHERE last_seen < ?`
)

// auditArgs are qAuditInsert's arguments for e (qDumpAddAudit's after the id).
func auditArgs(e *store.AuditEntry) []any {
	n, last := store.AuditCounts(e)
	return []any{toNanos(norm(e.Time)), e.Who, string(e.Role), e.TokenID, e.RPC, e.Target,
		e.BeforeJSON, e.AfterJSON, e.TraceID, e.Outcome, e.Detail, n, toNanos(norm(last))}
}

// scanAudit reads one row of auditCols.
func scanAudit(sc scanner) (*store.AuditEntry, error) {
	var (
		e        store.AuditEntry
		at, last int64
		role     string
	)
	if err := sc.Scan(&e.ID, &at, &e.Who, &role, &e.TokenID, &e.RPC, &e.Target, &e.BeforeJSON, &e.AfterJSON,
		&e.TraceID, &e.Outcome, &e.Detail, &e.Count, &last); err != nil {
		return nil, err
	}
	e.Time, e.LastSeen, e.Role = fromNanos(at), fromNanos(last), store.Role(role)
	return &e, nil
}

// AuditBump implements store.Store.
func (s *Store) AuditBump(ctx context.Context, p *store.AuditBumpParams) error {
	if err := store.CheckAuditBump(p); err != nil {
		return err
	}
	return s.writeTx(ctx, "AuditBump", func(w *wtx) error {
		res, err := w.exec(qAuditBump, p.Add, toNanos(norm(p.LastSeen)), p.ID)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return dbErr(w.op, err)
		}
		if n == 0 {
			return fmt.Errorf("audit entry %d: %w", p.ID, store.ErrNotFound)
		}
		return nil
	})
}

// AuditPrune implements store.Store.
func (s *Store) AuditPrune(ctx context.Context, p *store.AuditPruneParams) (int64, error) {
	if p == nil || p.Before.IsZero() {
		return 0, nil
	}
	var deleted int64
	err := s.writeTx(ctx, "AuditPrune", func(w *wtx) error {
		res, err := w.exec(qAuditPrune, toNanos(p.Before))
		if err != nil {
			return err
		}
		deleted, err = res.RowsAffected()
		return dbErr(w.op, err)
	})
	return deleted, err
}
