package server

import (
	"context"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/fleet"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// forgetNote is what the audit log keeps of a forgotten host.
type forgetNote struct {
	State    string   `json:"state,omitempty"`
	LastSeen string   `json:"last_seen,omitempty"`
	Agents   []string `json:"agents,omitempty"`
	Unplaced []string `json:"unplaced_agents,omitempty"`
	Forced   bool     `json:"forced,omitempty"`
}

// ForgetNode removes a gone host, its declared agents and its placements.
func (s *fleetServer) ForgetNode(ctx context.Context, req *factoryv1.ForgetNodeRequest) (*factoryv1.ForgetNodeResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	res, err := fleet.ForgetHost(ctx, s.fleet, s.placements, req.GetHost(), req.GetForce())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	before := forgetNote{Unplaced: res.Unplaced, Forced: req.GetForce()}
	out := &factoryv1.ForgetNodeResponse{UnplacedAgents: res.Unplaced}
	if res.Known {
		before.State, before.Agents = res.Node.State.String(), res.Node.Agents
		if !res.Node.LastSeen.IsZero() {
			before.LastSeen = res.Node.LastSeen.UTC().Format("2006-01-02T15:04:05Z")
		}
		out.Node = nodesToProto([]fleet.Node{res.Node})[0]
	}
	access.Note(ctx, "node "+req.GetHost(), before, nil)
	return out, nil
}
