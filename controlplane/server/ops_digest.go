package server

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/digest"
	"github.com/factory/factory/controlplane/fleet"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// GetDigest implements factoryv1.OpsServiceServer.
func (s *opsServer) GetDigest(ctx context.Context, req *factoryv1.GetDigestRequest) (*factoryv1.GetDigestResponse, error) {
	if s.digest == nil {
		return nil, status.Error(codes.Unimplemented, "this server was built without the digest")
	}
	d, err := s.digest.Build(ctx, timeOf(req.GetSince()), timeOf(req.GetUntil()))
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &factoryv1.GetDigestResponse{Digest: digestProto(d)}, nil
}

func digestProto(d *digest.Digest) *factoryv1.Digest {
	out := &factoryv1.Digest{
		Since: timestamppb.New(d.Since), Until: timestamppb.New(d.Until),
		Completed: d.Completed, Failed: d.Failed, Stuck: d.Stuck, DeadLetter: d.DeadLetter,
		AgentsOnline: d.AgentsOnline, AgentsStale: d.AgentsStale, AgentsOffline: d.AgentsOffline,
		Infrastructure: d.Infrastructure, Text: d.Render(),
	}
	if d.Spend != nil {
		out.SpendYesterdayMicros, out.SpendWeekAverageMicros = &d.Spend.Yesterday, &d.Spend.WeekAverage
	}
	if d.ApprovalsPending >= 0 {
		out.ApprovalsPending = &d.ApprovalsPending
	}
	return out
}

// Infrastructure thresholds of the digest, from the runbook's health
// check: a GPU or a disk above them is named.
const (
	gpuMemoryHighPercent = 90
	diskHighPercent      = 85
)

// FleetInfra describes the fleet's infrastructure for the digest from the
// sidecars' latest telemetry: GPUs with little memory left, disks filling
// up, failing probes, hosts without telemetry; or that all is well.
type FleetInfra struct{ Fleet *fleet.Registry }

var _ digest.InfraSource = FleetInfra{}

// Infrastructure implements digest.InfraSource.
func (f FleetInfra) Infrastructure(context.Context) ([]string, error) {
	if f.Fleet == nil {
		return nil, nil
	}
	var lines []string
	gpus, disks, probes := 0, 0, 0
	for _, n := range f.Fleet.Nodes() {
		t, ok := n.Telemetry.(*factoryv1.Telemetry)
		if !ok {
			lines = append(lines, fmt.Sprintf("%s: no telemetry (%s)", n.Host, n.State))
			continue
		}
		if n.State != fleet.StateOnline {
			lines = append(lines, fmt.Sprintf("%s: %s, last seen %s", n.Host, n.State, n.LastSeen.UTC().Format(time.RFC3339)))
		}
		for _, g := range t.GetGpus() {
			gpus++
			if total := g.GetMemoryTotalBytes(); total > 0 {
				if pct := g.GetMemoryUsedBytes() * 100 / total; pct >= gpuMemoryHighPercent {
					lines = append(lines, fmt.Sprintf("%s GPU %d (%s): memory %.1f/%.1f GiB (%d%%)", n.Host, g.GetIndex(), g.GetName(),
						gib(g.GetMemoryUsedBytes()), gib(total), pct))
				}
			}
		}
		for _, d := range t.GetDisks() {
			disks++
			switch {
			case d.GetError() != "":
				lines = append(lines, fmt.Sprintf("%s disk %s: %s", n.Host, d.GetPath(), d.GetError()))
			case d.GetUsedBytes()+d.GetAvailableBytes() > 0:
				if pct := int(fleet.DiskUsedRatio(d.GetUsedBytes(), d.GetAvailableBytes()) * 100); pct >= diskHighPercent {
					lines = append(lines, fmt.Sprintf("%s disk %s: %d%% used, %.1f GiB free", n.Host, d.GetPath(), pct, gib(d.GetAvailableBytes())))
				}
			}
		}
		for _, p := range t.GetProbes() {
			probes++
			if !p.GetOk() {
				lines = append(lines, fmt.Sprintf("%s probe %s (%s): failing: %s", n.Host, p.GetName(), p.GetTarget(), p.GetDetail()))
			}
		}
	}
	if len(lines) == 0 {
		lines = append(lines, fmt.Sprintf("all well: %d GPU(s), %d disk(s), %d probe(s) within limits", gpus, disks, probes))
	}
	return lines, nil
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }
