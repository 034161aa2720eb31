package spendcounters_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/factory/factory/controlplane/spendcounters"
)

// These tests run against a real Redis (FACTORY_TEST_REDIS_URL). Each uses
// its own key prefix; the flush test uses a database of its own, since a
// FLUSHDB would wipe whatever other tests keep in theirs.

// flushDB is the database the flush test empties.
const flushDB = 13

func redisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("FACTORY_TEST_REDIS_URL")
	if u == "" {
		t.Skip("FACTORY_TEST_REDIS_URL is not set: the live counters are tested against a real Redis only")
	}
	return u
}

func client(t testing.TB, db int) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(redisURL(t))
	if err != nil {
		t.Fatal(err)
	}
	if db >= 0 {
		opt.DB = db
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", opt.Addr, err)
	}
	return c
}

func prefix(t testing.TB) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	p := "test:" + hex.EncodeToString(b) + ":dash:spend:daily"
	return p
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// ledger stands in for the store: the truth the counters are rebuilt
// from.
type ledger struct {
	mu   sync.Mutex
	days map[string][]spendcounters.Entry
	fail error
	// during, when set, runs inside the next Totals before the sums are
	// taken (once).
	during func()
}

func (l *ledger) record(day string, e ...spendcounters.Entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.days == nil {
		l.days = map[string][]spendcounters.Entry{}
	}
	l.days[day] = append(l.days[day], e...)
}

func (l *ledger) totals(_ context.Context, day string) (spendcounters.DayTotals, error) {
	if f := l.during; f != nil {
		l.during = nil
		f()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return spendcounters.DayTotals{}, l.fail
	}
	t := spendcounters.DayTotals{ByAgent: map[string]int64{}, ByTier: map[string]int64{}, ByModel: map[string]int64{}}
	for _, e := range l.days[day] {
		t.Total += e.CostMicros
		t.ByAgent[e.Agent] += e.CostMicros
		t.ByTier[e.Tier] += e.CostMicros
		t.ByModel[e.Model] += e.CostMicros
	}
	return t, nil
}

var nz, _ = time.LoadLocation("Pacific/Auckland")

type fixture struct {
	t      *testing.T
	rdb    *redis.Client
	prefix string
	clock  *fakeClock
	ledger *ledger
	c      *spendcounters.Counters
}

