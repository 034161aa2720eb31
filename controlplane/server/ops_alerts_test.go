package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/factory/factory/controlplane/alert"
	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// alertBundle is a server with the alerting pieces reachable: the fleet
// on a fake clock, the evaluator and the event hub.
type alertBundle struct {
	st     store.Store
	clock  *fakeClock
	fleet  *fleet.Registry
	alerts *alert.Service
	hub    *notify.Hub
	ops    factoryv1.OpsServiceClient
}

func setupAlerts(t *testing.T) *alertBundle {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, sqlite.Config{Path: t.TempDir() + "/factory.db", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := &fakeClock{now: time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC)}
	acc, operator := testAccess(t, st, clock)
	fl := fleet.New(clock, fleet.Config{})
	hub := notify.NewHub(0)
	a, err := newAlerts(AlertsConfig{}, st, fl, fleet.NewEvents(st, clock), nil, clock, hub, log)
	if err != nil {
		t.Fatal(err)
	}
	stopping := make(chan struct{})
	srv, _ := NewGRPCServer(Services{Access: acc, Fleet: fl, Alerts: a, Events: hub}, log, noop.NewTracerProvider(), stopping)
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	t.Cleanup(func() { close(stopping); srv.Stop() })
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()), bearer(operator))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &alertBundle{st: st, clock: clock, fleet: fl, alerts: a, hub: hub, ops: factoryv1.NewOpsServiceClient(conn)}
}

// agentGoesOffline registers agent forge on gpu-1 and lets ten silent
// minutes pass, which the agent_offline rule fires on.
func (b *alertBundle) agentGoesOffline(t *testing.T) {
	t.Helper()
	if err := b.fleet.Register(fleet.Hello{Host: "gpu-1", Agents: []fleet.AgentInfo{{Name: "forge", Role: "builder"}}}); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(10 * time.Minute)
}

