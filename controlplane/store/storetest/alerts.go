package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (h *harness) saveAlerts(p *store.AlertSaveParams) {
	h.t.Helper()
	if err := h.s.AlertSave(h.ctx, p); err != nil {
		h.t.Fatalf("AlertSave: %v", err)
	}
}

func (h *harness) listAlerts(p *store.AlertListParams) []*store.Alert {
	h.t.Helper()
	got, err := h.s.AlertList(h.ctx, p)
	if err != nil {
		h.t.Fatalf("AlertList: %v", err)
	}
	return got
}

func (h *harness) alertByID(id string) *store.Alert {
	h.t.Helper()
	for _, a := range h.listAlerts(nil) {
		if a.ID == id {
			return a
		}
	}
	h.t.Fatalf("alert %s is not stored", id)
	return nil
}

func alertIDs(alerts []*store.Alert) []string {
	out := make([]string, len(alerts))
	for i, a := range alerts {
		out[i] = a.ID
	}
	return out
}

func silenceIDs(silences []*store.Silence) []string {
	out := make([]string, len(silences))
	for i, s := range silences {
		out[i] = s.ID
	}
	return out
}

func sameIDs(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

func (s *suite) testAlerts(t *testing.T) {
	s.runCases(t, []testCase{
		{"SaveThenListRoundTrips", func(t *testing.T, h *harness) {
			now := h.now()
			a := &store.Alert{ID: "a1", Rule: "agent_offline", Fingerprint: "fp-forge", Labels: map[string]string{"agent": "forge"},
				State: store.AlertFiring, Severity: "critical", Summary: "agent forge is offline", Value: 420.5,
				ActiveSince: now.Add(-10 * time.Minute), FiredAt: now.Add(-5 * time.Minute), LastNotifiedAt: now, UpdatedAt: now}
			h.saveAlerts(&store.AlertSaveParams{Alerts: []*store.Alert{a}})
			got := h.listAlerts(nil)
			if len(got) != 1 {
				t.Fatalf("listed %d alerts, want 1", len(got))
			}
			g := got[0]
			if g.ID != "a1" || g.Rule != a.Rule || g.Fingerprint != a.Fingerprint || g.Labels["agent"] != "forge" ||
				g.State != store.AlertFiring || g.Severity != "critical" || g.Summary != a.Summary || g.Value != 420.5 ||
				!g.ActiveSince.Equal(a.ActiveSince) || !g.FiredAt.Equal(a.FiredAt) || !g.ResolvedAt.IsZero() ||
				!g.LastNotifiedAt.Equal(now) || !g.UpdatedAt.Equal(now) || g.AckedBy != "" || !g.AckedAt.IsZero() {
				t.Errorf("round trip: %+v", g)
			}
		}},
		{"UpsertByRuleAndFingerprintKeepsAckOfTheSameOccurrence", func(t *testing.T, h *harness) {
			now := h.now()
			a := &store.Alert{ID: "a1", Rule: "disk", Fingerprint: "fp", State: store.AlertFiring, ActiveSince: now, FiredAt: now}
			h.saveAlerts(&store.AlertSaveParams{Alerts: []*store.Alert{a}})
			acked, err := h.s.AlertAck(h.ctx, &store.AlertAckParams{ID: "a1", By: "operator", Now: now.Add(time.Minute)})
			if err != nil {
				t.Fatalf("AlertAck: %v", err)
			}
			if acked.AckedBy != "operator" || !acked.AckedAt.Equal(now.Add(time.Minute)) {
				t.Errorf("ack returned %+v", acked)
			}
			// The evaluator writes the same occurrence again, unaware of the ack.
			a.Value = 0.9
			h.saveAlerts(&store.AlertSaveParams{Alerts: []*store.Alert{a}})
			if g := h.alertByID("a1"); g.AckedBy != "operator" || g.Value != 0.9 {
				t.Errorf("after an upsert of the same occurrence: %+v, want the ack kept and the value updated", g)
			}
			// A second ack keeps the first.
			again, err := h.s.AlertAck(h.ctx, &store.AlertAckParams{ID: "a1", By: "someone-else", Now: now.Add(time.Hour)})
			if err != nil || again.AckedBy != "operator" {
				t.Errorf("second ack: %+v, %v; want the first ack kept", again, err)
			}
			// A new occurrence replaces the row and clears the ack.
			h.saveAlerts(&store.AlertSaveParams{Alerts: []*store.Alert{{ID: "a2", Rule: "disk", Fingerprint: "fp", State: store.AlertPending, ActiveSince: now}}})
			got := h.listAlerts(nil)
			if len(got) != 1 || got[0].ID != "a2" || got[0].AckedBy != "" || !got[0].AckedAt.IsZero() {
				t.Errorf("after a new occurrence: %v, want one unacked alert a2", got)
			}
		}},
		{"AckRefusesUnknownAndResolved", func(t *testing.T, h *harness) {
			now := h.now()
			if _, err := h.s.AlertAck(h.ctx, &store.AlertAckParams{ID: "nope", By: "op", Now: now}); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("ack of an unknown alert: %v, want ErrNotFound", err)
			}
			h.saveAlerts(&store.AlertSaveParams{Alerts: []*store.Alert{{ID: "r", Rule: "x", Fingerprint: "f", State: store.AlertResolved, ResolvedAt: now}}})
			if _, err := h.s.AlertAck(h.ctx, &store.AlertAckParams{ID: "r", By: "op", Now: now}); !errors.Is(err, store.ErrIllegalTransition) {
				t.Errorf("ack of a resolved alert: %v, want ErrIllegalTransition", err)
			}
		}},
		{"ListFiltersAndDeletesAndPrunes", func(t *testing.T, h *harness) {
			now := h.now()
			h.saveAlerts(&store.AlertSaveParams{Alerts: []*store.Alert{
				{ID: "p", Rule: "b", Fingerprint: "1", State: store.AlertPending},
				{ID: "f", Rule: "a", Fingerprint: "1", State: store.AlertFiring},
				{ID: "old", Rule: "a", Fingerprint: "2", State: store.AlertResolved, ResolvedAt: now.Add(-48 * time.Hour)},
				{ID: "new", Rule: "a", Fingerprint: "3", State: store.AlertResolved, ResolvedAt: now.Add(-time.Hour)},
			}})
			for _, c := range []struct {
				name string
				p    store.AlertListParams
				want []string
			}{
				{"all, by rule then fingerprint", store.AlertListParams{}, []string{"f", "old", "new", "p"}},
				{"states", store.AlertListParams{States: []store.AlertState{store.AlertPending, store.AlertFiring}}, []string{"f", "p"}},
				{"rule", store.AlertListParams{Rule: "b"}, []string{"p"}},
				{"resolved since", store.AlertListParams{ResolvedSince: now.Add(-24 * time.Hour)}, []string{"f", "new", "p"}},
			} {
				if got := alertIDs(h.listAlerts(&c.p)); !sameIDs(got, c.want) {
					t.Errorf("%s: got %v, want %v", c.name, got, c.want)
				}
			}
			h.saveAlerts(&store.AlertSaveParams{DeleteIDs: []string{"p"}, PruneBefore: now.Add(-24 * time.Hour)})
			if got, want := alertIDs(h.listAlerts(nil)), []string{"f", "new"}; !sameIDs(got, want) {
				t.Errorf("after delete and prune: %v, want %v", got, want)
			}
		}},
		{"SaveRejectsBadAlertsAndChangesNothing", func(t *testing.T, h *harness) {
			for _, a := range []*store.Alert{
				{Rule: "r", State: store.AlertFiring},
				{ID: "x", State: store.AlertFiring},
				{ID: "x", Rule: "r", State: "SIDEWAYS"},
			} {
				err := h.s.AlertSave(h.ctx, &store.AlertSaveParams{Alerts: []*store.Alert{
					{ID: "ok", Rule: "r", Fingerprint: "ok", State: store.AlertFiring}, a}})
				if !errors.Is(err, store.ErrInvalidArgument) {
					t.Errorf("AlertSave(%+v): %v, want ErrInvalidArgument", a, err)
				}
			}
			if got := h.listAlerts(nil); len(got) != 0 {
				t.Errorf("a refused save stored %v", alertIDs(got))
			}
		}},
		{"SilencesCreateListExpire", func(t *testing.T, h *harness) {
			now := h.now()
			mk := func(id string, starts, ends time.Duration) *store.Silence {
				return &store.Silence{ID: id, Rule: "agent_offline", Matchers: map[string]string{"agent": "forge"},
					CreatedBy: "operator", Reason: "maintenance", StartsAt: now.Add(starts), EndsAt: now.Add(ends)}
			}
			created, err := h.s.SilenceCreate(h.ctx, &store.SilenceCreateParams{Silence: mk("s1", 0, 2*time.Hour), Now: now})
			if err != nil {
				t.Fatalf("SilenceCreate: %v", err)
			}
			if !created.CreatedAt.Equal(now) || created.Matchers["agent"] != "forge" {
				t.Errorf("created %+v", created)
			}
			if _, err := h.s.SilenceCreate(h.ctx, &store.SilenceCreateParams{Silence: mk("s1", 0, time.Hour), Now: now}); !errors.Is(err, store.ErrAlreadyExists) {
				t.Errorf("duplicate id: %v, want ErrAlreadyExists", err)
			}
			if _, err := h.s.SilenceCreate(h.ctx, &store.SilenceCreateParams{Silence: mk("bad", time.Hour, time.Hour), Now: now}); !errors.Is(err, store.ErrInvalidArgument) {
				t.Errorf("empty window: %v, want ErrInvalidArgument", err)
			}
			if _, err := h.s.SilenceCreate(h.ctx, &store.SilenceCreateParams{Silence: mk("later", time.Hour, 3*time.Hour), Now: now}); err != nil {
				t.Fatal(err)
			}
			got, err := h.s.SilenceList(h.ctx, &store.SilenceListParams{ActiveAt: now})
			if err != nil || !sameIDs(silenceIDs(got), []string{"s1"}) {
				t.Errorf("active now: %v, %v; want [s1]", silenceIDs(got), err)
			}
			if got[0].Reason != "maintenance" || got[0].CreatedBy != "operator" || !got[0].EndsAt.Equal(now.Add(2*time.Hour)) {
				t.Errorf("listed %+v", got[0])
			}
			expired, err := h.s.SilenceExpire(h.ctx, &store.SilenceExpireParams{ID: "s1", Now: now.Add(time.Minute)})
			if err != nil || !expired.EndsAt.Equal(now.Add(time.Minute)) {
				t.Errorf("expire: %+v, %v", expired, err)
			}
			// Expiring again keeps the earlier end.
			again, err := h.s.SilenceExpire(h.ctx, &store.SilenceExpireParams{ID: "s1", Now: now.Add(time.Hour)})
			if err != nil || !again.EndsAt.Equal(now.Add(time.Minute)) {
				t.Errorf("expire again: %+v, %v", again, err)
			}
			if _, err := h.s.SilenceExpire(h.ctx, &store.SilenceExpireParams{ID: "nope", Now: now}); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("expire unknown: %v, want ErrNotFound", err)
			}
			got, _ = h.s.SilenceList(h.ctx, &store.SilenceListParams{ActiveAt: now.Add(2 * time.Minute)})
			if len(got) != 0 {
				t.Errorf("active after expiry: %v", silenceIDs(got))
			}
			all, _ := h.s.SilenceList(h.ctx, nil)
			if !sameIDs(silenceIDs(all), []string{"s1", "later"}) {
				t.Errorf("all: %v", silenceIDs(all))
			}
			// Pruning drops silences that ended before the cut.
			h.saveAlerts(&store.AlertSaveParams{PruneBefore: now.Add(30 * time.Minute)})
			all, _ = h.s.SilenceList(h.ctx, nil)
			if !sameIDs(silenceIDs(all), []string{"later"}) {
				t.Errorf("after prune: %v", silenceIDs(all))
			}
		}},
	})
}
