package sqlite

import (
	"context"
	"strings"

	"github.com/factory/factory/controlplane/store"
)

const (
	qTelemetryInsert = `INSERT INTO telemetry_samples (host, time, reading) VALUES (?, ?, ?)`
	qTelemetryPrune  = `DELETE FROM telemetry_samples WHERE time < ?`
)

// TelemetryAppend implements store.Store.
func (s *Store) TelemetryAppend(ctx context.Context, p *store.TelemetryAppendParams) error {
	if p == nil || len(p.Samples) == 0 {
		return nil
	}
	if err := store.CheckTelemetrySamples(p.Samples); err != nil {
		return err
	}
	return s.writeTx(ctx, "TelemetryAppend", func(w *wtx) error {
		for _, x := range p.Samples {
			if _, err := w.exec(qTelemetryInsert, x.Host, toNanos(norm(x.Time)), x.JSON); err != nil {
				return err
			}
		}
		return nil
	})
}

// TelemetryList implements store.Store.
func (s *Store) TelemetryList(ctx context.Context, p *store.TelemetryListParams) ([]*store.TelemetrySample, error) {
	if p == nil {
		p = &store.TelemetryListParams{}
	}
	var b strings.Builder
	b.WriteString("SELECT host, time, reading FROM telemetry_samples WHERE host = ?")
	args := []any{p.Host}
	if !p.Since.IsZero() {
		b.WriteString(" AND time >= ?")
		args = append(args, toNanos(p.Since))
	}
	if !p.Until.IsZero() {
		b.WriteString(" AND time < ?")
		args = append(args, toNanos(p.Until))
	}
	b.WriteString(" ORDER BY time, seq")
	if p.Limit > 0 {
		b.WriteString(" LIMIT ?")
		args = append(args, p.Limit)
	}
	st, err := s.rs.get(ctx, b.String())
	if err != nil {
		return nil, dbErr("TelemetryList", err)
	}
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, dbErr("TelemetryList", err)
	}
	defer rs.Close()
	var out []*store.TelemetrySample
	for rs.Next() {
		var (
			x  store.TelemetrySample
			at int64
		)
		if err := rs.Scan(&x.Host, &at, &x.JSON); err != nil {
			return nil, dbErr("TelemetryList", err)
		}
		x.Time = fromNanos(at)
		out = append(out, &x)
	}
	return out, dbErr("TelemetryList", rs.Err())
}

// TelemetryPrune implements store.Store.
func (s *Store) TelemetryPrune(ctx context.Context, p *store.TelemetryPruneParams) (int, error) {
	if p == nil || p.Before.IsZero() {
		return 0, nil
	}
	deleted := 0
	err := s.writeTx(ctx, "TelemetryPrune", func(w *wtx) error {
		res, err := w.exec(qTelemetryPrune, toNanos(p.Before))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return dbErr(w.op, err)
		}
		deleted = int(n)
		return nil
	})
	return deleted, err
}
