package budget

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// Call is one newly recorded LLM call as /metrics counts it: its spend,
// its tokens (cache reads and writes too) and whether it failed. Cache
// tokens and the failure flag are counted, not stored: the ledger keeps
// what budgets need, and Prometheus keeps the trends.
type Call struct {
	Agent, Host, Model, Provider, Tier string
	InputTokens, OutputTokens          int64
	CacheReadTokens, CacheWriteTokens  int64
	CostMicros                         int64
	Failed                             bool
}

// SpendObserver is told of every call the ledger newly recorded: once per
// event, never for a duplicate (the same id reported again) or a refused
// conflict, after the commit. A void subtracts nothing from what it was
// told: counters only grow, and the voided spend shows in the day's
// gauges and reports instead. Its method runs on the report path, so it
// must be cheap and must not block.
type SpendObserver interface {
	Spent(c Call)
}

type spendObserverBox struct{ o SpendObserver }

// observers are the Service's SpendObserver and its window of recent
// calls, kept apart from the Service's other fields.
type observers struct {
	obs   atomic.Pointer[spendObserverBox]
	calls callWindow
}

// SetObserver installs o; nil removes it. The metrics package installs
// one at startup.
func (s *Service) SetObserver(o SpendObserver) { s.extra.obs.Store(&spendObserverBox{o: o}) }

// observeRecorded tells the observer, and the window of recent calls, of
// the events a report newly recorded.
func (s *Service) observeRecorded(events []*Event, recs []*store.SpendEvent, res *store.SpendRecordResult) {
	if res.Recorded == 0 {
		return
	}
	var refused map[[2]string]bool
	if len(res.Conflicts) > 0 {
		refused = make(map[[2]string]bool, len(res.Conflicts))
		for _, c := range res.Conflicts {
			refused[[2]string{c.Agent, c.ID}] = true
		}
	}
	var o SpendObserver
	if b := s.extra.obs.Load(); b != nil {
		o = b.o
	}
	now := s.clock.Now()
	for i, r := range recs {
		if i >= len(events) || i >= len(res.Duplicates) || res.Duplicates[i] || refused[[2]string{r.Agent, r.ID}] {
			continue
		}
		e := events[i]
		s.extra.calls.add(now, r.Provider, r.Model, e.Failed)
		if o != nil {
			o.Spent(Call{Agent: r.Agent, Host: r.Host, Model: r.Model, Provider: r.Provider, Tier: r.Tier,
				InputTokens: r.InputTokens, OutputTokens: r.OutputTokens, CacheReadTokens: e.CacheReadTokens,
				CacheWriteTokens: e.CacheWriteTokens, CostMicros: r.CostMicros, Failed: e.Failed})
		}
	}
}

// LLMRequestWindow is how far back LLMRequests counts: long enough for a
// rate over the LiteLLM poller's batches (every 30 s, rows landing up to
// minutes late), short enough that an error burst shows within minutes.
const LLMRequestWindow = 15 * time.Minute

// LLMRequestCount is the calls of one provider and model recorded in the
// last LLMRequestWindow, and how many of them failed.
type LLMRequestCount struct {
	Provider, Model    string
	Requests, Failures int64
}

// LLMRequests counts the calls this replica recorded in the last
// LLMRequestWindow (by the time they were recorded, not the time they
// were made: the LiteLLM poller reports minutes late), per provider and
// model, sorted. Each replica counts the reports it took; with replicas,
// Prometheus's sum over factory_llm_requests_total is the fleet's view.
func (s *Service) LLMRequests() []LLMRequestCount {
	return s.extra.calls.counts(s.clock.Now())
}

// callWindow keeps per-minute counts of recent calls per provider and
// model: at most LLMRequestWindow/time.Minute buckets, each bounded by
// maxWindowKeys keys.
type callWindow struct {
	mu      sync.Mutex
	buckets map[int64]map[callKey]*callCount // minute (Unix) → counts
}

type callKey struct{ provider, model string }

type callCount struct{ requests, failures int64 }

// maxWindowKeys bounds the provider×model pairs one minute keeps; later
// pairs in that minute share one ("other", "other").
const maxWindowKeys = 1000

func (w *callWindow) add(now time.Time, provider, model string, failed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	minute := now.Unix() / 60
	if w.buckets == nil {
		w.buckets = map[int64]map[callKey]*callCount{}
	}
	w.prune(minute)
	b := w.buckets[minute]
	if b == nil {
		b = map[callKey]*callCount{}
		w.buckets[minute] = b
	}
	k := callKey{provider, model}
	c := b[k]
	if c == nil {
		if len(b) >= maxWindowKeys {
			k = callKey{"other", "other"}
			c = b[k]
		}
		if c == nil {
			c = &callCount{}
			b[k] = c
		}
	}
	c.requests++
	if failed {
		c.failures++
	}
}

// prune drops the minutes that left the window.
func (w *callWindow) prune(minute int64) {
	oldest := minute - int64(LLMRequestWindow/time.Minute) + 1
	for m := range w.buckets {
		if m < oldest || m > minute+1 {
			delete(w.buckets, m)
		}
	}
}

func (w *callWindow) counts(now time.Time) []LLMRequestCount {
	w.mu.Lock()
	defer w.mu.Unlock()
	minute := now.Unix() / 60
	w.prune(minute)
	sum := map[callKey]*callCount{}
	for m, b := range w.buckets {
		if m > minute {
			continue
		}
		for k, c := range b {
			t := sum[k]
			if t == nil {
				t = &callCount{}
				sum[k] = t
			}
			t.requests += c.requests
			t.failures += c.failures
		}
	}
	out := make([]LLMRequestCount, 0, len(sum))
	for k, c := range sum {
		out = append(out, LLMRequestCount{Provider: k.provider, Model: k.model, Requests: c.requests, Failures: c.failures})
	}
	slices.SortFunc(out, func(a, b LLMRequestCount) int {
		return cmp.Or(cmp.Compare(a.Provider, b.Provider), cmp.Compare(a.Model, b.Model))
	})
	return out
}
