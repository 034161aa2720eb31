package postgres

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

var (
	qDumpQueue = `-- name: DumpQueue
SELECT paused, pause_reason, paused_at FROM queue_settings WHERE id = 1`
	qDumpTasks = q(`-- name: DumpTasks
SELECT {COLS} FROM tasks ORDER BY seq`)
	qDumpTokens = `-- name: DumpTokens
SELECT ` + tokenCols + ` FROM tokens ORDER BY seq`
	qDumpAudit = `-- name: DumpAudit
SELECT ` + auditCols + ` FROM audit_log ORDER BY id`
	// Fleet events go in the order the store took them (seq), which a
	// load keeps: unlike ids, whose order follows the collation, seq
	// orders alike in both drivers.
	qDumpFleetEvents = `-- name: DumpFleetEvents
SELECT id, host, kind, time, attributes::text FROM fleet_events ORDER BY seq`

	// qDumpLock keeps every writer out while a load decides and inserts:
	// the store it found empty stays empty until the load commits, and
	// no task created meanwhile can take an id the load is about to use.
	// Readers go on.
	qDumpLock = `-- name: DumpLock
LOCK TABLE tasks, task_deps, tokens, audit_log, queue_settings IN EXCLUSIVE MODE`

	qDumpContents = `-- name: DumpContents
SELECT EXISTS (SELECT 1 FROM tasks), EXISTS (SELECT 1 FROM tokens WHERE NOT (id = ANY($1::text[]))),
	EXISTS (SELECT 1 FROM audit_log), paused
FROM queue_settings WHERE id = 1`
	qDumpTasksIn = `-- name: DumpTasksExisting
SELECT id FROM tasks WHERE id = ANY($1::text[])`
	qDumpTokensIn = `-- name: DumpTokensExisting
SELECT id FROM tokens WHERE id = ANY($1::text[]) OR hash = ANY($2::text[]) ORDER BY seq`
	qDumpSetQueue = `-- name: DumpSetQueue
UPDATE queue_settings SET paused = $1, pause_reason = $2, paused_at = $3 WHERE id = 1`

	// qDumpAddTasks inserts every column but seq, which the identity
	// draws in the arrays' order.
	qDumpAddTasks = `-- name: DumpInsertTasks
INSERT INTO tasks (id, title, kind, payload_json, role, assignee, priority, state, attempt, max_attempts, depends_on,
	approval_tier, labels, last_error, progress, note, lease_holder, fencing_token, lease_expires_at, claimed_at,
	renewed_at, run_after, created_at, updated_at, state_changed_at, paused_by_queue, approval_id, approval_pending, tier,
	result_json)
SELECT u.id, u.title, u.kind, u.payload_json, u.role, u.assignee, u.priority, u.state, u.attempt, u.max_attempts,
	ARRAY(SELECT jsonb_array_elements_text(u.depends_on::jsonb)), u.approval_tier, u.labels::jsonb, u.last_error,
	u.progress, u.note, u.lease_holder, u.fencing_token, u.lease_expires_at, u.claimed_at, u.renewed_at, u.run_after,
	u.created_at, u.updated_at, u.state_changed_at, u.paused_by_queue, u.approval_id, u.approval_pending, u.tier,
	u.result_json
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::smallint[],
	$9::int[], $10::int[], $11::text[], $12::int[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[],
	$18::bigint[], $19::timestamptz[], $20::timestamptz[], $21::timestamptz[], $22::timestamptz[],
	$23::timestamptz[], $24::timestamptz[], $25::timestamptz[], $26::boolean[], $27::text[], $28::boolean[],
	$29::text[], $30::text[])
	WITH ORDINALITY AS u(id, title, kind, payload_json, role, assignee, priority, state, attempt, max_attempts,
		depends_on, approval_tier, labels, last_error, progress, note, lease_holder, fencing_token, lease_expires_at,
		claimed_at, renewed_at, run_after, created_at, updated_at, state_changed_at, paused_by_queue, approval_id,
		approval_pending, tier, result_json, ord)
ORDER BY u.ord`

	qDumpAddTokens = `-- name: DumpInsertTokens
INSERT INTO tokens (id, hash, role, subject, description, created_by, created_at, expires_at, revoked_at, last_used_at, roles,
	session_of)
SELECT u.id, u.hash, u.role, u.subject, u.description, u.created_by, u.created_at, u.expires_at, u.revoked_at, u.last_used_at, u.roles,
	u.session_of
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
	$8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[])
	WITH ORDINALITY AS u(id, hash, role, subject, description, created_by, created_at, expires_at, revoked_at,
		last_used_at, roles, session_of, ord)
ORDER BY u.ord`

	// qDumpAddAudit keeps the dump's ids; qDumpAuditSeq then moves the
	// identity past them, so later appends do not collide.
	qDumpAddAudit = `-- name: DumpInsertAudit
INSERT INTO audit_log (id, time, who, role, token_id, rpc, target, before_json, after_json, trace_id, outcome, detail, count, last_seen)
OVERRIDING SYSTEM VALUE
SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
	$8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bigint[], $14::timestamptz[])`
	qDumpAuditSeq = `-- name: DumpAuditSequence
SELECT setval(pg_get_serial_sequence('audit_log', 'id'), (SELECT max(id) FROM audit_log))`

	// qDumpAddFleetEvents is FleetEventsAppend's insert-or-ignore, with
	// the identity drawn in the arrays' order so the dump's order stays.
	// qDumpLock leaves fleet_events out: sidecars' appends go on during a
	// load, and an id both write is stored once either way.
	qDumpAddFleetEvents = `-- name: DumpInsertFleetEvents
INSERT INTO fleet_events (id, host, kind, time, attributes)
SELECT u.id, u.host, u.kind, u.time, u.attrs::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])
	WITH ORDINALITY AS u(id, host, kind, time, attrs, ord)
ORDER BY u.ord
ON CONFLICT (id) DO NOTHING
RETURNING id`
)

