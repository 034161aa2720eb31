package postgres

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// BenchmarkClaimComplete measures claim+complete cycles per second against
// the real server: agents claim (one task, or a batch of 50) and complete
// what they got, as fast as they can. One op is one task's cycle.
func BenchmarkClaimComplete(b *testing.B) {
	url := testURL(b)
	for _, bc := range []struct {
		name          string
		agents, batch int
		maxConns      int32
	}{
		{"single/agents=64", 64, 1, 0},
		{"batch50/agents=16", 16, 50, 0},
		{"batch50/agents=64", 64, 50, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := openTest(b, url, testSchema(b, url), Config{MaxConns: bc.maxConns})
			benchClaimComplete(b, s, bc.agents, bc.batch)
		})
	}
}

func benchClaimComplete(b *testing.B, s *Store, agents, batch int) {
	ctx := context.Background()
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	// Every cycle finds work: the queue holds all the tasks up front.
	for created := 0; created < b.N; {
		n := min(1000, b.N-created)
		tasks := make([]*store.TaskCreate, n)
		for i := range tasks {
			tasks[i] = &store.TaskCreate{ID: fmt.Sprintf("bench-%08d", created+i), Title: "benchmark task", Priority: int32(i % 3)}
		}
		if _, err := s.TaskCreate(ctx, &store.TaskCreateParams{Tasks: tasks, Now: now}); err != nil {
			b.Fatal(err)
		}
		created += n
	}
	var left atomic.Int64
	left.Store(int64(b.N))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for a := range agents {
		agent := fmt.Sprintf("agent-%02d", a)
		wg.Go(func() {
			for left.Load() > 0 {
				claimed, err := s.TaskClaim(ctx, &store.TaskClaimParams{Agent: agent, Max: batch, MaxHeld: benchMaxHeld(), LeaseDuration: time.Hour, Now: now})
				if err != nil {
					b.Error(err)
					return
				}
				if len(claimed) == 0 {
					return
				}
				items := make([]store.TaskCompleteItem, len(claimed))
				for i, c := range claimed {
					items[i] = store.TaskCompleteItem{Lease: store.LeaseRef{TaskID: c.Task.ID, Agent: agent, FencingToken: c.Task.FencingToken}}
				}
				res, err := s.TaskComplete(ctx, &store.TaskCompleteParams{Items: items, Now: now})
				if err != nil {
					b.Error(err)
					return
				}
				for _, r := range res.Results {
					if r.Err != nil {
						b.Error(r.Err)
						return
					}
				}
				left.Add(-int64(len(claimed)))
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "cycles/s")
	b.ReportMetric(float64(s.ops.calls.Load())/float64(max(1, s.ops.txs.Load())), "calls/tx")
}

// benchMaxHeld is the claims' lease cap: the control plane's default (256),
// or FACTORY_BENCH_MAX_HELD (0: uncapped, to compare).
func benchMaxHeld() int {
	if v, ok := os.LookupEnv("FACTORY_BENCH_MAX_HELD"); ok {
		n, _ := strconv.Atoi(v)
		return n
	}
	return 256
}
