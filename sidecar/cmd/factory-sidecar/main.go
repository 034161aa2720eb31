// Command factory-sidecar runs next to an agent workspace or inference host.
// It keeps a FleetService.Connect stream to the control plane open: Hello
// with the host and its agents, then heartbeats and telemetry (GPU through
// NVML, disk, service probes), reconnecting with backoff when the stream
// breaks. Agents on the host report their LLM spend to its loopback
// endpoint (--spend-listen, POST /v1/spend), and with --litellm-url it
// reads a LiteLLM proxy's spend logs; both are spooled on disk and relayed
// to BudgetService with the sidecar's token. With --once it checks the
// control plane's health and exits; with --once -o json|text it runs every
// collector once and prints the readings without needing a control plane,
// exiting 1 when a probe or a disk check failed (a cron job's check).
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
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/telemetry"
	"github.com/factory/factory/controlplane/transport"
	"github.com/factory/factory/sidecar/stream"
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
	if len(args) > 0 && args[0] == "version" {
		if len(args) > 1 {
			return fmt.Errorf("version takes no arguments, got %s", strings.Join(args[1:], " "))
		}
		fmt.Fprintf(stdout, "factory-sidecar version %s\n", telemetry.VersionInfo())
		return nil
	}
	fs := flag.NewFlagSet("factory-sidecar", flag.ContinueOnError)
	showVersion := fs.Bool("version", false, "print the version and exit (the version command adds how the binary was built)")
	addr := fs.String("addr", envOr("FACTORY_ADDR", "127.0.0.1:7420"), "control plane address (FACTORY_ADDR)")
	once := fs.Bool("once", false, "check the control plane's health once and exit: status 0 when it serves; with -o, run every collector once instead: status 1 when a probe or disk check fails")
	token := fs.String("token", os.Getenv("FACTORY_TOKEN"), "this host's sidecar token, whose subject is the host (FACTORY_TOKEN); an operator token also works")
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
	var so spendOptions
	fs.StringVar(&so.listen, "spend-listen", envOr("FACTORY_SPEND_LISTEN", "127.0.0.1:7421"), "loopback address where agents POST /v1/spend without a token; \"off\" turns it off (FACTORY_SPEND_LISTEN)")
	fs.StringVar(&so.litellmURL, "litellm-url", os.Getenv("FACTORY_LITELLM_URL"), "poll this LiteLLM proxy's /spend/logs/v2 for spend (FACTORY_LITELLM_URL; else spend.litellm.url in --config)")
	fs.StringVar(&so.litellmKey, "litellm-key", "", "LiteLLM master or admin key (else FACTORY_LITELLM_KEY)")
	fs.DurationVar(&so.litellmInterval, "litellm-interval", 0, "time between LiteLLM spend polls (default spend.litellm.interval in --config, else 30s)")
	fs.StringVar(&so.secret, "spend-secret", "", "require this secret on /v1/spend, as \"Authorization: Bearer SECRET\" or \"X-Factory-Spend-Secret: SECRET\" (else FACTORY_SPEND_SECRET)")
	fs.StringVar(&so.secretFile, "spend-secret-file", os.Getenv("FACTORY_SPEND_SECRET_FILE"), "read the /v1/spend secret from this file, so it stays out of ps (FACTORY_SPEND_SECRET_FILE)")
	fs.StringVar(&so.pricesFile, "prices", os.Getenv("FACTORY_PRICES"), "price table (deploy/prices.yaml format) for spend reported without a cost; give the control plane's --prices file (FACTORY_PRICES; default the built-in table)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Fprintf(stdout, "factory-sidecar version %s\n", telemetry.Version())
		return nil
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
	if !*once {
		so.litellmKey = litellmKey(so.litellmKey)
		return connectAndStream(ctx, conn, *configPath, *token, plaintextTo(*addr, creds), so, log)
	}
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
	return check()
}

// plaintextTo reports whether the connection to addr is plaintext, which
// the transport rules allow only on loopback or with --insecure: only then
// may the token go over it.
func plaintextTo(addr string, creds transport.ClientTLS) bool {
	c, err := creds.Credentials(addr)
	return err == nil && c.Info().SecurityProtocol == "insecure"
}

// connectAndStream runs the sidecar: the stream client with the
// collectors, until ctx ends.
func connectAndStream(ctx context.Context, conn *grpc.ClientConn, configPath, token string, plaintext bool, so spendOptions, log *slog.Logger) error {
	if token == "" {
		return errors.New("a token is required to connect: --token or FACTORY_TOKEN (mint one with `factory token create --role sidecar --subject HOST`)")
	}
	cfg, err := loadSidecarConfig(configPath)
	if err != nil {
		return err
	}
	so = so.withConfig(cfg.Spend)
	c := newCollectors(cfg, log)
	defer c.close()
	sp, stopEvents, err := startEventSources(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer stopEvents()
	callOpts := []grpc.CallOption{grpc.PerRPCCredentials(access.Bearer{Secret: token, Plaintext: plaintext})}
	ep, stopSpend, err := startSpend(ctx, cfg, so, conn, callOpts, log)
	if err != nil {
		return err
	}
	defer stopSpend()
	sc := streamConfig(cfg, c, log)
	sc.Spool = sp
	sc.Conn = conn
	sc.CallOptions = callOpts
	sc.OnEmergencyStop = onEmergencyStop(ep)
	return stream.Run(ctx, sc)
}

// stdout is where --once -o prints; a variable so tests can capture it.
var stdout io.Writer = os.Stdout

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