// DumpRead implements store.Store. The reads share one REPEATABLE READ
// transaction, so the dump is one snapshot while writers go on. It is not
// run again after a lost connection: fn has already seen records.
func (s *Store) DumpRead(ctx context.Context, fn func(*store.DumpRecord) error) error {
	if s.life.Err() != nil {
		return dbErr("DumpRead", errStoreClosed)
	}
	var fnErr error
	call := func(r *store.DumpRecord) error {
		fnErr = fn(r)
		return fnErr
	}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var (
			qs       store.QueueSettings
			pausedAt pgtype.Timestamptz
		)
		if err := tx.QueryRow(ctx, qDumpQueue).Scan(&qs.Paused, &qs.Reason, &pausedAt); err != nil {
			return err
		}
		qs.PausedAt = fromTS(pausedAt)
		if err := call(&store.DumpRecord{Queue: &qs}); err != nil {
			return err
		}
		if err := eachRow(ctx, tx, qDumpTasks, func(rs pgx.Rows) error {
			r, err := scanRow(rs)
			if err != nil {
				return err
			}
			return call(&store.DumpRecord{Task: r.t})
		}); err != nil {
			return err
		}
		if err := eachRow(ctx, tx, qDumpTokens, func(rs pgx.Rows) error {
			_, t, err := scanToken(rs)
			if err != nil {
				return err
			}
			return call(&store.DumpRecord{Token: t})
		}); err != nil {
			return err
		}
		if err := eachRow(ctx, tx, qDumpAudit, func(rs pgx.Rows) error {
			e, err := scanAudit(rs)
			if err != nil {
				return err
			}
			return call(&store.DumpRecord{Audit: e})
		}); err != nil {
			return err
		}
		if err := eachRow(ctx, tx, qDumpFleetEvents, func(rs pgx.Rows) error {
			var (
				e     store.FleetEvent
				attrs string
			)
			if err := rs.Scan(&e.ID, &e.Host, &e.Kind, &e.Time, &attrs); err != nil {
				return err
			}
			e.Time = e.Time.UTC()
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

// eachRow runs query in tx and calls fn on each row as it arrives.
func eachRow(ctx context.Context, tx pgx.Tx, query string, fn func(rs pgx.Rows) error) error {
	rs, err := tx.Query(ctx, query)
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

// DumpLoad implements store.Store: one transaction, holding every table
// against writers (see qDumpLock). Other replicas hear a resync when it
// commits, so their waiting claimers look at the loaded tasks.
func (s *Store) DumpLoad(ctx context.Context, p *store.DumpLoadParams) (*store.DumpCounts, error) {
	var counts *store.DumpCounts
	err := s.inTx(ctx, "DumpLoad", func(t *txn) error {
		b := t.batch()
		b.Queue(qDumpLock)
		if err := t.send(b); err != nil {
			return err
		}
		var err error
		if counts, err = store.LoadDump(p, &dumpTarget{t: t}); err != nil {
			return err
		}
		resync := string(append(payloadHead(s.cfg.ReplicaID), `],"s":1}`...))
		return t.commit(func(b *pgx.Batch) { b.Queue(qNotifyOne, s.channel, resync) })
	})
	if err != nil {
		return nil, err
	}
	return counts, nil
}

// qNotifyOne sends one notification.
const qNotifyOne = `-- name: Notify
SELECT pg_notify($1, $2)`

// dumpTarget is store.DumpTarget on one transaction.
type dumpTarget struct{ t *txn }

func (d *dumpTarget) Inspect(keep []string) (store.DumpContents, error) {
	var c store.DumpContents
	if keep == nil {
		keep = []string{}
	}
	b := d.t.batch()
	b.Queue(qDumpContents, keep).QueryRow(func(r pgx.Row) error { return r.Scan(&c.Tasks, &c.Tokens, &c.Audit, &c.Paused) })
	if err := d.t.send(b); err != nil {
		return c, err
	}
	var err error
	c.Tables, err = d.dumpTablesHolding()
	return c, err
}

func (d *dumpTarget) TasksExisting(ids []string) ([]string, error) {
	return d.ids(qDumpTasksIn, validTexts(ids))
}

func (d *dumpTarget) TokensExisting(ids, hashes []string) ([]string, error) {
	return d.ids(qDumpTokensIn, validTexts(ids), validTexts(hashes))
}

// validTexts drops values PostgreSQL text cannot hold: no stored row has
// them, and sending them would fail the statement.
func validTexts(values []string) []string {
	out := make([]string, 0, len(values))
	for _, v := range values {
		if pgText(v) {
			out = append(out, v)
		}
	}
	return out
}

func (d *dumpTarget) ids(query string, args ...any) ([]string, error) {
	var out []string
	b := d.t.batch()
	b.Queue(query, args...).Query(func(rs pgx.Rows) error {
		var id string
		_, err := pgx.ForEachRow(rs, []any{&id}, func() error {
			out = append(out, id)
			return nil
		})
		return err
	})
	return out, d.t.send(b)
}

func (d *dumpTarget) SetQueue(qs *store.QueueSettings) error {
	if err := checkText("pause_reason", qs.Reason); err != nil {
		return recordErr("queue", err)
	}
	b := d.t.batch()
	b.Queue(qDumpSetQueue, qs.Paused, qs.Reason, ts(norm(qs.PausedAt)))
	return d.t.send(b)
}

func (d *dumpTarget) InsertTasks(tasks []*store.Task) error {
	n := len(tasks)
	text := func() []string { return make([]string, n) }
	ints := func() []int32 { return make([]int32, n) }
	times := func() []pgtype.Timestamptz { return make([]pgtype.Timestamptz, n) }
	var (
		ids, titles, kinds, payloads, roles, assignees = text(), text(), text(), text(), text(), text()
		deps, labels, lastErrors, progress, notes      = text(), text(), text(), text(), text()
		holders                                        = text()
		priorities, attempts, maxAttempts, tiers       = ints(), ints(), ints(), ints()
		states                                         = make([]int16, n)
		tokens                                         = make([]int64, n)
		expires, claimed, renewed, runAfter            = times(), times(), times(), times()
		created, updated, changed                      = times(), times(), times()
		byQueue, pending                               = make([]bool, n), make([]bool, n)
		approvalIDs, spendTiers, results               = text(), text(), text()
		depTask, depOn                                 []string
		depPos                                         []int32
	)
	for i, t := range tasks {
		if err := checkDumpTask(t); err != nil {
			return err
		}
		ids[i], titles[i], kinds[i], payloads[i], roles[i], assignees[i] = t.ID, t.Title, t.Kind, t.PayloadJSON, t.Role, t.Assignee
		lastErrors[i], progress[i], notes[i], holders[i] = t.LastError, t.Progress, t.Note, t.LeaseHolder
		priorities[i], attempts[i], maxAttempts[i], tiers[i] = t.Priority, t.Attempt, t.MaxAttempts, t.ApprovalTier
		states[i], tokens[i], byQueue[i] = int16(t.State), t.FencingToken, t.PausedByQueue
		approvalIDs[i], pending[i], spendTiers[i], results[i] = t.ApprovalID, t.ApprovalPending, t.Tier, t.ResultJSON
		deps[i], labels[i] = "[]", "{}"
		if len(t.DependsOn) > 0 {
			deps[i] = jsonText(t.DependsOn)
		}
		if len(t.Labels) > 0 {
			labels[i] = jsonText(t.Labels)
		}
		expires[i], claimed[i], renewed[i], runAfter[i] = ts(norm(t.LeaseExpiresAt)), ts(norm(t.ClaimedAt)), ts(norm(t.RenewedAt)), ts(norm(t.RunAfter))
		created[i], updated[i], changed[i] = ts(norm(t.CreatedAt)), ts(norm(t.UpdatedAt)), ts(norm(t.StateChangedAt))
		for pos, dep := range t.DependsOn {
			depTask, depPos, depOn = append(depTask, t.ID), append(depPos, int32(pos)), append(depOn, dep)
		}
	}
	b := d.t.batch()
	b.Queue(qDumpAddTasks, ids, titles, kinds, payloads, roles, assignees, priorities, states, attempts, maxAttempts,
		deps, tiers, labels, lastErrors, progress, notes, holders, tokens, expires, claimed, renewed, runAfter,
		created, updated, changed, byQueue, approvalIDs, pending, spendTiers, results)
	if len(depTask) > 0 {
		b.Queue(qInsertDeps, depTask, depPos, depOn)
	}
	return d.t.send(b)
}

// checkDumpTask refuses text PostgreSQL cannot store, naming the task and
// field, rather than failing the whole statement with a database error.
func checkDumpTask(t *store.Task) error {
	err := firstErr(
		checkText("id", t.ID, "title", t.Title, "kind", t.Kind, "payload_json", t.PayloadJSON, "role", t.Role,
			"assignee", t.Assignee, "last_error", t.LastError, "progress", t.Progress, "note", t.Note,
			"lease_holder", t.LeaseHolder, "result_json", t.ResultJSON),
		checkTexts("depends_on", t.DependsOn),
	)
	for k, v := range t.Labels {
		err = firstErr(err, checkText("labels", k, "labels", v))
	}
	return recordErr("task "+t.ID, err)
}

// recordErr turns a field's FieldError into one on the load's records,
// naming the record: the field alone would not say which row of a dump
// broke.
func recordErr(record string, err error) error {
	var fe *store.FieldError
	if errors.As(err, &fe) {
		return store.InvalidField("records", "%s: %s %s", record, fe.Field, fe.Description)
	}
	return err
}

func (d *dumpTarget) InsertTokens(tokens []*store.Token) error {
	n := len(tokens)
	text := func() []string { return make([]string, n) }
	times := func() []pgtype.Timestamptz { return make([]pgtype.Timestamptz, n) }
	var (
		ids, hashes, roles, subjects, descs, by = text(), text(), text(), text(), text(), text()
		created, expires, revoked, used         = times(), times(), times(), times()
		grants, sessionOf                       = text(), text()
	)
	for i, t := range tokens {
		if err := checkText("id", t.ID, "hash", t.Hash, "subject", t.Subject, "description", t.Description, "created_by", t.CreatedBy); err != nil {
			return recordErr("token "+t.ID, err)
		}
		ids[i], hashes[i], roles[i], subjects[i], descs[i], by[i] = t.ID, t.Hash, string(t.Role), t.Subject, t.Description, t.CreatedBy
		created[i], expires[i], revoked[i], used[i] = ts(norm(t.CreatedAt)), ts(norm(t.ExpiresAt)), ts(norm(t.RevokedAt)), ts(norm(t.LastUsedAt))
		grants[i], sessionOf[i] = store.JoinRoles(t.Roles), t.SessionOf
	}
	b := d.t.batch()
	b.Queue(qDumpAddTokens, ids, hashes, roles, subjects, descs, by, created, expires, revoked, used, grants, sessionOf)
	return d.t.send(b)
}

func (d *dumpTarget) InsertAudit(entries []*store.AuditEntry, keepIDs bool) error {
	// As AuditAppend does: an entry records what a caller sent, and text
	// PostgreSQL cannot hold must not lose the entry.
	cols := auditColumns(entries)
	b := d.t.batch()
	if keepIDs {
		ids := make([]int64, len(entries))
		for i, e := range entries {
			ids[i] = e.ID
		}
		b.Queue(qDumpAddAudit, append([]any{ids}, cols.args()...)...)
		b.Queue(qDumpAuditSeq)
	} else {
		b.Queue(qAuditInsert, cols.args()...)
	}
	return d.t.send(b)
}

func (d *dumpTarget) InsertFleetEvents(events []*store.FleetEvent) (int, error) {
	n := len(events)
	var (
		ids, hosts, kinds, attrs = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		times                    = make([]pgtype.Timestamptz, n)
	)
	for i, e := range events {
		// As FleetEventsAppend does: text PostgreSQL cannot hold must not
		// lose the event.
		clean := make(map[string]string, len(e.Attributes))
		for k, v := range e.Attributes {
			clean[storable(k)] = storable(v)
		}
		b, err := json.Marshal(clean)
		if err != nil {
			return 0, store.InvalidField("records", "fleet event %s: attributes: %v", e.ID, err)
		}
		ids[i], hosts[i], kinds[i], attrs[i] = storable(e.ID), storable(e.Host), storable(e.Kind), string(b)
		times[i] = pgtype.Timestamptz{Time: norm(e.Time), Valid: true}
	}
	added := 0
	b := d.t.batch()
	b.Queue(qDumpAddFleetEvents, ids, hosts, kinds, times, attrs).Query(func(rs pgx.Rows) error {
		for rs.Next() {
			added++
		}
		return rs.Err()
	})
	if err := d.t.send(b); err != nil {
		return 0, err
	}
	return added, nil
}
