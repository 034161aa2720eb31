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

// BenchmarkSpendReport30Days is the SQLite benchmark's twin: the report
// GetSpend makes for 30 days by agent (totals, the breakdown and the 7-day
// average) over rollups standing for 10 million events, seeded straight
// through SpendRollupAdd from a sample of 4,000 distinct events a day.
func BenchmarkSpendReport30Days(b *testing.B) {
	url := testURL(b)
	s := openTest(b, url, testSchema(b, url), Config{MaxConns: 8, Logger: slog.New(slog.DiscardHandler)})
	day0 := time.Date(2031, time.March, 1, 0, 0, 0, 0, time.UTC)
	models := []string{"claude-opus-4", "claude-sonnet-4", "gpt-4o", "gpt-4o-mini", "qwen2.5:7b"}
	tiers := []string{store.TierFrontier, store.TierMid, store.TierMid, store.TierMid, store.TierLocal}
	const events, days, sample = 10_000_000, 37, 4_000
	weight := int64(events / days / sample)
	ctx := context.Background()
	for d := range days {
		evs := make([]*store.SpendEvent, sample)
		for i := range evs {
			n := d*sample + i
			evs[i] = &store.SpendEvent{
				ID: fmt.Sprintf("ev-%010d", n), Agent: fmt.Sprintf("agent-%02d", n%20), Model: models[n%5], Provider: "p",
				Tier: tiers[n%5], InputTokens: 2_000, OutputTokens: 400, CostMicros: int64(1_000 + n%5_000),
				TaskID: fmt.Sprintf("task-%d-%d", d, i), OccurredAt: day0.AddDate(0, 0, d), Day: day0.AddDate(0, 0, d).Format("2006-01-02"),
			}
		}
		rows := store.SpendRollups(evs)
		for i := range rows {
			rows[i].CostMicros *= weight
			rows[i].Events *= weight
			rows[i].InputTokens *= weight
			rows[i].OutputTokens *= weight
		}
		for start := 0; start < len(rows); start += 5_000 {
			if err := s.SpendRollupAdd(ctx, rows[start:min(start+5_000, len(rows))]); err != nil {
				b.Fatal(err)
			}
		}
	}
	from, to := day0.AddDate(0, 0, 7).Format("2006-01-02"), day0.AddDate(0, 0, 36).Format("2006-01-02")
	b.ResetTimer()
	for b.Loop() {
		for _, p := range []*store.SpendRollupQueryParams{
			{Dimension: store.DimTotal, FromDay: from, ToDay: to},
			{Dimension: store.DimAgent, FromDay: from, ToDay: to, Group: store.GroupKey, Limit: 100},
			{Dimension: store.DimTotal, FromDay: day0.Format("2006-01-02"), ToDay: day0.AddDate(0, 0, 6).Format("2006-01-02")},
		} {
			res, err := s.SpendRollupQuery(ctx, p)
			if err != nil {
				b.Fatal(err)
			}
			if p.Group == store.GroupNone && res.Rows[0].Events == 0 {
				b.Fatal("the report found no events")
			}
		}
	}
}
