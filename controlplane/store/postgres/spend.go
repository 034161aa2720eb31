package postgres

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

// The events go in sorted by id, so that two transactions inserting
// overlapping batches wait on each other in the same order instead of
// deadlocking.
const qSpendInsert = `-- name: SpendRecord
INSERT INTO spend_events (id, agent, host, model, provider, tier, input_tokens, output_tokens, cost_micros,
	priced_by_server, task_id, occurred_at, day, recorded_at)
SELECT id, agent, host, model, provider, tier, input_tokens, output_tokens, cost_micros, priced, task_id, occurred_at, day, $14
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[],
	$9::bigint[], $10::boolean[], $11::text[], $12::timestamptz[], $13::text[])
	AS e(id, agent, host, model, provider, tier, input_tokens, output_tokens, cost_micros, priced, task_id, occurred_at, day)
ON CONFLICT (agent, id) DO NOTHING
RETURNING agent, id`

// qSpendStored reads the stored events a batch's keys collided with, to
// tell a retry from a rewrite.
const qSpendStored = `-- name: SpendStored
SELECT e.id, e.agent, e.host, e.model, e.provider, e.tier, e.input_tokens, e.output_tokens, e.cost_micros,
	e.priced_by_server, e.task_id, e.occurred_at, e.day, e.recorded_at
FROM spend_events e JOIN unnest($1::text[], $2::text[]) AS k(agent, id) ON e.agent = k.agent AND e.id = k.id`

const qSpendVoidInsert = `-- name: SpendVoid
INSERT INTO spend_voids (agent, event_id, day, cost_micros, input_tokens, output_tokens, reason, voided_by, voided_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (agent, event_id) DO NOTHING`

const qSpendRollup = `-- name: SpendRollup
INSERT INTO spend_daily AS d (dimension, day, key, cost_micros, events, input_tokens, output_tokens)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
ON CONFLICT (dimension, day, key) DO UPDATE SET
	cost_micros = d.cost_micros + excluded.cost_micros,
	events = d.events + excluded.events,
	input_tokens = d.input_tokens + excluded.input_tokens,
	output_tokens = d.output_tokens + excluded.output_tokens`

const qSpendGet = `-- name: SpendGet
SELECT e.id, e.agent, e.host, e.model, e.provider, e.tier, e.input_tokens, e.output_tokens, e.cost_micros,
	e.priced_by_server, e.task_id, e.occurred_at, e.day, e.recorded_at,
	v.reason IS NOT NULL, COALESCE(v.reason, ''), COALESCE(v.voided_by, ''), v.voided_at
FROM spend_events e LEFT JOIN spend_voids v ON v.agent = e.agent AND v.event_id = e.id
WHERE e.agent = $1 AND e.id = $2`

// One statement, so the spend and the reservations are one snapshot: a
// settle commits the actual and drops the estimate together.
const qSpendStanding = `-- name: SpendStanding
SELECT 's', dimension, key, '', cost_micros FROM spend_daily
WHERE dimension IN ('total', 'agent', 'tier', 'model') AND day = $1
UNION ALL
SELECT 'r', '', agent, tier, estimate_micros FROM spend_reservations WHERE day = $1 AND expires_at > $2`

// One statement per cap for the same reason.
const qSpendScope = `-- name: SpendScope
SELECT
	COALESCE((SELECT cost_micros FROM spend_daily WHERE dimension = $1 AND day = $2 AND key = $3), 0),
	COALESCE((SELECT SUM(estimate_micros) FROM spend_reservations WHERE day = $2 AND expires_at > $4
		AND ($5 = 'total' OR ($5 = 'tier' AND tier = $3) OR ($5 = 'agent' AND agent = $3))), 0)::bigint`

