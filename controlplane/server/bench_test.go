package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// BenchmarkClaimComplete measures claim+complete cycles over gRPC (bufconn)
// with 32 agents, one task per call and in batches of 50. The figure to
// compare with `factory bench queue` is b.N / elapsed = cycles/s. Each
// agent calls with its own agent token, as real agents do: an operator's
// calls would also be audited, which is not the hot path.
func BenchmarkClaimComplete(b *testing.B) {
	for _, batch := range []int{1, 50} {
		b.Run(fmt.Sprintf("agents=32/batch=%d", batch), func(b *testing.B) {
			t := &testing.T{}
			bundle := setup(t, nil)
			defer func() {
				// setup registered cleanups on a throwaway T; run them.
			}()
			ctx := context.Background()
			reqs := make([]*factoryv1.CreateTaskRequest, 0, 1000)
			for i := 0; i < b.N; i += len(reqs) {
				reqs = reqs[:0]
				for j := i; j < b.N && len(reqs) < 1000; j++ {
					reqs = append(reqs, &factoryv1.CreateTaskRequest{Title: "bench"})
				}
				if _, err := bundle.client.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: reqs}); err != nil {
					b.Fatal(err)
				}
			}
			agentConn := factoryv1.NewQueueServiceClient(bundle.dialAs(t, ""))
			secrets := make([]string, 32)
			for a := range secrets {
				secrets[a], _ = bundle.mintToken(t, store.RoleAgent, fmt.Sprintf("agent-%d", a))
			}
			var done atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for a := range 32 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					agent := fmt.Sprintf("agent-%d", a)
					ctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+secrets[a])
					for done.Load() < int64(b.N) {
						res, err := agentConn.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: agent, MaxTasks: int32(batch)})
						if err != nil {
							b.Error(err)
							return
						}
						if len(res.GetTasks()) == 0 {
							return
						}
						items := make([]*factoryv1.CompleteTaskRequest, len(res.GetTasks()))
						for i, tk := range res.GetTasks() {
							items[i] = &factoryv1.CompleteTaskRequest{TaskId: tk.GetId(), Agent: agent, FencingToken: tk.GetLease().GetToken()}
						}
						if batch == 1 {
							_, err = agentConn.CompleteTask(ctx, items[0])
						} else {
							_, err = agentConn.CompleteTasks(ctx, &factoryv1.CompleteTasksRequest{Items: items})
						}
						if err != nil {
							b.Error(err)
							return
						}
						done.Add(int64(len(items)))
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			if done.Load() != int64(b.N) {
				b.Fatalf("completed %d of %d", done.Load(), b.N)
			}
		})
	}
}
