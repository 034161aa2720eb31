package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/factory/factory/controlplane/store"
)

// qSpendRollupBatch upserts up to maxBatchRows rollup rows at once.
var qSpendRollupBatch = batchSQL(`INSERT INTO spend_daily (dimension, day, key, cost_micros, events, input_tokens, output_tokens) VALUES `,
	rollupCols, ` ON CONFLICT (dimension, day, key) DO UPDATE SET
	cost_micros = cost_micros + excluded.cost_micros,
	events = events + excluded.events,
	input_tokens = input_tokens + excluded.input_tokens,
	output_tokens = output_tokens + excluded.output_tokens`)

const rollupCols = 7

const (
	qSpendInsert = `INSERT INTO spend_events (id, agent, host, model, provider, tier, input_tokens, output_tokens,
	cost_micros, priced_by_server, task_id, occurred_at, day, recorded_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent, id) DO NOTHING`
	qSpendGet = `SELECT e.id, e.agent, e.host, e.model, e.provider, e.tier, e.input_tokens, e.output_tokens, e.cost_micros,
	e.priced_by_server, e.task_id, e.occurred_at, e.day, e.recorded_at,
	v.reason IS NOT NULL, COALESCE(v.reason, ''), COALESCE(v.voided_by, ''), COALESCE(v.voided_at, 0)
FROM spend_events e LEFT JOIN spend_voids v ON v.agent = e.agent AND v.event_id = e.id
WHERE e.agent = ? AND e.id = ?`
	qSpendVoidInsert = `INSERT INTO spend_voids (agent, event_id, day, cost_micros, input_tokens, output_tokens, reason, voided_by, voided_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent, event_id) DO NOTHING`
	qSpendStandingSpent = `SELECT dimension, key, cost_micros FROM spend_daily
WHERE dimension IN ('total', 'agent', 'tier', 'model') AND day = ?`
	qSpendStandingReserved  = `SELECT agent, tier, estimate_micros FROM spend_reservations WHERE day = ? AND expires_at > ?`
	qReservationDropExpired = `DELETE FROM spend_reservations WHERE expires_at <= ?`
	qReservationInsert      = `INSERT INTO spend_reservations (id, agent, tier, model, task_id, estimate_micros, day, created_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`
	qReservationGet = `SELECT id, agent, tier, model, task_id, estimate_micros, day, created_at, expires_at
FROM spend_reservations WHERE id = ?`
	qReservationDelete  = `DELETE FROM spend_reservations WHERE id = ?`
	qSpendScopeSpent    = `SELECT COALESCE((SELECT cost_micros FROM spend_daily WHERE dimension = ? AND day = ? AND key = ?), 0)`
	qSpendScopeTotalRes = `SELECT COALESCE(SUM(estimate_micros), 0) FROM spend_reservations WHERE day = ? AND expires_at > ?`
	qSpendScopeTierRes  = `SELECT COALESCE(SUM(estimate_micros), 0) FROM spend_reservations WHERE day = ? AND expires_at > ? AND tier = ?`
	qSpendScopeAgentRes = `SELECT COALESCE(SUM(estimate_micros), 0) FROM spend_reservations WHERE day = ? AND expires_at > ? AND agent = ?`
	qBudgetSet          = `INSERT INTO budgets (scope, key, target_micros, alert_micros, cap_micros, emergency_micros, updated_at, off)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (scope, key) DO UPDATE SET target_micros = excluded.target_micros, alert_micros = excluded.alert_micros,
	cap_micros = excluded.cap_micros, emergency_micros = excluded.emergency_micros, updated_at = excluded.updated_at,
	off = excluded.off`
	qBudgetList = `SELECT scope, key, target_micros, alert_micros, cap_micros, emergency_micros, updated_at, off
FROM budgets ORDER BY scope, key`
	qAlertRaise = `INSERT INTO spend_alerts (day, scope, key, threshold_micros, spent_micros, raised_at)
VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day, scope, key) DO NOTHING`
	qAlertList = `SELECT day, scope, key, threshold_micros, spent_micros, raised_at FROM spend_alerts
WHERE day = ? ORDER BY raised_at, scope, key`
	qStopGet   = `SELECT stopped, reason, stopped_by, stopped_at, paused_queue, paused_tasks FROM emergency_stop WHERE id = 1`
	qStopStart = `UPDATE emergency_stop SET stopped = 1, reason = ?, stopped_by = ?, stopped_at = ?, paused_queue = 0,
	paused_tasks = 0 WHERE id = 1 AND stopped = 0`
	qStopNote  = `UPDATE emergency_stop SET paused_queue = ?, paused_tasks = ? WHERE id = 1 AND stopped = 1`
	qStopRearm = `UPDATE emergency_stop SET stopped = 0, reason = '', stopped_by = '', stopped_at = 0, paused_queue = 0,
	paused_tasks = 0 WHERE id = 1`
)

