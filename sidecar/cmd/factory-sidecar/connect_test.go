package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/server"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// controlPlane runs server.Run on addr over dataDir until stop is called.
func controlPlane(t *testing.T, addr, dataDir string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- server.Run(ctx, server.Config{Listen: addr, DataDir: dataDir, ShutdownTimeout: 2 * time.Second,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), OnListening: func(net.Addr) { close(up) }})
	}()
	select {
	case <-up:
	case err := <-done:
		t.Fatalf("control plane did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("control plane did not start in 30s")
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
	}
}

// The sidecar connects with its own token, its node shows up ONLINE with
// telemetry; the control plane restarts (losing the in-memory fleet) and
// the sidecar registers again by itself.
func TestSidecarStreamsAndReconnectsAfterARestart(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	dataDir := t.TempDir()
	stop := controlPlane(t, addr, dataDir)

	raw, err := os.ReadFile(filepath.Join(dataDir, access.OperatorTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(access.Bearer{Secret: strings.TrimSpace(string(raw)), Plaintext: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	tok, err := factoryv1.NewAccessServiceClient(conn).CreateToken(ctx, &factoryv1.CreateTokenRequest{Role: factoryv1.Role_ROLE_SIDECAR, Subject: "edge-1"})
	if err != nil {
		t.Fatal(err)
	}
	// A sidecar token declares only the agents an operator placed on its host.
	if _, err := factoryv1.NewFleetServiceClient(conn).PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: "forge", Host: "edge-1"}); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "sidecar.yaml")
	cfg := "host: edge-1\ngpu: {disabled: true}\nagents: [{name: forge, role: builder}]\ndisk: {paths: [" + t.TempDir() + "]}\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(ctx)
	sidecarDone := make(chan error, 1)
	go func() {
		sidecarDone <- run(sctx, []string{"--addr", addr, "--token", tok.GetSecret(), "--config", cfgPath})
	}()
	defer func() {
		scancel()
		if err := <-sidecarDone; err != nil {
			t.Errorf("sidecar: %v", err)
		}
	}()

	fleet := factoryv1.NewFleetServiceClient(conn)
	online := func() bool {
		resp, err := fleet.ListNodes(ctx, &factoryv1.ListNodesRequest{})
		if err != nil || len(resp.GetNodes()) != 1 {
			return false
		}
		n := resp.GetNodes()[0]
		return n.GetHost() == "edge-1" && n.GetState() == factoryv1.NodeState_NODE_STATE_ONLINE &&
			len(n.GetTelemetry().GetDisks()) == 1 && slicesEqual(n.GetAgents(), []string{"forge"}) &&
			// The host's own reading, from /proc (sidecar/hoststat).
			n.GetTelemetry().GetHost().GetMemoryTotalBytes() > 0
	}
	waitUntil(t, "node edge-1 ONLINE with telemetry", online)

	stop()
	stop = controlPlane(t, addr, dataDir)
	defer func() { stop() }()
	waitUntil(t, "node edge-1 back after the restart", online)
}

func slicesEqual(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
