//go:build faults

package faults_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/server"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// streamFlood is one token's attempt to hold many WatchTasks streams.
type streamFlood struct {
	opened, refused, behind, other atomic.Int64
	lastOther                      atomic.Value // error
	wg                             sync.WaitGroup
}

// holdStreams opens n WatchTasks streams with token, 100 to a connection,
// and holds them until ctx ends. Readers read everything they are sent;
// the others never read (with the smallest flow-control windows, so the
// server's sends block early).
func holdStreams(ctx context.Context, t *testing.T, addr, token string, n int, read bool) *streamFlood {
	t.Helper()
	f := &streamFlood{}
	var conns []*grpc.ClientConn
	for i := 0; i < n; i += 100 {
		conns = append(conns, dialWith(t, addr, token, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10)))
	}
	for i := range n {
		conn := conns[i/100]
		f.wg.Go(func() {
			// Read as bytes: the hostile client does not need the tasks,
			// and decoding them would take the test's CPU from the server.
			stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, factoryv1.QueueService_WatchTasks_FullMethodName)
			if err == nil {
				err = stream.SendMsg(&factoryv1.WatchTasksRequest{})
			}
			if err == nil {
				err = stream.CloseSend()
			}
			if err == nil {
				// The server answers the stream's first message (or its
				// refusal) at once: that tells opened from refused.
				err = stream.RecvMsg(&emptypb.Empty{})
			}
			switch {
			case err == nil:
				f.opened.Add(1)
			case status.Code(err) == codes.ResourceExhausted && strings.Contains(status.Convert(err).Message(), "too many streams"):
				f.refused.Add(1)
				return
			case status.Code(err) == codes.ResourceExhausted && strings.Contains(status.Convert(err).Message(), "fell behind"):
				// Opened, then closed while its snapshot waited: the
				// token's snapshots are paced and the queue moved on.
				f.behind.Add(1)
				return
			case ctx.Err() != nil:
				// Admitted (a refusal comes at once), still waiting for
				// its paced snapshot when the load ended.
				f.opened.Add(1)
				return
			default:
				f.other.Add(1)
				f.lastOther.Store(err)
				return
			}
			if !read {
				<-ctx.Done()
				return
			}
			for {
				if err := stream.RecvMsg(&emptypb.Empty{}); err != nil {
					return
				}
			}
		})
	}
	return f
}

// dialWith is dial with extra dial options; it may run off the test's
// goroutine.
func dialWith(t *testing.T, addr, token string, opts ...grpc.DialOption) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(access.Bearer{Secret: token, Plaintext: true}),
	}, opts...)...)
	if err != nil {
		t.Errorf("dial %s: %v", addr, err)
		return nil
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// checkCapped checks that of n streams one token tried, the default
// per-token cap held and the rest were refused with RESOURCE_EXHAUSTED.
func (f *streamFlood) checkCapped(t *testing.T, n int) {
	t.Helper()
	t.Logf("%d streams tried: %d opened, %d refused (RESOURCE_EXHAUSTED, too many streams), %d opened and closed as behind, %d failed otherwise",
		n, f.opened.Load(), f.refused.Load(), f.behind.Load(), f.other.Load())
	if got := f.opened.Load(); got > server.DefaultMaxStreamsPerToken {
		t.Errorf("one token holds %d streams, over the per-token cap of %d", got, server.DefaultMaxStreamsPerToken)
	}
	if f.refused.Load() < int64(n-server.DefaultMaxStreamsPerToken) || f.opened.Load()+f.refused.Load()+f.behind.Load() != int64(n) {
		t.Errorf("of %d streams, %d opened, %d were refused and %d closed as behind; the last other failure: %v",
			n, f.opened.Load(), f.refused.Load(), f.behind.Load(), f.lastOther.Load())
	}
}

// Row 1: 2,000 idle WatchTasks streams with one agent token took the
// queue from 5,889 to 8 cycles in 20 s and RSS from 62 to 866 MiB.
func floodRow01IdleWatchers(t *testing.T) {
	f := newFlood(t)
	hostile := mintToken(t, f.op, factoryv1.Role_ROLE_AGENT, "watcher")
	var streams *streamFlood
	f.underLoad(t, 250, func(ctx context.Context) {
		streams = holdStreams(ctx, t, f.cp.addr, hostile, 2000, true)
		<-ctx.Done()
		streams.wg.Wait()
	})
	streams.checkCapped(t, 2000)
}

// Row 2: 2,000 streams that never read took the queue from 7,400 to 56
// cycles, and a calm GetQueueStats took 2.1-8.2 s during a 1,000-task
// fan-out.
func floodRow02NonReadingWatchers(t *testing.T) {
	f := newFlood(t)
	hostile := mintToken(t, f.op, factoryv1.Role_ROLE_AGENT, "watcher")
	var streams *streamFlood
	var statsTook time.Duration
	f.underLoad(t, 250, func(ctx context.Context) {
		streams = holdStreams(ctx, t, f.cp.addr, hostile, 2000, false)
		time.Sleep(500 * time.Millisecond)
		// A calm watcher cut off across the fan-out resumes and misses nothing.
		f.resumeMissesNothing(ctx, t, "nobody", 1000, func() { fanOut(ctx, t, f.op, 1000) })
		t0 := time.Now()
		if _, err := factoryv1.NewQueueServiceClient(f.calm).GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{}); err != nil && ctx.Err() == nil {
			t.Errorf("calm GetQueueStats after the fan-out: %v", err)
		}
		statsTook = time.Since(t0)
		<-ctx.Done()
		streams.wg.Wait()
	})
	streams.checkCapped(t, 2000)
	t.Logf("calm GetQueueStats after a 1,000-task fan-out: %s", statsTook)
	if statsTook > calmMaxP99 {
		t.Errorf("calm GetQueueStats took %s during the load, want under %s", statsTook, calmMaxP99)
	}
}

