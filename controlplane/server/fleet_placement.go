package server

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// admit keeps the Hello's agents the host may declare (fleet.Placements.Admit)
// and logs each one it refused: the sidecar hears them in its config, the
// operator reads them here. An operator's connection may also adopt
// agents placed nowhere, which keeps `make run` (a sidecar started with the
// operator token) working with no placement step.
func (s *fleetServer) admit(ctx context.Context, h fleet.Hello, operator bool) (fleet.Hello, []fleet.Refused, error) {
	if s.placements == nil {
		// No placements to check against: only an operator's word counts.
		if operator {
			return h, nil, nil
		}
		refused := make([]fleet.Refused, len(h.Agents))
		for i, a := range h.Agents {
			refused[i] = fleet.Refused{Name: a.Name, Reason: "this control plane keeps no placements, so no sidecar token declares agents"}
		}
		h.Agents = nil
		return h, refused, nil
	}
	admitted, refused, err := s.placements.Admit(ctx, s.fleet, h, operator)
	if err != nil {
		return fleet.Hello{}, nil, err
	}
	for _, r := range refused {
		s.log.WarnContext(ctx, "a sidecar declared an agent it may not run; not registered", "host", h.Host, "agent", r.Name, "reason", r.Reason)
	}
	return admitted, refused, nil
}

func refusedToProto(refused []fleet.Refused) []*factoryv1.RefusedAgent {
	if len(refused) == 0 {
		return nil
	}
	out := make([]*factoryv1.RefusedAgent, len(refused))
	for i, r := range refused {
		out[i] = &factoryv1.RefusedAgent{Name: r.Name, Reason: r.Reason}
	}
	return out
}

func (s *fleetServer) placementsReady() error {
	if s.placements == nil {
		return status.Error(codes.Unimplemented, "this control plane keeps no agent placements")
	}
	return nil
}

// PlaceAgent places an agent on a host, moving it from any other.
func (s *fleetServer) PlaceAgent(ctx context.Context, r *factoryv1.PlaceAgentRequest) (*factoryv1.PlaceAgentResponse, error) {
	if err := s.placementsReady(); err != nil {
		return nil, err
	}
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if s.fleet != nil {
		if err := s.fleet.CheckPlaceable(r.GetHost()); err != nil {
			return nil, s.err(ctx, err)
		}
	}
	before, after, err := s.placements.Place(ctx, r.GetAgent(), r.GetHost(), c.Ref())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	access.Note(ctx, "agent "+after.Agent, placementAudit(before), placementAudit(after))
	resp := &factoryv1.PlaceAgentResponse{Placement: placementToProto(after)}
	if before != nil {
		resp.PreviousHost = before.Host
	}
	return resp, nil
}

// UnplaceAgent removes an agent's placement.
func (s *fleetServer) UnplaceAgent(ctx context.Context, r *factoryv1.UnplaceAgentRequest) (*factoryv1.UnplaceAgentResponse, error) {
	if err := s.placementsReady(); err != nil {
		return nil, err
	}
	removed, err := s.placements.Unplace(ctx, r.GetAgent())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	access.Note(ctx, "agent "+removed.Agent, placementAudit(removed), nil)
	return &factoryv1.UnplaceAgentResponse{Placement: placementToProto(removed)}, nil
}

// ListPlacements lists placements by agent name.
func (s *fleetServer) ListPlacements(ctx context.Context, r *factoryv1.ListPlacementsRequest) (*factoryv1.ListPlacementsResponse, error) {
	if err := s.placementsReady(); err != nil {
		return nil, err
	}
	res, err := s.placements.List(ctx, r.GetHost(), int(r.GetPageSize()), r.GetPageToken())
	if err != nil {
		return nil, s.err(ctx, err)
	}
	out := &factoryv1.ListPlacementsResponse{NextPageToken: res.NextCursor, Placements: make([]*factoryv1.Placement, len(res.Placements))}
	for i, p := range res.Placements {
		out.Placements[i] = placementToProto(p)
	}
	return out, nil
}

func placementToProto(p *store.Placement) *factoryv1.Placement {
	return &factoryv1.Placement{Agent: p.Agent, Host: p.Host, PlacedBy: p.PlacedBy, PlacedAt: tsOrNil(p.PlacedAt)}
}

// placementAudit is a placement as the audit log records it; nil when
// there is none.
func placementAudit(p *store.Placement) any {
	if p == nil {
		return nil
	}
	return map[string]any{"agent": p.Agent, "host": p.Host, "placed_by": p.PlacedBy, "placed_at": p.PlacedAt.UTC().Format(time.RFC3339)}
}
