package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func TestNodesHistory(t *testing.T) {
	s := newShell(t)
	connectSidecar(t, s, &factoryv1.Telemetry{
		CollectedAt: timestamppb.Now(),
		Gpus: []*factoryv1.GpuDevice{{Index: 0, Name: "NVIDIA H100 PCIe", MemoryTotalBytes: 80 << 30, MemoryUsedBytes: 79 << 30,
			UtilizationPercent: 97, TemperatureCelsius: 64}},
		Disks:  []*factoryv1.DiskUsage{{Path: "/", TotalBytes: 1000, UsedBytes: 500, AvailableBytes: 450}, {Path: "/data", TotalBytes: 1000, UsedBytes: 900, AvailableBytes: 50}},
		Probes: []*factoryv1.ProbeResult{{Name: "litellm", Kind: "http", Ok: true}, {Name: "qdrant", Kind: "tcp"}},
	})

	// The history is written just after the live reading: wait for it.
	var readings []map[string]any
	for range 500 {
		readings = nil
		_ = json.Unmarshal([]byte(s.ok("nodes", "history", "gpu-1", "-o", "json")), &readings)
		if len(readings) > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(readings) != 1 || readings[0]["telemetry"] == nil || readings[0]["time"] == nil {
		t.Fatalf("nodes history -o json: %v", readings)
	}
	out := s.ok("nodes", "history", "gpu-1", "--since", "1h")
	// df's usage: 900 / (900 + 50), not 900 / 1000.
	for _, want := range []string{"GPU UTIL", "97%", "80896/81920", "64C", "/data 95%", "1/2"} {
		if !strings.Contains(out, want) {
			t.Errorf("nodes history lacks %q:\n%s", want, out)
		}
	}
	if r := s.run("nodes", "history", "gpu-9"); r.code != 1 || !strings.Contains(r.stderr, "no host named gpu-9 (known: gpu-1)") {
		t.Errorf("history of an unknown host: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}
