package server

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/factory/factory/controlplane/approval"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// ApprovalConfig configures the approval gate.
type ApprovalConfig struct {
	// PolicyFile, when set, is a YAML approval policy (see
	// approval.LoadPolicy); unset means the runbook's defaults.
	PolicyFile string
	// DefaultTimeout is the deadline of a request that names none
	// (default 1h).
	DefaultTimeout time.Duration
	// MinTimeout is the shortest timeout a request that waits for an
	// operator may ask for (default 5m); a shorter one is refused.
	MinTimeout time.Duration
	// ReminderFraction overrides the policy's reminder point when above 0.
	ReminderFraction float64
}

// newApprovals builds the approval domain on the queue's store, gating the
// queue's new tasks and waking its claimers on decisions. events is the hub
// that pub and the other replicas' relayed events feed: waiters hear
// decisions made on other replicas from it.
func newApprovals(cfg ApprovalConfig, st store.Store, q *queue.Service, clock queue.Clock, pub notify.Publisher, events *notify.Hub, log *slog.Logger, consoleURL string) (*approval.Service, error) {
	acfg := approval.Config{Store: st, Queue: q, Publisher: pub, Decisions: events, Logger: log, DefaultTimeout: cfg.DefaultTimeout, MinTimeout: cfg.MinTimeout, ConsoleURL: consoleURL}
	if clock != nil {
		acfg.Clock = clock
	}
	if cfg.PolicyFile != "" {
		p, err := approval.LoadPolicy(cfg.PolicyFile)
		if err != nil {
			return nil, err
		}
		acfg.Policy = p
	}
	if cfg.ReminderFraction > 0 {
		if acfg.Policy.KindTiers == nil {
			acfg.Policy = approval.DefaultPolicy()
		}
		acfg.Policy.ReminderFraction = cfg.ReminderFraction
	}
	return approval.New(acfg)
}

// runApprovals runs the deadline sweeper, on the elected replica alone
// when replicas share a database.
func runApprovals(ctx context.Context, g *errgroup.Group, raw store.Store, a *approval.Service) {
	if el, ok := raw.(store.Elector); ok {
		g.Go(func() error { return el.RunElected(ctx, "approvals", a.RunSweeper) })
		return
	}
	g.Go(func() error { return a.RunSweeper(ctx) })
}

// registerApprovals registers the ApprovalService and its health status.
func registerApprovals(srv *grpc.Server, healthSrv *health.Server, svc Services, log *slog.Logger, stopping <-chan struct{}) {
	factoryv1.RegisterApprovalServiceServer(srv, &approvalServer{a: svc.Approvals, log: log, stopping: stopping})
	st := healthpb.HealthCheckResponse_SERVING
	if svc.Approvals == nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	healthSrv.SetServingStatus(factoryv1.ApprovalService_ServiceDesc.ServiceName, st)
}
