package cli

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// spendBenchConfig is what `bench spend` was asked to do.
type spendBenchConfig struct {
	events     int
	batch      int
	reporters  int
	seed       int
	reportDays int
	queries    int
	label      string
}

// spendBenchResult is what `bench spend -o json` prints.
type spendBenchResult struct {
	Run             string                    `json:"run"`
	Label           string                    `json:"label,omitempty"`
	Addr            string                    `json:"addr"`
	Events          int                       `json:"events"`
	Batch           int                       `json:"batch"`
	Reporters       int                       `json:"reporters"`
	Seconds         float64                   `json:"seconds"`
	EventsPerSecond float64                   `json:"events_per_second"`
	CallLatency     latencySummary            `json:"call_latency"`
	Seeded          int                       `json:"seeded"`
	SeedSeconds     float64                   `json:"seed_seconds"`
	ReportDays      int                       `json:"report_days"`
	ReportLatency   latencySummary            `json:"report_latency"`
	ReportByGroup   map[string]latencySummary `json:"report_latency_by_group"`
}

func newBenchSpendCommand(a *app) *cobra.Command {
	cfg := spendBenchConfig{}
	cmd := &cobra.Command{
		Use:   "spend [--events N] [--batch K] [--reporters R] [--seed S --report-days D]",
		Short: "Benchmark durable spend reporting and the spend report over a large ledger",
		Long: `Bench spend measures the spend ledger of the control plane at --addr, on
whatever store it runs (start one with --store sqlite or a postgres:// URL
to compare them; --label records which in the output).

Throughput: R simulated agents, each with an agent token of its own
(issued for the run, revoked at its end), report N events between them
as fast as they can: one ReportSpend per event with --batch 1, else
ReportSpendBatch with K events per call. Every event is stored durably
(committed) before its call returns. It reports events/s and the calls'
latency p50/p99.

Report: with --seed S it first seeds S more events spread over the last
D days (--report-days), then runs GetSpend over those D days, Q times
(--queries), cycling through the breakdowns, and reports its latency.

Every bench event costs $0 (the local tier) and is dated today or
earlier, so it never moves a budget, an alert or the emergency stop; the
events stay in the ledger under agents named bench-<run>-agent-<i>, so
bench a control plane of its own, not the factory's.`,
		Example: `  factory bench spend --events 20000 --batch 1 --reporters 8
  factory bench spend --events 200000 --batch 500 --reporters 4 --label sqlite -o json
  factory bench spend --events 1000 --batch 1000 --seed 1000000 --report-days 30 --queries 100`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case cfg.events < 0 || cfg.seed < 0:
				return usageErrorf("--events and --seed must not be negative")
			case cfg.batch < 1 || cfg.batch > 1000:
				return usageErrorf("--batch must be 1 to 1000")
			case cfg.reporters < 1 || cfg.reporters > 1000:
				return usageErrorf("--reporters must be 1 to 1000")
			case cfg.reportDays < 1 || cfg.reportDays > 366:
				return usageErrorf("--report-days must be 1 to 366")
			case cfg.queries < 0:
				return usageErrorf("--queries must not be negative")
			}
			return a.runSpendBench(cmd, cfg)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.events, "events", 10000, "events to report in the throughput phase")
	f.IntVar(&cfg.batch, "batch", 100, "events per call: 1 uses ReportSpend, more ReportSpendBatch (max 1000)")
	f.IntVar(&cfg.reporters, "reporters", 4, "simulated agents reporting at once")
	f.IntVar(&cfg.seed, "seed", 0, "events to seed over --report-days before measuring the report")
	f.IntVar(&cfg.reportDays, "report-days", 30, "days the report spans (and the seed is spread over)")
	f.IntVar(&cfg.queries, "queries", 50, "GetSpend calls to time")
	f.StringVar(&cfg.label, "label", "", "what the control plane runs on (sqlite, postgres), recorded in the output")
	return cmd
}

