package console

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// The alerts page's bounds: the API lists every open alert and a day of
// resolved ones, the page shows at most these many of each.
const (
	alertsMaxOpen     = 100
	alertsMaxResolved = 50
	alertsMaxSilences = 200
)

// silenceChoices are the spans the Silence form offers: an hour for a
// restart, an afternoon, a day, a week of rebuilding a host.
var silenceChoices = []silenceChoice{
	{Value: "1h", Label: "1 hour"},
	{Value: "4h", Label: "4 hours"},
	{Value: "24h", Label: "24 hours"},
	{Value: "168h", Label: "7 days"},
}

type silenceChoice struct{ Value, Label string }

func (s *Server) routeAlerts(mux *http.ServeMux) {
	mux.Handle("GET /alerts", s.page(s.alertsPage))
	mux.Handle("POST /alerts/{id}/ack", s.action(s.ackAlert))
	mux.Handle("POST /alerts/{id}/silence", s.action(s.silenceAlert))
	mux.Handle("POST /silences/{id}/expire", s.action(s.expireSilence))
}

// alertsData is `factory alerts --all` and `factory alerts silences` as
// one page.
type alertsData struct {
	// Open is the FIRING alerts, then the PENDING ones, as the API orders
	// them (most severe, then oldest, first); Firing and Pending count
	// every one, shown or not.
	Open            []alertRow
	MoreOpen        int
	Firing, Pending int

	Resolved     []alertRow // the last 24 hours' resolved alerts
	MoreResolved int

	Silences     []*factoryv1.Silence // those in force
	MoreSilences int

	SilenceFor []silenceChoice
}

// alertRow is an alert with what the page says about it worked out.
type alertRow struct {
	*factoryv1.Alert
	// SeverityClass colours the severity chip: bad, warn or none.
	SeverityClass string
	// Shown is the alert's value in its unit.
	Shown string
	// ActiveFor is how long a resolved alert's condition held.
	ActiveFor string
}

func (s *Server) alertsPage(rq *request) error {
	var (
		alerts   *factoryv1.ListAlertsResponse
		silences *factoryv1.ListSilencesResponse
	)
	r := newReads(rq.ctx)
	r.must(func(ctx context.Context) (err error) {
		alerts, err = s.ops.ListAlerts(ctx, &factoryv1.ListAlertsRequest{IncludeResolved: true})
		return err
	})
	r.must(func(ctx context.Context) (err error) {
		silences, err = s.ops.ListSilences(ctx, &factoryv1.ListSilencesRequest{})
		return err
	})
	if err := r.wait(); err != nil {
		return err
	}
	d := alertsData{SilenceFor: silenceChoices}
	d.fill(alerts.GetAlerts(), silences.GetSilences())
	return s.render(rq, http.StatusOK, "alerts", view{Title: "Alerts", Nav: "alerts", Topics: "alerts"}, d)
}

// fill sorts the API's alerts into the page's sections, bounded: FIRING,
// then PENDING, each in the API's order (most severe, then oldest,
// first), and RESOLVED most recent first.
func (d *alertsData) fill(alerts []*factoryv1.Alert, silences []*factoryv1.Silence) {
	var open, resolved []*factoryv1.Alert
	for _, a := range alerts {
		switch a.GetState() {
		case factoryv1.AlertState_ALERT_STATE_FIRING:
			d.Firing++
			open = append(open, a)
		case factoryv1.AlertState_ALERT_STATE_PENDING:
			d.Pending++
			open = append(open, a)
		case factoryv1.AlertState_ALERT_STATE_RESOLVED:
			resolved = append(resolved, a)
		}
	}
	// The API already lists FIRING before PENDING; the page does not
	// depend on it.
	sort.SliceStable(open, func(i, j int) bool {
		return open[i].GetState() == factoryv1.AlertState_ALERT_STATE_FIRING &&
			open[j].GetState() != factoryv1.AlertState_ALERT_STATE_FIRING
	})
	sort.SliceStable(resolved, func(i, j int) bool {
		return resolved[i].GetResolvedAt().AsTime().After(resolved[j].GetResolvedAt().AsTime())
	})
	open, d.MoreOpen = clipAlerts(open, alertsMaxOpen)
	resolved, d.MoreResolved = clipAlerts(resolved, alertsMaxResolved)
	for _, a := range open {
		d.Open = append(d.Open, newAlertRow(a))
	}
	for _, a := range resolved {
		d.Resolved = append(d.Resolved, newAlertRow(a))
	}
	for _, s := range silences {
		if !s.GetActive() {
			continue
		}
		if len(d.Silences) == alertsMaxSilences {
			d.MoreSilences++
			continue
		}
		d.Silences = append(d.Silences, s)
	}
}

