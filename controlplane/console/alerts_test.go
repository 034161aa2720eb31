package console

import (
	"context"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

type fakeOps struct {
	factoryv1.OpsServiceClient
	alerts   []*factoryv1.Alert
	silences []*factoryv1.Silence
	silenced *factoryv1.SilenceAlertRequest
	acked    string
	expired  string
}

func (f *fakeOps) ListAlerts(_ context.Context, req *factoryv1.ListAlertsRequest, _ ...grpc.CallOption) (*factoryv1.ListAlertsResponse, error) {
	var out []*factoryv1.Alert
	for _, a := range f.alerts {
		if req.GetIncludeResolved() || a.GetState() != factoryv1.AlertState_ALERT_STATE_RESOLVED {
			out = append(out, a)
		}
	}
	return &factoryv1.ListAlertsResponse{Alerts: out}, nil
}

func (f *fakeOps) ListSilences(context.Context, *factoryv1.ListSilencesRequest, ...grpc.CallOption) (*factoryv1.ListSilencesResponse, error) {
	return &factoryv1.ListSilencesResponse{Silences: f.silences}, nil
}

func (f *fakeOps) AckAlert(_ context.Context, req *factoryv1.AckAlertRequest, _ ...grpc.CallOption) (*factoryv1.AckAlertResponse, error) {
	f.acked = req.GetAlertId()
	for _, a := range f.alerts {
		if a.GetId() == req.GetAlertId() {
			return &factoryv1.AckAlertResponse{Alert: a}, nil
		}
	}
	return nil, status.Error(codes.NotFound, "alert_id: not found")
}

func (f *fakeOps) SilenceAlert(_ context.Context, req *factoryv1.SilenceAlertRequest, _ ...grpc.CallOption) (*factoryv1.SilenceAlertResponse, error) {
	f.silenced = req
	return &factoryv1.SilenceAlertResponse{Silence: &factoryv1.Silence{Id: "s-new", Rule: req.GetRule(), Matchers: req.GetMatchers(),
		EndsAt: fleetTestAgo(-req.GetDuration().AsDuration())}}, nil
}

func (f *fakeOps) ExpireSilence(_ context.Context, req *factoryv1.ExpireSilenceRequest, _ ...grpc.CallOption) (*factoryv1.ExpireSilenceResponse, error) {
	f.expired = req.GetSilenceId()
	return &factoryv1.ExpireSilenceResponse{Silence: &factoryv1.Silence{Id: req.GetSilenceId(), Rule: "agent_offline"}}, nil
}

func alertsFixture() *fakeOps {
	return &fakeOps{
		alerts: []*factoryv1.Alert{
			{Id: "a-pending", Rule: "disk_usage_high", State: factoryv1.AlertState_ALERT_STATE_PENDING, Severity: "warning",
				Summary: "disk / on gpu-1 is 91% full", Value: 0.912, Labels: map[string]string{"host": "gpu-1", "path": "/"},
				ActiveSince: fleetTestAgo(time.Minute)},
			{Id: "a-firing", Rule: "spend_agent_runaway", State: factoryv1.AlertState_ALERT_STATE_FIRING, Severity: "critical",
				Summary: "agent forge spent $12.40 today", Value: 12_400_000, Labels: map[string]string{"agent": "forge"},
				ActiveSince: fleetTestAgo(20 * time.Minute), FiredAt: fleetTestAgo(20 * time.Minute), AckedBy: "ops", AckedAt: fleetTestAgo(5 * time.Minute),
				SilencedBy: "s-1"},
			{Id: "a-old", Rule: "agent_offline", State: factoryv1.AlertState_ALERT_STATE_RESOLVED, Severity: "critical",
				Summary: "agent scout has been silent for 6m", Value: 360, Labels: map[string]string{"agent": "scout"},
				ActiveSince: fleetTestAgo(3 * time.Hour), ResolvedAt: fleetTestAgo(2 * time.Hour)},
			{Id: "a-newer", Rule: "queue_ready_backlog", State: factoryv1.AlertState_ALERT_STATE_RESOLVED, Severity: "warning",
				Summary: "61 tasks are READY", Value: 61, ActiveSince: fleetTestAgo(90 * time.Minute), ResolvedAt: fleetTestAgo(time.Hour)},
		},
		silences: []*factoryv1.Silence{
			{Id: "s-1", Rule: "spend_agent_runaway", Matchers: map[string]string{"agent": "forge"}, CreatedBy: "ops",
				Reason: "benchmark run", EndsAt: fleetTestAgo(-3 * time.Hour), Active: true},
			{Id: "s-ended", Rule: "gpu_memory_high", EndsAt: fleetTestAgo(time.Hour)},
		},
	}
}

func TestAlertsPage(t *testing.T) {
	s := pageTestServer(t, nil, alertsFixture())
	rq, rec := pageTestRequest(http.MethodGet, "/alerts", nil)
	if err := s.alertsPage(rq); err != nil {
		t.Fatal(err)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`<span class="chip bad">1 firing</span>`, `<span class="chip warn">1 pending</span>`,
		`<span class="chip bad">critical</span>`, `<code>agent=forge</code>`, `$12.40`, `91.2%`,
		`by ops <span class="muted">5m 00s ago</span>`, `<a href="#silence-s-1"`,
		`action="/alerts/a-pending/ack"`, `action="/alerts/a-pending/silence"`, `<option value="4h" selected>4 hours</option>`,
		`<tr id="silence-s-1">`, `action="/silences/s-1/expire"`, `benchmark run`, `in 3h 00m`,
		`agent scout has been silent`, `1h 00m`, // how long the resolved alert was active
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	// Firing before pending, whatever the API's order; the resolved most
	// recent first; an acked alert has no Ack button; ended silences are
	// not in force.
	if f, p := strings.Index(body, `id="alert-a-firing"`), strings.Index(body, `id="alert-a-pending"`); f < 0 || p < f {
		t.Error("the firing alert does not come first")
	}
	if n, o := strings.Index(body, `id="alert-a-newer"`), strings.Index(body, `id="alert-a-old"`); n < 0 || o < n {
		t.Error("the resolved alerts are not most recent first")
	}
	if strings.Contains(body, `action="/alerts/a-firing/ack"`) {
		t.Error("an acked alert offers Ack")
	}
	if strings.Contains(body, `silence-s-ended`) {
		t.Error("an ended silence is listed as in force")
	}
	if t.Failed() {
		t.Log(body)
	}
}

func TestAlertsSilenceAction(t *testing.T) {
	for _, tc := range []struct {
		name     string
		form     url.Values
		matchers map[string]string
		dur      time.Duration
	}{
		{"this alert", url.Values{"duration": {"4h"}, "scope": {"labels"}, "reason": {" resizing / "}}, map[string]string{"host": "gpu-1", "path": "/"}, 4 * time.Hour},
		{"the whole rule", url.Values{"duration": {"168h"}, "scope": {"rule"}}, nil, 168 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ops := alertsFixture()
			s := pageTestServer(t, nil, ops)
			rq, rec := pageTestRequest(http.MethodPost, "/alerts/a-pending/silence", tc.form)
			rq.r.SetPathValue("id", "a-pending")
			if err := s.silenceAlert(rq); err != nil {
				t.Fatal(err)
			}
			got := ops.silenced
			if got.GetRule() != "disk_usage_high" || !maps.Equal(got.GetMatchers(), tc.matchers) || got.GetDuration().AsDuration() != tc.dur {
				t.Errorf("SilenceAlert got %v", got)
			}
			if tc.form.Get("reason") != "" && got.GetReason() != "resizing /" {
				t.Errorf("reason %q", got.GetReason())
			}
			if loc := rec.Header().Get("Location"); rec.Code != http.StatusSeeOther || !strings.HasPrefix(loc, "/alerts?note=Silenced+disk_usage_high") {
				t.Errorf("%d %s", rec.Code, loc)
			}
		})
	}

	ops := alertsFixture()
	s := pageTestServer(t, nil, ops)
	rq, _ := pageTestRequest(http.MethodPost, "/alerts/a-pending/silence", url.Values{"duration": {"a while"}})
	rq.r.SetPathValue("id", "a-pending")
	if err := s.silenceAlert(rq); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "duration") {
		t.Errorf("a bad duration: %v", err)
	}
	rq, _ = pageTestRequest(http.MethodPost, "/alerts/nope/silence", url.Values{"duration": {"1h"}})
	rq.r.SetPathValue("id", "nope")
	if err := s.silenceAlert(rq); status.Code(err) != codes.NotFound {
		t.Errorf("an unknown alert: %v", err)
	}
	if ops.silenced != nil {
		t.Error("a refused form reached SilenceAlert")
	}
}

