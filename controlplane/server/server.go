// Package server assembles the control plane: the store, the domain
// services, the gRPC server with its transport security, abuse limits and
// interceptor chain, health and reflection, and the background sweepers,
// with a graceful shutdown.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/alert"
	"github.com/factory/factory/controlplane/approval"
	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/console"
	"github.com/factory/factory/controlplane/digest"
	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/maintenance"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/ops"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/telemetry"
	"github.com/factory/factory/controlplane/transport"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Config configures the control plane.
type Config struct {
	// Listen is the gRPC address; port 0 picks a free one.
	Listen string
	// DataDir holds the SQLite database.
	DataDir string
	// Store selects the store: empty or "sqlite" (DataDir/factory.db),
	// "sqlite:PATH", or a postgres:// URL for replicas sharing a database.
	Store string
	// PostgresSchema holds the tables in a PostgreSQL store (default
	// public); several factories can share one database.
	PostgresSchema string
	// ShutdownTimeout bounds the graceful stop; calls still running after
	// it are cut off.
	ShutdownTimeout time.Duration
	// Queue tunes the queue domain; its Store, Logger and Clock are set here.
	Queue queue.Config
	// Fleet sets the liveness thresholds; zero fields take the runbook's.
	Fleet fleet.Config
	// Digest sets the morning digest's time and zone (ops_wiring.go).
	Digest DigestConfig
	// Budget sets the spend ledger's zone, price table and hooks
	// (budget_wiring.go).
	Budget BudgetConfig
	// Notify sets the webhooks and Alerts the alert rules
	// (alerts_wiring.go).
	Notify NotifyConfig
	Alerts AlertsConfig
	// Approvals sets the approval policy and deadlines (approval_wiring.go).
	Approvals ApprovalConfig
	// RedisURL, when set (redis://host:port/db), keeps the runbook's live
	// spend counters (dash:spend:daily:*) in Redis, rebuilt from the
	// ledger; the ledger stays the truth with Redis down or flushed.
	RedisURL string

	// TLS serves TLS, and mutual TLS when it names a client CA. Without it
	// the server speaks plaintext, which Run allows only on a loopback
	// Listen address unless Insecure is set.
	TLS      transport.ServerTLS
	Insecure bool
	// RateLimit bounds each caller's request rate; the zero value is off.
	RateLimit RateLimit
	// Streams caps concurrent streams per token and per connection
	// (streams.go); zero fields take the defaults.
	Streams StreamLimits
	// AuthFailLimit bounds failed authentications per peer address; the
	// zero value is off (authlimit.go). Audit bounds the audit log
	// (audit_wiring.go).
	AuthFailLimit AuthFailLimit
	Audit         AuditConfig
	// Backup schedules backups and vacuums (backup_wiring.go).
	Backup BackupConfig

	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	// DebugListen, when set, serves Go's profiler (/debug/pprof/) on this
	// loopback address.
	DebugListen string
	// MetricsListen, when set, serves the OpenTelemetry metrics for
	// Prometheus on http://MetricsListen/metrics (see package metrics);
	// empty turns metrics off. OnMetricsListening, when set, is told the
	// bound address.
	MetricsListen      string
	OnMetricsListening func(addr net.Addr)
	// OnListening, when set, is called with the bound address once the
	// server accepts connections.
	OnListening func(addr net.Addr)
	// Console serves the operator console; its zero value is off.
	Console ConsoleConfig
}

// ConsoleConfig configures the operator console (package console).
type ConsoleConfig struct {
	// Listen is the console's HTTP address, under the same TLS and
	// plaintext rules as Listen; empty turns the console off.
	Listen string
	// URL is the console's address as operators reach it, which approval
	// cards link to; empty derives it from the bound address.
	URL string
	// SessionTTL bounds a session; 0 means console.DefaultSessionTTL.
	SessionTTL time.Duration
	// OnListening, when set, is told the console's URL once it accepts
	// connections, and a one-time sign-in path for the bootstrap operator
	// when the console is on loopback (else empty).
	OnListening func(url, signInPath string)
}

// WithDefaults returns a copy with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7420"
	}
	if c.DataDir == "" {
		c.DataDir = "data"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	return c
}

