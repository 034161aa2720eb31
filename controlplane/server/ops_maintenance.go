package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/maintenance"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func (s *opsServer) maintenanceAvailable() error {
	if s.maint == nil {
		return status.Error(codes.Unimplemented, "this server was built without maintenance mode")
	}
	return nil
}

// StartMaintenance implements factoryv1.OpsServiceServer.
func (s *opsServer) StartMaintenance(ctx context.Context, req *factoryv1.StartMaintenanceRequest) (*factoryv1.StartMaintenanceResponse, error) {
	if err := s.maintenanceAvailable(); err != nil {
		return nil, err
	}
	caller, _ := access.FromContext(ctx)
	res, err := s.maint.Start(ctx, maintenance.StartParams{Reason: req.GetReason(), StartedBy: caller.Subject, Wait: req.GetWait().AsDuration()})
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	access.Note(ctx, "maintenance", nil, maintenanceNote{Active: true, Reason: res.State.Reason, PausedQueue: res.State.PausedQueue, PausedTasks: res.PausedTasks})
	out := &factoryv1.StartMaintenanceResponse{Maintenance: maintenanceProto(res.State), PausedTasks: int32(res.PausedTasks)}
	for _, t := range res.StillRunning {
		out.StillRunning = append(out.StillRunning, taskSummaryToProto(t))
	}
	return out, nil
}

// EndMaintenance implements factoryv1.OpsServiceServer.
func (s *opsServer) EndMaintenance(ctx context.Context, _ *factoryv1.EndMaintenanceRequest) (*factoryv1.EndMaintenanceResponse, error) {
	if err := s.maintenanceAvailable(); err != nil {
		return nil, err
	}
	caller, _ := access.FromContext(ctx)
	res, err := s.maint.End(ctx, caller.Subject)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	access.Note(ctx, "maintenance", maintenanceNote{Active: res.Ended.Active, Reason: res.Ended.Reason, PausedQueue: res.Ended.PausedQueue},
		maintenanceNote{ResumedQueue: res.ResumedQueue, ResumedTasks: res.ResumedTasks})
	return &factoryv1.EndMaintenanceResponse{Ended: maintenanceProto(res.Ended), ResumedQueue: res.ResumedQueue, ResumedTasks: int32(res.ResumedTasks)}, nil
}

// GetMaintenance implements factoryv1.OpsServiceServer.
func (s *opsServer) GetMaintenance(ctx context.Context, _ *factoryv1.GetMaintenanceRequest) (*factoryv1.GetMaintenanceResponse, error) {
	if err := s.maintenanceAvailable(); err != nil {
		return nil, err
	}
	st, err := s.maint.Get(ctx)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	out := &factoryv1.GetMaintenanceResponse{Maintenance: maintenanceProto(st.State), InProgressCount: st.InProgressCount}
	for _, t := range st.InProgress {
		out.InProgress = append(out.InProgress, taskSummaryToProto(t))
	}
	return out, nil
}

// maintenanceNote is what the audit log records of a start or an end.
type maintenanceNote struct {
	Active       bool   `json:"active"`
	Reason       string `json:"reason,omitempty"`
	PausedQueue  bool   `json:"paused_queue,omitempty"`
	PausedTasks  int    `json:"paused_tasks,omitempty"`
	ResumedQueue bool   `json:"resumed_queue,omitempty"`
	ResumedTasks int    `json:"resumed_tasks,omitempty"`
}

func maintenanceProto(m store.MaintenanceState) *factoryv1.Maintenance {
	out := &factoryv1.Maintenance{Active: m.Active, Reason: m.Reason, StartedBy: m.StartedBy, PausedQueue: m.PausedQueue}
	if !m.StartedAt.IsZero() {
		out.StartedAt = timestamppb.New(m.StartedAt)
	}
	return out
}