func TestAlertsAckAndExpireActions(t *testing.T) {
	ops := alertsFixture()
	s := pageTestServer(t, nil, ops)
	rq, rec := pageTestRequest(http.MethodPost, "/alerts/a-pending/ack", url.Values{"back": {"/alerts?error=old"}})
	rq.r.SetPathValue("id", "a-pending")
	if err := s.ackAlert(rq); err != nil {
		t.Fatal(err)
	}
	if ops.acked != "a-pending" || rec.Header().Get("Location") != "/alerts?note=Acknowledged+disk_usage_high+%7Bhost%3Dgpu-1%2C+path%3D%2F%7D" {
		t.Errorf("acked %q, sent to %s", ops.acked, rec.Header().Get("Location"))
	}
	rq, rec = pageTestRequest(http.MethodPost, "/silences/s-1/expire", url.Values{})
	rq.r.SetPathValue("id", "s-1")
	if err := s.expireSilence(rq); err != nil {
		t.Fatal(err)
	}
	if ops.expired != "s-1" || !strings.HasPrefix(rec.Header().Get("Location"), "/alerts?note=Ended+the+silence") {
		t.Errorf("expired %q, sent to %s", ops.expired, rec.Header().Get("Location"))
	}
}

func TestAlertValue(t *testing.T) {
	for _, tc := range []struct {
		rule string
		v    float64
		want string
	}{
		{"spend_daily_total", 51_250_000, "$51.25"},
		{"gpu_memory_high", 0.96, "96.0%"},
		{"agent_offline", 420, "7m 00s"},
		{"queue_ready_backlog", 61, "61"},
		{"custom", 0.125, "0.125"},
	} {
		if got := alertValue(tc.rule, tc.v); got != tc.want {
			t.Errorf("alertValue(%s, %v) = %q, want %q", tc.rule, tc.v, got, tc.want)
		}
	}
}
