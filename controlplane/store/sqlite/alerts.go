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

const alertCols = `id, rule, fingerprint, labels, state, severity, summary, value, active_since, fired_at,
	resolved_at, last_notified_at, acked_by, acked_at, updated_at`

const (
	// The ack survives an upsert of the same occurrence and is cleared by a
	// new one (a new id).
	qAlertUpsert = `INSERT INTO alerts (` + alertCols + `)
	VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, '', 0, ?13)
	ON CONFLICT (rule, fingerprint) DO UPDATE SET
		acked_by = CASE WHEN alerts.id = excluded.id THEN alerts.acked_by ELSE '' END,
		acked_at = CASE WHEN alerts.id = excluded.id THEN alerts.acked_at ELSE 0 END,
		id = excluded.id, labels = excluded.labels, state = excluded.state, severity = excluded.severity,
		summary = excluded.summary, value = excluded.value, active_since = excluded.active_since,
		fired_at = excluded.fired_at, resolved_at = excluded.resolved_at,
		last_notified_at = excluded.last_notified_at, updated_at = excluded.updated_at`
	qAlertDelete         = `DELETE FROM alerts WHERE id = ?`
	qAlertPrune          = `DELETE FROM alerts WHERE state = 'RESOLVED' AND resolved_at < ?`
	qSilencePrune        = `DELETE FROM silences WHERE ends_at < ?`
	qAlertGet            = `SELECT ` + alertCols + ` FROM alerts WHERE id = ?`
	qAlertAck            = `UPDATE alerts SET acked_by = ?2, acked_at = ?3 WHERE id = ?1`
	silenceCols          = `id, rule, matchers, created_by, reason, starts_at, ends_at, created_at`
	qSilenceInsert       = `INSERT INTO silences (` + silenceCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
	qSilenceGet          = `SELECT ` + silenceCols + ` FROM silences WHERE id = ?`
	qSilenceExpire       = `UPDATE silences SET ends_at = ?2 WHERE id = ?1 AND ends_at > ?2`
	qSilenceListAll      = `SELECT ` + silenceCols + ` FROM silences ORDER BY starts_at, id`
	qSilenceListActiveAt = `SELECT ` + silenceCols + ` FROM silences WHERE starts_at <= ?1 AND ends_at > ?1 ORDER BY starts_at, id`
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
		labels[i] = jsonText(nonNilAttrs(a.Labels))
	}
	return s.writeTx(ctx, "AlertSave", func(w *wtx) error {
		for i, a := range p.Alerts {
			if _, err := w.exec(qAlertUpsert, a.ID, a.Rule, a.Fingerprint, labels[i], string(a.State), a.Severity, a.Summary,
				a.Value, toNanos(a.ActiveSince), toNanos(a.FiredAt), toNanos(a.ResolvedAt), toNanos(a.LastNotifiedAt),
				toNanos(a.UpdatedAt)); err != nil {
				return err
			}
		}
		for _, id := range p.DeleteIDs {
			if _, err := w.exec(qAlertDelete, id); err != nil {
				return err
			}
		}
		if !p.PruneBefore.IsZero() {
			if _, err := w.exec(qAlertPrune, toNanos(p.PruneBefore)); err != nil {
				return err
			}
			if _, err := w.exec(qSilencePrune, toNanos(p.PruneBefore)); err != nil {
				return err
			}
		}
		return nil
	})
}

// AlertList implements store.Store.
func (s *Store) AlertList(ctx context.Context, p *store.AlertListParams) ([]*store.Alert, error) {
	if p == nil {
		p = &store.AlertListParams{}
	}
	var b strings.Builder
	b.WriteString("SELECT " + alertCols + " FROM alerts WHERE 1 = 1")
	var args []any
	if len(p.States) > 0 {
		states := make([]string, len(p.States))
		for i, st := range p.States {
			states[i] = string(st)
		}
		b.WriteString(" AND state IN (SELECT value FROM json_each(?))")
		args = append(args, jsonText(states))
	}
	if p.Rule != "" {
		b.WriteString(" AND rule = ?")
		args = append(args, p.Rule)
	}
	if !p.ResolvedSince.IsZero() {
		b.WriteString(" AND (state <> 'RESOLVED' OR resolved_at >= ?)")
		args = append(args, toNanos(p.ResolvedSince))
	}
	b.WriteString(" ORDER BY rule, fingerprint")
	st, err := s.rs.get(ctx, b.String())
	if err != nil {
		return nil, dbErr("AlertList", err)
	}
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, dbErr("AlertList", err)
	}
	out, err := scanAlerts(rs)
	return out, dbErr("AlertList", err)
}

