package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/factory/factory/controlplane/server"
)

// `factory-controlplane healthcheck` (the compose file's container health
// check) passes against a serving control plane, found through
// FACTORY_LISTEN as the container sets it, and fails where none listens.
func TestHealthcheckCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	addrCh, errCh := make(chan net.Addr, 1), make(chan error, 1)
	go func() {
		errCh <- server.Run(ctx, server.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), TracerProvider: noop.NewTracerProvider(),
			OnListening: func(a net.Addr) { addrCh <- a }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-errCh; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	var addr net.Addr
	select {
	case addr = <-addrCh:
	case err := <-errCh:
		t.Fatalf("Run: %v", err)
	}
	_, port, _ := net.SplitHostPort(addr.String())
	env := func(k string) string {
		if k == "FACTORY_LISTEN" {
			return "0.0.0.0:" + port // what compose.yaml sets
		}
		return ""
	}
	if err := healthcheck(ctx, nil, env); err != nil {
		t.Errorf("healthcheck via FACTORY_LISTEN: %v", err)
	}
	if err := run(ctx, []string{"healthcheck", "--addr", addr.String()}); err != nil {
		t.Errorf("factory-controlplane healthcheck --addr %s: %v", addr, err)
	}

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	if err := run(ctx, []string{"healthcheck", "--addr", closedAddr, "--timeout", "500ms"}); err == nil {
		t.Errorf("healthcheck against %s, where nothing listens, passed", closedAddr)
	}
	if err := run(ctx, []string{"healthcheck", "extra"}); err == nil {
		t.Error("healthcheck took an argument")
	}
}
