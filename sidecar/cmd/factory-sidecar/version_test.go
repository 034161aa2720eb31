package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/telemetry/versiontest"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// TestBuiltSidecar builds factory-sidecar once (cgo, for NVML: the slow
// part) with the VCS stamp a release build carries, and runs it: its
// version commands, the exit status of --once with a failing probe, and the
// version its Hello sends.
func TestBuiltSidecar(t *testing.T) {
	if testing.Short() {
		t.Skip("builds factory-sidecar with cgo; skipped under -short")
	}
	bin, bi, version := versiontest.Build(t, ".", "factory-sidecar", true)
	t.Logf("version %s", version)

	sidecar := func(t *testing.T, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = versiontest.CleanEnv()
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}

	t.Run("version", func(t *testing.T) {
		if out, errOut, code := sidecar(t, "--version"); code != 0 || out != "factory-sidecar version "+version+"\n" {
			t.Errorf("--version: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		out, errOut, code := sidecar(t, "version")
		if code != 0 || !strings.HasPrefix(out, "factory-sidecar version "+version+" (") || !strings.Contains(out, bi.GoVersion) {
			t.Errorf("version: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})

	t.Run("once exits 1 when a probe fails", func(t *testing.T) {
		up, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer up.Close()
		closed, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closedAddr := closed.Addr().String()
		closed.Close()
		config := func(probes string) string {
			path := filepath.Join(t.TempDir(), "sidecar.yaml")
			cfg := "host: cron-host\ngpu: {disabled: true}\ndisk: {paths: [" + t.TempDir() + "]}\nprobes:\n" + probes
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			return path
		}
		healthy := "  - {name: up, kind: tcp, target: '" + up.Addr().String() + "', timeout: 2s}\n"
		failing := healthy + "  - {name: gone, kind: tcp, target: '" + closedAddr + "', timeout: 2s}\n"
		for _, format := range []string{"text", "json"} {
			out, errOut, code := sidecar(t, "--once", "-o", format, "--config", config(failing))
			if code != 1 || !strings.Contains(errOut, "probe gone") || !strings.Contains(errOut, closedAddr) || strings.Contains(errOut, "probe up") {
				t.Errorf("-o %s with a failing probe: exit %d, stderr %q", format, code, errOut)
			}
			if !strings.Contains(out, "gone") {
				t.Errorf("-o %s: the readings were not printed: %q", format, out)
			}
			if _, errOut, code := sidecar(t, "--once", "-o", format, "--config", config(healthy)); code != 0 {
				t.Errorf("-o %s with every check passing: exit %d, stderr %q", format, code, errOut)
			}
		}
		missingDisk := "host: cron-host\ngpu: {disabled: true}\ndisk: {paths: [" + filepath.Join(t.TempDir(), "absent") + "]}\n"
		path := filepath.Join(t.TempDir(), "sidecar.yaml")
		if err := os.WriteFile(path, []byte(missingDisk), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, errOut, code := sidecar(t, "--once", "-o", "text", "--config", path); code != 1 || !strings.Contains(errOut, "disk ") {
			t.Errorf("a disk path that cannot be read: exit %d, stderr %q", code, errOut)
		}
	})

	t.Run("hello carries the version", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		lis.Close()
		dataDir := t.TempDir()
		defer controlPlane(t, addr, dataDir)()
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
		tok, err := factoryv1.NewAccessServiceClient(conn).CreateToken(ctx, &factoryv1.CreateTokenRequest{Role: factoryv1.Role_ROLE_SIDECAR, Subject: "edge-v"})
		if err != nil {
			t.Fatal(err)
		}
		cfgPath := filepath.Join(t.TempDir(), "sidecar.yaml")
		if err := os.WriteFile(cfgPath, []byte("host: edge-v\ngpu: {disabled: true}\nspool: {path: "+filepath.Join(t.TempDir(), "events.jsonl")+"}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "--addr", addr, "--token", tok.GetSecret(), "--config", cfgPath, "--spend-listen", "off")
		cmd.Env = versiontest.CleanEnv()
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if t.Failed() {
				t.Logf("sidecar log:\n%s", errOut.String())
			}
		}()
		var seen string
		waitUntil(t, "node edge-v with the sidecar's version", func() bool {
			resp, err := factoryv1.NewFleetServiceClient(conn).ListNodes(ctx, &factoryv1.ListNodesRequest{})
			if err != nil || len(resp.GetNodes()) != 1 {
				return false
			}
			seen = resp.GetNodes()[0].GetVersion()
			return seen == version
		})
	})
}