// AlertAck implements store.Store.
func (s *Store) AlertAck(ctx context.Context, p *store.AlertAckParams) (*store.Alert, error) {
	if p == nil || p.ID == "" {
		return nil, store.InvalidField("id", "an alert id is required")
	}
	var out *store.Alert
	err := s.writeTx(ctx, "AlertAck", func(w *wtx) error {
		a, err := w.alert(p.ID)
		if err != nil {
			return err
		}
		switch {
		case a.State == store.AlertResolved:
			return store.AlertResolvedErr(p.ID)
		case a.AckedBy == "":
			if _, err := w.exec(qAlertAck, p.ID, p.By, toNanos(p.Now)); err != nil {
				return err
			}
			a.AckedBy, a.AckedAt = p.By, norm(p.Now)
		}
		out = a
		return nil
	})
	return out, err
}

func (t *wtx) alert(id string) (*store.Alert, error) {
	rs, err := t.query(qAlertGet, id)
	if err != nil {
		return nil, err
	}
	got, err := scanAlerts(rs)
	if err != nil {
		return nil, dbErr(t.op, err)
	}
	if len(got) == 0 {
		return nil, fmt.Errorf("alert %q: %w", id, store.ErrNotFound)
	}
	return got[0], nil
}

func scanAlerts(rs *sql.Rows) ([]*store.Alert, error) {
	defer rs.Close()
	var out []*store.Alert
	for rs.Next() {
		var (
			a                                            store.Alert
			labels, state                                string
			active, fired, resolved, notified, acked, up int64
		)
		if err := rs.Scan(&a.ID, &a.Rule, &a.Fingerprint, &labels, &state, &a.Severity, &a.Summary, &a.Value,
			&active, &fired, &resolved, &notified, &a.AckedBy, &acked, &up); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(labels), &a.Labels); err != nil {
			return nil, err
		}
		a.State = store.AlertState(state)
		a.ActiveSince, a.FiredAt, a.ResolvedAt = fromNanos(active), fromNanos(fired), fromNanos(resolved)
		a.LastNotifiedAt, a.AckedAt, a.UpdatedAt = fromNanos(notified), fromNanos(acked), fromNanos(up)
		out = append(out, &a)
	}
	return out, rs.Err()
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
	x.StartsAt, x.EndsAt, x.CreatedAt = norm(x.StartsAt), norm(x.EndsAt), norm(p.Now)
	x.Matchers = nonNilAttrs(x.Matchers)
	err := s.writeTx(ctx, "SilenceCreate", func(w *wtx) error {
		if _, err := w.silence(x.ID); err == nil {
			return fmt.Errorf("silence %q: %w", x.ID, store.ErrAlreadyExists)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		_, err := w.exec(qSilenceInsert, x.ID, x.Rule, jsonText(x.Matchers), x.CreatedBy, x.Reason,
			toNanos(x.StartsAt), toNanos(x.EndsAt), toNanos(x.CreatedAt))
		return err
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
	query, args := qSilenceListAll, []any(nil)
	if !p.ActiveAt.IsZero() {
		query, args = qSilenceListActiveAt, []any{toNanos(p.ActiveAt)}
	}
	st, err := s.rs.get(ctx, query)
	if err != nil {
		return nil, dbErr("SilenceList", err)
	}
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, dbErr("SilenceList", err)
	}
	out, err := scanSilences(rs)
	return out, dbErr("SilenceList", err)
}

// SilenceExpire implements store.Store.
func (s *Store) SilenceExpire(ctx context.Context, p *store.SilenceExpireParams) (*store.Silence, error) {
	if p == nil || p.ID == "" {
		return nil, store.InvalidField("id", "a silence id is required")
	}
	var out *store.Silence
	err := s.writeTx(ctx, "SilenceExpire", func(w *wtx) error {
		x, err := w.silence(p.ID)
		if err != nil {
			return err
		}
		if now := norm(p.Now); x.EndsAt.After(now) {
			if _, err := w.exec(qSilenceExpire, p.ID, toNanos(now)); err != nil {
				return err
			}
			x.EndsAt = now
		}
		out = x
		return nil
	})
	return out, err
}

func (t *wtx) silence(id string) (*store.Silence, error) {
	rs, err := t.query(qSilenceGet, id)
	if err != nil {
		return nil, err
	}
	got, err := scanSilences(rs)
	if err != nil {
		return nil, dbErr(t.op, err)
	}
	if len(got) == 0 {
		return nil, fmt.Errorf("silence %q: %w", id, store.ErrNotFound)
	}
	return got[0], nil
}

func scanSilences(rs *sql.Rows) ([]*store.Silence, error) {
	defer rs.Close()
	var out []*store.Silence
	for rs.Next() {
		var (
			x                     store.Silence
			matchers              string
			starts, ends, created int64
		)
		if err := rs.Scan(&x.ID, &x.Rule, &matchers, &x.CreatedBy, &x.Reason, &starts, &ends, &created); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(matchers), &x.Matchers); err != nil {
			return nil, err
		}
		x.StartsAt, x.EndsAt, x.CreatedAt = fromNanos(starts), fromNanos(ends), fromNanos(created)
		out = append(out, &x)
	}
	return out, rs.Err()
}