// Run serves until ctx ends, then stops gracefully.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.WithDefaults()
	log := cfg.Logger
	// Refuse a bad transport before anything touches the data directory.
	tlsCfg, err := cfg.TLS.Config()
	if err != nil {
		return err
	}
	if err := transport.CheckListen(cfg.Listen, tlsCfg != nil, cfg.Insecure); err != nil {
		return err
	}
	if cfg.Console.Listen != "" {
		if err := transport.CheckListen(cfg.Console.Listen, tlsCfg != nil, cfg.Insecure); err != nil {
			return fmt.Errorf("console: %w", err)
		}
	}
	if _, err := requestValidator(); err != nil {
		return err
	}
	raw, driver, where, err := openStore(ctx, cfg)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer raw.Close()

	qcfg := cfg.Queue
	qcfg.Store = store.WithTracing(raw, cfg.TracerProvider, driver)
	qcfg.Logger = log
	q, err := queue.New(qcfg)
	if err != nil {
		return err
	}
	acc, err := access.New(access.Config{Store: qcfg.Store, Logger: log, Clock: qcfg.Clock, AuditWindow: cfg.Audit.Window})
	if err != nil {
		return err
	}
	// Every store, PostgreSQL too, bootstraps into the data directory: it
	// is where `make run` and the CLI's loopback fallback look.
	tokenFile, created, err := acc.Bootstrap(ctx, cfg.DataDir)
	if err != nil {
		return err
	}
	if created {
		log.InfoContext(ctx, "no operator token existed: made one; its secret is in the file (the CLI reads it on loopback)", "file", tokenFile)
	}
	// After an import, claimers waiting here look at the tasks that
	// arrived (other replicas hear of it through the change feed).
	opsSvc, err := ops.New(ops.Config{Store: qcfg.Store, Logger: log, AfterImport: func(ctx context.Context) {
		_ = q.ApplyRemote(ctx, store.ChangeBatch{Resync: true})
		acc.TokensReplaced()
	}})
	if err != nil {
		return err
	}
	if cfg.RateLimit.Key == nil {
		cfg.RateLimit.Key = CallerToken
	}
	backups, err := newBackupScheduler(cfg.Backup, opsSvc, qcfg.Clock, log)
	if err != nil {
		return err
	}
	cfg.Alerts.backups = backupAlerts(cfg.Backup, qcfg.Store)

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	stopping := make(chan struct{})
	// The fleet's liveness runs on the queue's clock, so tests that move
	// one move both.
	fleetClock := fleet.SystemClock
	if qcfg.Clock != nil {
		fleetClock = qcfg.Clock
	}
	fl := fleet.New(fleetClock, cfg.Fleet)
	placements := fleet.NewPlacements(qcfg.Store, fleetClock, 0)
	history := fleet.NewHistory(qcfg.Store, fleetClock, cfg.Fleet)
	fleetEvents := fleet.NewEvents(qcfg.Store, fleetClock)
	counters, err := newLiveCounters(cfg, log)
	if err != nil {
		return err
	}
	if counters != nil {
		cfg.Budget.OnRecorded = counters.hook(cfg.Budget.OnRecorded)
	}
	// One publisher for every domain's operator-facing events: the
	// WatchEvents hub and the webhooks (alerts_wiring.go).
	notif, err := newNotifier(cfg.Notify, raw, log)
	if err != nil {
		return err
	}
	if cfg.Budget.Publisher == nil {
		cfg.Budget.Publisher = notif.Notifier
	}
	if cfg.Digest.Publisher == nil {
		cfg.Digest.Publisher = notif.Notifier
	}
	bud, err := newBudget(ctx, cfg.Budget, qcfg.Store, q, qcfg.Clock, log)
	if err != nil {
		return err
	}
	if counters != nil {
		counters.bud = bud
	}
	alerts, err := newAlerts(cfg.Alerts, qcfg.Store, fl, fleetEvents, bud, qcfg.Clock, notif.Notifier, log)
	if err != nil {
		return err
	}
	consoleLis, consoleURL, err := listenConsole(cfg.Console, tlsCfg)
	if err != nil {
		return err
	}
	if consoleLis != nil {
		defer consoleLis.Close()
	}
	approvals, err := newApprovals(cfg.Approvals, qcfg.Store, q, qcfg.Clock, notif.Notifier, notif.hub, log, consoleURL)
	if err != nil {
		return err
	}
	if cfg.Digest.Spend == nil {
		cfg.Digest.Spend = BudgetSpend{Budget: bud}
	}
	if cfg.Digest.Approvals == nil {
		cfg.Digest.Approvals = ApprovalCount{Approvals: approvals}
	}
	maint, dig, err := newOpsDomains(ctx, cfg.Digest, qcfg.Store, q, fl, qcfg.Clock, log)
	if err != nil {
		return err
	}
	joinPauseHolders(q, bud, maint)
	met, err := newMetrics(cfg, Services{Queue: q, Fleet: fl, Budget: bud, Alerts: alerts}, qcfg.Store)
	if err != nil {
		return err
	}
	defer func() { _ = met.Shutdown(context.WithoutCancel(ctx)) }()
	if err := registerBackupMetrics(met, cfg.Backup, opsSvc, maint.Now); err != nil {
		return err
	}
	services := Services{Queue: q, Access: acc, Ops: opsSvc, Fleet: fl, Placements: placements, FleetEvents: fleetEvents, FleetHistory: history, Maintenance: maint, Digest: dig, Budget: bud, Alerts: alerts, Events: notif.hub, Approvals: approvals, Backup: cfg.Backup}
	grpcOpts := []GRPCOption{WithRateLimit(cfg.RateLimit), WithStreamLimits(cfg.Streams), WithMeterProvider(met.MeterProvider()), WithAuthFailLimit(cfg.AuthFailLimit)}
	srv, healthSrv := NewGRPCServer(services, log, cfg.TracerProvider, stopping, append(grpcOpts, WithTLS(tlsCfg))...)

	log.InfoContext(ctx, "listening", "addr", lis.Addr().String(), "tls", tlsMode(tlsCfg), "store", driver, "db", where, "pid", os.Getpid(), "version", telemetry.Version())
	if cfg.OnListening != nil {
		cfg.OnListening(lis.Addr())
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	})
	if cfg.DebugListen != "" {
		g.Go(func() error { return serveDebug(gctx, cfg.DebugListen, log) })
	}
	var inproc *grpc.Server
	if consoleLis != nil {
		// The console calls the API in process, on a server of its own
		// built the same way (policy, validation, limits, audit) but
		// without TLS, which a connection that never leaves the process
		// does not need and mutual TLS would refuse.
		inproc, _ = NewGRPCServer(services, log, cfg.TracerProvider, stopping, grpcOpts...)
		cons, err := newConsole(cfg, acc, inproc, g, log, tlsCfg != nil)
		if err != nil {
			return err
		}
		g.Go(func() error { return cons.Serve(gctx, consoleLis, tlsCfg, cfg.ShutdownTimeout) })
		announceConsole(cfg, cons, consoleLis, consoleURL, log)
	}
	if counters != nil {
		g.Go(func() error { return counters.run(gctx) })
	}
	if met != nil {
		g.Go(func() error { return serveMetrics(gctx, cfg, met) })
	}
	// With replicas sharing a database, one of them sweeps and every one of
	// them hears the others' changes.
	// The telemetry history's retention is pruned the same way: by the
	// elected replica alone, since one DELETE serves them all.
	pruneHistory := func(ctx context.Context) error { return history.RunRetention(ctx, log) }
	if el, ok := raw.(store.Elector); ok {
		g.Go(func() error { return el.RunElected(gctx, "sweeper", q.RunSweeper) })
		g.Go(func() error { return el.RunElected(gctx, "telemetry-retention", pruneHistory) })
	} else {
		g.Go(func() error { return q.RunSweeper(gctx) })
		g.Go(func() error { return pruneHistory(gctx) })
	}
	runDigest(gctx, g, cfg.Digest, raw, dig)
	runAudit(gctx, g, cfg.Audit, raw, acc, log)
	runAlerts(gctx, g, cfg.Alerts, raw, alerts)
	runApprovals(gctx, g, raw, approvals)
	runBackups(gctx, g, cfg.Backup, raw, backups, opsSvc)
	notif.run(gctx, g)
	if feed, ok := raw.(store.ChangeFeed); ok {
		g.Go(func() error {
			return feed.ListenChanges(gctx, func(b store.ChangeBatch) {
				if err := q.ApplyRemote(gctx, b); err != nil && gctx.Err() == nil {
					log.WarnContext(gctx, "applying other replicas' changes failed", "err", err)
				}
			})
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down", "grace", cfg.ShutdownTimeout.String())
		healthSrv.Shutdown()
		close(stopping)
		if inproc != nil {
			stopGracefully(inproc, cfg.ShutdownTimeout, log)
		}
		stopGracefully(srv, cfg.ShutdownTimeout, log)
		return nil
	})
	err = g.Wait()
	// The server has stopped: no refusal can arrive after this flush.
	acc.FlushAudit(context.WithoutCancel(ctx))
	return err
}

