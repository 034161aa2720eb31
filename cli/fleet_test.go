package cli_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/access"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// connectSidecar opens a sidecar's stream to the shell's control plane as
// host gpu-1 (running agent forge) and sends one telemetry reading; the
// stream stays open until the test ends.
func connectSidecar(t *testing.T, s *shell, tel *factoryv1.Telemetry) {
	t.Helper()
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(access.Bearer{Secret: s.token, Plaintext: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := factoryv1.NewFleetServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := &factoryv1.Hello{Host: "gpu-1", Version: "test", Agents: []*factoryv1.HostedAgent{{Name: "forge", Roles: []string{"builder"}, Pid: 4242}}}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: tel}}); err != nil {
		t.Fatal(err)
	}
	// The telemetry is stored once the server has read it: wait for it.
	for range 500 {
		var nodes []map[string]any
		_ = json.Unmarshal([]byte(s.ok("nodes", "-o", "json")), &nodes)
		if len(nodes) == 1 && nodes[0]["telemetry"] != nil {
			return
		}
	}
	t.Fatal("telemetry never arrived")
}

func TestFleetCommands(t *testing.T) {
	s := newShell(t)
	connectSidecar(t, s, &factoryv1.Telemetry{
		CollectedAt: timestamppb.Now(),
		Gpus: []*factoryv1.GpuDevice{{Index: 0, Name: "NVIDIA H100 PCIe", MemoryTotalBytes: 80 << 30, MemoryUsedBytes: 79 << 30,
			UtilizationPercent: 97, TemperatureCelsius: 64, PowerMilliwatts: 301000, PowerLimitMilliwatts: 350000,
			Processes: []*factoryv1.GpuProcess{{Pid: 4242, UsedMemoryBytes: 78 << 30, Agent: "forge"}}}},
		Disks: []*factoryv1.DiskUsage{{Path: "/", TotalBytes: 1000, UsedBytes: 500, AvailableBytes: 450},
			{Path: "/data", TotalBytes: 1000, UsedBytes: 900, AvailableBytes: 50}},
		Probes: []*factoryv1.ProbeResult{{Name: "litellm", Kind: "http", Ok: true, Detail: "200"}, {Name: "qdrant", Kind: "tcp", Detail: "connection refused"}},
	})

	if out := s.ok("nodes"); !strings.Contains(out, "gpu-1") || !strings.Contains(out, "ONLINE") || !strings.Contains(out, "forge") {
		t.Errorf("nodes:\n%s", out)
	}
	if out := s.ok("agents"); !strings.Contains(out, "forge") || !strings.Contains(out, "gpu-1") || !strings.Contains(out, "builder") {
		t.Errorf("agents:\n%s", out)
	}
	var agents []map[string]any
	if err := json.Unmarshal([]byte(s.ok("agents", "-o", "json")), &agents); err != nil || len(agents) != 1 || agents[0]["host"] != "gpu-1" {
		t.Errorf("agents -o json: %v %v", agents, err)
	}
	out := s.ok("gpu")
	for _, want := range []string{"NVIDIA H100 PCIe", "80896/81920 MiB", "97%", "64°C", "301/350 W", "4242(forge)"} {
		if !strings.Contains(out, want) {
			t.Errorf("gpu output lacks %q:\n%s", want, out)
		}
	}
	var gpus []struct {
		Host string         `json:"host"`
		GPU  map[string]any `json:"gpu"`
	}
	if err := json.Unmarshal([]byte(s.ok("gpu", "-o", "json")), &gpus); err != nil || len(gpus) != 1 || gpus[0].Host != "gpu-1" {
		t.Errorf("gpu -o json: %v %v", gpus, err)
	}

	// Failing: the probe qdrant, disk /data (90%) and the GPU (79/80 >
	// 23/24). Passing: queue, node, its model swaps, litellm, disk /.
	r := s.run("health")
	if r.code != 3 {
		t.Fatalf("health exit %d, want 3 (failed checks)\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// Not a terminal: words, not symbols.
	fails, oks := 0, 0
	for _, line := range strings.Split(r.stdout, "\n") {
		switch {
		case strings.HasPrefix(line, "FAIL "):
			fails++
		case strings.HasPrefix(line, "ok "):
			oks++
		}
	}
	if fails != 3 || oks != 5 || strings.ContainsAny(r.stdout, "✅❌") {
		t.Errorf("health lines:\n%s", r.stdout)
	}
	for _, want := range []string{"FAIL probe gpu-1:qdrant", "FAIL disk gpu-1:/data", "FAIL gpu gpu-1:0", "ok   node gpu-1", "ok   queue", "ok   model swaps gpu-1"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("health lacks %q:\n%s", want, r.stdout)
		}
	}
	r = s.run("health", "-o", "json")
	var h struct {
		Failed int              `json:"failed"`
		Checks []map[string]any `json:"checks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || r.code != 3 || h.Failed != 3 || len(h.Checks) != 8 {
		t.Errorf("health -o json: exit %d, %+v, %v\n%s", r.code, h, err, r.stdout)
	}
}

func TestHealthOfAnEmptyFleetPasses(t *testing.T) {
	s := newShell(t)
	r := s.run("health")
	if r.code != 0 || !strings.Contains(r.stdout, "ok   queue") {
		t.Fatalf("health: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

func TestHealthWatchChecksUntilInterrupted(t *testing.T) {
	s := newShell(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Interrupt the watch once it has printed two rounds (a line each).
	out := &roundsWriter{after: 2, done: cancel}
	r := s.runCtx(ctx, out, "health", "--watch", "--interval", "1s", "-o", "json")
	if r.code != 0 {
		t.Fatalf("health --watch: exit %d: %s", r.code, r.stderr)
	}
	if out.lines < 2 {
		t.Fatalf("health --watch printed %d rounds", out.lines)
	}
}

// roundsWriter counts lines and calls done once it has seen after of them.
type roundsWriter struct {
	lines, after int
	done         func()
}

func (w *roundsWriter) Write(p []byte) (int, error) {
	w.lines += strings.Count(string(p), "\n")
	if w.lines >= w.after {
		w.done()
	}
	return len(p), nil
}
