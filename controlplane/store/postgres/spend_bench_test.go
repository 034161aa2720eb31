package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// BenchmarkSpendBatch records batches of new events with their rollups,
// from 2 × GOMAXPROCS reporters at once (the SQLite benchmark's twin).
func BenchmarkSpendBatch(b *testing.B) {
	url := testURL(b)
	day0 := time.Date(2031, time.March, 1, 0, 0, 0, 0, time.UTC)
	models := []string{"claude-opus-4", "claude-sonnet-4", "gpt-4o", "gpt-4o-mini"}
	tiers := []string{store.TierFrontier, store.TierMid, store.TierMid, store.TierMid}
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := openTest(b, url, testSchema(b, url), Config{MaxConns: 8, Logger: slog.New(slog.DiscardHandler)})
			var next atomic.Int64
			b.SetParallelism(2)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					start := int(next.Add(int64(size))) - size
					batch := make([]*store.SpendEvent, size)
					for i := range batch {
						n := start + i
						batch[i] = &store.SpendEvent{
							ID: fmt.Sprintf("ev-%010d", n), Agent: fmt.Sprintf("agent-%02d", n%20), Model: models[n%4], Provider: "p",
							Tier: tiers[n%4], InputTokens: 2_000, OutputTokens: 400, CostMicros: int64(1_000 + n%5_000),
							TaskID: fmt.Sprintf("task-%d", n/50), OccurredAt: day0, Day: "2031-03-01",
						}
					}
					if _, err := s.SpendRecord(context.Background(), &store.SpendRecordParams{Events: batch, Now: day0}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