var _ store.SpendStore = (*Store)(nil)

// SpendRecord implements store.Store.
func (s *Store) SpendRecord(ctx context.Context, p *store.SpendRecordParams) (*store.SpendRecordResult, error) {
	if p == nil || len(p.Events) == 0 {
		return &store.SpendRecordResult{}, nil
	}
	if err := store.CheckSpendEvents(p.Events); err != nil {
		return nil, err
	}
	repeated, inBatch := store.FirstSpendIDs(p.Events)
	now := norm(p.Now)
	var res *store.SpendRecordResult
	err := s.writeTx(ctx, "SpendRecord", func(w *wtx) error {
		res = &store.SpendRecordResult{Duplicates: make([]bool, len(p.Events)), Conflicts: append([]store.SpendConflict(nil), inBatch...)}
		clashed := map[int]bool{}
		for _, c := range inBatch {
			clashed[c.Index] = true
		}
		fresh := make([]*store.SpendEvent, 0, len(p.Events))
		for i, e := range p.Events {
			if repeated[i] {
				res.Duplicates[i] = !clashed[i]
				continue
			}
			r, err := w.exec(qSpendInsert, e.ID, e.Agent, e.Host, e.Model, e.Provider, e.Tier, e.InputTokens, e.OutputTokens,
				e.CostMicros, e.PricedByServer, e.TaskID, toNanos(norm(e.OccurredAt)), e.Day, toNanos(now))
			if err != nil {
				return err
			}
			n, err := r.RowsAffected()
			if err != nil {
				return dbErr(w.op, err)
			}
			if n == 0 {
				stored, err := w.spendGet(e.Agent, e.ID)
				if err != nil {
					return err
				}
				in := *e
				in.OccurredAt = norm(e.OccurredAt)
				if diff := store.SpendDiff(stored, &in); len(diff) > 0 {
					res.Conflicts = append(res.Conflicts, store.SpendConflict{Index: i, Agent: e.Agent, ID: e.ID, Fields: diff})
					continue
				}
				res.Duplicates[i] = true
				continue
			}
			fresh = append(fresh, e)
		}
		store.SortConflicts(res.Conflicts)
		res.Recorded = len(fresh)
		if err := w.addRollups(store.SpendRollups(fresh)); err != nil {
			return daySumErr(err, fresh)
		}
		// A refused rewrite settles nothing: the reservation stays.
		if p.ReleaseReservation != "" && len(res.Conflicts) == 0 {
			if _, err := w.exec(qReservationDelete, p.ReleaseReservation); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// daySumErr turns the rollups' refusal of a sum (the agent ceiling, or an
// integer sum that would leave the int64 range and become a REAL) into
// the caller's error; anything else passes through.
func daySumErr(err error, events []*store.SpendEvent) error {
	var se *sqlite.Error
	if !errors.As(err, &se) || se.Code() != sqlite3.SQLITE_CONSTRAINT_CHECK || !strings.Contains(se.Error(), "spend_daily") {
		return err
	}
	return store.DaySumError(spendAgents(events))
}

// spendAgents are the agents of events, sorted, each once.
func spendAgents(events []*store.SpendEvent) []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range events {
		if !seen[e.Agent] {
			seen[e.Agent] = true
			out = append(out, e.Agent)
		}
	}
	sort.Strings(out)
	return out
}

// sumRangeErr turns SQLite's refusal of a SUM past the int64 range into
// the caller's error.
func sumRangeErr(err error) error {
	if err != nil && strings.Contains(err.Error(), "integer overflow") {
		return store.SumRangeError()
	}
	return err
}

func scanSpendEvent(row interface{ Scan(...any) error }) (*store.SpendEvent, error) {
	var (
		e                            store.SpendEvent
		occurred, recordedAt, voided int64
		hasVoid                      bool
		v                            store.SpendVoidRecord
	)
	if err := row.Scan(&e.ID, &e.Agent, &e.Host, &e.Model, &e.Provider, &e.Tier, &e.InputTokens,
		&e.OutputTokens, &e.CostMicros, &e.PricedByServer, &e.TaskID, &occurred, &e.Day, &recordedAt,
		&hasVoid, &v.Reason, &v.VoidedBy, &voided); err != nil {
		return nil, err
	}
	e.OccurredAt, e.RecordedAt = fromNanos(occurred), fromNanos(recordedAt)
	if hasVoid {
		v.VoidedAt = fromNanos(voided)
		e.Void = &v
	}
	return &e, nil
}

// SpendGet implements store.Store.
func (s *Store) SpendGet(ctx context.Context, agent, id string) (*store.SpendEvent, error) {
	st, err := s.rs.get(ctx, qSpendGet)
	if err != nil {
		return nil, dbErr("SpendGet", err)
	}
	e, err := scanSpendEvent(st.QueryRowContext(ctx, agent, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("spend event %s of agent %s: %w", id, agent, store.ErrNotFound)
	}
	if err != nil {
		return nil, dbErr("SpendGet", err)
	}
	return e, nil
}

// spendGet reads one event inside the write transaction.
func (w *wtx) spendGet(agent, id string) (*store.SpendEvent, error) {
	st, err := w.stmt(qSpendGet)
	if err != nil {
		return nil, dbErr(w.op, err)
	}
	e, err := scanSpendEvent(st.QueryRowContext(w.ctx, agent, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("spend event %s of agent %s: %w", id, agent, store.ErrNotFound)
	}
	return e, dbErr(w.op, err)
}

// SpendVoid implements store.Store.
func (s *Store) SpendVoid(ctx context.Context, p *store.SpendVoidParams) (*store.SpendEvent, error) {
	if err := store.CheckSpendVoid(p); err != nil {
		return nil, err
	}
	var out *store.SpendEvent
	err := s.writeTx(ctx, "SpendVoid", func(w *wtx) error {
		e, err := w.spendGet(p.Agent, p.ID)
		if err != nil {
			return err
		}
		if e.Void != nil {
			return fmt.Errorf("spend event %s of agent %s was voided by %s at %s (%s): %w",
				p.ID, p.Agent, e.Void.VoidedBy, e.Void.VoidedAt.Format(time.RFC3339), e.Void.Reason, store.ErrAlreadyExists)
		}
		now := norm(p.Now)
		r, err := w.exec(qSpendVoidInsert, e.Agent, e.ID, e.Day, e.CostMicros, e.InputTokens, e.OutputTokens, p.Reason, p.VoidedBy, toNanos(now))
		if err != nil {
			return err
		}
		if n, err := r.RowsAffected(); err != nil || n == 0 {
			return errors.Join(dbErr(w.op, err), fmt.Errorf("spend event %s of agent %s: void: %w", p.ID, p.Agent, store.ErrAlreadyExists))
		}
		if err := w.addRollups(store.ReverseRollups(e)); err != nil {
			return err
		}
		e.Void = &store.SpendVoidRecord{Reason: p.Reason, VoidedBy: p.VoidedBy, VoidedAt: now}
		out = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SpendRollupQuery implements store.Store.
func (s *Store) SpendRollupQuery(ctx context.Context, p *store.SpendRollupQueryParams) (*store.SpendRollupResult, error) {
	if err := store.CheckSpendRollupQuery(p); err != nil {
		return nil, err
	}
	var where strings.Builder
	where.WriteString(" FROM spend_daily WHERE dimension = ? AND day >= ? AND day <= ?")
	args := []any{p.Dimension, p.FromDay, p.ToDay}
	switch {
	case p.KeyPrefix != "":
		// Keys starting with the prefix: [prefix, prefix+U+10FFFF).
		where.WriteString(" AND key >= ? AND key < ?")
		args = append(args, p.KeyPrefix, p.KeyPrefix+"\U0010FFFF")
	case p.Key != "":
		where.WriteString(" AND key = ?")
		args = append(args, p.Key)
	}
	sums := "COALESCE(SUM(cost_micros), 0), COALESCE(SUM(events), 0), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0)"
	var q string
	switch p.Group {
	case store.GroupNone:
		q = "SELECT ''," + sums + where.String()
	case store.GroupDay:
		q = "SELECT day," + sums + where.String() + " GROUP BY day ORDER BY day"
	case store.GroupKey:
		q = "SELECT key," + sums + where.String() + " GROUP BY key ORDER BY 2 DESC, key"
		if p.Limit > 0 {
			// The database keeps only the top rows; the rest are counted
			// apart, so a wide breakdown (a month of tasks) never crosses
			// into Go row by row.
			q += " LIMIT ?"
		}
	default:
		return nil, store.InvalidField("group_by", "unknown grouping %d", p.Group)
	}
	res := &store.SpendRollupResult{}
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		qargs := args
		if p.Group == store.GroupKey && p.Limit > 0 {
			qargs = append(qargs[:len(qargs):len(qargs)], p.Limit)
		}
		rs, err := tx.QueryContext(ctx, q, qargs...)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var r store.SpendRollupRow
			if err := rs.Scan(&r.Key, &r.CostMicros, &r.Events, &r.InputTokens, &r.OutputTokens); err != nil {
				return err
			}
			r.Key = strings.TrimPrefix(r.Key, p.KeyPrefix)
			res.Rows = append(res.Rows, r)
		}
		if err := rs.Err(); err != nil {
			return err
		}
		if p.Group != store.GroupKey || p.Limit <= 0 || len(res.Rows) < p.Limit {
			return nil
		}
		var groups int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(DISTINCT key)"+where.String(), args...).Scan(&groups); err != nil {
			return err
		}
		res.LeftOut = groups - len(res.Rows)
		return nil
	})
	if err != nil {
		return nil, dbErr("SpendRollupQuery", sumRangeErr(err))
	}
	return res, nil
}

// SpendRollupAdd implements store.Store.
func (s *Store) SpendRollupAdd(ctx context.Context, rows []store.SpendRollup) error {
	if len(rows) == 0 {
		return nil
	}
	return s.writeTx(ctx, "SpendRollupAdd", func(w *wtx) error { return daySumErr(w.addRollups(rows), nil) })
}

// addRollups upserts rollup rows, adding to the sums already stored, in
// as few statements as maxBatchRows allows.
func (w *wtx) addRollups(rows []store.SpendRollup) error {
	args := make([]any, 0, rollupCols*len(rows))
	for _, r := range rows {
		args = append(args, r.Dimension, r.Day, r.Key, r.CostMicros, r.Events, r.InputTokens, r.OutputTokens)
	}
	return w.execBatch(qSpendRollupBatch, rollupCols, args)
}

// SpendStanding implements store.Store.
func (s *Store) SpendStanding(ctx context.Context, p *store.SpendStandingParams) (*store.SpendStanding, error) {
	out := store.NewSpendStanding()
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		rs, err := tx.QueryContext(ctx, qSpendStandingSpent, p.Day)
		if err != nil {
			return err
		}
		for rs.Next() {
			var dim, key string
			var cost int64
			if err := rs.Scan(&dim, &key, &cost); err != nil {
				rs.Close()
				return err
			}
			out.Spent[dim][key] = cost
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return err
		}
		rs, err = tx.QueryContext(ctx, qSpendStandingReserved, p.Day, toNanos(p.Now))
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var agent, tier string
			var est int64
			if err := rs.Scan(&agent, &tier, &est); err != nil {
				return err
			}
			out.AddReserved(agent, tier, est)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, dbErr("SpendStanding", err)
	}
	return out, nil
}

// SpendReserve implements store.Store. The writer runs one call at a
// time, so the check and the insert cannot interleave with another
// reservation's.
func (s *Store) SpendReserve(ctx context.Context, p *store.SpendReserveParams) (*store.SpendReservation, error) {
	if p == nil {
		return nil, store.InvalidField("reservation", "missing")
	}
	if err := store.CheckSpendReservation(p.Reservation); err != nil {
		return nil, err
	}
	r := *p.Reservation
	r.CreatedAt, r.ExpiresAt = norm(p.Now), norm(r.ExpiresAt)
	err := s.writeTx(ctx, "SpendReserve", func(w *wtx) error {
		now := toNanos(p.Now)
		if _, err := w.exec(qReservationDropExpired, now); err != nil {
			return err
		}
		for _, c := range p.Caps {
			if c.CapMicros <= 0 {
				continue
			}
			spent, err := w.count(qSpendScopeSpent, store.ScopeDimension(c.Scope), r.Day, c.Key)
			if err != nil {
				return err
			}
			var reserved int64
			switch c.Scope {
			case store.ScopeTotal:
				reserved, err = w.count(qSpendScopeTotalRes, r.Day, now)
			case store.ScopeTier:
				reserved, err = w.count(qSpendScopeTierRes, r.Day, now, c.Key)
			default:
				reserved, err = w.count(qSpendScopeAgentRes, r.Day, now, c.Key)
			}
			if err != nil {
				return err
			}
			if err := store.CheckCap(c, spent, reserved, r.EstimateMicros); err != nil {
				return err
			}
		}
		res, err := w.exec(qReservationInsert, r.ID, r.Agent, r.Tier, r.Model, r.TaskID, r.EstimateMicros, r.Day,
			toNanos(r.CreatedAt), toNanos(r.ExpiresAt))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(dbErr(w.op, err), fmt.Errorf("reservation %s: %w", r.ID, store.ErrAlreadyExists))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// SpendRelease implements store.Store.
func (s *Store) SpendRelease(ctx context.Context, p *store.SpendReleaseParams) (*store.SpendReservation, error) {
	var out *store.SpendReservation
	err := s.writeTx(ctx, "SpendRelease", func(w *wtx) error {
		rs, err := w.query(qReservationGet, p.ID)
		if err != nil {
			return err
		}
		list, err := scanReservations(rs)
		if err != nil {
			return dbErr(w.op, err)
		}
		if len(list) == 0 {
			return fmt.Errorf("reservation %s: %w", p.ID, store.ErrNotFound)
		}
		out = list[0]
		_, err = w.exec(qReservationDelete, p.ID)
		return err
	})
	return out, err
}

// SpendReservationGet implements store.Store.
func (s *Store) SpendReservationGet(ctx context.Context, id string) (*store.SpendReservation, error) {
	st, err := s.rs.get(ctx, qReservationGet)
	if err != nil {
		return nil, dbErr("SpendReservationGet", err)
	}
	rs, err := st.QueryContext(ctx, id)
	if err != nil {
		return nil, dbErr("SpendReservationGet", err)
	}
	list, err := scanReservations(rs)
	if err != nil {
		return nil, dbErr("SpendReservationGet", err)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("reservation %s: %w", id, store.ErrNotFound)
	}
	return list[0], nil
}

func scanReservations(rs *sql.Rows) ([]*store.SpendReservation, error) {
	defer rs.Close()
	var out []*store.SpendReservation
	for rs.Next() {
		var r store.SpendReservation
		var created, expires int64
		if err := rs.Scan(&r.ID, &r.Agent, &r.Tier, &r.Model, &r.TaskID, &r.EstimateMicros, &r.Day, &created, &expires); err != nil {
			return nil, err
		}
		r.CreatedAt, r.ExpiresAt = fromNanos(created), fromNanos(expires)
		out = append(out, &r)
	}
	return out, rs.Err()
}

// BudgetSet implements store.Store.
func (s *Store) BudgetSet(ctx context.Context, b *store.Budget) (*store.Budget, error) {
	if err := store.CheckBudget(b); err != nil {
		return nil, err
	}
	out := *b
	out.UpdatedAt = norm(b.UpdatedAt)
	err := s.writeTx(ctx, "BudgetSet", func(w *wtx) error {
		_, err := w.exec(qBudgetSet, out.Scope, out.Key, out.TargetMicros, out.AlertMicros, out.CapMicros, out.EmergencyMicros,
			toNanos(out.UpdatedAt), boolInt(out.Off))
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// BudgetList implements store.Store.
func (s *Store) BudgetList(ctx context.Context) ([]*store.Budget, error) {
	st, err := s.rs.get(ctx, qBudgetList)
	if err != nil {
		return nil, dbErr("BudgetList", err)
	}
	rs, err := st.QueryContext(ctx)
	if err != nil {
		return nil, dbErr("BudgetList", err)
	}
	defer rs.Close()
	var out []*store.Budget
	for rs.Next() {
		var b store.Budget
		var at int64
		if err := rs.Scan(&b.Scope, &b.Key, &b.TargetMicros, &b.AlertMicros, &b.CapMicros, &b.EmergencyMicros, &at, &b.Off); err != nil {
			return nil, dbErr("BudgetList", err)
		}
		b.UpdatedAt = fromNanos(at)
		out = append(out, &b)
	}
	return out, dbErr("BudgetList", rs.Err())
}

// SpendAlertRaise implements store.Store.
func (s *Store) SpendAlertRaise(ctx context.Context, a *store.SpendAlert) (bool, error) {
	raised := false
	err := s.writeTx(ctx, "SpendAlertRaise", func(w *wtx) error {
		r, err := w.exec(qAlertRaise, a.Day, a.Scope, a.Key, a.ThresholdMicros, a.SpentMicros, toNanos(norm(a.RaisedAt)))
		if err != nil {
			return err
		}
		n, err := r.RowsAffected()
		raised = n == 1
		return dbErr(w.op, err)
	})
	return raised, err
}

// SpendAlertList implements store.Store.
func (s *Store) SpendAlertList(ctx context.Context, day string) ([]*store.SpendAlert, error) {
	st, err := s.rs.get(ctx, qAlertList)
	if err != nil {
		return nil, dbErr("SpendAlertList", err)
	}
	rs, err := st.QueryContext(ctx, day)
	if err != nil {
		return nil, dbErr("SpendAlertList", err)
	}
	defer rs.Close()
	var out []*store.SpendAlert
	for rs.Next() {
		var a store.SpendAlert
		var at int64
		if err := rs.Scan(&a.Day, &a.Scope, &a.Key, &a.ThresholdMicros, &a.SpentMicros, &at); err != nil {
			return nil, dbErr("SpendAlertList", err)
		}
		a.RaisedAt = fromNanos(at)
		out = append(out, &a)
	}
	return out, dbErr("SpendAlertList", rs.Err())
}

func scanStop(row interface{ Scan(...any) error }) (*store.EmergencyStop, error) {
	var e store.EmergencyStop
	var at int64
	if err := row.Scan(&e.Stopped, &e.Reason, &e.StoppedBy, &at, &e.PausedQueue, &e.PausedTasks); err != nil {
		return nil, err
	}
	e.StoppedAt = fromNanos(at)
	return &e, nil
}

// EmergencyStopGet implements store.Store.
func (s *Store) EmergencyStopGet(ctx context.Context) (*store.EmergencyStop, error) {
	st, err := s.rs.get(ctx, qStopGet)
	if err != nil {
		return nil, dbErr("EmergencyStopGet", err)
	}
	e, err := scanStop(st.QueryRowContext(ctx))
	return e, dbErr("EmergencyStopGet", err)
}

// EmergencyStopStart implements store.Store.
func (s *Store) EmergencyStopStart(ctx context.Context, p *store.EmergencyStopStartParams) (*store.EmergencyStop, bool, error) {
	var (
		out     *store.EmergencyStop
		started bool
	)
	err := s.writeTx(ctx, "EmergencyStopStart", func(w *wtx) error {
		r, err := w.exec(qStopStart, p.Reason, p.StoppedBy, toNanos(norm(p.Now)))
		if err != nil {
			return err
		}
		n, err := r.RowsAffected()
		if err != nil {
			return dbErr(w.op, err)
		}
		started = n == 1
		st, err := w.stmt(qStopGet)
		if err != nil {
			return dbErr(w.op, err)
		}
		out, err = scanStop(st.QueryRowContext(w.ctx))
		return dbErr(w.op, err)
	})
	if err != nil {
		return nil, false, err
	}
	return out, started, nil
}

// EmergencyStopNotePaused implements store.Store.
func (s *Store) EmergencyStopNotePaused(ctx context.Context, p *store.EmergencyStopNotePausedParams) error {
	return s.writeTx(ctx, "EmergencyStopNotePaused", func(w *wtx) error {
		_, err := w.exec(qStopNote, p.PausedQueue, p.PausedTasks)
		return err
	})
}

// EmergencyStopRearm implements store.Store.
func (s *Store) EmergencyStopRearm(ctx context.Context, p *store.EmergencyStopRearmParams) (*store.EmergencyStop, error) {
	if p.Budget != nil {
		if err := store.CheckBudget(p.Budget); err != nil {
			return nil, err
		}
	}
	var prev *store.EmergencyStop
	err := s.writeTx(ctx, "EmergencyStopRearm", func(w *wtx) error {
		st, err := w.stmt(qStopGet)
		if err != nil {
			return dbErr(w.op, err)
		}
		if prev, err = scanStop(st.QueryRowContext(w.ctx)); err != nil {
			return dbErr(w.op, err)
		}
		if b := p.Budget; b != nil && prev.Stopped {
			if _, err := w.exec(qBudgetSet, b.Scope, b.Key, b.TargetMicros, b.AlertMicros, b.CapMicros, b.EmergencyMicros,
				toNanos(norm(b.UpdatedAt)), boolInt(b.Off)); err != nil {
				return err
			}
		}
		_, err = w.exec(qStopRearm)
		return err
	})
	return prev, err
}
