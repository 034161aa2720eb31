package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

// ON CONFLICT DO NOTHING also skips an id repeated within one batch, so a
// replay that overlaps itself still counts each id once.
const qFleetEventInsert = `-- name: FleetEventsAppend
INSERT INTO fleet_events (id, host, kind, time, attributes)
SELECT id, host, kind, time, attrs::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) AS e(id, host, kind, time, attrs)
ON CONFLICT (id) DO NOTHING
RETURNING id`

// FleetEventsAppend implements store.Store.
func (s *Store) FleetEventsAppend(ctx context.Context, p *store.FleetEventsAppendParams) (int, error) {
	if p == nil || len(p.Events) == 0 {
		return 0, nil
	}
	if err := store.CheckFleetEvents(p.Events); err != nil {
		return 0, err
	}
	n := len(p.Events)
	var (
		ids, hosts, kinds, attrs = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		times                    = make([]pgtype.Timestamptz, n)
	)
	for i, e := range p.Events {
		clean := make(map[string]string, len(e.Attributes))
		for k, v := range e.Attributes {
			clean[storable(k)] = storable(v)
		}
		b, err := json.Marshal(clean)
		if err != nil {
			return 0, store.InvalidField("attributes", "event %d: %v", i, err)
		}
		ids[i], hosts[i], kinds[i], attrs[i] = storable(e.ID), storable(e.Host), storable(e.Kind), string(b)
		times[i] = pgtype.Timestamptz{Time: norm(e.Time), Valid: true}
	}
	added := 0
	err := s.inTx(ctx, "FleetEventsAppend", func(tx *txn) error {
		added = 0
		b := tx.batch()
		b.Queue(qFleetEventInsert, ids, hosts, kinds, times, attrs).Query(func(rs pgx.Rows) error {
			for rs.Next() {
				added++
			}
			return rs.Err()
		})
		return tx.send(b)
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
	if !pgText(p.Host) || !pgText(p.Kind) {
		return nil, nil // unstorable text matches nothing stored
	}
	var b strings.Builder
	b.WriteString("-- name: FleetEventsList\nSELECT id, host, kind, time, attributes::text FROM fleet_events WHERE true")
	var args []any
	if p.Host != "" {
		args = append(args, p.Host)
		fmt.Fprintf(&b, " AND host = $%d", len(args))
	}
	if p.Kind != "" {
		args = append(args, p.Kind)
		fmt.Fprintf(&b, " AND kind = $%d", len(args))
	}
	if !p.Since.IsZero() {
		args = append(args, p.Since)
		fmt.Fprintf(&b, " AND time >= $%d", len(args))
	}
	b.WriteString(" ORDER BY time, id")
	if p.Limit > 0 {
		args = append(args, p.Limit)
		fmt.Fprintf(&b, " LIMIT $%d", len(args))
	}
	var out []*store.FleetEvent
	err := s.read(ctx, "FleetEventsList", func(ctx context.Context) error {
		out = nil
		rs, err := s.pool.Query(ctx, b.String(), args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
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
			out = append(out, &e)
		}
		return rs.Err()
	})
	return out, err
}

// Placements sort by agent in byte order (COLLATE "C"), as SQLite sorts
// them, so pages and cursors agree across drivers.
const (
	placementCols = `agent, host, placed_by, placed_at`
	qPlacementGet = `-- name: PlacementGet
SELECT ` + placementCols + ` FROM agent_placements WHERE agent = $1 FOR UPDATE`
	qPlacementUpsert = `-- name: PlacementSet
INSERT INTO agent_placements (agent, host, placed_by, placed_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (agent) DO UPDATE SET host = excluded.host, placed_by = excluded.placed_by, placed_at = excluded.placed_at`
	qPlacementDelete = `-- name: PlacementDelete
DELETE FROM agent_placements WHERE agent = $1 RETURNING ` + placementCols
)

func scanPlacement(row pgx.Row) (*store.Placement, error) {
	var p store.Placement
	if err := row.Scan(&p.Agent, &p.Host, &p.PlacedBy, &p.PlacedAt); err != nil {
		return nil, err
	}
	p.PlacedAt = p.PlacedAt.UTC()
	return &p, nil
}

// PlacementSet implements store.Store.
func (s *Store) PlacementSet(ctx context.Context, p *store.PlacementSetParams) (before, after *store.Placement, err error) {
	if err := store.CheckPlacementSet(p); err != nil {
		return nil, nil, err
	}
	if err := checkText("agent", p.Agent, "host", p.Host, "placed_by", p.PlacedBy); err != nil {
		return nil, nil, err
	}
	after = &store.Placement{Agent: p.Agent, Host: p.Host, PlacedBy: p.PlacedBy, PlacedAt: norm(p.Now)}
	err = s.inTx(ctx, "PlacementSet", func(tx *txn) error {
		before = nil
		b := tx.batch()
		// The row lock makes the before this call reports the one it
		// replaced, even with another replica placing the same agent.
		b.Queue(qPlacementGet, p.Agent).Query(func(rs pgx.Rows) error {
			for rs.Next() {
				pl, err := scanPlacement(rs)
				if err != nil {
					return err
				}
				before = pl
			}
			return rs.Err()
		})
		b.Queue(qPlacementUpsert, after.Agent, after.Host, after.PlacedBy, after.PlacedAt)
		return tx.send(b)
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
	notFound := fmt.Errorf("agent %q has no placement: %w", p.Agent, store.ErrNotFound)
	if !pgText(p.Agent) {
		return nil, notFound
	}
	var out *store.Placement
	err := s.inTx(ctx, "PlacementDelete", func(tx *txn) error {
		out = nil
		b := tx.batch()
		b.Queue(qPlacementDelete, p.Agent).Query(func(rs pgx.Rows) error {
			for rs.Next() {
				pl, err := scanPlacement(rs)
				if err != nil {
					return err
				}
				out = pl
			}
			return rs.Err()
		})
		return tx.send(b)
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		return nil, notFound
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
	res := &store.PlacementListResult{}
	if !pgText(after) || !pgText(p.Host) {
		return res, nil // unstorable text matches nothing stored
	}
	var b strings.Builder
	b.WriteString(`-- name: PlacementList` + "\n" + `SELECT ` + placementCols + ` FROM agent_placements WHERE agent COLLATE "C" > $1`)
	args := []any{after}
	if p.Host != "" {
		args = append(args, p.Host)
		fmt.Fprintf(&b, " AND host = $%d", len(args))
	}
	if p.Agents != nil {
		args = append(args, validTexts(p.Agents))
		fmt.Fprintf(&b, " AND agent = ANY($%d::text[])", len(args))
	}
	b.WriteString(` ORDER BY agent COLLATE "C"`)
	if p.Limit > 0 {
		args = append(args, p.Limit+1)
		fmt.Fprintf(&b, " LIMIT $%d", len(args))
	}
	err = s.read(ctx, "PlacementList", func(ctx context.Context) error {
		res.Placements, res.NextCursor = nil, ""
		rs, err := s.pool.Query(ctx, b.String(), args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			pl, err := scanPlacement(rs)
			if err != nil {
				return err
			}
			if p.Limit > 0 && len(res.Placements) == p.Limit {
				res.NextCursor = store.PlacementCursor(res.Placements[len(res.Placements)-1].Agent)
				break
			}
			res.Placements = append(res.Placements, pl)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}
