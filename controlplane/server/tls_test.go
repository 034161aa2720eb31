package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/transport"
	"github.com/factory/factory/controlplane/transport/transporttest"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// startRun serves a control plane through Run, as the binary does, until the
// test ends, and returns the address it listens on.
func startRun(t *testing.T, cfg Config) string {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.DataDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.TracerProvider = noop.NewTracerProvider()
	addrCh := make(chan string, 1)
	cfg.OnListening = func(a net.Addr) { addrCh <- a.String() }
	ctx, cancel := context.WithCancel(context.Background())
	errCh := make(chan error, 1)
	go func() { errCh <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errCh; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	})
	select {
	case addr := <-addrCh:
		rememberOperator(t, addr, cfg.DataDir)
		return addr
	case err := <-errCh:
		errCh <- err
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("control plane did not start in 30s")
	}
	return ""
}

// dialWith connects a queue client with the given client-side TLS settings.
func dialWith(t *testing.T, addr string, c transport.ClientTLS) factoryv1.QueueServiceClient {
	t.Helper()
	opts, err := c.DialOptions(addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, append(opts, operatorAt(addr))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return factoryv1.NewQueueServiceClient(conn)
}

func createOnce(client factoryv1.QueueServiceClient, title string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := client.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: title})
	return err
}

func TestTLSServesVerifiedClientsAndRefusesAWrongCA(t *testing.T) {
	pki := transporttest.New(t)
	addr := startRun(t, Config{TLS: transport.ServerTLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey}})

	if err := createOnce(dialWith(t, addr, transport.ClientTLS{CAFile: pki.ServerCA}), "over TLS"); err != nil {
		t.Fatalf("client trusting the server's CA: %v", err)
	}
	// localhost is in the certificate too, so a client dialing by name works.
	_, port, _ := net.SplitHostPort(addr)
	if err := createOnce(dialWith(t, net.JoinHostPort("localhost", port), transport.ClientTLS{CAFile: pki.ServerCA}), "by name"); err != nil {
		t.Fatalf("client dialing localhost: %v", err)
	}

	err := createOnce(dialWith(t, addr, transport.ClientTLS{CAFile: pki.OtherCA}), "wrong CA")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client trusting another CA: got %v, want UNAVAILABLE from a failed certificate check", err)
	}
	// A plaintext client cannot talk to a TLS server either.
	plain, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := createOnce(factoryv1.NewQueueServiceClient(plain), "plaintext"); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext client: got %v, want UNAVAILABLE", err)
	}
}

func TestMutualTLSNeedsACertificateFromTheClientCA(t *testing.T) {
	pki := transporttest.New(t)
	addr := startRun(t, Config{TLS: transport.ServerTLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.ClientCA}})

	// The refusal arrives as a failed handshake or a closed connection,
	// depending on when the client notices: either way UNAVAILABLE.
	if err := createOnce(dialWith(t, addr, transport.ClientTLS{CAFile: pki.ServerCA}), "no client cert"); status.Code(err) != codes.Unavailable {
		t.Fatalf("client without a certificate: got %v, want UNAVAILABLE", err)
	}
	stranger := transport.ClientTLS{CAFile: pki.ServerCA, CertFile: pki.StrangerCert, KeyFile: pki.StrangerKey}
	if err := createOnce(dialWith(t, addr, stranger), "stranger"); status.Code(err) != codes.Unavailable {
		t.Fatalf("client with a certificate from another CA: got %v, want UNAVAILABLE", err)
	}
	member := transport.ClientTLS{CAFile: pki.ServerCA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}
	if err := createOnce(dialWith(t, addr, member), "mutual"); err != nil {
		t.Fatalf("client with a certificate from the client CA: %v", err)
	}
}

func TestPlaintextOnlyOnLoopbackUnlessInsecure(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	err := Run(context.Background(), Config{Listen: "0.0.0.0:0", DataDir: dir, Logger: log, TracerProvider: noop.NewTracerProvider()})
	if err == nil || !strings.Contains(err.Error(), transport.PlaintextRule) {
		t.Fatalf("plaintext on every interface: got %v, want a refusal stating the rule", err)
	}
	if _, statErr := os.Stat(filepath.Join(dir, "factory.db")); !errors.Is(statErr, os.ErrNotExist) {
		t.Fatalf("a refused start created the database (%v)", statErr)
	}

	// Half a TLS configuration is refused rather than silently ignored.
	pki := transporttest.New(t)
	err = Run(context.Background(), Config{Listen: "127.0.0.1:0", DataDir: dir, Logger: log, TracerProvider: noop.NewTracerProvider(),
		TLS: transport.ServerTLS{CertFile: pki.ServerCert}})
	if err == nil || !strings.Contains(err.Error(), "--tls-key") {
		t.Fatalf("certificate without key: got %v", err)
	}

	// With Insecure the operator has said it is fine.
	addr := startRun(t, Config{Listen: "0.0.0.0:0", Insecure: true})
	_, port, _ := net.SplitHostPort(addr)
	conn, err := grpc.NewClient(net.JoinHostPort("127.0.0.1", port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("insecure server: %v", err)
	}
}
