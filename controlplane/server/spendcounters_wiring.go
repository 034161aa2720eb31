package server

import (
	"context"
	"errors"
	"log/slog"

	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/spendcounters"
)

// liveCounters feeds the runbook's Redis spend counters from the ledger.
// They are built before the budget service (which calls Add after each
// commit) and learn of it after, for their day and their rebuilds.
type liveCounters struct {
	c   *spendcounters.Counters
	bud *budget.Service
	log *slog.Logger
}

// newLiveCounters returns nil when no Redis is configured.
func newLiveCounters(cfg Config, log *slog.Logger) (*liveCounters, error) {
	if cfg.RedisURL == "" {
		return nil, nil
	}
	lc := &liveCounters{log: log}
	c, err := spendcounters.New(spendcounters.Config{
		URL:    cfg.RedisURL,
		Logger: log,
		Today:  func() string { return lc.bud.Today() },
		Totals: lc.totals,
	})
	if err != nil {
		return nil, err
	}
	lc.c = c
	return lc, nil
}

// hook chains the counters after any OnRecorded the caller set.
func (lc *liveCounters) hook(prev func(context.Context, string, []budget.CounterEntry)) func(context.Context, string, []budget.CounterEntry) {
	return func(ctx context.Context, day string, recs []budget.CounterEntry) {
		if prev != nil {
			prev(ctx, day, recs)
		}
		entries := make([]spendcounters.Entry, len(recs))
		for i, r := range recs {
			entries[i] = spendcounters.Entry{Agent: r.Agent, Tier: r.Tier, Model: r.Model, Provider: r.Provider, CostMicros: r.CostMicros}
		}
		// Add only queues: the report never waits on Redis. Its errors
		// mean Redis is down or behind; the ledger has the spend and the
		// counters are rebuilt from it.
		if err := lc.c.Add(ctx, day, entries); err != nil && !errors.Is(err, spendcounters.ErrUnavailable) {
			lc.log.DebugContext(ctx, "live spend counters: add dropped", "err", err)
		}
	}
}

func (lc *liveCounters) totals(ctx context.Context, day string) (spendcounters.DayTotals, error) {
	if lc.bud == nil {
		return spendcounters.DayTotals{}, errors.New("budget service not ready")
	}
	total, byAgent, byTier, byModel, err := lc.bud.DayTotals(ctx, day)
	return spendcounters.DayTotals{Total: total, ByAgent: byAgent, ByTier: byTier, ByModel: byModel}, err
}

// run keeps the counters rebuilt until ctx ends; with replicas each one
// runs it, which only repeats an idempotent rebuild.
func (lc *liveCounters) run(ctx context.Context) error {
	defer lc.c.Close()
	return lc.c.Run(ctx)
}
