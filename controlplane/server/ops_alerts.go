package server

import (
	"context"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/alert"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func (s *opsServer) alertsAvailable() error {
	if s.alerts == nil {
		return status.Error(codes.Unimplemented, "this server was built without alerting")
	}
	return nil
}

// ListAlerts implements factoryv1.OpsServiceServer.
func (s *opsServer) ListAlerts(ctx context.Context, req *factoryv1.ListAlertsRequest) (*factoryv1.ListAlertsResponse, error) {
	if err := s.alertsAvailable(); err != nil {
		return nil, err
	}
	listed, err := s.alerts.List(ctx)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	out := &factoryv1.ListAlertsResponse{}
	for _, l := range listed {
		if l.State == store.AlertResolved && !req.GetIncludeResolved() {
			continue
		}
		a := alertProto(l.Alert)
		a.SilencedBy = l.SilencedBy
		out.Alerts = append(out.Alerts, a)
	}
	return out, nil
}

// AckAlert implements factoryv1.OpsServiceServer.
func (s *opsServer) AckAlert(ctx context.Context, req *factoryv1.AckAlertRequest) (*factoryv1.AckAlertResponse, error) {
	if err := s.alertsAvailable(); err != nil {
		return nil, err
	}
	caller, _ := access.FromContext(ctx)
	a, err := s.alerts.Ack(ctx, req.GetAlertId(), caller.Subject)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	access.Note(ctx, "alert "+a.ID, nil, map[string]string{"rule": a.Rule, "acked_by": a.AckedBy})
	return &factoryv1.AckAlertResponse{Alert: alertProto(a)}, nil
}

// SilenceAlert implements factoryv1.OpsServiceServer.
func (s *opsServer) SilenceAlert(ctx context.Context, req *factoryv1.SilenceAlertRequest) (*factoryv1.SilenceAlertResponse, error) {
	if err := s.alertsAvailable(); err != nil {
		return nil, err
	}
	caller, _ := access.FromContext(ctx)
	sil, err := s.alerts.Silence(ctx, alert.SilenceParams{Rule: req.GetRule(), Matchers: req.GetMatchers(),
		For: req.GetDuration().AsDuration(), Reason: req.GetReason(), By: caller.Subject})
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	out := silenceProto(sil, s.alerts)
	access.Note(ctx, "silence "+sil.ID, nil, out)
	return &factoryv1.SilenceAlertResponse{Silence: out}, nil
}

// ListSilences implements factoryv1.OpsServiceServer.
func (s *opsServer) ListSilences(ctx context.Context, req *factoryv1.ListSilencesRequest) (*factoryv1.ListSilencesResponse, error) {
	if err := s.alertsAvailable(); err != nil {
		return nil, err
	}
	silences, err := s.alerts.Silences(ctx, !req.GetIncludeExpired())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	out := &factoryv1.ListSilencesResponse{}
	for _, x := range silences {
		out.Silences = append(out.Silences, silenceProto(x, s.alerts))
	}
	return out, nil
}

// ExpireSilence implements factoryv1.OpsServiceServer.
func (s *opsServer) ExpireSilence(ctx context.Context, req *factoryv1.ExpireSilenceRequest) (*factoryv1.ExpireSilenceResponse, error) {
	if err := s.alertsAvailable(); err != nil {
		return nil, err
	}
	sil, err := s.alerts.Expire(ctx, req.GetSilenceId())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	access.Note(ctx, "silence "+sil.ID, nil, map[string]string{"ends_at": sil.EndsAt.Format(time.RFC3339)})
	return &factoryv1.ExpireSilenceResponse{Silence: silenceProto(sil, s.alerts)}, nil
}

// WatchEvents implements factoryv1.OpsServiceServer. It subscribes before
// reading the current state, so an alert that fires in between is sent
// (perhaps twice) rather than missed.
func (s *opsServer) WatchEvents(req *factoryv1.WatchEventsRequest, stream grpc.ServerStreamingServer[factoryv1.WatchEventsResponse]) error {
	if s.events == nil {
		return status.Error(codes.Unimplemented, "this server was built without the event stream")
	}
	ctx := stream.Context()
	kinds := make([]notify.Kind, len(req.GetKinds()))
	for i, k := range req.GetKinds() {
		kinds[i] = notify.Kind(k)
	}
	sub := s.events.Subscribe(kinds...)
	defer sub.Close()
	if s.alerts != nil && (len(kinds) == 0 || slices.Contains(kinds, notify.KindAlert)) {
		current, err := s.alerts.Current(ctx)
		if err != nil {
			return toStatus(ctx, s.log, err)
		}
		for _, e := range current {
			if err := stream.Send(&factoryv1.WatchEventsResponse{Event: eventProto(e, true)}); err != nil {
				return err
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return toStatus(ctx, s.log, ctx.Err())
		case <-s.stopping:
			return status.Error(codes.Unavailable, "the control plane is shutting down; watch again")
		case <-sub.Done():
			return status.Error(codes.ResourceExhausted, sub.Err().Error())
		case e := <-sub.Events():
			if err := stream.Send(&factoryv1.WatchEventsResponse{Event: eventProto(e, false)}); err != nil {
				return err
			}
		}
	}
}

var alertStates = map[store.AlertState]factoryv1.AlertState{
	store.AlertPending:  factoryv1.AlertState_ALERT_STATE_PENDING,
	store.AlertFiring:   factoryv1.AlertState_ALERT_STATE_FIRING,
	store.AlertResolved: factoryv1.AlertState_ALERT_STATE_RESOLVED,
}

func alertProto(a *store.Alert) *factoryv1.Alert {
	return &factoryv1.Alert{
		Id: a.ID, Rule: a.Rule, Labels: a.Labels, State: alertStates[a.State], Severity: a.Severity,
		Summary: a.Summary, Value: a.Value, ActiveSince: ts(a.ActiveSince), FiredAt: ts(a.FiredAt),
		ResolvedAt: ts(a.ResolvedAt), LastNotifiedAt: ts(a.LastNotifiedAt), AckedBy: a.AckedBy, AckedAt: ts(a.AckedAt),
	}
}

func silenceProto(x *store.Silence, svc *alert.Service) *factoryv1.Silence {
	return &factoryv1.Silence{
		Id: x.ID, Rule: x.Rule, Matchers: x.Matchers, CreatedBy: x.CreatedBy, Reason: x.Reason,
		StartsAt: ts(x.StartsAt), EndsAt: ts(x.EndsAt), CreatedAt: ts(x.CreatedAt), Active: x.ActiveAt(svc.Now()),
	}
}

func eventProto(e notify.Event, current bool) *factoryv1.Event {
	return &factoryv1.Event{Id: e.ID, Kind: string(e.Kind), Time: ts(e.Time), Title: e.Title, Text: e.Text,
		Attributes: e.Attributes, Current: current}
}
