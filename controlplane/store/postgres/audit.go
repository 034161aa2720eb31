package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

const (
	// A bump never moves last_seen back: flushes from two replicas may
	// arrive out of order.
	qAuditBump = `-- name: AuditBump
UPDATE audit_log SET count = count + $2, last_seen = greatest(last_seen, $3) WHERE id = $1`
	qAuditPrune = `-- name: AuditPrune
DELETE FROM audit_log WHERE last_seen < $1`
)

// auditColumnArrays holds entries column by column, for the unnest inserts.
type auditColumnArrays struct {
	times, lastSeen                                                      []pgtype.Timestamptz
	who, role, token, rpc, target, before, after, trace, outcome, detail []string
	count                                                                []int64
}

// auditColumns splits entries into columns, making their text storable.
func auditColumns(entries []*store.AuditEntry) *auditColumnArrays {
	n := len(entries)
	text := func() []string { return make([]string, n) }
	c := &auditColumnArrays{
		times: make([]pgtype.Timestamptz, n), lastSeen: make([]pgtype.Timestamptz, n), count: make([]int64, n),
		who: text(), role: text(), token: text(), rpc: text(), target: text(), before: text(), after: text(),
		trace: text(), outcome: text(), detail: text(),
	}
	for i, e := range entries {
		n, last := store.AuditCounts(e)
		c.times[i] = pgtype.Timestamptz{Time: norm(e.Time), Valid: true}
		c.lastSeen[i], c.count[i] = pgtype.Timestamptz{Time: norm(last), Valid: true}, n
		c.who[i], c.role[i], c.token[i], c.rpc[i], c.target[i] = storable(e.Who), storable(string(e.Role)), storable(e.TokenID), storable(e.RPC), storable(e.Target)
		c.before[i], c.after[i], c.trace[i], c.outcome[i], c.detail[i] = storable(e.BeforeJSON), storable(e.AfterJSON), storable(e.TraceID), storable(e.Outcome), storable(e.Detail)
	}
	return c
}

// args are qAuditInsert's arguments (qDumpAddAudit's after the ids).
func (c *auditColumnArrays) args() []any {
	return []any{c.times, c.who, c.role, c.token, c.rpc, c.target, c.before, c.after, c.trace, c.outcome, c.detail, c.count, c.lastSeen}
}

// scanAudit reads one row of auditCols.
func scanAudit(row pgx.Row) (*store.AuditEntry, error) {
	var (
		e    store.AuditEntry
		role string
	)
	if err := row.Scan(&e.ID, &e.Time, &e.Who, &role, &e.TokenID, &e.RPC, &e.Target, &e.BeforeJSON, &e.AfterJSON,
		&e.TraceID, &e.Outcome, &e.Detail, &e.Count, &e.LastSeen); err != nil {
		return nil, err
	}
	e.Time, e.LastSeen, e.Role = e.Time.UTC(), e.LastSeen.UTC(), store.Role(role)
	return &e, nil
}

// AuditBump implements store.Store.
func (s *Store) AuditBump(ctx context.Context, p *store.AuditBumpParams) error {
	if err := store.CheckAuditBump(p); err != nil {
		return err
	}
	var found bool
	err := s.inTx(ctx, "AuditBump", func(tx *txn) error {
		b := tx.batch()
		b.Queue(qAuditBump, p.ID, p.Add, norm(p.LastSeen)).Exec(func(ct pgconn.CommandTag) error {
			found = ct.RowsAffected() > 0
			return nil
		})
		return tx.send(b)
	})
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("audit entry %d: %w", p.ID, store.ErrNotFound)
	}
	return nil
}

// AuditPrune implements store.Store.
func (s *Store) AuditPrune(ctx context.Context, p *store.AuditPruneParams) (int64, error) {
	if p == nil || p.Before.IsZero() {
		return 0, nil
	}
	var deleted int64
	err := s.inTx(ctx, "AuditPrune", func(tx *txn) error {
		deleted = 0
		b := tx.batch()
		b.Queue(qAuditPrune, p.Before).Exec(func(ct pgconn.CommandTag) error {
			deleted = ct.RowsAffected()
			return nil
		})
		return tx.send(b)
	})
	return deleted, err
}
