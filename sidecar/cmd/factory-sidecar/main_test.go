package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/server"
	"github.com/factory/factory/controlplane/transport"
	"github.com/factory/factory/controlplane/transport/transporttest"
)

func TestSidecarReachesAMutualTLSControlPlane(t *testing.T) {
	pki := transporttest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	addrCh := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- server.Run(ctx, server.Config{
			Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			TLS:         transport.ServerTLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.ClientCA},
			OnListening: func(a net.Addr) { addrCh <- a.String() },
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	var addr string
	select {
	case addr = <-addrCh:
	case err := <-done:
		t.Fatalf("control plane did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("control plane did not start in 30s")
	}

	if err := run(context.Background(), []string{"--once", "--addr", addr, "--ca", pki.ServerCA}); err == nil {
		t.Fatal("a sidecar without its client certificate got through mutual TLS")
	}
	if err := run(context.Background(), []string{"--once", "--addr", addr, "--ca", pki.ServerCA, "--cert", pki.ClientCert, "--key", pki.ClientKey}); err != nil {
		t.Fatalf("sidecar with its certificate: %v", err)
	}
}

func TestSidecarRefusesPlaintextOffLoopback(t *testing.T) {
	err := run(context.Background(), []string{"--once", "--addr", "192.0.2.10:7420"})
	if err == nil || !strings.Contains(err.Error(), transport.PlaintextRule) {
		t.Fatalf("got %v, want a refusal stating the rule", err)
	}
}