// benchModels give the ledger a realistic spread of models and tiers.
var benchModels = []string{"claude-sonnet-4", "claude-opus-4", "gpt-4o", "gpt-4o-mini", "gemini-2.5-pro", "qwen2.5:7b",
	"qwen2.5-coder:32b", "llama3.1:8b", "deepseek-r1", "mistral-large"}

func (a *app) runSpendBench(cmd *cobra.Command, cfg spendBenchConfig) error {
	ctx, span := a.opts.TracerProvider.Tracer("github.com/factory/factory/cli").Start(cmd.Context(), spanName(cmd))
	defer span.End()
	conn, err := a.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	accessClient := factoryv1.NewAccessServiceClient(conn)
	run := "bench-" + randomHex(6)
	progress := a.stderr()
	res := spendBenchResult{Run: run, Label: cfg.label, Addr: a.addr, Events: cfg.events, Batch: cfg.batch, Reporters: cfg.reporters,
		ReportDays: cfg.reportDays, ReportByGroup: map[string]latencySummary{}}

	// Each reporter is an agent reporting its own calls, over one shared
	// connection with its own token.
	tokens := &benchTokens{secrets: map[string]string{}}
	defer revokeBenchTokens(accessClient, tokens, progress)
	for i := range cfg.reporters {
		name := benchAgent(run, i)
		resp, err := accessClient.CreateToken(ctx, &factoryv1.CreateTokenRequest{
			Role: factoryv1.Role_ROLE_AGENT, Subject: name, Description: "factory bench spend " + run,
			ExpiresIn: durationpb.New(24 * time.Hour),
		})
		if err != nil {
			return fmt.Errorf("issuing the bench agents' tokens (bench needs an operator token): %w", err)
		}
		tokens.secrets[name] = resp.GetSecret()
		tokens.ids = append(tokens.ids, resp.GetToken().GetId())
	}
	budget := factoryv1.NewBudgetServiceClient(conn)
	// One connection carries every agent's calls, each with its token.
	asAgent := func(ctx context.Context, i int) context.Context {
		return withCallToken(ctx, tokens.secrets[benchAgent(run, i)])
	}

	fmt.Fprintf(progress, "bench %s: %d events, batch %d, %d reporters at %s\n", run, cfg.events, cfg.batch, cfg.reporters, a.addr)
	now := time.Now()
	lat, secs, err := reportBenchEvents(ctx, budget, asAgent, run, cfg.events, cfg.batch, cfg.reporters, func(int) time.Time { return now }, "e")
	if err != nil {
		return err
	}
	res.Seconds = secs
	if secs > 0 {
		res.EventsPerSecond = float64(cfg.events) / secs
	}
	res.CallLatency = summarize(lat)

	if cfg.seed > 0 {
		fmt.Fprintf(progress, "seeding %d events over %d days\n", cfg.seed, cfg.reportDays)
		spread := func(n int) time.Time {
			return now.AddDate(0, 0, -(n % cfg.reportDays)).Add(-time.Duration(n%3600) * time.Second)
		}
		_, seedSecs, err := reportBenchEvents(ctx, budget, asAgent, run, cfg.seed, 1000, cfg.reporters, spread, "s")
		if err != nil {
			return err
		}
		res.Seeded, res.SeedSeconds = cfg.seed, seedSecs
	}

	if cfg.queries > 0 {
		groups := []factoryv1.SpendGroupBy{factoryv1.SpendGroupBy_SPEND_GROUP_BY_UNSPECIFIED, factoryv1.SpendGroupBy_SPEND_GROUP_BY_AGENT,
			factoryv1.SpendGroupBy_SPEND_GROUP_BY_MODEL, factoryv1.SpendGroupBy_SPEND_GROUP_BY_TIER, factoryv1.SpendGroupBy_SPEND_GROUP_BY_DAY,
			factoryv1.SpendGroupBy_SPEND_GROUP_BY_TASK, factoryv1.SpendGroupBy_SPEND_GROUP_BY_PROVIDER}
		var all []time.Duration
		by := map[string][]time.Duration{}
		for q := range cfg.queries {
			g := groups[q%len(groups)]
			start := time.Now()
			if _, err := budget.GetSpend(ctx, &factoryv1.GetSpendRequest{Days: int32(cfg.reportDays), GroupBy: g}); err != nil {
				return fmt.Errorf("GetSpend: %w", err)
			}
			d := time.Since(start)
			all = append(all, d)
			name := "none"
			if g != factoryv1.SpendGroupBy_SPEND_GROUP_BY_UNSPECIFIED {
				name = groupByNames[g-1]
			}
			by[name] = append(by[name], d)
		}
		res.ReportLatency = summarize(all)
		for k, v := range by {
			res.ReportByGroup[k] = summarize(v)
		}
	}

	if a.jsonOutput() {
		return writeJSON(a.stdout(), res)
	}
	tw := newTable(a.stdout())
	label := ""
	if cfg.label != "" {
		label = ", " + cfg.label
	}
	fmt.Fprintf(tw, "run\t%s (%d reporters, batch %d%s)\n", run, cfg.reporters, cfg.batch, label)
	fmt.Fprintf(tw, "events/s\t%.0f (%d durable events in %.2fs)\n", res.EventsPerSecond, cfg.events, res.Seconds)
	fmt.Fprintf(tw, "call latency\tp50 %.2fms  p99 %.2fms  max %.2fms  (%d calls)\n",
		res.CallLatency.P50ms, res.CallLatency.P99ms, res.CallLatency.Maxms, res.CallLatency.Count)
	if res.Seeded > 0 {
		fmt.Fprintf(tw, "seed\t%d events over %d days in %.2fs (%.0f events/s)\n", res.Seeded, cfg.reportDays, res.SeedSeconds, float64(res.Seeded)/res.SeedSeconds)
	}
	if cfg.queries > 0 {
		fmt.Fprintf(tw, "report (%d days)\tp50 %.2fms  p99 %.2fms  max %.2fms  (%d GetSpend calls)\n",
			cfg.reportDays, res.ReportLatency.P50ms, res.ReportLatency.P99ms, res.ReportLatency.Maxms, res.ReportLatency.Count)
	}
	return tw.Flush()
}

