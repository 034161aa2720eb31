package server

import (
	"context"

	"github.com/factory/factory/controlplane/budget"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// watchStop subscribes a Connect stream to the emergency stop and, when
// the fleet is stopped already, says so right after the config, so a
// sidecar that connects (or reconnects after a restart) mid-stop hears it.
// Without a budget service the channel is nil and never ready. told is
// whether the stream was told the fleet is stopped: a signal the stream
// hears after subscribing may be the very stop it was just told of, and
// is not repeated (see stopChanged).
func (s *fleetServer) watchStop(ctx context.Context, stream factoryv1.FleetService_ConnectServer) (ch <-chan budget.StopSignal, unwatch func(), told bool, err error) {
	if s.budget == nil {
		return nil, func() {}, false, nil
	}
	ch, unwatch = s.budget.WatchStop()
	st, err := s.budget.StopState(ctx)
	if err != nil {
		unwatch()
		return nil, nil, false, s.err(ctx, err)
	}
	if st.Stopped {
		if err := stream.Send(stopMessage(budget.StopSignal{Stopped: true, Reason: st.Reason})); err != nil {
			unwatch()
			return nil, nil, false, err
		}
	}
	return ch, unwatch, st.Stopped, nil
}

// stopChanged reports whether sig changes what a stream was last told
// (told: stopped or not). Subscribing before reading the state means a
// stop signalled just before a sidecar connected can arrive after the
// state already said so; the sidecar hears each change once.
func stopChanged(told bool, sig budget.StopSignal) bool { return sig.Stopped != told }

func stopMessage(sig budget.StopSignal) *factoryv1.ConnectResponse {
	return &factoryv1.ConnectResponse{EmergencyStop: &factoryv1.EmergencyStop{Stopped: sig.Stopped, Reason: sig.Reason}}
}
