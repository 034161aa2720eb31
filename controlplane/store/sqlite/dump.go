package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"

	"github.com/factory/factory/controlplane/store"
)

var (
	qDumpQueue  = `SELECT paused, pause_reason, paused_at FROM queue_settings WHERE id = 1`
	qDumpTasks  = q(`SELECT {COLS} FROM tasks ORDER BY seq`)
	qDumpTokens = `SELECT ` + tokenCols + ` FROM tokens ORDER BY seq`
	qDumpAudit  = `SELECT ` + auditCols + ` FROM audit_log ORDER BY id`
	// Fleet events go in the order the store took them (seq), which a
	// load keeps: unlike ids, seq orders alike in both drivers.
	qDumpFleetEvents = `SELECT id, host, kind, time, attributes FROM fleet_events ORDER BY seq`

	qDumpContents = `SELECT
		EXISTS (SELECT 1 FROM tasks),
		EXISTS (SELECT 1 FROM tokens WHERE id NOT IN (SELECT value FROM json_each(?))),
		EXISTS (SELECT 1 FROM audit_log),
		paused
	FROM queue_settings WHERE id = 1`
	qDumpTasksIn  = `SELECT id FROM tasks WHERE id IN (SELECT value FROM json_each(?))`
	qDumpTokensIn = `SELECT id FROM tokens WHERE id IN (SELECT value FROM json_each(?1)) OR hash IN (SELECT value FROM json_each(?2)) ORDER BY seq`
	qDumpSetQueue = `UPDATE queue_settings SET paused = ?, pause_reason = ?, paused_at = ? WHERE id = 1`
	qDumpAddToken = `INSERT INTO tokens (id, hash, role, subject, description, created_by, created_at, expires_at, revoked_at, last_used_at, roles, session_of)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	qDumpAddAudit = `INSERT INTO audit_log (id, time, who, role, token_id, rpc, target, before_json, after_json, trace_id, outcome, detail, count, last_seen)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

	// qDumpAddTasks writes every column but seq, which the insert order
	// assigns: a VALUES list is inserted row by row, in order.
	qDumpAddTasks = batchSQL(`INSERT INTO tasks (id, title, kind, payload_json, role, assignee, priority, state, attempt,
		max_attempts, depends_on, approval_tier, labels, last_error, progress, note, lease_holder, fencing_token,
		lease_expires_at, claimed_at, renewed_at, run_after, created_at, updated_at, state_changed_at, paused_by_queue,
		approval_id, approval_pending, tier, result_json)
		VALUES `, dumpTaskCols, "")
)

// dumpTaskCols is the width of a qDumpAddTasks row.
const dumpTaskCols = 30

// DumpRead implements store.Store. One read transaction is one WAL
// snapshot, so the dump is consistent while writers go on.
func (s *Store) DumpRead(ctx context.Context, fn func(*store.DumpRecord) error) error {
	var fnErr error
	call := func(r *store.DumpRecord) error {
		fnErr = fn(r)
		return fnErr
	}
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		var (
			qs       store.QueueSettings
			pausedAt int64
		)
		if err := tx.QueryRowContext(ctx, qDumpQueue).Scan(&qs.Paused, &qs.Reason, &pausedAt); err != nil {
			return err
		}
		qs.PausedAt = fromNanos(pausedAt)
		if err := call(&store.DumpRecord{Queue: &qs}); err != nil {
			return err
		}
		if err := eachRow(ctx, tx, qDumpTasks, func(rs *sql.Rows) error {
			r, err := scanRow(rs)
			if err != nil {
				return err
			}
			return call(&store.DumpRecord{Task: r.t})
		}); err != nil {
			return err
		}
		if err := eachRow(ctx, tx, qDumpTokens, func(rs *sql.Rows) error {
			_, t, err := scanToken(rs)
			if err != nil {
				return err
			}
			return call(&store.DumpRecord{Token: t})
		}); err != nil {
			return err
		}
		if err := eachRow(ctx, tx, qDumpAudit, func(rs *sql.Rows) error {
			e, err := scanAudit(rs)
			if err != nil {
				return err
			}
			return call(&store.DumpRecord{Audit: e})
		}); err != nil {
			return err
		}
		if err := eachRow(ctx, tx, qDumpFleetEvents, func(rs *sql.Rows) error {
			var (
				e     store.FleetEvent
				at    int64
				attrs string
			)
			if err := rs.Scan(&e.ID, &e.Host, &e.Kind, &at, &attrs); err != nil {
				return err
			}
			e.Time = fromNanos(at)
			if err := json.Unmarshal([]byte(attrs), &e.Attributes); err != nil {
				return err
			}
			if len(e.Attributes) == 0 {
				e.Attributes = nil
			}
			return call(&store.DumpRecord{FleetEvent: &e})
		}); err != nil {
			return err
		}
		return dumpReadRows(ctx, tx, call)
	})
	if fnErr != nil {
		// The caller's own error, unwrapped: it is not the database's.
		return fnErr
	}
	return dbErr("DumpRead", err)
}

// eachRow runs query in tx and calls fn on each row, as the rows arrive.
func eachRow(ctx context.Context, tx *sql.Tx, query string, fn func(rs *sql.Rows) error) error {
	rs, err := tx.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rs.Close()
	for rs.Next() {
		if err := fn(rs); err != nil {
			return err
		}
	}
	return rs.Err()
}