// clipAlerts keeps the first n alerts and says how many it dropped.
func clipAlerts(alerts []*factoryv1.Alert, n int) ([]*factoryv1.Alert, int) {
	if len(alerts) <= n {
		return alerts, 0
	}
	return alerts[:n], len(alerts) - n
}

func newAlertRow(a *factoryv1.Alert) alertRow {
	r := alertRow{Alert: a, Shown: alertValue(a.GetRule(), a.GetValue())}
	switch strings.ToLower(a.GetSeverity()) {
	case "critical":
		r.SeverityClass = "bad"
	case "warning":
		r.SeverityClass = "warn"
	}
	if a.GetResolvedAt() != nil && a.GetActiveSince() != nil {
		r.ActiveFor = human(a.GetResolvedAt().AsTime().Sub(a.GetActiveSince().AsTime()))
	}
	return r
}

// alertValue shows a measurement in its unit. The alert does not carry
// its rule's expression, so the unit follows the shipped rules
// (deploy/alerts.yaml): spend_* rules measure micro-dollars, the memory
// and disk rules a 0..1 ratio, agent_offline seconds; any other rule's
// value is shown as the number it is.
func alertValue(rule string, v float64) string {
	switch {
	case strings.HasPrefix(rule, "spend_"):
		return money(int64(v))
	case rule == "gpu_memory_high" || rule == "disk_usage_high":
		return strconv.FormatFloat(v*100, 'f', 1, 64) + "%"
	case rule == "agent_offline":
		return human(time.Duration(v * float64(time.Second)))
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

func (s *Server) ackAlert(rq *request) error {
	r, err := s.ops.AckAlert(rq.ctx, &factoryv1.AckAlertRequest{AlertId: rq.r.PathValue("id")})
	if err != nil {
		return err
	}
	return done(rq, "/alerts", "Acknowledged "+r.GetAlert().GetRule()+labelText(r.GetAlert().GetLabels()))
}

// silenceAlert silences the alert's rule: only this instance of it (its
// labels as matchers) unless the form asks for every alert of the rule.
func (s *Server) silenceAlert(rq *request) error {
	id := rq.r.PathValue("id")
	f := rq.r.PostForm
	var span *durationpb.Duration
	if v := strings.TrimSpace(f.Get("duration")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "duration: %q is not a duration (such as 4h)", v)
		}
		span = durationpb.New(d)
	}
	// The silence is made of the alert's rule and labels, which the API
	// knows by the alert's id; a resolved alert may be silenced too, in
	// case it comes back.
	list, err := s.ops.ListAlerts(rq.ctx, &factoryv1.ListAlertsRequest{IncludeResolved: true})
	if err != nil {
		return err
	}
	var alert *factoryv1.Alert
	for _, a := range list.GetAlerts() {
		if a.GetId() == id {
			alert = a
			break
		}
	}
	if alert == nil {
		return status.Errorf(codes.NotFound, "alert %q: not found (or it resolved more than a day ago)", id)
	}
	req := &factoryv1.SilenceAlertRequest{Rule: alert.GetRule(), Duration: span, Reason: strings.TrimSpace(f.Get("reason"))}
	if f.Get("scope") != "rule" {
		req.Matchers = alert.GetLabels()
	}
	r, err := s.ops.SilenceAlert(rq.ctx, req)
	if err != nil {
		return err
	}
	sil := r.GetSilence()
	return done(rq, "/alerts", fmt.Sprintf("Silenced %s%s until %s", sil.GetRule(), labelText(sil.GetMatchers()), stamp(sil.GetEndsAt())))
}

func (s *Server) expireSilence(rq *request) error {
	r, err := s.ops.ExpireSilence(rq.ctx, &factoryv1.ExpireSilenceRequest{SilenceId: rq.r.PathValue("id")})
	if err != nil {
		return err
	}
	return done(rq, "/alerts", "Ended the silence of "+r.GetSilence().GetRule()+labelText(r.GetSilence().GetMatchers()))
}

// labelText is labels as " {k=v, k=v}", sorted, or nothing.
func labelText(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return " {" + strings.Join(parts, ", ") + "}"
}
