package cli_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/cli"
	"github.com/factory/factory/controlplane/server"
	"github.com/factory/factory/controlplane/transport"
	"github.com/factory/factory/controlplane/transport/transporttest"
)

// startTLSControlPlane serves a control plane with TLS (mutual when
// clientCA is set) until the test ends and returns its address.
func startTLSControlPlane(t *testing.T, pki *transporttest.PKI, clientCA string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrCh := make(chan string, 1)
	done := make(chan error, 1)
	dataDir := t.TempDir()
	go func() {
		done <- server.Run(ctx, server.Config{
			Listen:      "127.0.0.1:0",
			DataDir:     dataDir,
			Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
			TLS:         transport.ServerTLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: clientCA},
			OnListening: func(a net.Addr) { addrCh <- a.String() },
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case addr := <-addrCh:
		t.Setenv("FACTORY_TOKEN", operatorToken(t, dataDir))
		return addr
	case err := <-done:
		t.Fatalf("control plane did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("control plane did not start in 30s")
	}
	return ""
}

// factory runs one CLI command in-process and returns its exit code and
// output.
func factory(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := cli.NewRootCommand(cli.Options{Stdout: &out, Stderr: &errOut})
	cmd.SetArgs(append([]string{"--timeout", "10s"}, args...))
	code = cli.Execute(context.Background(), cmd)
	return code, out.String(), errOut.String()
}

func TestCLIOverTLS(t *testing.T) {
	pki := transporttest.New(t)
	addr := startTLSControlPlane(t, pki, "")

	if code, _, stderr := factory(t, "--addr", addr, "--ca", pki.ServerCA, "task", "create", "--title", "over TLS"); code != 0 {
		t.Fatalf("task create with --ca: exit %d: %s", code, stderr)
	}
	// FACTORY_CA does what --ca does.
	t.Setenv("FACTORY_CA", pki.ServerCA)
	code, stdout, stderr := factory(t, "--addr", addr, "task", "ls", "-o", "json")
	if code != 0 || !strings.Contains(stdout, "over TLS") {
		t.Fatalf("task ls with FACTORY_CA: exit %d\n%s\n%s", code, stdout, stderr)
	}
	t.Setenv("FACTORY_CA", "")

	if code, _, _ := factory(t, "--addr", addr, "--ca", pki.OtherCA, "queue", "stats"); code != cli.ExitFailure {
		t.Fatalf("a CA that did not sign the server's certificate: exit %d, want %d", code, cli.ExitFailure)
	}
	// Plaintext to a TLS server fails rather than hanging.
	if code, _, _ := factory(t, "--addr", addr, "queue", "stats"); code != cli.ExitFailure {
		t.Fatalf("plaintext to a TLS server: exit %d, want %d", code, cli.ExitFailure)
	}
}

func TestCLIWithAClientCertificate(t *testing.T) {
	pki := transporttest.New(t)
	addr := startTLSControlPlane(t, pki, pki.ClientCA)

	if code, _, _ := factory(t, "--addr", addr, "--ca", pki.ServerCA, "queue", "stats"); code != cli.ExitFailure {
		t.Fatalf("no client certificate under mutual TLS: exit %d, want %d", code, cli.ExitFailure)
	}
	code, _, stderr := factory(t, "--addr", addr, "--ca", pki.ServerCA, "--cert", pki.ClientCert, "--key", pki.ClientKey, "queue", "stats")
	if code != 0 {
		t.Fatalf("with --cert/--key: exit %d: %s", code, stderr)
	}
}

func TestCLIRefusesPlaintextOffLoopback(t *testing.T) {
	// 192.0.2.0/24 is reserved for documentation: nothing answers there, and
	// the refusal comes before any packet is sent.
	code, _, stderr := factory(t, "--addr", "192.0.2.10:7420", "queue", "stats")
	if code != cli.ExitFailure || !strings.Contains(stderr, transport.PlaintextRule) {
		t.Fatalf("plaintext to a remote address: exit %d, stderr %q; want exit 1 stating the rule", code, stderr)
	}
	code, _, stderr = factory(t, "--addr", "192.0.2.10:7420", "--insecure", "--ca", "ca.pem", "queue", "stats")
	if code != cli.ExitFailure || !strings.Contains(stderr, "--insecure") {
		t.Fatalf("--insecure with --ca: exit %d, stderr %q", code, stderr)
	}
}
