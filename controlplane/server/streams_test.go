package server

import (
	"context"
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
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// openWatch opens a WatchTasks stream and waits for its SYNCED, so the
// stream is known to be open on the server.
func openWatch(t *testing.T, ctx context.Context, q factoryv1.QueueServiceClient, opts ...grpc.CallOption) (grpc.ServerStreamingClient[factoryv1.WatchTasksResponse], error) {
	t.Helper()
	stream, err := q.WatchTasks(ctx, &factoryv1.WatchTasksRequest{ChangesOnly: true}, opts...)
	if err != nil {
		return nil, err
	}
	first, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if first.GetType() != factoryv1.TaskEventType_TASK_EVENT_TYPE_SYNCED || first.GetCursor() == "" {
		t.Fatalf("first message of a changes-only watch: %v, want SYNCED with a cursor", first)
	}
	return stream, nil
}

// waitEnd reads the stream until it ends and returns how, failing after
// within.
func waitEnd(t *testing.T, stream grpc.ServerStreamingClient[factoryv1.WatchTasksResponse], within time.Duration) error {
	t.Helper()
	end := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				end <- err
				return
			}
		}
	}()
	select {
	case err := <-end:
		return err
	case <-time.After(within):
		t.Fatalf("the stream was still open after %s", within)
		return nil
	}
}

func TestStreamCapsRefuseTheStreamOverTheLimit(t *testing.T) {
	b := setupWith(t, nil, []GRPCOption{WithStreamLimits(StreamLimits{PerToken: 3, PerConnection: 5})})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	forge, _ := b.mintToken(t, store.RoleAgent, "forge")
	agent := b.clientsAs(t, forge)
	for i := range 3 {
		if _, err := openWatch(t, ctx, agent.q); err != nil {
			t.Fatalf("stream %d of 3: %v", i+1, err)
		}
	}
	_, err := openWatch(t, ctx, agent.q)
	st := wantCode(t, err, codes.ResourceExhausted)
	if !strings.Contains(st.Message(), "--max-streams-per-token") || !strings.Contains(st.Message(), "3") {
		t.Fatalf("refusal %q does not name the limit", st.Message())
	}
	// Unary calls are not streams: the token still works.
	if _, err := agent.q.GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{}); err != nil {
		t.Fatal(err)
	}

	// Per connection: several tokens sharing one connection.
	conn := b.dialAs(t, "")
	q := factoryv1.NewQueueServiceClient(conn)
	for i := range 5 {
		secret, _ := b.mintToken(t, store.RoleAgent, "shared")
		if _, err := openWatch(t, ctx, q, grpc.PerRPCCredentials(access.Bearer{Secret: secret, Plaintext: true})); err != nil {
			t.Fatalf("stream %d of 5 on one connection: %v", i+1, err)
		}
	}
	secret, _ := b.mintToken(t, store.RoleAgent, "shared")
	_, err = openWatch(t, ctx, q, grpc.PerRPCCredentials(access.Bearer{Secret: secret, Plaintext: true}))
	st = wantCode(t, err, codes.ResourceExhausted)
	if !strings.Contains(st.Message(), "--max-streams-per-connection") {
		t.Fatalf("refusal %q does not name the limit", st.Message())
	}
	// The same token on another connection is not refused.
	other := factoryv1.NewQueueServiceClient(b.dialAs(t, secret))
	if _, err := openWatch(t, ctx, other); err != nil {
		t.Fatal(err)
	}
}

// An operator token is bounded by the per-connection cap only: a person
// is trusted, and one operator token may drive a simulated fleet.
func TestOperatorStreamsAreCappedPerConnectionOnly(t *testing.T) {
	b := setupWith(t, nil, []GRPCOption{WithStreamLimits(StreamLimits{PerToken: 2, PerConnection: 4})})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	op, _ := b.mintToken(t, store.RoleOperator, "ops")
	for c := range 2 {
		q := factoryv1.NewQueueServiceClient(b.dialAs(t, op))
		for i := range 4 {
			if _, err := openWatch(t, ctx, q); err != nil {
				t.Fatalf("operator stream %d on connection %d: %v", i+1, c+1, err)
			}
		}
		_, err := openWatch(t, ctx, q)
		if st := wantCode(t, err, codes.ResourceExhausted); !strings.Contains(st.Message(), "--max-streams-per-connection") {
			t.Fatalf("refusal %q does not name the per-connection limit", st.Message())
		}
	}
}