func tlsMode(cfg *tls.Config) string {
	switch {
	case cfg == nil:
		return "off"
	case cfg.ClientAuth == tls.RequireAndVerifyClientCert:
		return "mutual"
	default:
		return "on"
	}
}

// stopGracefully lets running calls finish, then cuts off whatever is still
// running when the deadline passes.
func stopGracefully(srv *grpc.Server, timeout time.Duration, log *slog.Logger) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		log.Warn("graceful stop timed out; closing remaining calls")
		srv.Stop()
		<-done
	}
}

// Services are the domain services the gRPC server exposes.
type Services struct {
	Queue *queue.Service
	// Access resolves tokens and keeps the audit log; without it every
	// call but health and reflection is refused.
	Access *access.Service
	// HostsAgent lets a sidecar act for the agents placed on its host
	// (see Policy); Placements provides it. Without either, no sidecar
	// acts for any agent.
	HostsAgent HostsAgent
	// Placements are the operators' grants of which host runs which
	// agent, in the store (shared by every replica); without them
	// FleetService's placement RPCs answer UNIMPLEMENTED and a sidecar
	// token's Hello registers no agent.
	Placements *fleet.Placements
	// Ops exports and imports the whole state; without it OpsService
	// answers UNIMPLEMENTED.
	Ops *ops.Service
	// Fleet is the liveness of hosts and agents; without it FleetService
	// answers UNIMPLEMENTED.
	Fleet *fleet.Registry
	// FleetEvents stores the events sidecars must not lose (model swaps,
	// log-watch counts); without it they stay unacked in the sidecars'
	// spools.
	FleetEvents *fleet.Events
	// FleetHistory stores the downsampled telemetry history; without it
	// only the latest readings are kept and GetNodeHistory answers
	// UNIMPLEMENTED.
	FleetHistory *fleet.History
	// Maintenance is maintenance mode and Digest the morning digest;
	// without them their OpsService RPCs answer UNIMPLEMENTED.
	Maintenance *maintenance.Service
	Digest      *digest.Service
	// Budget is the spend ledger, budgets and emergency stop; without it
	// BudgetService answers UNIMPLEMENTED and sidecars hear no stop.
	Budget *budget.Service
	// Alerts evaluates the alert rules and Events fans operator-facing
	// events out to WatchEvents; without them those RPCs answer
	// UNIMPLEMENTED.
	Alerts *alert.Service
	Events *notify.Hub
	// Approvals is the approval gate; without it ApprovalService answers
	// UNIMPLEMENTED and tasks are not gated.
	Approvals *approval.Service
	// Backup is the backup schedule GetBackupStatus reports.
	Backup BackupConfig
}

