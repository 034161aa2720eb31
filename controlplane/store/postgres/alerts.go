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

const alertCols = `id, rule, fingerprint, labels::text, state, severity, summary, value, active_since, fired_at,
	resolved_at, last_notified_at, acked_by, acked_at, updated_at`

// The ack survives an upsert of the same occurrence and is cleared by a new
// one (a new id).
const qAlertUpsert = `-- name: AlertSave
INSERT INTO alerts (id, rule, fingerprint, labels, state, severity, summary, value, active_since, fired_at,
	resolved_at, last_notified_at, acked_by, acked_at, updated_at)
VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $11, $12, '', NULL, $13)
ON CONFLICT (rule, fingerprint) DO UPDATE SET
	acked_by = CASE WHEN alerts.id = excluded.id THEN alerts.acked_by ELSE '' END,
	acked_at = CASE WHEN alerts.id = excluded.id THEN alerts.acked_at ELSE NULL END,
	id = excluded.id, labels = excluded.labels, state = excluded.state, severity = excluded.severity,
	summary = excluded.summary, value = excluded.value, active_since = excluded.active_since,
	fired_at = excluded.fired_at, resolved_at = excluded.resolved_at,
	last_notified_at = excluded.last_notified_at, updated_at = excluded.updated_at`

const (
	qAlertDelete = `-- name: AlertDelete
DELETE FROM alerts WHERE id = ANY($1::text[])`
	qAlertPrune = `-- name: AlertPrune
DELETE FROM alerts WHERE state = 'RESOLVED' AND resolved_at < $1`
	qSilencePrune = `-- name: SilencePrune
DELETE FROM silences WHERE ends_at < $1`
	qAlertGetForUpdate = `-- name: AlertGet
SELECT ` + alertCols + ` FROM alerts WHERE id = $1 FOR UPDATE`
	qAlertAck = `-- name: AlertAck
UPDATE alerts SET acked_by = $2, acked_at = $3 WHERE id = $1`
	silenceCols    = `id, rule, matchers::text, created_by, reason, starts_at, ends_at, created_at`
	qSilenceInsert = `-- name: SilenceCreate
INSERT INTO silences (id, rule, matchers, created_by, reason, starts_at, ends_at, created_at)
VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8)`
	qSilenceGetForUpdate = `-- name: SilenceGet
SELECT ` + silenceCols + ` FROM silences WHERE id = $1 FOR UPDATE`
	qSilenceExpire = `-- name: SilenceExpire
UPDATE silences SET ends_at = $2 WHERE id = $1`
)

// AlertSave implements store.Store.
func (s *Store) AlertSave(ctx context.Context, p *store.AlertSaveParams) error {
	if p == nil {
		return nil
	}
	if err := store.CheckAlerts(p.Alerts); err != nil {
		return err
	}
	labels := make([]string, len(p.Alerts))
	for i, a := range p.Alerts {
		labels[i] = jsonText(storableMap(a.Labels))
	}
	deletes := make([]string, len(p.DeleteIDs))
	for i, id := range p.DeleteIDs {
		deletes[i] = storable(id)
	}
	return s.inTx(ctx, "AlertSave", func(tx *txn) error {
		b := tx.batch()
		for i, a := range p.Alerts {
			b.Queue(qAlertUpsert, storable(a.ID), storable(a.Rule), storable(a.Fingerprint), labels[i], string(a.State),
				storable(a.Severity), storable(a.Summary), a.Value, ts(norm(a.ActiveSince)), ts(norm(a.FiredAt)),
				ts(norm(a.ResolvedAt)), ts(norm(a.LastNotifiedAt)), ts(norm(a.UpdatedAt)))
		}
		if len(deletes) > 0 {
			b.Queue(qAlertDelete, deletes)
		}
		if !p.PruneBefore.IsZero() {
			b.Queue(qAlertPrune, p.PruneBefore)
			b.Queue(qSilencePrune, p.PruneBefore)
		}
		return tx.send(b)
	})
}