// A closed stream frees its place under the caps.
func TestStreamCapsCountOnlyOpenStreams(t *testing.T) {
	b := setupWith(t, nil, []GRPCOption{WithStreamLimits(StreamLimits{PerToken: 2})})
	forge, _ := b.mintToken(t, store.RoleAgent, "forge")
	agent := b.clientsAs(t, forge)
	for i := range 10 {
		// The server hears of the previous round's cancel in its own time:
		// the place must come free, not the next open succeed at once.
		var stop context.CancelFunc
		waitFor(t, func() bool {
			ctx, cancel := context.WithCancel(context.Background())
			if _, err := openWatch(t, ctx, agent.q); err != nil {
				cancel()
				if status.Code(err) != codes.ResourceExhausted {
					t.Fatalf("round %d: %v", i, err)
				}
				return false
			}
			stop = cancel
			return true
		})
		stop()
	}
}

func TestRevokingATokenClosesItsStreams(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	forge, forgeTok := b.mintToken(t, store.RoleAgent, "forge")
	hammer, _ := b.mintToken(t, store.RoleAgent, "hammer")
	side, sideTok := b.mintToken(t, store.RoleSidecar, "gpu-1")
	watch, err := openWatch(t, ctx, b.clientsAs(t, forge).q)
	if err != nil {
		t.Fatal(err)
	}
	bystander, err := openWatch(t, ctx, b.clientsAs(t, hammer).q)
	if err != nil {
		t.Fatal(err)
	}
	connect, err := b.clientsAs(t, side).f.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := connect.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: &factoryv1.Hello{Host: "gpu-1"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := connect.Recv(); err != nil { // the config
		t.Fatal(err)
	}

	ops := factoryv1.NewAccessServiceClient(b.conn)
	revokedAt := time.Now()
	for _, id := range []string{forgeTok.ID, sideTok.ID} {
		if _, err := ops.RevokeToken(ctx, &factoryv1.RevokeTokenRequest{TokenId: id}); err != nil {
			t.Fatal(err)
		}
	}
	err = waitEnd(t, watch, 2*time.Second)
	if st := wantCode(t, err, codes.Unauthenticated); !strings.Contains(st.Message(), "revoked") {
		t.Fatalf("closing status %q does not say the token was revoked", st.Message())
	}
	connectEnd := make(chan error, 1)
	go func() {
		for {
			if _, err := connect.Recv(); err != nil {
				connectEnd <- err
				return
			}
		}
	}()
	select {
	case err := <-connectEnd:
		wantCode(t, err, codes.Unauthenticated)
	case <-time.After(2 * time.Second):
		t.Fatal("the revoked sidecar's Connect stream is still open")
	}
	if took := time.Since(revokedAt); took > 1500*time.Millisecond {
		t.Fatalf("streams closed %s after the revoke, want about a second at most", took)
	}
	// Another token's stream is untouched.
	create(t, b, &factoryv1.CreateTaskRequest{Title: "after the revoke", Role: "builder"})
	if e, err := bystander.Recv(); err != nil || e.GetType() != factoryv1.TaskEventType_TASK_EVENT_TYPE_CREATED {
		t.Fatalf("another token's watch after the revoke: %v, %v", e, err)
	}
}

// Another replica hears of the revoke when its cached lookup runs out, and
// closes the token's streams then.
func TestStreamsCloseWhenRevokedOnAnotherReplica(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	forge, tok := b.mintToken(t, store.RoleAgent, "forge")
	watch, err := openWatch(t, ctx, b.clientsAs(t, forge).q)
	if err != nil {
		t.Fatal(err)
	}
	otherReplica, err := access.New(access.Config{Store: b.store})
	if err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	if _, err := otherReplica.Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	err = waitEnd(t, watch, 3*time.Second)
	wantCode(t, err, codes.Unauthenticated)
	if took, bound := time.Since(revokedAt), access.DefaultCacheTTL+tokenRecheckEvery+500*time.Millisecond; took > bound {
		t.Fatalf("closed %s after a revoke elsewhere, want within %s", took, bound)
	}
}

func TestExpiredTokenStreamsClose(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	_, secret, err := b.access.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "brief", TTL: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	watch, err := openWatch(t, ctx, b.clientsAs(t, secret).q)
	if err != nil {
		t.Fatal(err)
	}
	err = waitEnd(t, watch, 3*time.Second)
	if st := wantCode(t, err, codes.Unauthenticated); !strings.Contains(st.Message(), "expired") {
		t.Fatalf("closing status %q does not say the token expired", st.Message())
	}
}

// slowBundle is a server whose watchers may lag only a few events.
func slowBundle(t *testing.T, lag int) (*queue.Service, func(opts ...grpc.DialOption) factoryv1.QueueServiceClient) {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, sqlite.Config{Path: t.TempDir() + "/factory.db", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	q, err := queue.New(queue.Config{Store: st, Logger: log, WatchBuffer: lag})
	if err != nil {
		t.Fatal(err)
	}
	acc, operator := testAccess(t, st, nil)
	stopping := make(chan struct{})
	srv, _ := NewGRPCServer(Services{Queue: q, Access: acc}, log, noop.NewTracerProvider(), stopping)
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	t.Cleanup(func() { close(stopping); srv.Stop() })
	return q, func(opts ...grpc.DialOption) factoryv1.QueueServiceClient {
		all := append([]grpc.DialOption{
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()), bearer(operator),
		}, opts...)
		conn, err := grpc.NewClient("passthrough:///bufnet", all...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return factoryv1.NewQueueServiceClient(conn)
	}
}

// A watcher that does not read is closed once it lags too far, told the
// cursor to resume from, and a watch resumed there gets every event it
// had not received: none is missed, none is lost by the writers.
func TestSlowWatcherIsClosedAndResumesWithoutMissingAnything(t *testing.T) {
	_, dial := slowBundle(t, 16)
	ctx := context.Background()
	writer := dial()
	// Fixed, small flow-control windows: the server's sends block after
	// about 128 KiB the watcher has not read.
	watcher := dial(grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	watch, err := openWatch(t, ctx, watcher)
	if err != nil {
		t.Fatal(err)
	}
	payload := `{"blob":"` + strings.Repeat("x", 16<<10) + `"}`
	var want []string
	for i := range 40 {
		task, err := writer.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "slow watcher test", Role: "builder", PayloadJson: payload})
		if err != nil {
			t.Fatalf("create %d (a write must not wait for a watcher): %v", i, err)
		}
		want = append(want, task.GetTask().GetId())
	}
	time.Sleep(150 * time.Millisecond) // the publisher looks for laggards at most every 100 ms
	task, err := writer.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "one more", Role: "builder"})
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, task.GetTask().GetId())

	// Now it reads: what was sent before the close, then the close.
	var got []string
	last := ""
	for {
		e, err := watch.Recv()
		if err != nil {
			st := wantCode(t, err, codes.ResourceExhausted)
			// The status names the last event the server knows it sent;
			// one more may have been on its way.
			if !strings.Contains(st.Message(), "fell behind") || !strings.Contains(st.Message(), "resume_cursor") || !strings.Contains(st.Message(), last[:strings.Index(last, "-")]) {
				t.Fatalf("closing status %q does not say it fell behind and where to resume (last cursor received %q)", st.Message(), last)
			}
			break
		}
		got = append(got, e.GetTask().GetId())
		last = e.GetCursor()
	}
	if len(got) >= len(want) {
		t.Fatalf("the watcher received all %d events before the close; the test did not make it lag", len(got))
	}
	resumed, err := watcher.WatchTasks(ctx, &factoryv1.WatchTasksRequest{ResumeCursor: last})
	if err != nil {
		t.Fatal(err)
	}
	for len(got) < len(want) {
		e, err := resumed.Recv()
		if err != nil {
			t.Fatalf("resumed watch after %d of %d events: %v", len(got), len(want), err)
		}
		if e.GetType() == factoryv1.TaskEventType_TASK_EVENT_TYPE_SNAPSHOT || e.GetType() == factoryv1.TaskEventType_TASK_EVENT_TYPE_SYNCED {
			t.Fatalf("a resumed watch sent %v; want only the missed events", e.GetType())
		}
		got = append(got, e.GetTask().GetId())
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d is task %s, want %s: a resumed watch must miss nothing", i, got[i], want[i])
		}
	}

	// A cursor this replica never issued is refused clearly.
	bad, err := watcher.WatchTasks(ctx, &factoryv1.WatchTasksRequest{ResumeCursor: "0123456789ab-5"})
	if err == nil {
		_, err = bad.Recv()
	}
	if st := wantCode(t, err, codes.OutOfRange); !strings.Contains(st.Message(), "without resume_cursor") {
		t.Fatalf("refusal %q does not say what to do", st.Message())
	}
}
