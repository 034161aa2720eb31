package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// BudgetConfig configures the spend ledger and budgets.
type BudgetConfig struct {
	// TimeZone is the IANA zone days are counted in (default
	// Pacific/Auckland, the runbook's).
	TimeZone string
	// PricesFile, when set, replaces the built-in price table (see
	// deploy/prices.yaml).
	PricesFile string
	// Publisher receives spend alerts and the emergency stop (default:
	// dropped).
	Publisher notify.Publisher
	// OnRecorded, when set, hears of every newly recorded event (the live
	// spend counters).
	OnRecorded func(ctx context.Context, day string, recs []budget.CounterEntry)
}

// newBudget builds the budget domain, installs its claim gate on q and
// applies an emergency stop left on by a previous run.
func newBudget(ctx context.Context, cfg BudgetConfig, st store.Store, q *queue.Service, clock queue.Clock, log *slog.Logger) (*budget.Service, error) {
	bcfg := budget.Config{Store: st, Logger: log, Publisher: cfg.Publisher, OnRecorded: cfg.OnRecorded}
	if clock != nil {
		bcfg.Clock = clock
	}
	zone := cfg.TimeZone
	if zone == "" {
		zone = budget.DefaultTimeZone
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: %w", zone, err)
	}
	bcfg.Location = loc
	if cfg.PricesFile != "" {
		if bcfg.Prices, err = budget.LoadPrices(cfg.PricesFile); err != nil {
			return nil, err
		}
	}
	b, err := budget.New(bcfg)
	if err != nil {
		return nil, err
	}
	if err := b.Attach(ctx, q); err != nil {
		return nil, fmt.Errorf("budget: %w", err)
	}
	return b, nil
}

// registerBudget serves BudgetService and reports it healthy.
func registerBudget(srv *grpc.Server, healthSrv *health.Server, svc Services, log *slog.Logger) {
	factoryv1.RegisterBudgetServiceServer(srv, &budgetServer{b: svc.Budget, log: log, hostsAgent: svc.HostsAgent})
	healthSrv.SetServingStatus(factoryv1.BudgetService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
}
