package cli_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/server"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// newShellOnClock is newShell with a control plane on clock.
func newShellOnClock(t *testing.T, clock *handClock) *shell {
	t.Helper()
	dataDir := t.TempDir()
	addr := startControlPlaneWith(t, server.Config{DataDir: dataDir, Queue: queue.Config{Clock: clock}})
	return &shell{t: t, addr: addr, token: operatorToken(t, dataDir), stateFile: filepath.Join(t.TempDir(), "leases.json")}
}

// A STALE host's readings are unknown in `factory health`, not ok, and
// count in its exit status; `factory nodes forget` removes the host once
// it is gone, and refuses while it is ONLINE.
func TestHealthShowsAStaleHostsReadingsUnknownAndForgetRemovesIt(t *testing.T) {
	clock := &handClock{now: time.Now().UTC()}
	s := newShellOnClock(t, clock)
	connectSidecar(t, s, &factoryv1.Telemetry{
		CollectedAt: timestamppb.Now(),
		Gpus:        []*factoryv1.GpuDevice{{Index: 0, Name: "NVIDIA H100 PCIe", MemoryTotalBytes: 80 << 30, MemoryUsedBytes: 1 << 30}},
		Disks:       []*factoryv1.DiskUsage{{Path: "/", TotalBytes: 1000, UsedBytes: 500, AvailableBytes: 450}},
		Probes:      []*factoryv1.ProbeResult{{Name: "litellm", Kind: "http", Ok: true, Detail: "200"}},
	})
	if out := s.ok("health"); !strings.Contains(out, "ok   probe gpu-1:litellm") || !strings.Contains(out, "0 of 6 checks failed") {
		t.Fatalf("ONLINE host's health:\n%s", out)
	}
	if r := s.run("nodes", "forget", "gpu-1"); r.code == 0 || !strings.Contains(r.stderr, "ONLINE") {
		t.Errorf("forgetting an ONLINE host: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	clock.Advance(26 * time.Second) // STALE
	r := s.run("health")
	// The node, and its probe, disk and GPU readings (unknown).
	if r.code != 4 {
		t.Fatalf("health of a STALE host: exit %d, want 4\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"FAIL node gpu-1", "UNKN probe gpu-1:litellm: unknown: host STALE, reading 26s old", "UNKN disk gpu-1:/",
		"UNKN gpu gpu-1:0", "4 of 6 checks failed (3 unknown)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("health lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "ok   probe") {
		t.Errorf("a STALE host's probe reads ok:\n%s", r.stdout)
	}
	if out := s.ok("gpu"); !strings.Contains(out, "gpu-1 (STALE, read ") {
		t.Errorf("gpu shows a STALE host's readings as current:\n%s", out)
	}

	clock.Advance(5 * time.Minute) // OFFLINE: gone
	if out := s.ok("nodes", "forget", "gpu-1"); !strings.Contains(out, "forgot gpu-1 (OFFLINE)") {
		t.Errorf("forget: %s", out)
	}
	if out := s.ok("health"); !strings.Contains(out, "0 of 1 checks failed") {
		t.Errorf("health after forgetting the gone host:\n%s", out)
	}
	if out := s.ok("nodes"); strings.Contains(out, "gpu-1") {
		t.Errorf("nodes after forget:\n%s", out)
	}
}
