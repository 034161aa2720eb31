package console_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
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

// factory is a real control plane with its console, on SQLite in a temp
// directory, for the console's tests: they drive the console over HTTP
// (or a browser) and the rest of the factory over gRPC.
type factory struct {
	// GRPC is the API's address; URL is the console's base URL;
	// SignInPath is the one-time sign-in link's path.
	GRPC, URL, SignInPath string
	DataDir               string
	// Operator is the bootstrap operator token's secret.
	Operator string
	conn     *grpc.ClientConn
}

// startFactory serves a control plane with its console until the test
// ends. configure, when set, may change the configuration first.
func startFactory(t testing.TB, configure func(*server.Config)) *factory {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &factory{DataDir: t.TempDir()}
	grpcCh := make(chan string, 1)
	consoleCh := make(chan [2]string, 1)
	done := make(chan error, 1)
	cfg := server.Config{
		Listen:  "127.0.0.1:0",
		DataDir: f.DataDir,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Console: server.ConsoleConfig{Listen: "127.0.0.1:0"},
	}
	if os.Getenv("FACTORY_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if configure != nil {
		configure(&cfg)
		f.DataDir = cfg.DataDir
	}
	cfg.OnListening = func(a net.Addr) { grpcCh <- a.String() }
	cfg.Console.OnListening = func(url, signIn string) { consoleCh <- [2]string{url, signIn} }
	go func() { done <- server.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	deadline := time.After(30 * time.Second)
	for f.GRPC == "" || f.URL == "" {
		select {
		case a := <-grpcCh:
			f.GRPC = a
		case c := <-consoleCh:
			f.URL, f.SignInPath = c[0], c[1]
		case err := <-done:
			t.Fatalf("control plane did not start: %v", err)
		case <-deadline:
			t.Fatal("control plane did not start in 30s")
		}
	}
	b, err := os.ReadFile(filepath.Join(f.DataDir, access.OperatorTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	f.Operator = strings.TrimSpace(string(b))
	return f
}

// dial returns a gRPC connection to the API carrying the token.
func (f *factory) dial(t testing.TB, token string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(f.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(access.Bearer{Secret: token, Plaintext: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// token makes a token of the role for the subject through the API and
// returns its id and secret.
func (f *factory) token(t testing.TB, role factoryv1.Role, subject string, roles ...string) (id, secret string) {
	t.Helper()
	r, err := factoryv1.NewAccessServiceClient(f.dial(t, f.Operator)).CreateToken(context.Background(),
		&factoryv1.CreateTokenRequest{Role: role, Subject: subject, Roles: roles})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetToken().GetId(), r.GetSecret()
}

// client is a browser-like HTTP client with its own cookie jar that does
// not follow redirects, so tests see where the console sends them.
func client(t testing.TB) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