func (b *alertBundle) evaluate(t *testing.T) {
	t.Helper()
	if _, err := b.alerts.Evaluate(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (b *alertBundle) waitSubscribers(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.hub.Subscribers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers, want %d", b.hub.Subscribers(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func recvEvent(t *testing.T, stream grpc.ServerStreamingClient[factoryv1.WatchEventsResponse]) *factoryv1.Event {
	t.Helper()
	res, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return res.GetEvent()
}

// recvNews is recvEvent past any current-state events: a watch that
// starts while an alert is being notified may get it both ways.
func recvNews(t *testing.T, stream grpc.ServerStreamingClient[factoryv1.WatchEventsResponse]) *factoryv1.Event {
	t.Helper()
	for {
		if e := recvEvent(t, stream); !e.GetCurrent() {
			return e
		}
	}
}

func TestAlertsOverGRPC(t *testing.T) {
	b := setupAlerts(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A watcher from before the alert hears it fire.
	watch, err := b.ops.WatchEvents(ctx, &factoryv1.WatchEventsRequest{Kinds: []string{"alert"}})
	if err != nil {
		t.Fatal(err)
	}
	b.waitSubscribers(t, 1)
	b.agentGoesOffline(t)
	b.evaluate(t) // the default group wait holds the first notification
	b.clock.Advance(30 * time.Second)
	b.evaluate(t)
	ev := recvNews(t, watch)
	if ev.GetKind() != "alert" || ev.GetTitle() != "[FIRING:1] agent_offline" || ev.GetCurrent() ||
		!strings.Contains(ev.GetText(), "agent forge has been silent for 10m30s") || ev.GetId() == "" {
		t.Errorf("watched event %v", ev)
	}

	list, err := b.ops.ListAlerts(ctx, &factoryv1.ListAlertsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetAlerts()) != 1 {
		t.Fatalf("listed %d alerts, want 1", len(list.GetAlerts()))
	}
	a := list.GetAlerts()[0]
	if a.GetRule() != "agent_offline" || a.GetState() != factoryv1.AlertState_ALERT_STATE_FIRING || a.GetLabels()["agent"] != "forge" ||
		a.GetSeverity() != "critical" || a.GetValue() != 630 || a.GetFiredAt() == nil || a.GetLastNotifiedAt() == nil {
		t.Errorf("listed %v", a)
	}

	acked, err := b.ops.AckAlert(ctx, &factoryv1.AckAlertRequest{AlertId: a.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if acked.GetAlert().GetAckedBy() == "" || acked.GetAlert().GetAckedAt() == nil {
		t.Errorf("ack answered %v", acked.GetAlert())
	}
	audit, err := b.st.AuditList(ctx, &store.AuditListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if !auditHas(audit.Entries, factoryv1.OpsService_AckAlert_FullMethodName, "alert "+a.GetId()) {
		t.Errorf("the ack was not audited: %v", audit.Entries)
	}

	// A new watcher starts with what is firing.
	watch2, err := b.ops.WatchEvents(ctx, &factoryv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cur := recvEvent(t, watch2)
	if !cur.GetCurrent() || cur.GetTitle() != "[FIRING] agent_offline" || cur.GetAttributes()["alert_ids"] != a.GetId() {
		t.Errorf("current state %v", cur)
	}
	// Then news of any kind.
	b.hub.Publish(ctx, notify.Event{Kind: notify.KindDigest, ID: "d1", Title: "Morning digest"})
	if ev := recvEvent(t, watch2); ev.GetId() != "d1" || ev.GetKind() != "digest" || ev.GetCurrent() {
		t.Errorf("after the current state: %v", ev)
	}
	// The alert-only watcher did not get the digest: its next event is
	// the resolution.
	b.fleet.AgentSeen("forge", "")
	b.evaluate(t)
	if ev := recvEvent(t, watch); ev.GetTitle() != "[RESOLVED:1] agent_offline" {
		t.Errorf("alert watcher got %v", ev)
	}
	list, _ = b.ops.ListAlerts(ctx, &factoryv1.ListAlertsRequest{})
	if len(list.GetAlerts()) != 0 {
		t.Errorf("resolved alerts listed without include_resolved: %v", list.GetAlerts())
	}
	list, _ = b.ops.ListAlerts(ctx, &factoryv1.ListAlertsRequest{IncludeResolved: true})
	if len(list.GetAlerts()) != 1 || list.GetAlerts()[0].GetState() != factoryv1.AlertState_ALERT_STATE_RESOLVED {
		t.Errorf("with include_resolved: %v", list.GetAlerts())
	}
	if _, err := b.ops.AckAlert(ctx, &factoryv1.AckAlertRequest{AlertId: a.GetId()}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("ack of a resolved alert: %v", err)
	}
}

func TestSilencesOverGRPC(t *testing.T) {
	b := setupAlerts(t)
	ctx := context.Background()
	for _, c := range []struct {
		req   *factoryv1.SilenceAlertRequest
		field string
	}{
		{&factoryv1.SilenceAlertRequest{Rule: "no_such_rule", Duration: durationpb.New(time.Hour)}, "rule"},
		{&factoryv1.SilenceAlertRequest{Rule: "agent_offline"}, "duration"},
		{&factoryv1.SilenceAlertRequest{Rule: "agent_offline", Duration: durationpb.New(31 * 24 * time.Hour)}, "duration"},
		{&factoryv1.SilenceAlertRequest{Rule: "Agent Offline", Duration: durationpb.New(time.Hour)}, "rule"},
	} {
		_, err := b.ops.SilenceAlert(ctx, c.req)
		if st := wantCode(t, err, codes.InvalidArgument); fieldOf(st) != c.field {
			t.Errorf("%v: field %q, want %q", c.req, fieldOf(st), c.field)
		}
	}
	res, err := b.ops.SilenceAlert(ctx, &factoryv1.SilenceAlertRequest{Rule: "agent_offline",
		Matchers: map[string]string{"agent": "forge"}, Duration: durationpb.New(2 * time.Hour), Reason: "rebuilding gpu-1"})
	if err != nil {
		t.Fatal(err)
	}
	sil := res.GetSilence()
	if !sil.GetActive() || sil.GetCreatedBy() == "" || sil.GetReason() != "rebuilding gpu-1" ||
		sil.GetEndsAt().AsTime().Sub(sil.GetStartsAt().AsTime()) != 2*time.Hour {
		t.Errorf("silence %v", sil)
	}

	// The silenced alert fires but is not notified, and is listed as
	// silenced.
	sub := b.hub.Subscribe()
	defer sub.Close()
	b.agentGoesOffline(t)
	b.evaluate(t)
	b.clock.Advance(time.Minute)
	b.evaluate(t)
	select {
	case e := <-sub.Events():
		t.Errorf("a silenced alert was notified: %v", e)
	default:
	}
	list, _ := b.ops.ListAlerts(ctx, &factoryv1.ListAlertsRequest{})
	if len(list.GetAlerts()) != 1 || list.GetAlerts()[0].GetSilencedBy() != sil.GetId() ||
		list.GetAlerts()[0].GetState() != factoryv1.AlertState_ALERT_STATE_FIRING {
		t.Errorf("listed %v, want the FIRING alert silenced by %s", list.GetAlerts(), sil.GetId())
	}
	// /metrics counts it firing (a silence mutes notifications only), and
	// lists every other rule in force at 0.
	counts, err := alertSource(b.alerts)(ctx)
	if err != nil || len(counts) != len(b.alerts.Rules()) {
		t.Fatalf("alert metrics: %v, %v", counts, err)
	}
	for _, c := range counts {
		want := int64(0)
		if c.Rule == "agent_offline" {
			want = 1
		}
		if c.Firing != want {
			t.Errorf("alert metrics: rule %s firing %d, want %d", c.Rule, c.Firing, want)
		}
	}

	silences, _ := b.ops.ListSilences(ctx, &factoryv1.ListSilencesRequest{})
	if len(silences.GetSilences()) != 1 {
		t.Fatalf("%d active silences", len(silences.GetSilences()))
	}
	exp, err := b.ops.ExpireSilence(ctx, &factoryv1.ExpireSilenceRequest{SilenceId: sil.GetId()})
	if err != nil || exp.GetSilence().GetActive() {
		t.Fatalf("expire: %v, %v", exp, err)
	}
	if _, err := b.ops.ExpireSilence(ctx, &factoryv1.ExpireSilenceRequest{SilenceId: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("expire unknown: %v", err)
	}
	silences, _ = b.ops.ListSilences(ctx, &factoryv1.ListSilencesRequest{})
	all, _ := b.ops.ListSilences(ctx, &factoryv1.ListSilencesRequest{IncludeExpired: true})
	if len(silences.GetSilences()) != 0 || len(all.GetSilences()) != 1 {
		t.Errorf("after expiry: %d active, %d in all", len(silences.GetSilences()), len(all.GetSilences()))
	}
	// Unsilenced, the firing alert is notified at the next evaluation.
	b.evaluate(t)
	select {
	case e := <-sub.Events():
		if e.Title != "[FIRING:1] agent_offline" {
			t.Errorf("after the silence: %v", e)
		}
	default:
		t.Error("the alert was not notified once its silence ended")
	}
}

func auditHas(entries []*store.AuditEntry, rpc, target string) bool {
	for _, e := range entries {
		if e.RPC == rpc && e.Target == target && e.Outcome == "OK" {
			return true
		}
	}
	return false
}