// AlertList implements store.Store.
func (s *Store) AlertList(ctx context.Context, p *store.AlertListParams) ([]*store.Alert, error) {
	if p == nil {
		p = &store.AlertListParams{}
	}
	if !pgText(p.Rule) {
		return nil, nil // unstorable text matches nothing stored
	}
	var b strings.Builder
	b.WriteString("-- name: AlertList\nSELECT " + alertCols + " FROM alerts WHERE true")
	var args []any
	if len(p.States) > 0 {
		states := make([]string, len(p.States))
		for i, st := range p.States {
			states[i] = string(st)
		}
		args = append(args, states)
		fmt.Fprintf(&b, " AND state = ANY($%d::text[])", len(args))
	}
	if p.Rule != "" {
		args = append(args, p.Rule)
		fmt.Fprintf(&b, " AND rule = $%d", len(args))
	}
	if !p.ResolvedSince.IsZero() {
		args = append(args, p.ResolvedSince)
		fmt.Fprintf(&b, " AND (state <> 'RESOLVED' OR resolved_at >= $%d)", len(args))
	}
	b.WriteString(" ORDER BY rule, fingerprint")
	var out []*store.Alert
	err := s.read(ctx, "AlertList", func(ctx context.Context) error {
		rs, err := s.pool.Query(ctx, b.String(), args...)
		if err != nil {
			return err
		}
		out, err = scanAlerts(rs)
		return err
	})
	return out, err
}

// AlertAck implements store.Store.
func (s *Store) AlertAck(ctx context.Context, p *store.AlertAckParams) (*store.Alert, error) {
	if p == nil || p.ID == "" {
		return nil, store.InvalidField("id", "an alert id is required")
	}
	if !pgText(p.ID) {
		return nil, fmt.Errorf("alert %q: %w", p.ID, store.ErrNotFound)
	}
	var out *store.Alert
	err := s.inTx(ctx, "AlertAck", func(tx *txn) error {
		out = nil
		var got []*store.Alert
		b := tx.batch()
		b.Queue(qAlertGetForUpdate, p.ID).Query(func(rs pgx.Rows) (err error) {
			got, err = scanAlerts(rs)
			return err
		})
		if err := tx.send(b); err != nil {
			return err
		}
		if len(got) == 0 {
			return fmt.Errorf("alert %q: %w", p.ID, store.ErrNotFound)
		}
		a := got[0]
		switch {
		case a.State == store.AlertResolved:
			return store.AlertResolvedErr(p.ID)
		case a.AckedBy == "":
			a.AckedBy, a.AckedAt = storable(p.By), norm(p.Now)
			b := tx.batch()
			b.Queue(qAlertAck, p.ID, a.AckedBy, ts(a.AckedAt))
			if err := tx.send(b); err != nil {
				return err
			}
		}
		out = a
		return nil
	})
	return out, err
}

func scanAlerts(rs pgx.Rows) ([]*store.Alert, error) {
	defer rs.Close()
	var out []*store.Alert
	for rs.Next() {
		var (
			a                                            store.Alert
			labels, state                                string
			active, fired, resolved, notified, acked, up pgtype.Timestamptz
		)
		if err := rs.Scan(&a.ID, &a.Rule, &a.Fingerprint, &labels, &state, &a.Severity, &a.Summary, &a.Value,
			&active, &fired, &resolved, &notified, &a.AckedBy, &acked, &up); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(labels), &a.Labels); err != nil {
			return nil, err
		}
		a.State = store.AlertState(state)
		a.ActiveSince, a.FiredAt, a.ResolvedAt = fromTS(active), fromTS(fired), fromTS(resolved)
		a.LastNotifiedAt, a.AckedAt, a.UpdatedAt = fromTS(notified), fromTS(acked), fromTS(up)
		out = append(out, &a)
	}
	return out, rs.Err()
}

// storableMap is m with every key and value made storable (never nil, so
// it encodes as {}).
func storableMap(m map[string]string) map[string]string {
	clean := make(map[string]string, len(m))
	for k, v := range m {
		clean[storable(k)] = storable(v)
	}
	return clean
}