// Row 3: 5,000 streams made CreateTasks(1000) take 50.6 s instead of
// 0.65 s, and RSS 1.7 GB.
func floodRow03ManyStreams(t *testing.T) {
	f := newFlood(t)
	hostile := mintToken(t, f.op, factoryv1.Role_ROLE_AGENT, "watcher")
	alone := fanOut(context.Background(), t, f.op, 1000)
	var streams *streamFlood
	var loaded time.Duration
	f.underLoad(t, 300, func(ctx context.Context) {
		t0 := time.Now()
		streams = holdStreams(ctx, t, f.cp.addr, hostile, 5000, true)
		// The fan-out once the streams over the cap have been refused.
		for streams.refused.Load()+streams.other.Load() < 5000-server.DefaultMaxStreamsPerToken && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("DEBUG refused all after %s", time.Since(t0))
		f.resumeMissesNothing(ctx, t, "nobody", 1000, func() { loaded = fanOut(ctx, t, f.op, 1000) })
		t.Logf("DEBUG fanout done after %s", time.Since(t0))
		<-ctx.Done()
		streams.wg.Wait()
	})
	streams.checkCapped(t, 5000)
	t.Logf("CreateTasks(1000): %s alone, %s during the load", alone, loaded)
	if bound := 3*alone + 500*time.Millisecond; loaded > bound {
		t.Errorf("CreateTasks(1000) took %s during the load, want under %s (3x the %s alone, plus 0.5 s)", loaded, bound, alone)
	}
}

// fanOut creates n tasks for watchers to hear of, in one call, and returns
// how long the call took. The tasks' role is no one's, and they wait in
// BACKLOG: READY tasks of another role ahead of the calm client's would
// measure the claim's walk past other roles' backlog (the queue engine's
// own benchmark), not the streams.
func fanOut(ctx context.Context, t *testing.T, op *grpc.ClientConn, n int) time.Duration {
	t.Helper()
	batch := make([]*factoryv1.CreateTaskRequest, n)
	for i := range batch {
		batch[i] = &factoryv1.CreateTaskRequest{Title: "fan-out", Role: "nobody", InitialState: factoryv1.TaskState_TASK_STATE_BACKLOG}
	}
	t0 := time.Now()
	if _, err := factoryv1.NewQueueServiceClient(op).CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: batch}); err != nil && ctx.Err() == nil {
		t.Errorf("CreateTasks(%d): %v", n, err)
	}
	return time.Since(t0)
}
