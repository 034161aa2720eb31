package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

const qTelemetryInsert = `-- name: TelemetryAppend
INSERT INTO telemetry_samples (host, time, reading)
SELECT host, time, reading
FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS s(host, time, reading)`

const qTelemetryPrune = `-- name: TelemetryPrune
DELETE FROM telemetry_samples WHERE time < $1`

// TelemetryAppend implements store.Store.
func (s *Store) TelemetryAppend(ctx context.Context, p *store.TelemetryAppendParams) error {
	if p == nil || len(p.Samples) == 0 {
		return nil
	}
	if err := store.CheckTelemetrySamples(p.Samples); err != nil {
		return err
	}
	n := len(p.Samples)
	hosts, readings := make([]string, n), make([]string, n)
	times := make([]pgtype.Timestamptz, n)
	for i, x := range p.Samples {
		// A reading is the sidecar's text; a NUL byte in it must not lose
		// the sample, as SQLite would keep it.
		hosts[i], readings[i] = storable(x.Host), storable(x.JSON)
		times[i] = pgtype.Timestamptz{Time: norm(x.Time), Valid: true}
	}
	return s.inTx(ctx, "TelemetryAppend", func(tx *txn) error {
		b := tx.batch()
		b.Queue(qTelemetryInsert, hosts, times, readings)
		return tx.send(b)
	})
}

// TelemetryList implements store.Store.
func (s *Store) TelemetryList(ctx context.Context, p *store.TelemetryListParams) ([]*store.TelemetrySample, error) {
	if p == nil {
		p = &store.TelemetryListParams{}
	}
	if !pgText(p.Host) {
		return nil, nil // unstorable text matches nothing stored
	}
	var b strings.Builder
	b.WriteString("-- name: TelemetryList\nSELECT host, time, reading FROM telemetry_samples WHERE host = $1")
	args := []any{p.Host}
	if !p.Since.IsZero() {
		args = append(args, p.Since)
		fmt.Fprintf(&b, " AND time >= $%d", len(args))
	}
	if !p.Until.IsZero() {
		args = append(args, p.Until)
		fmt.Fprintf(&b, " AND time < $%d", len(args))
	}
	b.WriteString(" ORDER BY time, seq")
	if p.Limit > 0 {
		args = append(args, p.Limit)
		fmt.Fprintf(&b, " LIMIT $%d", len(args))
	}
	var out []*store.TelemetrySample
	err := s.read(ctx, "TelemetryList", func(ctx context.Context) error {
		out = nil
		rs, err := s.pool.Query(ctx, b.String(), args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var x store.TelemetrySample
			if err := rs.Scan(&x.Host, &x.Time, &x.JSON); err != nil {
				return err
			}
			x.Time = x.Time.UTC()
			out = append(out, &x)
		}
		return rs.Err()
	})
	return out, err
}

// TelemetryPrune implements store.Store.
func (s *Store) TelemetryPrune(ctx context.Context, p *store.TelemetryPruneParams) (int, error) {
	if p == nil || p.Before.IsZero() {
		return 0, nil
	}
	deleted := 0
	err := s.inTx(ctx, "TelemetryPrune", func(tx *txn) error {
		deleted = 0
		b := tx.batch()
		b.Queue(qTelemetryPrune, p.Before).Exec(func(ct pgconn.CommandTag) error {
			deleted = int(ct.RowsAffected())
			return nil
		})
		return tx.send(b)
	})
	return deleted, err
}
