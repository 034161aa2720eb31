// Package server assembles the control plane: the store, the domain
// services, the gRPC server with its interceptor chain, health and
// reflection, and the background sweepers, with a graceful shutdown.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/telemetry"
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
	// ShutdownTimeout bounds the graceful stop; calls still running after
	// it are cut off.
	ShutdownTimeout time.Duration
	// Queue tunes the queue domain; its Store, Logger and Clock are set here.
	Queue queue.Config

	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	// OnListening, when set, is called with the bound address once the
	// server accepts connections.
	OnListening func(addr net.Addr)
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

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	stopping := make(chan struct{})
	srv, healthSrv := NewGRPCServer(Services{Queue: q}, log, cfg.TracerProvider, stopping)

	log.InfoContext(ctx, "listening", "addr", lis.Addr().String(), "store", driver, "db", where, "pid", os.Getpid())
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
	// With replicas sharing a database, one of them sweeps and every one of
	// them hears the others' changes.
	if el, ok := raw.(store.Elector); ok {
		g.Go(func() error { return el.RunElected(gctx, "sweeper", q.RunSweeper) })
	} else {
		g.Go(func() error { return q.RunSweeper(gctx) })
	}
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
		stopGracefully(srv, cfg.ShutdownTimeout, log)
		return nil
	})
	return g.Wait()
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
}

// NewGRPCServer returns a gRPC server with every service, health and
// reflection registered and the interceptor chain installed: recovery
// outermost so a panic anywhere becomes INTERNAL, then logging. stopping
// is closed at shutdown so long-lived streams end and GracefulStop can
// finish.
func NewGRPCServer(svc Services, log *slog.Logger, tp trace.TracerProvider, stopping <-chan struct{}) (*grpc.Server, *health.Server) {
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", "panic", fmt.Sprint(p))
		return status.Error(codes.Internal, "internal error (the control plane's log has the cause)")
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		// Successful calls are the hot path (thousands per second): log them
		// at debug so the default log shows what went wrong, not traffic.
		logging.WithLevels(func(c codes.Code) logging.Level {
			switch c {
			case codes.OK, codes.Canceled, codes.DeadlineExceeded:
				return logging.LevelDebug
			case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable:
				return logging.LevelError
			default:
				return logging.LevelInfo
			}
		}),
	}
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	srv := grpc.NewServer(
		grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithPropagators(telemetry.Propagator()))),
		grpc.ChainUnaryInterceptor(
			recovery.UnaryServerInterceptor(recoverOpt),
			logging.UnaryServerInterceptor(logger, logOpts...),
		),
		grpc.ChainStreamInterceptor(
			recovery.StreamServerInterceptor(recoverOpt),
			logging.StreamServerInterceptor(logger, logOpts...),
		),
	)
	factoryv1.RegisterQueueServiceServer(srv, &queueServer{q: svc.Queue, log: log, stopping: stopping})
	healthSrv := health.NewServer()
	healthpb.RegisterHealthServer(srv, healthSrv)
	healthSrv.SetServingStatus(factoryv1.QueueService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	registerReflection(srv)
	return srv, healthSrv
}
