package server

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/fleet"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// defaultCommandTimeout is how long SendCommand waits for a result when the
// request names no timeout: longer than a typical restart script.
const defaultCommandTimeout = 60 * time.Second

// commandNote is what the audit log keeps of a command: what was asked of
// which host and what came of it (the output stays out: it may be long).
type commandNote struct {
	ID           string `json:"id,omitempty"`
	RestartAgent string `json:"restart_agent,omitempty"`
	Drain        bool   `json:"drain,omitempty"`
	Undrain      bool   `json:"undrain,omitempty"`
	OK           bool   `json:"ok"`
	Error        string `json:"error,omitempty"`
}

// SendCommand hands the command to the host's stream and waits for the
// sidecar's result.
func (s *fleetServer) SendCommand(ctx context.Context, req *factoryv1.SendCommandRequest) (*factoryv1.SendCommandResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if s.cmds == nil {
		return nil, status.Error(codes.Unimplemented, "this control plane sends no commands")
	}
	cmd := fleet.Command{RestartAgent: req.GetRestartAgent().GetName(), Drain: req.GetDrain() != nil, Undrain: req.GetUndrain() != nil}
	timeout := defaultCommandTimeout
	if d := req.GetTimeout().AsDuration(); d > 0 {
		timeout = d
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := s.cmds.Send(wctx, req.GetHost(), cmd)
	note := commandNote{ID: res.ID, RestartAgent: cmd.RestartAgent, Drain: cmd.Drain, Undrain: cmd.Undrain, OK: err == nil && res.OK, Error: res.Error}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// Sent but unanswered: audited, since the command may still run.
			note.Error = "no result within " + timeout.String()
			access.Note(ctx, req.GetHost(), nil, note)
			return nil, status.Errorf(codes.DeadlineExceeded, "host %s sent no result within %s; the command may still run", req.GetHost(), timeout)
		}
		return nil, s.err(ctx, err)
	}
	if (cmd.Drain || cmd.Undrain) && res.OK {
		s.fleet.SetDrained(req.GetHost(), cmd.Drain)
	}
	access.Note(ctx, req.GetHost(), nil, note)
	return &factoryv1.SendCommandResponse{Result: commandResultToProto(res)}, nil
}

func commandToProto(c fleet.Command) *factoryv1.SidecarCommand {
	out := &factoryv1.SidecarCommand{Id: c.ID}
	switch {
	case c.Drain:
		out.Command = &factoryv1.SidecarCommand_Drain{Drain: &factoryv1.DrainHost{}}
	case c.Undrain:
		out.Command = &factoryv1.SidecarCommand_Undrain{Undrain: &factoryv1.UndrainHost{}}
	default:
		out.Command = &factoryv1.SidecarCommand_RestartAgent{RestartAgent: &factoryv1.RestartAgent{Name: c.RestartAgent}}
	}
	return out
}

func commandResultFromProto(r *factoryv1.CommandResult) fleet.CommandResult {
	return fleet.CommandResult{ID: r.GetId(), OK: r.GetOk(), Output: r.GetOutput(), Error: r.GetError(), Took: r.GetTook().AsDuration()}
}

func commandResultToProto(r fleet.CommandResult) *factoryv1.CommandResult {
	return &factoryv1.CommandResult{Id: r.ID, Ok: r.OK, Output: r.Output, Error: r.Error, Took: durationpb.New(r.Took)}
}
