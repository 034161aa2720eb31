package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
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

// On a machine without the NVIDIA library the one-shot collection still
// prints well-formed readings, says "no GPU", and fails only when asked to.
func TestOnceJSONWithoutGPU(t *testing.T) {
	var out strings.Builder
	stdout = &out
	t.Cleanup(func() { stdout = os.Stdout })
	cfgPath := filepath.Join(t.TempDir(), "sidecar.yaml")
	if err := os.WriteFile(cfgPath, []byte("host: gpu-test\nagents:\n  - {name: forge, role: builder, pid: 4242}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"--once", "-o", "json", "--samples", "2", "--config", cfgPath}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Samples []readings `json:"samples"`
	}
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(got.Samples) != 2 || got.Samples[0].Host != "gpu-test" {
		t.Fatalf("%s", out.String())
	}
	if g := got.Samples[0].GPU; !g.Available && !strings.Contains(g.Reason, "no GPU") {
		t.Errorf("gpu %+v", g)
	}
	if !strings.Contains(out.String(), `"took"`) {
		t.Errorf("no timings in %s", out.String())
	}
	if !got.Samples[0].GPU.Available {
		err := run(context.Background(), []string{"--once", "-o", "text", "--require-gpu", "--config", cfgPath})
		if err == nil || !strings.Contains(err.Error(), "no GPU") {
			t.Errorf("--require-gpu without a GPU: %v", err)
		}
	}
	if err := run(context.Background(), []string{"--once", "-o", "yaml"}); err == nil {
		t.Error("-o yaml accepted")
	}
	if err := os.WriteFile(cfgPath, []byte("probes:\n  - {name: x, kind: tcp, tagret: y}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"--once", "-o", "json", "--config", cfgPath}); err == nil {
		t.Error("a misspelt config key was accepted")
	}
}

// The shipped default config parses (unknown keys are errors) and names the
// runbook's services and ports.
func TestDeployConfig(t *testing.T) {
	cfg, err := loadSidecarConfig("../../../deploy/sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, p := range cfg.Probes {
		targets = append(targets, p.Target)
		if p.Timeout <= 0 {
			t.Errorf("probe %s has no timeout", p.Name)
		}
	}
	all := strings.Join(targets, " ")
	for _, port := range []string{":4000", ":8080", ":8081", ":11434", ":6333", ":7474", ":5432", ":3001", ":6379", ":8222"} {
		if !strings.Contains(all, port+"/") && !strings.Contains(all, port+" ") && !strings.HasSuffix(all, port) && !strings.Contains(all, port+"?") {
			t.Errorf("no probe on port %s in %s", port, all)
		}
	}
}
