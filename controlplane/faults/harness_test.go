//go:build faults || soak

package faults_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/factory/factory/controlplane/internal/proctest"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// binaries are built once per run into binDir.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binary returns the path of a built binary: "factory-controlplane" or
// "factory-sidecar" or "factory" (the CLI).
func binary(t *testing.T, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "factory-faults-bin-")
		if buildErr != nil {
			return
		}
		for _, b := range []struct{ name, pkg, cgo string }{
			{"factory-controlplane", "./controlplane/cmd/factory-controlplane", "0"},
			{"factory-sidecar", "./sidecar/cmd/factory-sidecar", "1"},
			{"factory", "./cli/cmd/factory", "0"},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, b.name), b.pkg)
			cmd.Dir = repoRoot()
			cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo, "CGO_CFLAGS=-Wno-deprecated-declarations")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "..", "..")
}

// logLine is one JSON line of a process's log.
type logLine = proctest.Line

// proc is a process under test, with its log kept in memory.
type proc struct{ *proctest.Proc }

// start runs bin with args; the process gets SIGTERM (then SIGKILL) when
// the test ends, and its log is shown when the test failed.
func start(t *testing.T, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	return &proc{proctest.Start(t, name, bin, env, args...)}
}

// controlPlane is a factory-controlplane process on a fixed port, so that
// a restart on the same data is found at the same address.
type controlPlane struct {
	*proc
	addr    string
	dataDir string
	args    []string
}

// startControlPlane starts a control plane on dataDir (SQLite unless args
// name a --store) and waits until it listens. addr "" picks a free port.
func startControlPlane(t *testing.T, name, dataDir, addr string, args ...string) *controlPlane {
	t.Helper()
	if addr == "" {
		addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	all := append([]string{
		"--data-dir", dataDir, "--listen", addr, "--shutdown-timeout", "2s", "--log-level", "info",
	}, args...)
	p := start(t, name, binary(t, "factory-controlplane"), nil, all...)
	p.WaitLog("listening", 60*time.Second, func(l logLine) bool { return l.Str("msg") == "listening" })
	return &controlPlane{proc: p, addr: addr, dataDir: dataDir, args: args}
}

// restart starts a new process on the same data and address (after the
// old one has ended).
func (c *controlPlane) restart(t *testing.T) *controlPlane {
	t.Helper()
	if c.Alive() {
		t.Fatalf("restart of %s while it still runs", c.Name)
	}
	return startControlPlane(t, c.Name+"'", c.dataDir, c.addr, c.args...)
}

// operatorToken is the secret the first start wrote into the data dir.
func (c *controlPlane) operatorToken(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dataDir, "operator.token"))
	if err != nil {
		t.Fatalf("operator token: %v", err)
	}
	return strings.TrimSpace(string(b))
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// dial opens a client connection that sends token on every call.
func dial(t *testing.T, addr, token string) *grpc.ClientConn {
	t.Helper()
	withToken := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(withToken(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(withToken(ctx), desc, cc, method, opts...)
		}),
	)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// mintToken makes a token for role and subject with the operator's
// connection and returns its secret, with what an operator grants beside
// it: for an agent token, the task roles it may claim (every role, "*",
// when none are named, as the cases that predate grants claim freely);
// for a sidecar token, the agents placed on its host.
func mintToken(t *testing.T, op *grpc.ClientConn, role factoryv1.Role, subject string, grants ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var roles []string
	switch role {
	case factoryv1.Role_ROLE_AGENT:
		roles = grants
		if len(roles) == 0 {
			roles = []string{"*"}
		}
	case factoryv1.Role_ROLE_SIDECAR:
		for _, agent := range grants {
			if _, err := factoryv1.NewFleetServiceClient(op).PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: agent, Host: subject}); err != nil {
				t.Fatalf("place agent %s on host %s: %v", agent, subject, err)
			}
		}
	}
	resp, err := factoryv1.NewAccessServiceClient(op).CreateToken(ctx, &factoryv1.CreateTokenRequest{Role: role, Subject: subject, Roles: roles})
	if err != nil {
		t.Fatalf("create %s token for %s: %v", role, subject, err)
	}
	return resp.GetSecret()
}

func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// postgresURL is FACTORY_TEST_POSTGRES_URL, or a skip that says why.
func postgresURL(t *testing.T) string {
	t.Helper()
	url := os.Getenv("FACTORY_TEST_POSTGRES_URL")
	if url == "" {
		t.Skip("FACTORY_TEST_POSTGRES_URL is not set; point it at a database the suite may create schemas in, " +
			"e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	return url
}

// freshSchema names a schema of the test's own, dropped when the test ends
// (call it before starting processes on it, so the drop runs after they
// stopped).
func freshSchema(t *testing.T, url string) string {
	t.Helper()
	schema := randomName("factory_faults_")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// eventually polls cond every 50ms until it holds or within passes.
func eventually(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// listAll lists every task in full (in the given states, when any).
func listAll(t *testing.T, ctx context.Context, q factoryv1.QueueServiceClient, states ...factoryv1.TaskState) []*factoryv1.Task {
	t.Helper()
	var out []*factoryv1.Task
	token := ""
	for {
		resp, err := q.ListTasks(ctx, &factoryv1.ListTasksRequest{States: states, PageSize: 1000, PageToken: token, View: factoryv1.TaskView_TASK_VIEW_FULL})
		if err != nil {
			t.Fatalf("list tasks: %v", err)
		}
		out = append(out, resp.GetTasks()...)
		token = resp.GetNextPageToken()
		if token == "" {
			return out
		}
	}
}

func stateCount(s *factoryv1.GetQueueStatsResponse, state factoryv1.TaskState) int64 {
	for _, c := range s.GetCounts() {
		if c.GetState() == state {
			return c.GetCount()
		}
	}
	return 0
}

// rssMiB is a process's resident set size.
func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
