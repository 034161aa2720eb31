package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// The ledger's targets: at least 10,000 events/s reported in batches, and
// a 30-day report in under 100 ms at 10 million events. Reports read only
// the day rollups, so their cost follows the rollup rows (days times
// distinct agents, models, tasks...), not the events.

var (
	benchAgents    = 20
	benchModels    = []string{"claude-opus-4", "claude-sonnet-4", "claude-haiku-4-5", "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gemini-2.5-pro", "qwen2.5:7b"}
	benchProviders = []string{"anthropic", "anthropic", "anthropic", "openai", "openai", "openai", "google", "ollama"}
	benchTiers     = []string{store.TierFrontier, store.TierMid, store.TierMid, store.TierMid, store.TierMid, store.TierMid, store.TierFrontier, store.TierLocal}
	benchDay0      = time.Date(2031, time.March, 1, 0, 0, 0, 0, time.UTC)
)

// benchEvent is event n of a synthetic fleet: 20 agents, 8 models, a task
// per 50 events, spread over day.
func benchEvent(n int, day int) *store.SpendEvent {
	m := n % len(benchModels)
	return &store.SpendEvent{
		ID: fmt.Sprintf("ev-%010d", n), Agent: fmt.Sprintf("agent-%02d", n%benchAgents), Host: "ws-1",
		Model: benchModels[m], Provider: benchProviders[m], Tier: benchTiers[m],
		InputTokens: 2_000, OutputTokens: 400, CostMicros: int64(1_000 + n%5_000), TaskID: fmt.Sprintf("task-%d-%d", day, n/50),
		OccurredAt: benchDay0.AddDate(0, 0, day), Day: benchDay0.AddDate(0, 0, day).Format("2006-01-02"),
	}
}

// BenchmarkSpendBatch records batches of events (each a new id, with its
// rollups in the same transaction), from 4 reporters at once.
func BenchmarkSpendBatch(b *testing.B) {
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s, err := Open(context.Background(), Config{Path: filepath.Join(b.TempDir(), "bench.db"), Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var next int64
			b.SetParallelism(2) // 2 × GOMAXPROCS reporters
			b.ResetTimer()
			cpu0 := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					// Each goroutine takes its own range of ids.
					start := int(atomic.AddInt64(&next, int64(size))) - size
					batch := make([]*store.SpendEvent, size)
					for i := range batch {
						batch[i] = benchEvent(start+i, 0)
					}
					if _, err := s.SpendRecord(context.Background(), &store.SpendRecordParams{Events: batch, Now: benchDay0}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			cpu := processCPU() - cpu0
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
			// CPU per event holds up on a machine shared with other work,
			// where throughput does not: 2 cores / cpu-µs is the ceiling.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*size), "cpu-µs/event")
		})
	}
}

// seedRollups writes the rollups of events events over days days, as
// SpendRecord would leave them, straight through SpendRollupAdd: the
// rollups of a sample of distinct events per day, scaled up.
func seedRollups(b testing.TB, s *Store, events, days int) {
	b.Helper()
	perDay := events / days
	// One sampled event stands for weight real ones: as many distinct
	// tasks and agent/model pairs as the real events would have.
	const sample = 4_000
	weight := int64(max(1, perDay/sample))
	for d := range days {
		evs := make([]*store.SpendEvent, 0, sample)
		for i := range min(sample, perDay) {
			e := benchEvent(d*sample+i, d)
			e.TaskID = fmt.Sprintf("task-%d-%d", d, i/max(1, 50/int(weight)))
			evs = append(evs, e)
		}
		rows := store.SpendRollups(evs)
		for i := range rows {
			r := &rows[i]
			r.CostMicros *= weight
			r.Events *= weight
			r.InputTokens *= weight
			r.OutputTokens *= weight
		}
		for start := 0; start < len(rows); start += 5_000 {
			if err := s.SpendRollupAdd(context.Background(), rows[start:min(start+5_000, len(rows))]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkSpendReport30Days answers the report GetSpend makes for 30
// days broken down by agent (the totals, the breakdown and the 7-day
// average), over rollups standing for the given number of events.
func BenchmarkSpendReport30Days(b *testing.B) {
	for _, events := range []int{100_000, 10_000_000} {
		b.Run(fmt.Sprintf("events=%d", events), func(b *testing.B) {
			s, err := Open(context.Background(), Config{Path: filepath.Join(b.TempDir(), "bench.db"), Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			seedRollups(b, s, events, 37)
			b.ResetTimer()
			for b.Loop() {
				report30Days(b, s)
			}
		})
	}
}

// BenchmarkSpendReport30DaysByTask is the widest breakdown: every task of
// the month, largest first.
func BenchmarkSpendReport30DaysByTask(b *testing.B) {
	s, err := Open(context.Background(), Config{Path: filepath.Join(b.TempDir(), "bench.db"), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	seedRollups(b, s, 10_000_000, 30)
	from, to := benchDay0.Format("2006-01-02"), benchDay0.AddDate(0, 0, 29).Format("2006-01-02")
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.SpendRollupQuery(context.Background(), &store.SpendRollupQueryParams{Dimension: store.DimTask, FromDay: from, ToDay: to, Group: store.GroupKey, Limit: 100}); err != nil {
			b.Fatal(err)
		}
	}
}

// report30Days is the report BenchmarkSpendReport30Days times.
func report30Days(tb testing.TB, s *Store) {
	from, to := benchDay0.AddDate(0, 0, 7).Format("2006-01-02"), benchDay0.AddDate(0, 0, 36).Format("2006-01-02")
	for _, p := range []*store.SpendRollupQueryParams{
		{Dimension: store.DimTotal, FromDay: from, ToDay: to},
		{Dimension: store.DimAgent, FromDay: from, ToDay: to, Group: store.GroupKey, Limit: 100},
		{Dimension: store.DimTotal, FromDay: benchDay0.Format("2006-01-02"), ToDay: benchDay0.AddDate(0, 0, 6).Format("2006-01-02")},
	} {
		res, err := s.SpendRollupQuery(context.Background(), p)
		if err != nil {
			tb.Fatal(err)
		}
		if p.Group == store.GroupNone && res.Rows[0].Events == 0 {
			tb.Fatal("the report found no events")
		}
	}
}
