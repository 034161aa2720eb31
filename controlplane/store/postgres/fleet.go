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