// DumpLoad implements store.Store. The load is one call on the writer, so
// no other write interleaves with it and it lands whole or not at all.
func (s *Store) DumpLoad(ctx context.Context, p *store.DumpLoadParams) (*store.DumpCounts, error) {
	var counts *store.DumpCounts
	err := s.writeTx(ctx, "DumpLoad", func(w *wtx) error {
		var err error
		counts, err = store.LoadDump(p, &dumpTarget{w: w})
		return err
	})
	if err != nil {
		return nil, err
	}
	return counts, nil
}

// dumpTarget is store.DumpTarget on the writer's transaction.
type dumpTarget struct{ w *wtx }

func (d *dumpTarget) Inspect(keep []string) (store.DumpContents, error) {
	var c store.DumpContents
	if keep == nil {
		keep = []string{}
	}
	st, err := d.w.stmt(qDumpContents)
	if err != nil {
		return c, dbErr(d.w.op, err)
	}
	if err := st.QueryRowContext(d.w.ctx, jsonText(keep)).Scan(&c.Tasks, &c.Tokens, &c.Audit, &c.Paused); err != nil {
		return c, dbErr(d.w.op, err)
	}
	c.Tables, err = d.dumpTablesHolding()
	return c, err
}

func (d *dumpTarget) TasksExisting(ids []string) ([]string, error) {
	return d.ids(qDumpTasksIn, jsonText(ids))
}

func (d *dumpTarget) TokensExisting(ids, hashes []string) ([]string, error) {
	return d.ids(qDumpTokensIn, jsonText(ids), jsonText(hashes))
}

// ids runs a statement that yields one text column.
func (d *dumpTarget) ids(query string, args ...any) ([]string, error) {
	rs, err := d.w.query(query, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var id string
		if err := rs.Scan(&id); err != nil {
			return nil, dbErr(d.w.op, err)
		}
		out = append(out, id)
	}
	return out, dbErr(d.w.op, rs.Err())
}

func (d *dumpTarget) SetQueue(qs *store.QueueSettings) error {
	_, err := d.w.exec(qDumpSetQueue, boolInt(qs.Paused), qs.Reason, toNanos(qs.PausedAt))
	return err
}

func (d *dumpTarget) InsertTasks(tasks []*store.Task) error {
	args := make([]any, 0, len(tasks)*dumpTaskCols)
	var deps []any
	for _, t := range tasks {
		dependsOn, labels := "[]", "{}"
		if len(t.DependsOn) > 0 {
			dependsOn = jsonText(t.DependsOn)
		}
		if len(t.Labels) > 0 {
			labels = jsonText(t.Labels)
		}
		args = append(args,
			t.ID, t.Title, t.Kind, t.PayloadJSON, t.Role, t.Assignee, t.Priority, int32(t.State), t.Attempt,
			t.MaxAttempts, dependsOn, t.ApprovalTier, labels, t.LastError, t.Progress, t.Note, t.LeaseHolder,
			t.FencingToken, toNanos(t.LeaseExpiresAt), toNanos(t.ClaimedAt), toNanos(t.RenewedAt), toNanos(t.RunAfter),
			toNanos(t.CreatedAt), toNanos(t.UpdatedAt), toNanos(t.StateChangedAt), boolInt(t.PausedByQueue),
			t.ApprovalID, boolInt(t.ApprovalPending), t.Tier, t.ResultJSON,
		)
		for pos, dep := range t.DependsOn {
			deps = append(deps, t.ID, pos, dep)
		}
	}
	if err := d.w.execBatch(qDumpAddTasks, dumpTaskCols, args); err != nil {
		return err
	}
	return d.w.execBatch(qInsertDeps, 3, deps)
}

func (d *dumpTarget) InsertTokens(tokens []*store.Token) error {
	for _, t := range tokens {
		if _, err := d.w.exec(qDumpAddToken, t.ID, t.Hash, string(t.Role), t.Subject, t.Description, t.CreatedBy,
			toNanos(t.CreatedAt), toNanos(t.ExpiresAt), toNanos(t.RevokedAt), toNanos(t.LastUsedAt), store.JoinRoles(t.Roles), t.SessionOf); err != nil {
			return err
		}
	}
	return nil
}

func (d *dumpTarget) InsertAudit(entries []*store.AuditEntry, keepIDs bool) error {
	for _, e := range entries {
		args := auditArgs(e)
		query := qAuditInsert
		if keepIDs {
			// INTEGER PRIMARY KEY: later appends take max(id)+1.
			query, args = qDumpAddAudit, append([]any{e.ID}, args...)
		}
		if _, err := d.w.exec(query, args...); err != nil {
			return err
		}
	}
	return nil
}

func (d *dumpTarget) InsertFleetEvents(events []*store.FleetEvent) (int, error) {
	added := 0
	for _, e := range events {
		attrs, err := json.Marshal(nonNilAttrs(e.Attributes))
		if err != nil {
			return 0, store.InvalidField("records", "fleet event %s: attributes: %v", e.ID, err)
		}
		// qFleetEventInsert is FleetEventsAppend's: a stored id is skipped.
		res, err := d.w.exec(qFleetEventInsert, e.ID, e.Host, e.Kind, toNanos(norm(e.Time)), string(attrs))
		if err != nil {
			return 0, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, dbErr(d.w.op, err)
		}
		added += int(n)
	}
	return added, nil
}
