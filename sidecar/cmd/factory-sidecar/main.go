// Command factory-sidecar runs next to an agent workspace or inference host.
// It watches the control plane's health and, with --once -o json|text, runs
// every collector (GPU through NVML, disk, service probes) once and prints
// the readings without needing a control plane.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/factory/factory/controlplane/telemetry"
	"github.com/factory/factory/controlplane/transport"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "factory-sidecar:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("factory-sidecar", flag.ContinueOnError)
	addr := fs.String("addr", envOr("FACTORY_ADDR", "127.0.0.1:7420"), "control plane address (FACTORY_ADDR)")
	interval := fs.Duration("interval", 10*time.Second, "how often to check the control plane")
	once := fs.Bool("once", false, "check once and exit: status 0 when the control plane serves")
	var creds transport.ClientTLS
	fs.StringVar(&creds.CAFile, "ca", os.Getenv("FACTORY_CA"), "verify the control plane's TLS certificate against this CA (PEM); turns TLS on (FACTORY_CA)")
	fs.BoolVar(&creds.SystemRoots, "tls", false, "use TLS, verifying the control plane against the system's roots")
	fs.StringVar(&creds.CertFile, "cert", os.Getenv("FACTORY_CERT"), "this host's client certificate (PEM), for a control plane with mutual TLS (FACTORY_CERT)")
	fs.StringVar(&creds.KeyFile, "key", os.Getenv("FACTORY_KEY"), "private key of --cert (PEM) (FACTORY_KEY)")
	fs.BoolVar(&creds.Insecure, "insecure", false, "allow plaintext to a non-loopback --addr")
	configPath := fs.String("config", os.Getenv("FACTORY_SIDECAR_CONFIG"), "YAML config: host, agents, disk paths, probes (FACTORY_SIDECAR_CONFIG)")
	output := fs.String("o", "", "with --once: run every collector once and print the readings as json or text (no control plane needed)")
	samples := fs.Int("samples", 1, "with --once -o: collect this many times back to back (the first GPU pass includes NVML's init)")
	requireGPU := fs.Bool("require-gpu", false, "with --once -o: exit non-zero when no GPU could be read")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *once && *output != "" {
		cfg, err := loadSidecarConfig(*configPath)
		if err != nil {
			return err
		}
		return collectOnce(ctx, cfg, telemetry.NewLogger(os.Stderr, slog.LevelInfo), stdout, *output, *samples, *requireGPU)
	}
	dialOpts, err := creds.DialOptions(*addr)
	if err != nil {
		return err
	}
	log := telemetry.NewLogger(os.Stderr, slog.LevelInfo)
	tp, shutdown, err := telemetry.Setup(ctx, "factory-sidecar")
	if err != nil {
		return err
	}
	defer shutdown(context.WithoutCancel(ctx))
	conn, err := grpc.NewClient(*addr, append(dialOpts,
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(tp))))...)
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	check := func() error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		res, err := health.Check(cctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("control plane at %s is %s", *addr, res.GetStatus())
		}
		return nil
	}
	if *once {
		return check()
	}
	t := time.NewTicker(*interval)
	defer t.Stop()
	healthy := true
	for {
		if err := check(); err != nil && ctx.Err() == nil {
			log.Warn("control plane unreachable", "addr", *addr, "err", err)
			healthy = false
		} else if !healthy {
			log.Info("control plane reachable again", "addr", *addr)
			healthy = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// stdout is where --once -o prints; a variable so tests can capture it.
var stdout io.Writer = os.Stdout

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
