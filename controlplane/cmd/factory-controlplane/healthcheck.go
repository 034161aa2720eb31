package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/factory/factory/controlplane/transport"
)

// healthcheck is `factory-controlplane healthcheck`: it asks the control
// plane's grpc.health.v1 whether it serves and returns nil only when it
// says SERVING. It is the container's health check (the distroless image
// has no shell, curl or grpcurl); the address defaults to FACTORY_LISTEN's
// port on loopback, so the compose file needs no flags.
func healthcheck(ctx context.Context, args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet("factory-controlplane healthcheck", flag.ContinueOnError)
	addr := fs.String("addr", "", "the control plane's gRPC address (default: FACTORY_LISTEN's port on 127.0.0.1, else 127.0.0.1:7420)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	var creds transport.ClientTLS
	fs.StringVar(&creds.CAFile, "ca", getenv("FACTORY_CA"), "verify the control plane's TLS certificate against this CA (PEM); turns TLS on (FACTORY_CA)")
	fs.StringVar(&creds.ServerName, "server-name", "", "the name its certificate is checked against (default: the address's host)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("healthcheck takes no arguments, got %v", fs.Args())
	}
	if *addr == "" {
		*addr = "127.0.0.1:7420"
		if _, port, err := net.SplitHostPort(getenv("FACTORY_LISTEN")); err == nil && port != "" && port != "0" {
			*addr = net.JoinHostPort("127.0.0.1", port)
		}
	}
	opts, err := creds.DialOptions(*addr)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(*addr, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("control plane at %s: %w", *addr, err)
	}
	if res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("control plane at %s is %s", *addr, res.GetStatus())
	}
	return nil
}