func newFixture(t *testing.T, rdb *redis.Client, counterClient *redis.Client) *fixture {
	t.Helper()
	f := &fixture{t: t, rdb: rdb, prefix: prefix(t), clock: &fakeClock{now: time.Date(2026, 11, 27, 9, 0, 0, 0, nz)}, ledger: &ledger{}}
	if counterClient == nil {
		counterClient = rdb
	}
	c, err := spendcounters.New(spendcounters.Config{
		Client: counterClient, Prefix: f.prefix, Clock: f.clock, Location: nz,
		Totals: f.ledger.totals, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.c = c
	t.Cleanup(func() {
		keys, _ := rdb.Keys(context.Background(), f.prefix+":*").Result()
		if len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
	})
	return f
}

// spend records e in the ledger and then counts it, as the budget service
// does after each commit, and flushes as Run's flusher would.
func (f *fixture) spend(day string, e ...spendcounters.Entry) error {
	f.ledger.record(day, e...)
	if err := f.c.Add(context.Background(), day, e); err != nil {
		return err
	}
	return f.c.Flush(context.Background())
}

func (f *fixture) get(name string) string {
	f.t.Helper()
	v, err := f.rdb.Get(context.Background(), f.prefix+":"+name).Result()
	if errors.Is(err, redis.Nil) {
		return "(nil)"
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

func (f *fixture) want(name, value string) {
	f.t.Helper()
	if got := f.get(name); got != value {
		f.t.Errorf("GET %s:%s = %q, want %q", f.prefix, name, got, value)
	}
}

var (
	sonnet = spendcounters.Entry{Agent: "planner-01", Tier: "frontier", Model: "claude-sonnet-4", Provider: "anthropic", CostMicros: 35_302_800}
	mini   = spendcounters.Entry{Agent: "reviewer-02", Tier: "mid", Model: "gpt-4o-mini", Provider: "openai", CostMicros: 715}
	local  = spendcounters.Entry{Agent: "coder-03", Tier: "local", Model: "qwen2.5:7b", Provider: "ollama", CostMicros: 0}
)

// TestCountersKeepTheRunbookKeys: after a rebuild, every add shows under the
// runbook's keys, as dollars (GET dash:spend:daily:total) and exact
// micro-dollars, with a dated copy, and every key expires in two days.
func TestCountersKeepTheRunbookKeys(t *testing.T) {
	rdb := client(t, -1)
	f := newFixture(t, rdb, nil)
	ctx := context.Background()
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	f.want("total", "0.000000")
	for _, e := range []spendcounters.Entry{sonnet, mini, local, mini} {
		if err := f.spend("2026-11-27", e); err != nil {
			t.Fatal(err)
		}
	}
	f.want("total", "35.304230")
	f.want("total:micros", "35304230")
	f.want("planner-01", "35.302800")
	f.want("reviewer-02:micros", "1430")
	f.want("tier:frontier", "35.302800")
	f.want("tier:mid:micros", "1430")
	f.want("model:gpt-4o-mini", "0.001430")
	f.want("total:2026-11-27", "35.304230")
	f.want("total:2026-11-27:micros", "35304230")
	f.want("planner-01:2026-11-27", "35.302800")
	f.want("coder-03", "(nil)") // a zero cost changes no counter

	for _, k := range []string{"total", "total:micros", "total:2026-11-27:micros", "model:gpt-4o-mini", "#rebuilt"} {
		ttl, err := rdb.TTL(ctx, f.prefix+":"+k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 47*time.Hour || ttl > 48*time.Hour {
			t.Errorf("TTL %s = %v, want two days", k, ttl)
		}
	}
	// A late event for yesterday counts in yesterday's copy only.
	if err := f.spend("2026-11-26", mini); err != nil {
		t.Fatal(err)
	}
	f.want("total:2026-11-26:micros", "715")
	f.want("total:micros", "35304230")
}

// TestCountersNoNameWritesAnothersCounter: the runbook's repro (agent
// "total" spends $7, kev $1; the total read $15) and its kin. Names that
// could read as another counter's key are counted under an escaped name,
// live and after a rebuild, while ordinary names keep their runbook keys.
func TestCountersNoNameWritesAnothersCounter(t *testing.T) {
	rdb := client(t, -1)
	f := newFixture(t, rdb, nil)
	ctx := context.Background()
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	hostile := []spendcounters.Entry{
		{Agent: "total", Tier: "mid", Model: "m", CostMicros: 7_000_000},
		{Agent: "tier:frontier", Tier: "mid", Model: "m", CostMicros: 100},
		{Agent: "kev:2026-11-27", Tier: "mid", Model: "m", CostMicros: 20},
		{Agent: "kev:micros", Tier: "mid", Model: "m", CostMicros: 3},
		{Agent: "kev", Tier: "mid", Model: "x:micros", CostMicros: 1_000_000},
		{Agent: "kev", Tier: "mid", Model: "x:2026-11-27", CostMicros: 0},
	}
	check := func(when string) {
		t.Helper()
		f.want("total:micros", "8000123")
		f.want("total", "8.000123")
		f.want("kev:micros", "1000000")
		f.want("kev:2026-11-27:micros", "1000000")
		f.want("tier:frontier:micros", "(nil)")
		f.want("tier:mid:micros", "8000123")
		f.want("agent:total:micros", "7000000")
		f.want("agent:tier%3Afrontier:micros", "100")
		f.want("agent:kev%3A2026-11-27:micros", "20")
		f.want("agent:kev%3Amicros:micros", "3")
		f.want("model:x%3Amicros:micros", "1000000")
		f.want("model:m:micros", "7000123")
		if t.Failed() {
			t.Fatalf("after %s", when)
		}
	}
	if err := f.spend("2026-11-27", hostile...); err != nil {
		t.Fatal(err)
	}
	check("the adds")
	if err := f.c.Rebuild(ctx, "2026-11-27"); err != nil {
		t.Fatal(err)
	}
	check("a rebuild")
	if got, want := spendcounters.AgentCounter("forge"), "forge"; got != want {
		t.Errorf("AgentCounter(forge) = %q, want the runbook's plain name", got)
	}
	if got, want := spendcounters.ModelCounter("qwen2.5:7b"), "model:qwen2.5:7b"; got != want {
		t.Errorf("ModelCounter(qwen2.5:7b) = %q, want %q", got, want)
	}
}

// TestCountersRebuildAfterFlush: FLUSHDB wipes the counters; the next check
// notices the marker key gone and rebuilds them from the ledger, and the
// adds that follow count on top.
func TestCountersRebuildAfterFlush(t *testing.T) {
	rdb := client(t, flushDB)
	f := newFixture(t, rdb, nil)
	ctx := context.Background()
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	for _, e := range []spendcounters.Entry{sonnet, mini} {
		if err := f.spend("2026-11-27", e); err != nil {
			t.Fatal(err)
		}
	}
	f.ledger.record("2026-11-26", mini, mini)
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	f.want("total", "(nil)")
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	f.want("total", "35.303515")
	f.want("total:micros", "35303515")
	f.want("reviewer-02:micros", "715")
	f.want("tier:frontier", "35.302800")
	f.want("model:claude-sonnet-4:micros", "35302800")
	f.want("total:2026-11-27:micros", "35303515")
	f.want("total:2026-11-26:micros", "1430") // yesterday readable again
	if err := f.spend("2026-11-27", mini); err != nil {
		t.Fatal(err)
	}
	f.want("total:micros", "35304230")
	// With nothing changed, a check rebuilds nothing (the values stay).
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	f.want("total:micros", "35304230")
}

// TestCountersRollOverAtMidnightInTheZone: at midnight in the configured
// zone the undated keys restart from the new day's totals (an agent that
// has not spent today has no key), while yesterday's dated copies stay.
func TestCountersRollOverAtMidnightInTheZone(t *testing.T) {
	rdb := client(t, -1)
	f := newFixture(t, rdb, nil)
	ctx := context.Background()
	f.clock.set(time.Date(2026, 11, 27, 23, 59, 0, 0, nz))
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.spend("2026-11-27", sonnet); err != nil {
		t.Fatal(err)
	}
	f.want("planner-01", "35.302800")
	// 00:00:30 NZ is 11:00:30 UTC the day before: the zone decides.
	f.clock.set(time.Date(2026, 11, 28, 0, 0, 30, 0, nz))
	// An event for the new day arrives before the check: it goes to the
	// new day's dated copy, not to yesterday's undated keys.
	if err := f.spend("2026-11-28", mini); err != nil {
		t.Fatal(err)
	}
	f.want("total:micros", "35302800")
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	f.want("total", "0.000715")
	f.want("planner-01", "(nil)")
	f.want("planner-01:micros", "(nil)")
	f.want("tier:frontier", "(nil)")
	f.want("reviewer-02", "0.000715")
	f.want("total:2026-11-27", "35.302800")
	f.want("planner-01:2026-11-27", "35.302800")
	f.want("total:2026-11-28:micros", "715")
}

// TestCountersRedisUnreachable: with nothing listening, Add fails fast
// with an error (later ones without touching the network), Check reports
// the outage, and nothing panics.
func TestCountersRedisUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // a closed port: connections are refused
	c, err := spendcounters.New(spendcounters.Config{
		URL: "redis://" + addr + "/0", Prefix: prefix(t),
		Totals: (&ledger{}).totals, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Add(ctx, "2026-11-27", []spendcounters.Entry{sonnet}); err != nil {
		t.Fatalf("Add queues without touching Redis: %v", err)
	}
	if err := c.Flush(ctx); err == nil {
		t.Fatal("Flush with Redis unreachable: no error")
	}
	if err := c.Add(ctx, "2026-11-27", []spendcounters.Entry{sonnet}); !errors.Is(err, spendcounters.ErrUnavailable) {
		t.Fatalf("second Add: %v, want ErrUnavailable (no second network wait)", err)
	}
	if err := c.Check(ctx); err == nil {
		t.Fatal("Check with Redis unreachable: no error")
	}
	if err := c.Add(ctx, "bad-day", nil); err == nil {
		t.Fatal("Add with a malformed day: no error")
	}
	runCtx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Run(runCtx); err != nil {
		t.Fatalf("Run with Redis down: %v, want nil (the outage is logged, not fatal)", err)
	}
}

// TestCountersRebuildWhenRedisComesBack: Redis goes away (a proxy in front
// of it is cut), spend goes on being recorded in the ledger, and once
// Redis answers again the next check rebuilds the counters to the
// ledger's sums, missed adds included.
func TestCountersRebuildWhenRedisComesBack(t *testing.T) {
	rdb := client(t, -1)
	p := newProxy(t, rdb.Options().Addr)
	opt := *rdb.Options()
	opt.Addr = p.addr()
	opt.MaxRetries = 0
	opt.DialTimeout = time.Second
	via := redis.NewClient(&opt)
	defer via.Close()
	f := newFixture(t, rdb, via)
	ctx := context.Background()
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.spend("2026-11-27", sonnet); err != nil {
		t.Fatal(err)
	}
	p.stop()
	if err := f.spend("2026-11-27", mini); err == nil {
		t.Fatal("Add through a cut connection: no error")
	}
	if err := f.spend("2026-11-27", mini); !errors.Is(err, spendcounters.ErrUnavailable) {
		t.Fatalf("Add during the outage: %v, want ErrUnavailable", err)
	}
	if err := f.c.Check(ctx); err == nil {
		t.Fatal("Check during the outage: no error")
	}
	f.want("total:micros", "35302800") // stale, read directly
	p.start()
	if err := f.c.Check(ctx); err != nil {
		t.Fatalf("Check after the outage: %v", err)
	}
	f.want("total:micros", "35304230")
	f.want("reviewer-02", "0.001430")
	if err := f.spend("2026-11-27", mini); err != nil {
		t.Fatalf("Add after the outage: %v", err)
	}
	f.want("total:micros", "35304945")
}

// TestCountersRetryAFailedRebuild: a rebuild that cannot read the ledger
// leaves the counters dirty, so the next check tries again.
func TestCountersRetryAFailedRebuild(t *testing.T) {
	rdb := client(t, -1)
	f := newFixture(t, rdb, nil)
	ctx := context.Background()
	f.ledger.record("2026-11-27", sonnet)
	f.ledger.fail = errors.New("store unavailable")
	if err := f.c.Check(ctx); err == nil {
		t.Fatal("Check with the ledger failing: no error")
	}
	f.ledger.fail = nil
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	f.want("total:micros", "35302800")
}

// TestCountersReportRacingARebuildIsCountedOnce: a report committed just
// before a rebuild reads the ledger, whose Add waits out the rebuild, is
// in the rebuilt sums; the rebuild notices the race and the next check
// makes the counters exact again.
func TestCountersReportRacingARebuildIsCountedOnce(t *testing.T) {
	rdb := client(t, -1)
	f := newFixture(t, rdb, nil)
	ctx := context.Background()
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	f.ledger.during = func() {
		n := f.c.Entered()
		f.ledger.record("2026-11-27", sonnet) // the commit
		go func() { done <- f.c.Add(ctx, "2026-11-27", []spendcounters.Entry{sonnet}) }()
		for f.c.Entered() == n { // the hook has begun and waits for the lock
			runtime.Gosched()
		}
	}
	if err := rdb.Del(ctx, f.prefix+":#rebuilt").Err(); err != nil { // a flush, as the check sees it
		t.Fatal(err)
	}
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The add is written after the rebuild: counted twice for now.
	if err := f.c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	f.want("total:micros", "35302800")
	f.want("planner-01:2026-11-27:micros", "35302800")
}

// TestCountersSkipAddsARebuildCounted: an add still queued when a rebuild
// reads the ledger (which has its spend) is not written again after it.
func TestCountersSkipAddsARebuildCounted(t *testing.T) {
	rdb := client(t, -1)
	f := newFixture(t, rdb, nil)
	ctx := context.Background()
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	f.ledger.record("2026-11-27", sonnet)
	if err := f.c.Add(ctx, "2026-11-27", []spendcounters.Entry{sonnet}); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, f.prefix+":#rebuilt").Err(); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	f.want("total:micros", "35302800")
	f.want("model:claude-sonnet-4:2026-11-27:micros", "35302800")
}

// TestCountersRunFlushesAdds: with Run going, an add reaches Redis without
// anyone flushing.
func TestCountersRunFlushesAdds(t *testing.T) {
	rdb := client(t, -1)
	f := newFixture(t, rdb, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.c.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for f.get("#rebuilt") == "(nil)" {
		if time.Now().After(deadline) {
			t.Fatal("Run did not rebuild at start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.ledger.record("2026-11-27", mini)
	if err := f.c.Add(ctx, "2026-11-27", []spendcounters.Entry{mini}); err != nil {
		t.Fatal(err)
	}
	for f.get("total:micros") != "715" {
		if time.Now().After(deadline) {
			t.Fatalf("total %q after an add with Run going", f.get("total:micros"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestFormatDollars(t *testing.T) {
	for micros, want := range map[int64]string{0: "0.000000", 1: "0.000001", 12_340_000: "12.340000", -1_500_000: "-1.500000"} {
		if got := spendcounters.FormatDollars(micros); got != want {
			t.Errorf("FormatDollars(%d) = %q, want %q", micros, got, want)
		}
	}
}

// proxy forwards TCP to Redis and can be cut and restored on the same
// address, standing in for an outage.
type proxy struct {
	t      *testing.T
	target string
	mu     sync.Mutex
	l      net.Listener
	conns  []net.Conn
	listen string
}

func newProxy(t *testing.T, target string) *proxy {
	p := &proxy{t: t, target: target, listen: "127.0.0.1:0"}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) addr() string { return p.listen }

func (p *proxy) start() {
	l, err := net.Listen("tcp", p.listen)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.l, p.listen = l, l.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
}

func (p *proxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// BenchmarkCountersAdd is the cost of counting one recorded batch (10
// events over 5 agents, 3 tiers and 4 models) when each is flushed alone:
// one script call. Under load the flusher writes many batches per call.
func BenchmarkCountersAdd(b *testing.B) {
	rdb := client(b, -1)
	p := prefix(b)
	c, err := spendcounters.New(spendcounters.Config{Client: rdb, Prefix: p, Totals: (&ledger{}).totals,
		Today: func() string { return "2026-11-27" }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Check(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() {
		keys, _ := rdb.Keys(ctx, p+":*").Result()
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
	}()
	tiers := []string{"frontier", "mid", "local"}
	entries := make([]spendcounters.Entry, 10)
	for i := range entries {
		entries[i] = spendcounters.Entry{Agent: "agent-" + strconv.Itoa(i%5), Tier: tiers[i%3], Model: "model-" + strconv.Itoa(i%4), CostMicros: int64(100 + i)}
	}
	for b.Loop() {
		if err := c.Add(ctx, "2026-11-27", entries); err != nil {
			b.Fatal(err)
		}
		if err := c.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
