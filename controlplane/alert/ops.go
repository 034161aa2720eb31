package alert

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/store"
)

// Listed is an alert as an operator sees it.
type Listed struct {
	*store.Alert
	// SilencedBy is the id of an active silence that mutes it, or empty.
	SilencedBy string
}

var stateOrder = map[store.AlertState]int{store.AlertFiring: 0, store.AlertPending: 1, store.AlertResolved: 2}

var severityOrder = map[string]int{SeverityCritical: 0, SeverityWarning: 1, SeverityInfo: 2}

// List returns the alerts FIRING first, then PENDING, then those RESOLVED
// within the retention, most severe and oldest first within each.
func (s *Service) List(ctx context.Context) ([]Listed, error) {
	now := s.clock.Now().UTC()
	alerts, err := s.cfg.Store.AlertList(ctx, &store.AlertListParams{ResolvedSince: now.Add(-s.cfg.Retention)})
	if err != nil {
		return nil, err
	}
	silences, err := s.cfg.Store.SilenceList(ctx, &store.SilenceListParams{ActiveAt: now})
	if err != nil {
		return nil, err
	}
	out := make([]Listed, len(alerts))
	for i, a := range alerts {
		out[i] = Listed{Alert: a}
		if sil := silencedBy(silences, a); sil != nil {
			out[i].SilencedBy = sil.ID
		}
	}
	slices.SortStableFunc(out, func(a, b Listed) int {
		return cmp.Or(cmp.Compare(stateOrder[a.State], stateOrder[b.State]),
			cmp.Compare(severityOrder[a.Severity], severityOrder[b.Severity]),
			a.ActiveSince.Compare(b.ActiveSince))
	})
	return out, nil
}

// FiringByRule counts the FIRING alerts per rule, silenced ones included
// (a silence mutes notifications, not the alert): one store read, for the
// metrics scrape.
func (s *Service) FiringByRule(ctx context.Context) (map[string]int64, error) {
	alerts, err := s.cfg.Store.AlertList(ctx, &store.AlertListParams{States: []store.AlertState{store.AlertFiring}})
	if err != nil {
		return nil, err
	}
	n := make(map[string]int64, len(s.rules))
	for _, a := range alerts {
		n[a.Rule]++
	}
	return n, nil
}

// Ack records that by acknowledged alert id: no repeats until it resolves.
func (s *Service) Ack(ctx context.Context, id, by string) (*store.Alert, error) {
	return s.cfg.Store.AlertAck(ctx, &store.AlertAckParams{ID: id, By: by, Now: s.clock.Now().UTC()})
}

// SilenceParams describe a new silence.
type SilenceParams struct {
	Rule     string
	Matchers map[string]string
	For      time.Duration
	Reason   string
	By       string
}

// MaxSilence is the longest silence: longer, an alert is better disabled
// in the configuration where the next operator sees it.
const MaxSilence = 30 * 24 * time.Hour

// Silence mutes the notifications of rule's alerts (those carrying every
// matcher label) from now for p.For.
func (s *Service) Silence(ctx context.Context, p SilenceParams) (*store.Silence, error) {
	if !slices.ContainsFunc(s.rules, func(r Rule) bool { return r.Name == p.Rule }) {
		return nil, store.InvalidField("rule", "no rule is named %q (the rules in force are the defaults of deploy/alerts.yaml and the --alerts file)", p.Rule)
	}
	if p.For <= 0 || p.For > MaxSilence {
		return nil, store.InvalidField("duration", "must be more than 0 and at most %s, got %s", MaxSilence, p.For)
	}
	now := s.clock.Now().UTC()
	return s.cfg.Store.SilenceCreate(ctx, &store.SilenceCreateParams{Now: now, Silence: &store.Silence{
		ID: newID(), Rule: p.Rule, Matchers: p.Matchers, CreatedBy: p.By, Reason: p.Reason,
		StartsAt: now, EndsAt: now.Add(p.For)}})
}

// Silences returns the silences stored (ended ones stay for the
// retention), or only those active now.
func (s *Service) Silences(ctx context.Context, activeOnly bool) ([]*store.Silence, error) {
	p := &store.SilenceListParams{}
	if activeOnly {
		p.ActiveAt = s.clock.Now().UTC()
	}
	return s.cfg.Store.SilenceList(ctx, p)
}

// Expire ends a silence now.
func (s *Service) Expire(ctx context.Context, id string) (*store.Silence, error) {
	return s.cfg.Store.SilenceExpire(ctx, &store.SilenceExpireParams{ID: id, Now: s.clock.Now().UTC()})
}

// Current returns one event per FIRING alert that was notified and is not
// silenced: the state a WatchEvents stream starts with. One still waiting
// for its first notification is left to arrive as news.
func (s *Service) Current(ctx context.Context) ([]notify.Event, error) {
	alerts, err := s.cfg.Store.AlertList(ctx, &store.AlertListParams{States: []store.AlertState{store.AlertFiring}})
	if err != nil {
		return nil, err
	}
	silences, err := s.cfg.Store.SilenceList(ctx, &store.SilenceListParams{ActiveAt: s.Now()})
	if err != nil {
		return nil, err
	}
	out := make([]notify.Event, 0, len(alerts))
	for _, a := range alerts {
		if a.LastNotifiedAt.IsZero() || silencedBy(silences, a) != nil {
			continue
		}
		out = append(out, notify.Event{
			Kind:  notify.KindAlert,
			ID:    a.ID,
			Time:  a.FiredAt,
			Title: fmt.Sprintf("[FIRING] %s", a.Rule),
			Text:  firingLine(a),
			Attributes: map[string]string{"rule": a.Rule, "severity": a.Severity, "status": "firing", "firing": "1",
				"resolved": "0", "alert_ids": a.ID, "current": "true"},
		})
	}
	return out, nil
}

// Now is the service's clock's time.
func (s *Service) Now() time.Time { return s.clock.Now().UTC() }
