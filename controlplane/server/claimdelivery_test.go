package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// TestUndeliveredClaimIsReleased claims tasks whose response the server
// cannot send (here: larger than its send limit, as 70 tasks of 1 MiB were
// once against 64 MiB). The claim committed; the send failed; the tasks
// must be READY again at once with their attempt given back, not held
// IN_PROGRESS under a lease nobody received.
func TestUndeliveredClaimIsReleased(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, sqlite.Config{Path: t.TempDir() + "/factory.db", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	q, err := queue.New(queue.Config{Store: st, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.StatsHandler(&claimDelivery{q: q, log: log}), grpc.MaxSendMsgSize(64<<10))
	factoryv1.RegisterQueueServiceServer(srv, &queueServer{q: q, log: log})
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return lis.Dial() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := factoryv1.NewQueueServiceClient(conn)

	payload := `"` + strings.Repeat("x", 40<<10) + `"`
	if _, err := q.Create(ctx, []*queue.CreateParams{
		{ID: "a", Title: "a", PayloadJSON: payload},
		{ID: "b", Title: "b", PayloadJSON: payload},
	}); err != nil {
		t.Fatal(err)
	}

	_, err = client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "agent-1", MaxTasks: 2, LeaseDuration: durationpb.New(time.Hour)})
	wantCode(t, err, codes.ResourceExhausted)

	// The release runs as the call ends on the server, which may be a
	// moment after the client saw the failure.
	var stats *store.QueueStats
	waitFor(t, func() bool {
		var err error
		if stats, err = st.QueueStats(ctx); err != nil {
			t.Fatal(err)
		}
		return stats.Counts[store.StateInProgress] == 0 && stats.Counts[store.StateReady] == 2
	})
	for _, id := range []string{"a", "b"} {
		task, err := st.TaskGet(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if task.Attempt != 0 || task.LeaseHolder != "" {
			t.Fatalf("task %s after release: attempt %d, holder %q; want 0 and none", id, task.Attempt, task.LeaseHolder)
		}
	}

	// A claim that can be delivered stays claimed.
	res, err := client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "agent-1", MaxTasks: 1})
	if err != nil || len(res.GetTasks()) != 1 || res.GetTasks()[0].GetAttempt() != 1 {
		t.Fatalf("claim of one task: %v, %v", res, err)
	}
	if task, _ := st.TaskGet(ctx, res.GetTasks()[0].GetId()); task.State != store.StateInProgress {
		t.Fatalf("delivered claim's task is %s, want IN_PROGRESS", task.State)
	}
}