// GRPCOption adds transport security or abuse limits to NewGRPCServer.
type GRPCOption func(*grpcOptions)

type grpcOptions struct {
	tls       *tls.Config
	rateLimit RateLimit
	streams   StreamLimits
	meter     metric.MeterProvider // see WithMeterProvider
	authFail  *AuthFailLimit       // see WithAuthFailLimit
}

// WithTLS serves TLS with cfg; nil keeps plaintext.
func WithTLS(cfg *tls.Config) GRPCOption { return func(o *grpcOptions) { o.tls = cfg } }

// WithRateLimit limits each caller's request rate; see RateLimit.
func WithRateLimit(r RateLimit) GRPCOption { return func(o *grpcOptions) { o.rateLimit = r } }

// NewGRPCServer returns a gRPC server with every service, health and
// reflection registered and the interceptor chain installed:
//
//  1. recovery, outermost, so a panic anywhere becomes INTERNAL;
//  2. logging;
//  3. authentication: the bearer token becomes the caller (health and
//     reflection are open);
//  4. the per-caller rate limit (health checks are exempt);
//  5. authorization by the policy table (policy.go), which also records
//     audited calls and refusals: after the rate limit, so a caller
//     looping on a refused call cannot flood the audit log;
//  6. request validation, last, so only well-formed requests reach a
//     handler.
//
// stopping is closed at shutdown so long-lived streams end and
// GracefulStop can finish. It panics if the API's validation rules do not
// compile, which only a broken build can cause; Run checks first and
// returns the error instead.
func NewGRPCServer(svc Services, log *slog.Logger, tp trace.TracerProvider, stopping <-chan struct{}, opts ...GRPCOption) (*grpc.Server, *health.Server) {
	var o grpcOptions
	for _, opt := range opts {
		opt(&o)
	}
	validator, err := requestValidator()
	if err != nil {
		panic(err)
	}
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", "panic", fmt.Sprint(p))
		return status.Error(codes.Internal, "internal error (the control plane's log has the cause)")
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(func(c codes.Code) logging.Level { return logging.Level(callLevel(c)) }),
	}
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	// One guard for both chains: a peer's failures count once.
	authFn := guardAuth(svc.Access, log, o.authFail)
	unary := []grpc.UnaryServerInterceptor{
		recovery.UnaryServerInterceptor(recoverOpt),
		logUnary(log),
		rejectUndecodableUnary,
		// After logging, so refusals are logged; before the rate limit,
		// so callers are keyed by token.
		selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(authFn), needsCaller),
	}
	streams := newStreamRegistry(o.streams, svc.Access, log)
	stream := []grpc.StreamServerInterceptor{
		recovery.StreamServerInterceptor(recoverOpt),
		logging.StreamServerInterceptor(logger, logOpts...),
		rejectUndecodableStream,
		selector.StreamServerInterceptor(auth.StreamServerInterceptor(authFn), needsCaller),
		// Caps streams per token and connection, and closes a stream
		// whose token stops working (streams.go).
		selector.StreamServerInterceptor(streams.intercept, needsCaller),
	}
	lim := o.rateLimit.limiter(log)
	if lim != nil {
		unary = append(unary, selector.UnaryServerInterceptor(ratelimit.UnaryServerInterceptor(lim), rateLimited))
		stream = append(stream, selector.StreamServerInterceptor(ratelimit.StreamServerInterceptor(lim), rateLimited))
	}
	if svc.HostsAgent == nil && svc.Placements != nil {
		svc.HostsAgent = svc.Placements.HostsAgent
	}
	authz := &authorizer{policy: newPolicy(svc.HostsAgent), acc: svc.Access, log: log}
	unary = append(unary, selector.UnaryServerInterceptor(authz.unary, needsCaller), validateUnary(validator, log))
	stream = append(stream, selector.StreamServerInterceptor(authz.stream, needsCaller), validateStream(validator, log))

	serverOpts := []grpc.ServerOption{
		grpc.StatsHandler(&connTagger{}), // numbers connections for the stream caps
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(telemetry.Propagator()), meterOption(o.meter), knownMethodsOnly())),
		grpc.StatsHandler(&claimDelivery{q: svc.Queue, log: log}),
		// A larger request is refused by gRPC with RESOURCE_EXHAUSTED before
		// it is decoded.
		grpc.MaxRecvMsgSize(transport.MaxRequestBytes),
		grpc.MaxSendMsgSize(transport.MaxResponseBytes),
		grpc.ForceServerCodecV2(newLenientCodec()),
		grpc.ChainUnaryInterceptor(unary...),
		// Calls run on long-lived workers rather than a goroutine each:
		// a call's stack (interceptors, validation rules, regular
		// expressions) outgrows a new goroutine's, and regrowing it was
		// about 5 % of a claim's CPU. Streams beyond the workers still get
		// a goroutine of their own.
		grpc.NumStreamWorkers(streamWorkers()),
		grpc.ChainStreamInterceptor(stream...),
	}
	if o.tls != nil {
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(o.tls)))
	}
	srv := grpc.NewServer(serverOpts...)
	qs := &auditedQueue{queueServer: &queueServer{q: svc.Queue, log: log, stopping: stopping, fleet: svc.Fleet}, audit: authz.succeeded}
	if lim != nil {
		// A Work stream's requests count as the calls they carry.
		qs.limit = lim.Limit
	}
	factoryv1.RegisterQueueServiceServer(srv, qs)
	factoryv1.RegisterAccessServiceServer(srv, &accessServer{acc: svc.Access, log: log, streams: streams})
	factoryv1.RegisterOpsServiceServer(srv, &opsServer{ops: svc.Ops, log: log, maint: svc.Maintenance, digest: svc.Digest, fleet: svc.Fleet,
		alerts: svc.Alerts, events: svc.Events, stopping: stopping, backup: svc.Backup})
	factoryv1.RegisterFleetServiceServer(srv, &fleetServer{fleet: svc.Fleet, placements: svc.Placements, events: svc.FleetEvents, history: svc.FleetHistory, cmds: fleet.NewCommands(), q: svc.Queue, log: log, stopping: stopping, budget: svc.Budget})
	healthSrv := health.NewServer()
	healthpb.RegisterHealthServer(srv, healthSrv)
	healthSrv.SetServingStatus(factoryv1.QueueService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthSrv.SetServingStatus(factoryv1.AccessService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthSrv.SetServingStatus(factoryv1.OpsService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthSrv.SetServingStatus(factoryv1.FleetService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	registerBudget(srv, healthSrv, svc, log)
	registerApprovals(srv, healthSrv, svc, log, stopping)
	registerReflection(srv)
	return srv, healthSrv
}

// listenConsole binds the console's address, so its URL is known before
// the approval cards that link to it are made. Off: nil and "".
func listenConsole(cfg ConsoleConfig, tlsCfg *tls.Config) (net.Listener, string, error) {
	if cfg.Listen == "" {
		return nil, "", nil
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, "", fmt.Errorf("console: listen on %s: %w", cfg.Listen, err)
	}
	url := cfg.URL
	if url == "" {
		scheme := "http"
		if tlsCfg != nil {
			scheme = "https"
		}
		url = scheme + "://" + lis.Addr().String()
	}
	return lis, strings.TrimRight(url, "/"), nil
}

// newConsole builds the console over an in-process connection to inproc,
// which it serves until the control plane stops.
func newConsole(cfg Config, acc *access.Service, inproc *grpc.Server, g *errgroup.Group, log *slog.Logger, secure bool) (*console.Server, error) {
	bl := bufconn.Listen(1 << 20)
	g.Go(func() error {
		if err := inproc.Serve(bl); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("console API: %w", err)
		}
		return nil
	})
	conn, err := grpc.NewClient("passthrough:///console",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return bl.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(transport.MaxResponseBytes)))
	if err != nil {
		return nil, err
	}
	return console.New(console.Config{
		Conn:       conn,
		Access:     acc,
		Secure:     secure,
		SessionTTL: cfg.Console.SessionTTL,
		TokenFile:  filepath.Join(cfg.DataDir, access.OperatorTokenFile),
		Logger:     log.With("component", "console"),
	})
}

// announceConsole logs the console's address and, on loopback, hands the
// one-time sign-in path to OnListening (make run prints it).
func announceConsole(cfg Config, cons *console.Server, lis net.Listener, url string, log *slog.Logger) {
	var path string
	if transport.IsLoopback(lis.Addr().String()) {
		p, err := cons.SignInLink()
		if err == nil {
			path = p
		}
	}
	log.Info("console listening", "url", url)
	if cfg.Console.OnListening != nil {
		cfg.Console.OnListening(url, path)
	}
}
