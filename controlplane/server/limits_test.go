package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store/sqlite"
	"github.com/factory/factory/controlplane/transport"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// callerFromMetadata stands in for the token id the auth layer will provide:
// it shows the key function is replaceable and lets one bufconn test play
// two callers.
func callerFromMetadata(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get("x-caller")) > 0 {
		return md.Get("x-caller")[0]
	}
	return "anonymous"
}

func asCaller(name string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "x-caller", name)
}

func TestRateLimitRefusesAFloodButNotOtherCallers(t *testing.T) {
	b := setupWith(t, nil, []GRPCOption{WithRateLimit(RateLimit{PerSecond: 1, Burst: 5, Key: callerFromMetadata})})
	flooder := asCaller("runaway-agent")

	var refused int
	var refusal error
	for range 50 {
		_, err := b.client.GetQueueStats(flooder, &factoryv1.GetQueueStatsRequest{})
		switch status.Code(err) {
		case codes.OK:
		case codes.ResourceExhausted:
			refused++
			refusal = err
		default:
			t.Fatalf("flood call: %v", err)
		}
	}
	// Five from the burst, perhaps one more refilled while the loop ran.
	if refused < 44 {
		t.Fatalf("%d of 50 calls refused, want at least 44", refused)
	}
	if msg := status.Convert(refusal).Message(); !strings.Contains(msg, "rate limit of 1 requests/s (burst 5)") || !strings.Contains(msg, "runaway-agent") {
		t.Fatalf("refusal %q does not name the limit and the caller", msg)
	}
	// Streams count too.
	stream, err := b.client.WatchTasks(flooder, &factoryv1.WatchTasksRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("watch from the flooding caller: got %v, want RESOURCE_EXHAUSTED", err)
	}

	// Another caller is unaffected, and health checks are never limited.
	if _, err := b.client.CreateTask(asCaller("operator"), &factoryv1.CreateTaskRequest{Title: "still works"}); err != nil {
		t.Fatalf("another caller: %v", err)
	}
	for range 20 {
		res, err := healthpb.NewHealthClient(b.conn).Check(flooder, &healthpb.HealthCheckRequest{})
		if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health check from the flooding caller: %v %v", res, err)
		}
	}
}

// The default key is the peer's IP: two clients on different loopback
// addresses get separate buckets, over real TCP.
func TestRateLimitKeysByPeerIPByDefault(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: t.TempDir() + "/factory.db", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	q, err := queue.New(queue.Config{Store: st, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	acc, secret := testAccess(t, st, nil)
	srv, _ := NewGRPCServer(Services{Queue: q, Access: acc}, log, noop.NewTracerProvider(), make(chan struct{}), WithRateLimit(RateLimit{PerSecond: 1, Burst: 3}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	from := func(ip string) factoryv1.QueueServiceClient {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), bearer(secret),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return factoryv1.NewQueueServiceClient(conn)
	}
	if c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).Dial("tcp", lis.Addr().String()); err != nil {
		t.Skipf("this system cannot dial from 127.0.0.2 (%v); the metadata-keyed test covers the limiter", err)
	} else {
		c.Close()
	}

	first, second := from("127.0.0.1"), from("127.0.0.2")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var lastErr error
	for range 10 {
		_, lastErr = first.GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{})
	}
	if status.Code(lastErr) != codes.ResourceExhausted {
		t.Fatalf("10th call from 127.0.0.1: got %v, want RESOURCE_EXHAUSTED", lastErr)
	}
	if _, err := second.GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{}); err != nil {
		t.Fatalf("first call from 127.0.0.2: %v", err)
	}
}

func TestOversizedRequestIsResourceExhaustedAndWritesNothing(t *testing.T) {
	// The client lifts its own send limit so that the server's is tested.
	b := setupWith(t, nil, nil, grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	ctx := context.Background()

	huge := `"` + strings.Repeat("x", transport.MaxRequestBytes) + `"`
	_, err := b.client.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "huge", PayloadJson: huge})
	wantCode(t, err, codes.ResourceExhausted)

	// Under the message limit but over the payload's own: a field violation.
	big := `"` + strings.Repeat("x", 2<<20) + `"`
	_, err = b.client.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "big", PayloadJson: big})
	if st := wantCode(t, err, codes.InvalidArgument); fieldOf(st) != "payload_json" {
		t.Fatalf("field %q, want payload_json", fieldOf(st))
	}

	list, err := b.client.ListTasks(ctx, &factoryv1.ListTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetTasks()); n != 0 {
		t.Fatalf("refused requests wrote %d tasks", n)
	}

	// Clients with the shared limits refuse to send it at all.
	capped := setupWith(t, nil, nil, transport.CallLimits())
	_, err = capped.client.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "huge", PayloadJson: huge})
	wantCode(t, err, codes.ResourceExhausted)
}

func TestRateLimiterForgetsOnlyRefilledCallers(t *testing.T) {
	var caller string
	l := RateLimit{PerSecond: 1, Burst: 2, Key: func(context.Context) string { return caller }}.limiter(slog.New(slog.NewTextHandler(io.Discard, nil)))
	call := func(name string) error {
		caller = name
		return l.Limit(context.Background())
	}
	sweep := func(at time.Time) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.sweep(at)
	}
	for i := range 100 {
		if err := call(fmt.Sprint("passer-by-", i)); err != nil {
			t.Fatal(err)
		}
	}
	call("drained")
	call("drained")
	if err := call("drained"); err == nil {
		t.Fatal("third call within a burst of 2 was allowed")
	}

	// A drained caller keeps its bucket: forgetting it would hand it a
	// fresh burst.
	sweep(time.Now())
	if _, ok := l.buckets["drained"]; !ok {
		t.Fatal("a drained bucket was forgotten")
	}
	// An hour later every bucket is full again, so none needs keeping.
	sweep(time.Now().Add(time.Hour))
	if n := len(l.buckets); n != 0 {
		t.Fatalf("%d refilled buckets kept", n)
	}
}

func TestRateLimiterWarnsOnceAMinutePerCaller(t *testing.T) {
	var out strings.Builder
	var caller string
	l := RateLimit{PerSecond: 1, Burst: 1, Key: func(context.Context) string { return caller }}.limiter(slog.New(slog.NewTextHandler(&out, nil)))
	for _, name := range []string{"a", "b"} {
		caller = name
		for range 20 {
			l.Limit(context.Background())
		}
	}
	if n := strings.Count(out.String(), "over the rate limit"); n != 2 {
		t.Fatalf("%d warnings for two flooding callers, want 2:\n%s", n, out.String())
	}
}
