package budget

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

type callLog struct {
	mu    sync.Mutex
	calls []Call
}

func (l *callLog) Spent(c Call) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, c)
}

// The observer hears each newly recorded event once, cache tokens and
// failure included; a duplicate, a conflict and a void add nothing.
func TestObserverHearsEachRecordedCallOnce(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	log := &callLog{}
	f.svc.SetObserver(log)
	now := f.clock.Now()
	cached := &Event{ID: "a", Agent: "forge", Host: "gpu-01", Model: "claude-sonnet-4", Provider: "anthropic", Tier: store.TierFrontier,
		InputTokens: 18650, OutputTokens: 1204, CacheReadTokens: 14336, CacheWriteTokens: 7, Cost: cost(35303), OccurredAt: now}
	failed := &Event{ID: "b", Agent: "forge", Host: "gpu-01", Model: "claude-sonnet-4", Provider: "anthropic", Tier: store.TierFrontier,
		Failed: true, Cost: cost(0), OccurredAt: now}
	if _, err := f.svc.Report(f.ctx, []*Event{cached, failed}); err != nil {
		t.Fatal(err)
	}
	again := *cached
	conflict := *failed
	conflict.Cost = cost(99)
	if _, err := f.svc.Report(f.ctx, []*Event{&again, &conflict}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Void(f.ctx, "forge", "a", "test", "op"); err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	want := []Call{
		{Agent: "forge", Host: "gpu-01", Model: "claude-sonnet-4", Provider: "anthropic", Tier: "frontier", InputTokens: 18650, OutputTokens: 1204,
			CacheReadTokens: 14336, CacheWriteTokens: 7, CostMicros: 35303},
		{Agent: "forge", Host: "gpu-01", Model: "claude-sonnet-4", Provider: "anthropic", Tier: "frontier", Failed: true},
	}
	if len(log.calls) != len(want) || log.calls[0] != want[0] || log.calls[1] != want[1] {
		t.Fatalf("observed %+v, want %+v", log.calls, want)
	}
}

func TestCacheTokensAreBounded(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	for field, e := range map[string]*Event{
		"event.cache_read_tokens":  {CacheReadTokens: -1},
		"event.cache_write_tokens": {CacheWriteTokens: store.MaxEventTokens + 1},
	} {
		e.ID, e.Agent, e.Model, e.Tier, e.Cost, e.OccurredAt = "x", "forge", "m", store.TierMid, cost(1), f.clock.Now()
		_, err := f.svc.Report(f.ctx, []*Event{e})
		var fe *store.FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%s: %v", field, err)
		}
	}
}

// LLMRequests counts the last 15 minutes' calls per provider and model,
// by the time they were recorded.
func TestLLMRequestsCountTheLastWindow(t *testing.T) {
	f := newFixture(t, mustUTC("2031-03-14T00:00:00Z"), nil)
	report := func(id, model string, failed bool) {
		t.Helper()
		if _, err := f.svc.Report(f.ctx, []*Event{{ID: id, Agent: "forge", Model: model, Provider: "anthropic", Tier: store.TierFrontier,
			Cost: cost(0), Failed: failed, OccurredAt: f.clock.Now()}}); err != nil {
			t.Fatal(err)
		}
	}
	report("old", "sonnet", true)
	f.clock.Advance(10 * time.Minute)
	report("a", "sonnet", false)
	report("a", "sonnet", false) // a duplicate
	report("b", "sonnet", true)
	report("c", "haiku", false)
	got := f.svc.LLMRequests()
	want := []LLMRequestCount{{Provider: "anthropic", Model: "haiku", Requests: 1}, {Provider: "anthropic", Model: "sonnet", Requests: 3, Failures: 2}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("LLMRequests = %+v, want %+v", got, want)
	}
	f.clock.Advance(6 * time.Minute) // "old" leaves the window
	got = f.svc.LLMRequests()
	if len(got) != 2 || got[1] != (LLMRequestCount{Provider: "anthropic", Model: "sonnet", Requests: 2, Failures: 1}) {
		t.Fatalf("after 16 minutes: %+v", got)
	}
	f.clock.Advance(15 * time.Minute)
	if got := f.svc.LLMRequests(); len(got) != 0 {
		t.Fatalf("after the window: %+v", got)
	}
}