// reportBenchEvents reports n events from `reporters` agents at once, in
// calls of batch events, and returns each call's latency and the phase's
// wall time. when(i) dates event i.
func reportBenchEvents(ctx context.Context, c factoryv1.BudgetServiceClient, asAgent func(context.Context, int) context.Context, run string,
	n, batch, reporters int, when func(int) time.Time, tag string) ([]time.Duration, float64, error) {
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	zero := int64(0)
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	for r := range reporters {
		agent := benchAgent(run, r)
		g.Go(func() error {
			actx := asAgent(gctx, r)
			var mine []time.Duration
			defer func() {
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
			for {
				first := int(next.Add(int64(batch))) - batch
				if first >= n {
					return nil
				}
				last := min(first+batch, n)
				events := make([]*factoryv1.SpendEvent, 0, last-first)
				for i := first; i < last; i++ {
					model := benchModels[i%len(benchModels)]
					events = append(events, &factoryv1.SpendEvent{
						Id: fmt.Sprintf("%s-%s-%d", run, tag, i), Agent: agent, Model: model, Provider: "bench",
						Tier: factoryv1.SpendTier_SPEND_TIER_LOCAL, InputTokens: int64(1000 + i%5000), OutputTokens: int64(100 + i%700),
						CostMicros: &zero, TaskId: fmt.Sprintf("%s-task-%d", run, i%200), OccurredAt: timestamppb.New(when(i)),
					})
				}
				t0 := time.Now()
				var err error
				if batch == 1 {
					_, err = c.ReportSpend(actx, &factoryv1.ReportSpendRequest{Event: events[0]})
				} else {
					_, err = c.ReportSpendBatch(actx, &factoryv1.ReportSpendBatchRequest{Events: events})
				}
				if err != nil {
					return fmt.Errorf("reporting spend as %s: %w", agent, err)
				}
				mine = append(mine, time.Since(t0))
			}
		})
	}
	err := g.Wait()
	return lat, time.Since(start).Seconds(), err
}