const (
	qReservationDropExpired = `-- name: ReservationDropExpired
DELETE FROM spend_reservations WHERE expires_at <= $1`
	qReservationInsert = `-- name: ReservationInsert
INSERT INTO spend_reservations (id, agent, tier, model, task_id, estimate_micros, day, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING`
	qReservationGet = `-- name: ReservationGet
SELECT id, agent, tier, model, task_id, estimate_micros, day, created_at, expires_at
FROM spend_reservations WHERE id = $1`
	qReservationDelete = `-- name: ReservationDelete
DELETE FROM spend_reservations WHERE id = $1
RETURNING id, agent, tier, model, task_id, estimate_micros, day, created_at, expires_at`
	qBudgetSet = `-- name: BudgetSet
INSERT INTO budgets (scope, key, target_micros, alert_micros, cap_micros, emergency_micros, updated_at, off)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (scope, key) DO UPDATE SET target_micros = excluded.target_micros, alert_micros = excluded.alert_micros,
	cap_micros = excluded.cap_micros, emergency_micros = excluded.emergency_micros, updated_at = excluded.updated_at,
	off = excluded.off`
	// qBudgetSetIfStopped is qBudgetSet for a rearm that raises the
	// threshold: it writes only while the stop (locked by qStopRearmGet)
	// is still on.
	qBudgetSetIfStopped = `-- name: EmergencyStopRearmBudget
INSERT INTO budgets (scope, key, target_micros, alert_micros, cap_micros, emergency_micros, updated_at, off)
SELECT $1, $2, $3, $4, $5, $6, $7, $8 FROM emergency_stop WHERE id = 1 AND stopped
ON CONFLICT (scope, key) DO UPDATE SET target_micros = excluded.target_micros, alert_micros = excluded.alert_micros,
	cap_micros = excluded.cap_micros, emergency_micros = excluded.emergency_micros, updated_at = excluded.updated_at,
	off = excluded.off`
	qBudgetList = `-- name: BudgetList
SELECT scope, key, target_micros, alert_micros, cap_micros, emergency_micros, updated_at, off FROM budgets ORDER BY scope, key`
	qAlertRaise = `-- name: SpendAlertRaise
INSERT INTO spend_alerts (day, scope, key, threshold_micros, spent_micros, raised_at)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (day, scope, key) DO NOTHING`
	qAlertList = `-- name: SpendAlertList
SELECT day, scope, key, threshold_micros, spent_micros, raised_at FROM spend_alerts
WHERE day = $1 ORDER BY raised_at, scope, key`
	qStopGet = `-- name: EmergencyStopGet
SELECT stopped, reason, stopped_by, stopped_at, paused_queue, paused_tasks FROM emergency_stop WHERE id = 1`
	qStopStart = `-- name: EmergencyStopStart
UPDATE emergency_stop SET stopped = true, reason = $1, stopped_by = $2, stopped_at = $3, paused_queue = false,
	paused_tasks = 0 WHERE id = 1 AND NOT stopped`
	qStopNote = `-- name: EmergencyStopNotePaused
UPDATE emergency_stop SET paused_queue = $1, paused_tasks = $2 WHERE id = 1 AND stopped`
	qStopRearmGet = `-- name: EmergencyStopRearm
SELECT stopped, reason, stopped_by, stopped_at, paused_queue, paused_tasks FROM emergency_stop WHERE id = 1 FOR UPDATE`
	qStopRearm = `-- name: EmergencyStopRearm
UPDATE emergency_stop SET stopped = false, reason = '', stopped_by = '', stopped_at = NULL, paused_queue = false,
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
	for _, e := range p.Events {
		if err := checkText("event.id", e.ID, "event.agent", e.Agent, "event.host", e.Host, "event.model", e.Model,
			"event.provider", e.Provider, "event.task_id", e.TaskID, "event.day", e.Day); err != nil {
			return nil, err
		}
	}
	repeated, inBatch := store.FirstSpendIDs(p.Events)
	clashed := map[int]bool{}
	for _, c := range inBatch {
		clashed[c.Index] = true
	}
	firsts := make([]int, 0, len(p.Events))
	for i := range p.Events {
		if !repeated[i] {
			firsts = append(firsts, i)
		}
	}
	sort.Slice(firsts, func(a, b int) bool {
		x, y := p.Events[firsts[a]], p.Events[firsts[b]]
		if x.Agent != y.Agent {
			return x.Agent < y.Agent
		}
		return x.ID < y.ID
	})
	n := len(firsts)
	var (
		ids, agents, hosts, models, providers, tiers, tasks, days = make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		ins, outs, costs = make([]int64, n), make([]int64, n), make([]int64, n)
		priced           = make([]bool, n)
		occurred         = make([]pgtype.Timestamptz, n)
	)
	for j, i := range firsts {
		e := p.Events[i]
		ids[j], agents[j], hosts[j], models[j], providers[j], tiers[j], tasks[j], days[j] = e.ID, e.Agent, e.Host, e.Model, e.Provider, e.Tier, e.TaskID, e.Day
		ins[j], outs[j], costs[j], priced[j] = e.InputTokens, e.OutputTokens, e.CostMicros, e.PricedByServer
		occurred[j] = pgtype.Timestamptz{Time: norm(e.OccurredAt), Valid: true}
	}
	now := norm(p.Now)
	var res *store.SpendRecordResult
	err := s.inTx(ctx, "SpendRecord", func(tx *txn) error {
		inserted := make(map[store.SpendKey]bool, n)
		b := tx.batch()
		b.Queue(qSpendInsert, ids, agents, hosts, models, providers, tiers, ins, outs, costs, priced, tasks, occurred, days, now).
			Query(func(rs pgx.Rows) error {
				for rs.Next() {
					var k store.SpendKey
					if err := rs.Scan(&k.Agent, &k.ID); err != nil {
						return err
					}
					inserted[k] = true
				}
				return rs.Err()
			})
		if err := tx.send(b); err != nil {
			return err
		}
		res = &store.SpendRecordResult{Duplicates: make([]bool, len(p.Events)), Conflicts: append([]store.SpendConflict(nil), inBatch...)}
		// The keys already stored: a retry or a rewrite.
		var taken []int
		for i, e := range p.Events {
			if !repeated[i] && !inserted[store.SpendKey{Agent: e.Agent, ID: e.ID}] {
				taken = append(taken, i)
			}
		}
		stored := map[store.SpendKey]*store.SpendEvent{}
		if len(taken) > 0 {
			ta, ti := make([]string, len(taken)), make([]string, len(taken))
			for j, i := range taken {
				ta[j], ti[j] = p.Events[i].Agent, p.Events[i].ID
			}
			b := tx.batch()
			b.Queue(qSpendStored, ta, ti).Query(func(rs pgx.Rows) error {
				for rs.Next() {
					var e store.SpendEvent
					if err := rs.Scan(&e.ID, &e.Agent, &e.Host, &e.Model, &e.Provider, &e.Tier, &e.InputTokens,
						&e.OutputTokens, &e.CostMicros, &e.PricedByServer, &e.TaskID, &e.OccurredAt, &e.Day, &e.RecordedAt); err != nil {
						return err
					}
					e.OccurredAt = e.OccurredAt.UTC()
					stored[store.SpendKey{Agent: e.Agent, ID: e.ID}] = &e
				}
				return rs.Err()
			})
			if err := tx.send(b); err != nil {
				return err
			}
		}
		fresh := make([]*store.SpendEvent, 0, len(inserted))
		for i, e := range p.Events {
			switch {
			case repeated[i]:
				res.Duplicates[i] = !clashed[i]
				continue
			case !inserted[store.SpendKey{Agent: e.Agent, ID: e.ID}]:
				in := *e
				in.OccurredAt = norm(e.OccurredAt)
				if old := stored[store.SpendKey{Agent: e.Agent, ID: e.ID}]; old != nil {
					if diff := store.SpendDiff(old, &in); len(diff) > 0 {
						res.Conflicts = append(res.Conflicts, store.SpendConflict{Index: i, Agent: e.Agent, ID: e.ID, Fields: diff})
						continue
					}
				}
				res.Duplicates[i] = true
				continue
			}
			fresh = append(fresh, e)
		}
		store.SortConflicts(res.Conflicts)
		res.Recorded = len(fresh)
		// A refused rewrite settles nothing: the reservation stays.
		release := p.ReleaseReservation != "" && len(res.Conflicts) == 0
		if len(fresh) == 0 && !release {
			return nil
		}
		return daySumErr(tx.commit(func(b *pgx.Batch) {
			if release {
				b.Queue(qReservationDelete, p.ReleaseReservation)
			}
			if len(fresh) > 0 {
				queueRollups(b, store.SpendRollups(fresh))
			}
		}), fresh)
	})
	if err != nil {
		var fe *store.FieldError
		if errors.As(err, &fe) {
			return nil, fe
		}
		return nil, err
	}
	return res, nil
}

// daySumErr turns the rollups' refusal of a sum (the agent ceiling, or
// bigint arithmetic out of range) into the caller's error; anything else
// passes through.
func daySumErr(err error, events []*store.SpendEvent) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch {
	case pe.Code == "22003", pe.Code == "23514" && pe.ConstraintName == "spend_daily_agent_ceiling":
		seen := map[string]bool{}
		var agents []string
		for _, e := range events {
			if !seen[e.Agent] {
				seen[e.Agent] = true
				agents = append(agents, e.Agent)
			}
		}
		sort.Strings(agents)
		return store.DaySumError(agents)
	}
	return err
}

// sumRangeErr turns a SUM past the bigint range into the caller's error.
func sumRangeErr(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "22003" {
		return store.SumRangeError()
	}
	return err
}

func queueRollups(b *pgx.Batch, rows []store.SpendRollup) {
	n := len(rows)
	dims, days, keys := make([]string, n), make([]string, n), make([]string, n)
	cost, events, ins, outs := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	for i, r := range rows {
		dims[i], days[i], keys[i] = storable(r.Dimension), storable(r.Day), storable(r.Key)
		cost[i], events[i], ins[i], outs[i] = r.CostMicros, r.Events, r.InputTokens, r.OutputTokens
	}
	b.Queue(qSpendRollup, dims, days, keys, cost, events, ins, outs)
}

func scanSpendEvent(row pgx.Row) (*store.SpendEvent, error) {
	var (
		e       store.SpendEvent
		hasVoid bool
		v       store.SpendVoidRecord
		at      pgtype.Timestamptz
	)
	if err := row.Scan(&e.ID, &e.Agent, &e.Host, &e.Model, &e.Provider, &e.Tier, &e.InputTokens,
		&e.OutputTokens, &e.CostMicros, &e.PricedByServer, &e.TaskID, &e.OccurredAt, &e.Day, &e.RecordedAt,
		&hasVoid, &v.Reason, &v.VoidedBy, &at); err != nil {
		return nil, err
	}
	e.OccurredAt, e.RecordedAt = e.OccurredAt.UTC(), e.RecordedAt.UTC()
	if hasVoid {
		v.VoidedAt = fromTS(at)
		e.Void = &v
	}
	return &e, nil
}

// SpendGet implements store.Store.
func (s *Store) SpendGet(ctx context.Context, agent, id string) (*store.SpendEvent, error) {
	if !pgText(id) || !pgText(agent) {
		return nil, fmt.Errorf("spend event %s of agent %s: %w", id, agent, store.ErrNotFound)
	}
	var e *store.SpendEvent
	err := s.read(ctx, "SpendGet", func(ctx context.Context) error {
		var err error
		e, err = scanSpendEvent(s.pool.QueryRow(ctx, qSpendGet, agent, id))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("spend event %s of agent %s: %w", id, agent, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

// SpendVoid implements store.Store. The event row is locked first, so two
// concurrent voids of it cannot both take it off the rollups.
func (s *Store) SpendVoid(ctx context.Context, p *store.SpendVoidParams) (*store.SpendEvent, error) {
	if err := store.CheckSpendVoid(p); err != nil {
		return nil, err
	}
	if err := checkText("agent", p.Agent, "id", p.ID, "reason", p.Reason, "voided_by", p.VoidedBy); err != nil {
		return nil, err
	}
	now := norm(p.Now)
	var out *store.SpendEvent
	err := s.inTx(ctx, "SpendVoid", func(tx *txn) error {
		out = nil
		b := tx.batch()
		b.Queue(qSpendGet+" FOR UPDATE OF e", p.Agent, p.ID).Query(func(rs pgx.Rows) error {
			for rs.Next() {
				e, err := scanSpendEvent(rs)
				if err != nil {
					return err
				}
				out = e
			}
			return rs.Err()
		})
		if err := tx.send(b); err != nil {
			return err
		}
		e := out
		switch {
		case e == nil:
			return fmt.Errorf("spend event %s of agent %s: %w", p.ID, p.Agent, store.ErrNotFound)
		case e.Void != nil:
			return fmt.Errorf("spend event %s of agent %s was voided by %s at %s (%s): %w",
				p.ID, p.Agent, e.Void.VoidedBy, e.Void.VoidedAt.Format(time.RFC3339), e.Void.Reason, store.ErrAlreadyExists)
		}
		b = tx.batch()
		b.Queue(qSpendVoidInsert, e.Agent, e.ID, e.Day, e.CostMicros, e.InputTokens, e.OutputTokens, p.Reason, p.VoidedBy, now).
			Exec(func(ct pgconn.CommandTag) error {
				if ct.RowsAffected() != 1 {
					return fmt.Errorf("spend event %s of agent %s: void: %w", p.ID, p.Agent, store.ErrAlreadyExists)
				}
				return nil
			})
		queueRollups(b, store.ReverseRollups(e))
		if err := tx.send(b); err != nil {
			return err
		}
		e.Void = &store.SpendVoidRecord{Reason: p.Reason, VoidedBy: p.VoidedBy, VoidedAt: now}
		return tx.commit()
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
	where.WriteString(" FROM spend_daily WHERE dimension = $1 AND day >= $2 AND day <= $3")
	args := []any{storable(p.Dimension), storable(p.FromDay), storable(p.ToDay)}
	switch {
	case p.KeyPrefix != "":
		// Keys starting with the prefix, by byte order (COLLATE "C").
		where.WriteString(` AND key COLLATE "C" >= $4 AND key COLLATE "C" < $5`)
		args = append(args, storable(p.KeyPrefix), storable(p.KeyPrefix)+"\U0010FFFF")
	case p.Key != "":
		where.WriteString(" AND key = $4")
		args = append(args, storable(p.Key))
	}
	sums := "COALESCE(SUM(cost_micros), 0)::bigint, COALESCE(SUM(events), 0)::bigint, COALESCE(SUM(input_tokens), 0)::bigint, COALESCE(SUM(output_tokens), 0)::bigint"
	var q string
	switch p.Group {
	case store.GroupNone:
		q = "-- name: SpendRollupQuery\nSELECT ''," + sums + where.String()
	case store.GroupDay:
		q = "-- name: SpendRollupQuery\nSELECT day," + sums + where.String() + " GROUP BY day ORDER BY day"
	case store.GroupKey:
		q = "-- name: SpendRollupQuery\nSELECT key," + sums + where.String() + ` GROUP BY key ORDER BY 2 DESC, key COLLATE "C"`
		if p.Limit > 0 {
			// Only the top rows cross the wire; the rest are counted.
			q += fmt.Sprintf(" LIMIT %d", p.Limit)
		}
	default:
		return nil, store.InvalidField("group_by", "unknown grouping %d", p.Group)
	}
	var res *store.SpendRollupResult
	err := s.read(ctx, "SpendRollupQuery", func(ctx context.Context) error {
		res = &store.SpendRollupResult{}
		rs, err := s.pool.Query(ctx, q, args...)
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
		rs.Close()
		if err := rs.Err(); err != nil {
			return err
		}
		if p.Group != store.GroupKey || p.Limit <= 0 || len(res.Rows) < p.Limit {
			return nil
		}
		var groups int
		if err := s.pool.QueryRow(ctx, "-- name: SpendRollupCount\nSELECT COUNT(DISTINCT key)"+where.String(), args...).Scan(&groups); err != nil {
			return err
		}
		res.LeftOut = groups - len(res.Rows)
		return nil
	})
	return res, sumRangeErr(err)
}

// SpendRollupAdd implements store.Store.
func (s *Store) SpendRollupAdd(ctx context.Context, rows []store.SpendRollup) error {
	if len(rows) == 0 {
		return nil
	}
	err := s.inTx(ctx, "SpendRollupAdd", func(tx *txn) error {
		b := tx.batch()
		queueRollups(b, rows)
		return tx.send(b)
	})
	var fe *store.FieldError
	if err = daySumErr(err, nil); errors.As(err, &fe) {
		return fe
	}
	return err
}

// SpendStanding implements store.Store.
func (s *Store) SpendStanding(ctx context.Context, p *store.SpendStandingParams) (*store.SpendStanding, error) {
	var out *store.SpendStanding
	err := s.read(ctx, "SpendStanding", func(ctx context.Context) error {
		out = store.NewSpendStanding()
		rs, err := s.pool.Query(ctx, qSpendStanding, storable(p.Day), p.Now)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var kind, dim, key, tier string
			var amount int64
			if err := rs.Scan(&kind, &dim, &key, &tier, &amount); err != nil {
				return err
			}
			if kind == "s" {
				out.Spent[dim][key] = amount
				continue
			}
			out.AddReserved(key, tier, amount)
		}
		return rs.Err()
	})
	return out, err
}

// SpendReserve implements store.Store. Reservers of one day take a
// transaction-level advisory lock first, so each sees the reservations of
// those before it (READ COMMITTED takes a new snapshot per statement).
func (s *Store) SpendReserve(ctx context.Context, p *store.SpendReserveParams) (*store.SpendReservation, error) {
	if p == nil {
		return nil, store.InvalidField("reservation", "missing")
	}
	if err := store.CheckSpendReservation(p.Reservation); err != nil {
		return nil, err
	}
	r := *p.Reservation
	if err := checkText("reservation_id", r.ID, "agent", r.Agent, "model", r.Model, "task_id", r.TaskID, "day", r.Day); err != nil {
		return nil, err
	}
	r.CreatedAt, r.ExpiresAt = norm(p.Now), norm(r.ExpiresAt)
	now := norm(p.Now)
	err := s.inTx(ctx, "SpendReserve", func(tx *txn) error {
		type standing struct{ spent, reserved int64 }
		got := make([]standing, len(p.Caps))
		b := tx.batch()
		b.Queue("SELECT pg_advisory_xact_lock($1)", lockID("spend/"+r.Day, s.cfg.Schema))
		b.Queue(qReservationDropExpired, now)
		for i, c := range p.Caps {
			if c.CapMicros <= 0 {
				continue
			}
			b.Queue(qSpendScope, store.ScopeDimension(c.Scope), r.Day, storable(c.Key), now, c.Scope).QueryRow(func(row pgx.Row) error {
				return row.Scan(&got[i].spent, &got[i].reserved)
			})
		}
		if err := tx.send(b); err != nil {
			return err
		}
		for i, c := range p.Caps {
			if err := store.CheckCap(c, got[i].spent, got[i].reserved, r.EstimateMicros); err != nil {
				return err
			}
		}
		inserted := false
		err := tx.commit(func(b *pgx.Batch) {
			b.Queue(qReservationInsert, r.ID, r.Agent, r.Tier, r.Model, r.TaskID, r.EstimateMicros, r.Day, r.CreatedAt, r.ExpiresAt).
				Exec(func(ct pgconn.CommandTag) error {
					inserted = ct.RowsAffected() == 1
					if !inserted {
						return fmt.Errorf("reservation %s: %w", r.ID, store.ErrAlreadyExists)
					}
					return nil
				})
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func scanReservation(row pgx.Row) (*store.SpendReservation, error) {
	var r store.SpendReservation
	if err := row.Scan(&r.ID, &r.Agent, &r.Tier, &r.Model, &r.TaskID, &r.EstimateMicros, &r.Day, &r.CreatedAt, &r.ExpiresAt); err != nil {
		return nil, err
	}
	r.CreatedAt, r.ExpiresAt = r.CreatedAt.UTC(), r.ExpiresAt.UTC()
	return &r, nil
}

// SpendRelease implements store.Store.
func (s *Store) SpendRelease(ctx context.Context, p *store.SpendReleaseParams) (*store.SpendReservation, error) {
	if !pgText(p.ID) {
		return nil, fmt.Errorf("reservation %s: %w", p.ID, store.ErrNotFound)
	}
	var out *store.SpendReservation
	err := s.inTx(ctx, "SpendRelease", func(tx *txn) error {
		out = nil
		b := tx.batch()
		b.Queue(qReservationDelete, p.ID).Query(func(rs pgx.Rows) error {
			for rs.Next() {
				r, err := scanReservation(rs)
				if err != nil {
					return err
				}
				out = r
			}
			return rs.Err()
		})
		if err := tx.send(b); err != nil {
			return err
		}
		if out == nil {
			return fmt.Errorf("reservation %s: %w", p.ID, store.ErrNotFound)
		}
		return nil
	})
	return out, err
}

// SpendReservationGet implements store.Store.
func (s *Store) SpendReservationGet(ctx context.Context, id string) (*store.SpendReservation, error) {
	if !pgText(id) {
		return nil, fmt.Errorf("reservation %s: %w", id, store.ErrNotFound)
	}
	var out *store.SpendReservation
	err := s.read(ctx, "SpendReservationGet", func(ctx context.Context) error {
		var err error
		out, err = scanReservation(s.pool.QueryRow(ctx, qReservationGet, id))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("reservation %s: %w", id, store.ErrNotFound)
	}
	return out, err
}

// BudgetSet implements store.Store.
func (s *Store) BudgetSet(ctx context.Context, b *store.Budget) (*store.Budget, error) {
	if err := store.CheckBudget(b); err != nil {
		return nil, err
	}
	if err := checkText("budget.key", b.Key); err != nil {
		return nil, err
	}
	out := *b
	out.UpdatedAt = norm(b.UpdatedAt)
	err := s.inTx(ctx, "BudgetSet", func(tx *txn) error {
		bt := tx.batch()
		bt.Queue(qBudgetSet, out.Scope, out.Key, out.TargetMicros, out.AlertMicros, out.CapMicros, out.EmergencyMicros, out.UpdatedAt, out.Off)
		return tx.send(bt)
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// BudgetList implements store.Store.
func (s *Store) BudgetList(ctx context.Context) ([]*store.Budget, error) {
	var out []*store.Budget
	err := s.read(ctx, "BudgetList", func(ctx context.Context) error {
		out = nil
		rs, err := s.pool.Query(ctx, qBudgetList)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var b store.Budget
			if err := rs.Scan(&b.Scope, &b.Key, &b.TargetMicros, &b.AlertMicros, &b.CapMicros, &b.EmergencyMicros, &b.UpdatedAt, &b.Off); err != nil {
				return err
			}
			b.UpdatedAt = b.UpdatedAt.UTC()
			out = append(out, &b)
		}
		return rs.Err()
	})
	return out, err
}

// SpendAlertRaise implements store.Store.
func (s *Store) SpendAlertRaise(ctx context.Context, a *store.SpendAlert) (bool, error) {
	raised := false
	err := s.inTx(ctx, "SpendAlertRaise", func(tx *txn) error {
		b := tx.batch()
		b.Queue(qAlertRaise, storable(a.Day), a.Scope, storable(a.Key), a.ThresholdMicros, a.SpentMicros, norm(a.RaisedAt)).
			Exec(func(ct pgconn.CommandTag) error {
				raised = ct.RowsAffected() == 1
				return nil
			})
		return tx.send(b)
	})
	return raised, err
}

// SpendAlertList implements store.Store.
func (s *Store) SpendAlertList(ctx context.Context, day string) ([]*store.SpendAlert, error) {
	var out []*store.SpendAlert
	err := s.read(ctx, "SpendAlertList", func(ctx context.Context) error {
		out = nil
		rs, err := s.pool.Query(ctx, qAlertList, storable(day))
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var a store.SpendAlert
			if err := rs.Scan(&a.Day, &a.Scope, &a.Key, &a.ThresholdMicros, &a.SpentMicros, &a.RaisedAt); err != nil {
				return err
			}
			a.RaisedAt = a.RaisedAt.UTC()
			out = append(out, &a)
		}
		return rs.Err()
	})
	return out, err
}

func scanStop(row pgx.Row) (*store.EmergencyStop, error) {
	var e store.EmergencyStop
	var at pgtype.Timestamptz
	if err := row.Scan(&e.Stopped, &e.Reason, &e.StoppedBy, &at, &e.PausedQueue, &e.PausedTasks); err != nil {
		return nil, err
	}
	e.StoppedAt = fromTS(at)
	return &e, nil
}

// EmergencyStopGet implements store.Store.
func (s *Store) EmergencyStopGet(ctx context.Context) (*store.EmergencyStop, error) {
	var out *store.EmergencyStop
	err := s.read(ctx, "EmergencyStopGet", func(ctx context.Context) error {
		var err error
		out, err = scanStop(s.pool.QueryRow(ctx, qStopGet))
		return err
	})
	return out, err
}

// EmergencyStopStart implements store.Store.
func (s *Store) EmergencyStopStart(ctx context.Context, p *store.EmergencyStopStartParams) (*store.EmergencyStop, bool, error) {
	if err := checkText("reason", p.Reason, "stopped_by", p.StoppedBy); err != nil {
		return nil, false, err
	}
	var (
		out     *store.EmergencyStop
		started bool
	)
	err := s.inTx(ctx, "EmergencyStopStart", func(tx *txn) error {
		b := tx.batch()
		b.Queue(qStopStart, p.Reason, p.StoppedBy, norm(p.Now)).Exec(func(ct pgconn.CommandTag) error {
			started = ct.RowsAffected() == 1
			return nil
		})
		b.Queue(qStopGet).QueryRow(func(row pgx.Row) error {
			var err error
			out, err = scanStop(row)
			return err
		})
		return tx.send(b)
	})
	if err != nil {
		return nil, false, err
	}
	return out, started, nil
}

// EmergencyStopNotePaused implements store.Store.
func (s *Store) EmergencyStopNotePaused(ctx context.Context, p *store.EmergencyStopNotePausedParams) error {
	return s.inTx(ctx, "EmergencyStopNotePaused", func(tx *txn) error {
		b := tx.batch()
		b.Queue(qStopNote, p.PausedQueue, p.PausedTasks)
		return tx.send(b)
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
	err := s.inTx(ctx, "EmergencyStopRearm", func(tx *txn) error {
		b := tx.batch()
		b.Queue(qStopRearmGet).QueryRow(func(row pgx.Row) error {
			var err error
			prev, err = scanStop(row)
			return err
		})
		if bu := p.Budget; bu != nil {
			b.Queue(qBudgetSetIfStopped, bu.Scope, bu.Key, bu.TargetMicros, bu.AlertMicros, bu.CapMicros, bu.EmergencyMicros,
				norm(bu.UpdatedAt), bu.Off)
		}
		b.Queue(qStopRearm)
		return tx.send(b)
	})
	return prev, err
}
