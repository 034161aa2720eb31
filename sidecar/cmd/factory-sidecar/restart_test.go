package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/factory/factory/controlplane/access"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// An operator's commands reach the sidecar over its Connect stream: a
// restart runs the agent's configured restart_command and its output comes
// back; an agent with none is refused by the sidecar; a drain shows in
// ListNodes; a host with no stream is FAILED_PRECONDITION.
func TestCommandsReachTheSidecar(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	dataDir := t.TempDir()
	stop := controlPlane(t, addr, dataDir)
	defer stop()
	raw, err := os.ReadFile(filepath.Join(dataDir, access.OperatorTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	operator := strings.TrimSpace(string(raw))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(access.Bearer{Secret: operator, Plaintext: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	cfgPath := filepath.Join(t.TempDir(), "sidecar.yaml")
	cfg := "host: edge-2\ngpu: {disabled: true}\nagents:\n" +
		"  - {name: forge, role: builder, restart_command: \"echo restarted\", restart_timeout: 5s}\n" +
		"  - {name: scout, role: researcher}\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithCancel(ctx)
	sidecarDone := make(chan error, 1)
	go func() {
		sidecarDone <- run(sctx, []string{"--addr", addr, "--token", operator, "--config", cfgPath})
	}()
	defer func() {
		scancel()
		if err := <-sidecarDone; err != nil {
			t.Errorf("sidecar: %v", err)
		}
	}()
	fleet := factoryv1.NewFleetServiceClient(conn)
	node := func() *factoryv1.Node {
		resp, err := fleet.ListNodes(ctx, &factoryv1.ListNodesRequest{})
		if err != nil || len(resp.GetNodes()) != 1 {
			return nil
		}
		return resp.GetNodes()[0]
	}
	waitUntil(t, "node edge-2 connected", func() bool { return node().GetConnected() })

	send := func(req *factoryv1.SendCommandRequest) (*factoryv1.CommandResult, error) {
		req.Timeout = durationpb.New(10 * time.Second)
		resp, err := fleet.SendCommand(ctx, req)
		return resp.GetResult(), err
	}
	restart := func(name string) *factoryv1.SendCommandRequest {
		return &factoryv1.SendCommandRequest{Host: "edge-2", Command: &factoryv1.SendCommandRequest_RestartAgent{RestartAgent: &factoryv1.RestartAgent{Name: name}}}
	}
	r, err := send(restart("forge"))
	if err != nil {
		t.Fatal(err)
	}
	if !r.GetOk() || r.GetOutput() != "restarted\n" || r.GetId() == "" || r.GetError() != "" {
		t.Errorf("restart forge: %v", r)
	}
	if r, err := send(restart("scout")); err != nil || r.GetOk() || !strings.Contains(r.GetError(), "no restart_command") {
		t.Errorf("restart scout (no restart_command): %v, %v", r, err)
	}
	if node().GetDrained() {
		t.Fatal("drained before any drain")
	}
	if r, err := send(&factoryv1.SendCommandRequest{Host: "edge-2", Command: &factoryv1.SendCommandRequest_Drain{Drain: &factoryv1.DrainHost{}}}); err != nil || !r.GetOk() {
		t.Fatalf("drain: %v, %v", r, err)
	}
	if !node().GetDrained() {
		t.Error("ListNodes: edge-2 not drained after the drain")
	}
	if _, err := send(&factoryv1.SendCommandRequest{Host: "nowhere", Command: &factoryv1.SendCommandRequest_Drain{Drain: &factoryv1.DrainHost{}}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a host with no stream: %v, want FAILED_PRECONDITION", err)
	}
	audit, err := factoryv1.NewAccessServiceClient(conn).ListAudit(ctx, &factoryv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	commands := 0
	for _, e := range audit.GetEntries() {
		if strings.HasSuffix(e.GetRpc(), "/SendCommand") && e.GetTarget() == "edge-2" {
			commands++
		}
	}
	if commands < 3 {
		t.Errorf("%d SendCommand calls audited, want the 3 that reached the sidecar", commands)
	}
}
