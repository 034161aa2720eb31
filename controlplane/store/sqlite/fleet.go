package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/factory/factory/controlplane/store"
)

const qFleetEventInsert = `INSERT INTO fleet_events (id, host, kind, time, attributes) VALUES (?, ?, ?, ?, ?)
	ON CONFLICT (id) DO NOTHING`

// FleetEventsAppend implements store.Store.
func (s *Store) FleetEventsAppend(ctx context.Context, p *store.FleetEventsAppendParams) (int, error) {
	if p == nil || len(p.Events) == 0 {
		return 0, nil
	}
	if err := store.CheckFleetEvents(p.Events); err != nil {
		return 0, err
	}
	attrs := make([]string, len(p.Events))
	for i, e := range p.Events {
		b, err := json.Marshal(nonNilAttrs(e.Attributes))
		if err != nil {
			return 0, store.InvalidField("attributes", "event %d: %v", i, err)
		}
		attrs[i] = string(b)
	}
	added := 0
	err := s.writeTx(ctx, "FleetEventsAppend", func(w *wtx) error {
		added = 0
		for i, e := range p.Events {
			res, err := w.exec(qFleetEventInsert, e.ID, e.Host, e.Kind, toNanos(norm(e.Time)), attrs[i])
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return dbErr(w.op, err)
			}
			added += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return added, nil
}

// FleetEventsList implements store.Store.
func (s *Store) FleetEventsList(ctx context.Context, p *store.FleetEventsListParams) ([]*store.FleetEvent, error) {
	if p == nil {
		p = &store.FleetEventsListParams{}
	}
	var b strings.Builder
	b.WriteString("SELECT id, host, kind, time, attributes FROM fleet_events WHERE 1 = 1")
	var args []any
	if p.Host != "" {
		b.WriteString(" AND host = ?")
		args = append(args, p.Host)
	}
	if p.Kind != "" {
		b.WriteString(" AND kind = ?")
		args = append(args, p.Kind)
	}
	if !p.Since.IsZero() {
		b.WriteString(" AND time >= ?")
		args = append(args, toNanos(p.Since))
	}
	b.WriteString(" ORDER BY time, id")
	if p.Limit > 0 {
		b.WriteString(" LIMIT ?")
		args = append(args, p.Limit)
	}
	st, err := s.rs.get(ctx, b.String())
	if err != nil {
		return nil, dbErr("FleetEventsList", err)
	}
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, dbErr("FleetEventsList", err)
	}
	defer rs.Close()
	var out []*store.FleetEvent
	for rs.Next() {
		var (
			e     store.FleetEvent
			at    int64
			attrs string
		)
		if err := rs.Scan(&e.ID, &e.Host, &e.Kind, &at, &attrs); err != nil {
			return nil, dbErr("FleetEventsList", err)
		}
		e.Time = fromNanos(at)
		if err := json.Unmarshal([]byte(attrs), &e.Attributes); err != nil {
			return nil, dbErr("FleetEventsList", err)
		}
		out = append(out, &e)
	}
	return out, dbErr("FleetEventsList", rs.Err())
}

func nonNilAttrs(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

const (
	placementCols    = `agent, host, placed_by, placed_at`
	qPlacementGet    = `SELECT ` + placementCols + ` FROM agent_placements WHERE agent = ?`
	qPlacementUpsert = `INSERT INTO agent_placements (agent, host, placed_by, placed_at) VALUES (?, ?, ?, ?)
	ON CONFLICT (agent) DO UPDATE SET host = excluded.host, placed_by = excluded.placed_by, placed_at = excluded.placed_at`
	qPlacementDelete = `DELETE FROM agent_placements WHERE agent = ?`
)

func scanPlacement(sc scanner) (*store.Placement, error) {
	var (
		p  store.Placement
		at int64
	)
	if err := sc.Scan(&p.Agent, &p.Host, &p.PlacedBy, &at); err != nil {
		return nil, err
	}
	p.PlacedAt = fromNanos(at)
	return &p, nil
}

// placement reads agent's placement inside a write transaction; nil
// when it has none.
func (w *wtx) placement(agent string) (*store.Placement, error) {
	st, err := w.stmt(qPlacementGet)
	if err != nil {
		return nil, dbErr(w.op, err)
	}
	p, err := scanPlacement(st.QueryRowContext(w.ctx, agent))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return p, dbErr(w.op, err)
}

// PlacementSet implements store.Store.
func (s *Store) PlacementSet(ctx context.Context, p *store.PlacementSetParams) (before, after *store.Placement, err error) {
	if err := store.CheckPlacementSet(p); err != nil {
		return nil, nil, err
	}
	after = &store.Placement{Agent: p.Agent, Host: p.Host, PlacedBy: p.PlacedBy, PlacedAt: norm(p.Now)}
	err = s.writeTx(ctx, "PlacementSet", func(w *wtx) error {
		var err error
		if before, err = w.placement(p.Agent); err != nil {
			return err
		}
		_, err = w.exec(qPlacementUpsert, after.Agent, after.Host, after.PlacedBy, toNanos(after.PlacedAt))
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return before, after, nil
}

// PlacementDelete implements store.Store.
func (s *Store) PlacementDelete(ctx context.Context, p *store.PlacementDeleteParams) (*store.Placement, error) {
	if p == nil || p.Agent == "" {
		return nil, store.InvalidField("agent", "is required")
	}
	var out *store.Placement
	err := s.writeTx(ctx, "PlacementDelete", func(w *wtx) error {
		var err error
		if out, err = w.placement(p.Agent); err != nil {
			return err
		}
		if out == nil {
			return fmt.Errorf("agent %q has no placement: %w", p.Agent, store.ErrNotFound)
		}
		_, err = w.exec(qPlacementDelete, p.Agent)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PlacementList implements store.Store.
func (s *Store) PlacementList(ctx context.Context, p *store.PlacementListParams) (*store.PlacementListResult, error) {
	if p == nil {
		p = &store.PlacementListParams{}
	}
	after, err := store.ParsePlacementCursor(p.Cursor)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("SELECT " + placementCols + " FROM agent_placements WHERE agent > ?")
	args := []any{after}
	if p.Host != "" {
		b.WriteString(" AND host = ?")
		args = append(args, p.Host)
	}
	if p.Agents != nil {
		b.WriteString(" AND agent IN (SELECT value FROM json_each(?))")
		args = append(args, jsonText(p.Agents))
	}
	limit := pageLimit(p.Limit)
	b.WriteString(" ORDER BY agent LIMIT ?")
	args = append(args, limit)
	st, err := s.rs.get(ctx, b.String())
	if err != nil {
		return nil, dbErr("PlacementList", err)
	}
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, dbErr("PlacementList", err)
	}
	defer rs.Close()
	res := &store.PlacementListResult{}
	for rs.Next() {
		pl, err := scanPlacement(rs)
		if err != nil {
			return nil, dbErr("PlacementList", err)
		}
		if limit > 0 && len(res.Placements) == p.Limit {
			res.NextCursor = store.PlacementCursor(res.Placements[len(res.Placements)-1].Agent)
			break
		}
		res.Placements = append(res.Placements, pl)
	}
	if err := rs.Err(); err != nil {
		return nil, dbErr("PlacementList", err)
	}
	return res, nil
}
