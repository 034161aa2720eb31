package server

import (
	"context"

	"github.com/factory/factory/controlplane/budget"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// watchStop subscribes a Connect stream to the emergency stop and, when
// the fleet is stopped already, says so right after the config, so a
// sidecar that connects (or reconnects after a restart) mid-stop hears it.
// Without a budget service the channel is nil and never ready.
func (s *fleetServer) watchStop(ctx context.Context, stream factoryv1.FleetService_ConnectServer) (<-chan budget.StopSignal, func(), error) {
	if s.budget == nil {
		return nil, func() {}, nil
	}
	ch, unwatch := s.budget.WatchStop()
	st, err := s.budget.StopState(ctx)
	if err != nil {
		unwatch()
		return nil, nil, s.err(ctx, err)
	}
	if st.Stopped {
		if err := stream.Send(stopMessage(budget.StopSignal{Stopped: true, Reason: st.Reason})); err != nil {
			unwatch()
			return nil, nil, err
		}
	}
	return ch, unwatch, nil
}

func stopMessage(sig budget.StopSignal) *factoryv1.ConnectResponse {
	return &factoryv1.ConnectResponse{EmergencyStop: &factoryv1.EmergencyStop{Stopped: sig.Stopped, Reason: sig.Reason}}
}
