package sqlite

import (
	"context"
	"encoding/json"
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