// SilenceCreate implements store.Store.
func (s *Store) SilenceCreate(ctx context.Context, p *store.SilenceCreateParams) (*store.Silence, error) {
	if p == nil {
		return nil, store.InvalidField("silence", "is missing")
	}
	if err := store.CheckSilence(p.Silence); err != nil {
		return nil, err
	}
	x := *p.Silence
	if err := checkText("id", x.ID, "rule", x.Rule); err != nil {
		return nil, err
	}
	x.CreatedBy, x.Reason = storable(x.CreatedBy), storable(x.Reason)
	x.StartsAt, x.EndsAt, x.CreatedAt = norm(x.StartsAt), norm(x.EndsAt), norm(p.Now)
	x.Matchers = storableMap(x.Matchers)
	err := s.inTx(ctx, "SilenceCreate", func(tx *txn) error {
		b := tx.batch()
		b.Queue(qSilenceInsert, x.ID, x.Rule, jsonText(x.Matchers), x.CreatedBy, x.Reason, x.StartsAt, x.EndsAt, x.CreatedAt)
		if err := tx.send(b); err != nil {
			return dbErr("SilenceCreate", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &x, nil
}

// SilenceList implements store.Store.
func (s *Store) SilenceList(ctx context.Context, p *store.SilenceListParams) ([]*store.Silence, error) {
	if p == nil {
		p = &store.SilenceListParams{}
	}
	query := "-- name: SilenceList\nSELECT " + silenceCols + " FROM silences"
	var args []any
	if !p.ActiveAt.IsZero() {
		query += " WHERE starts_at <= $1 AND ends_at > $1"
		args = append(args, p.ActiveAt)
	}
	query += " ORDER BY starts_at, id"
	var out []*store.Silence
	err := s.read(ctx, "SilenceList", func(ctx context.Context) error {
		rs, err := s.pool.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		out, err = scanSilences(rs)
		return err
	})
	return out, err
}

// SilenceExpire implements store.Store.
func (s *Store) SilenceExpire(ctx context.Context, p *store.SilenceExpireParams) (*store.Silence, error) {
	if p == nil || p.ID == "" {
		return nil, store.InvalidField("id", "a silence id is required")
	}
	if !pgText(p.ID) {
		return nil, fmt.Errorf("silence %q: %w", p.ID, store.ErrNotFound)
	}
	var out *store.Silence
	err := s.inTx(ctx, "SilenceExpire", func(tx *txn) error {
		out = nil
		var got []*store.Silence
		b := tx.batch()
		b.Queue(qSilenceGetForUpdate, p.ID).Query(func(rs pgx.Rows) (err error) {
			got, err = scanSilences(rs)
			return err
		})
		if err := tx.send(b); err != nil {
			return err
		}
		if len(got) == 0 {
			return fmt.Errorf("silence %q: %w", p.ID, store.ErrNotFound)
		}
		x := got[0]
		if now := norm(p.Now); x.EndsAt.After(now) {
			x.EndsAt = now
			b := tx.batch()
			b.Queue(qSilenceExpire, p.ID, now)
			if err := tx.send(b); err != nil {
				return err
			}
		}
		out = x
		return nil
	})
	return out, err
}

func scanSilences(rs pgx.Rows) ([]*store.Silence, error) {
	defer rs.Close()
	var out []*store.Silence
	for rs.Next() {
		var (
			x        store.Silence
			matchers string
		)
		if err := rs.Scan(&x.ID, &x.Rule, &matchers, &x.CreatedBy, &x.Reason, &x.StartsAt, &x.EndsAt, &x.CreatedAt); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(matchers), &x.Matchers); err != nil {
			return nil, err
		}
		x.StartsAt, x.EndsAt, x.CreatedAt = x.StartsAt.UTC(), x.EndsAt.UTC(), x.CreatedAt.UTC()
		out = append(out, &x)
	}
	return out, rs.Err()
}
