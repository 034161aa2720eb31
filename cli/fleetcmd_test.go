package cli_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/factory/factory/controlplane/access"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
	"github.com/factory/factory/sidecar/stream"
)

// `factory agents restart`, `factory nodes drain` and `undrain` reach a
// sidecar's stream client and print what it answered.
func TestAgentsRestartAndNodesDrain(t *testing.T) {
	s := newShell(t)
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(access.Bearer{Secret: s.token, Plaintext: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- stream.Run(ctx, stream.Config{Conn: conn, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Hello: &factoryv1.Hello{Host: "gpu-7", Agents: []*factoryv1.HostedAgent{{Name: "forge", Roles: []string{"builder"}}}},
			OnCommand: func(_ context.Context, c *factoryv1.SidecarCommand) *factoryv1.CommandResult {
				if c.GetRestartAgent().GetName() != "forge" {
					return &factoryv1.CommandResult{Error: "unknown agent"}
				}
				return &factoryv1.CommandResult{Ok: true, Output: "restarted forge\n"}
			}})
	}()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.ok("nodes"), "gpu-7") {
		if time.Now().After(deadline) {
			t.Fatal("the sidecar never connected")
		}
		time.Sleep(20 * time.Millisecond)
	}

	r := s.run("agents", "restart", "forge")
	if r.code != 0 || r.stdout != "restarted forge\n" || !strings.Contains(r.stderr, "restart on gpu-7: ok") {
		t.Errorf("agents restart forge: exit %d\nstdout %q\nstderr %q", r.code, r.stdout, r.stderr)
	}
	if r := s.run("agents", "restart", "ghost"); r.code == 0 || !strings.Contains(r.stderr, "ghost") {
		t.Errorf("agents restart ghost: exit %d, %s", r.code, r.stderr)
	}
	if r := s.run("nodes", "drain", "gpu-7"); r.code != 0 {
		t.Fatalf("nodes drain: exit %d, %s", r.code, r.stderr)
	}
	if out := s.ok("nodes"); !strings.Contains(out, "ONLINE,DRAINED") {
		t.Errorf("nodes after the drain:\n%s", out)
	}
	if r := s.run("nodes", "drain", "nowhere"); r.code == 0 {
		t.Errorf("nodes drain of a host with no sidecar: exit 0")
	}
	// A drained host takes no placement; undrain (through the sidecar,
	// which stops repeating the mark) makes it eligible again.
	if r := s.run("agents", "place", "scout", "--host", "gpu-7"); r.code == 0 || !strings.Contains(r.stderr, "drained") {
		t.Errorf("placing on a drained host: exit %d, %s", r.code, r.stderr)
	}
	if r := s.run("nodes", "undrain", "gpu-7"); r.code != 0 || !strings.Contains(r.stderr, "undrain on gpu-7: ok") {
		t.Fatalf("nodes undrain: exit %d, %s", r.code, r.stderr)
	}
	if out := s.ok("nodes"); strings.Contains(out, "DRAINED") {
		t.Errorf("nodes after the undrain:\n%s", out)
	}
	s.ok("agents", "place", "scout", "--host", "gpu-7")
}
