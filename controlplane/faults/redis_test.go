//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// startRedis starts a private redis-server on port (nothing saved to
// disk), so the test can stop it without touching anyone else's.
func startRedis(t *testing.T, port int) *proc {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed: the Redis outage test starts a private one")
	}
	p := start(t, "redis", bin, nil, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer c.Close()
	eventually(t, "redis answers", 10*time.Second, func() bool { return c.Ping(context.Background()).Err() == nil })
	return p
}

// TestRedisOutage stops Redis under spend load: the control plane keeps
// recording spend (the ledger is the truth), and rebuilds the runbook's
// counters when Redis returns empty, and again after a FLUSHALL.
func TestRedisOutage(t *testing.T) {
	port := freePort(t)
	rd := startRedis(t, port)
	cp := startControlPlane(t, "controlplane", t.TempDir(), "", "--redis-url", fmt.Sprintf("redis://127.0.0.1:%d/0", port))
	budget := factoryv1.NewBudgetServiceClient(dial(t, cp.addr, cp.operatorToken(t)))
	rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), MaxRetries: -1})
	t.Cleanup(func() { rc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	report := func(prefix string, n int) {
		t.Helper()
		for i := range n {
			cost := int64(1000)
			_, err := budget.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: &factoryv1.SpendEvent{
				Id: fmt.Sprintf("%s-%d", prefix, i), Agent: "forge", Model: "claude-sonnet-4", Provider: "anthropic",
				Tier: factoryv1.SpendTier_SPEND_TIER_MID, CostMicros: &cost, OccurredAt: timestamppb.Now()}})
			if err != nil {
				t.Fatalf("report %s-%d: %v", prefix, i, err)
			}
		}
	}
	counter := func() int64 {
		v, err := rc.Get(ctx, "dash:spend:daily:total:micros").Int64()
		if err != nil {
			return -1
		}
		return v
	}

	report("before", 50)
	eventually(t, "counter at 50 events", 10*time.Second, func() bool { return counter() == 50_000 })

	rd.Kill9()
	began := time.Now()
	report("during", 50) // Redis is down: every report still lands
	t.Logf("50 reports with Redis down took %s", time.Since(began).Round(time.Millisecond))
	if n, micros := spendTotals(ctx, budget); n != 100 || micros != 100_000 {
		t.Fatalf("ledger with Redis down: %d events, %d µ$", n, micros)
	}

	startRedis(t, port) // back, and empty
	eventually(t, "counters rebuilt after Redis returned", 30*time.Second, func() bool { return counter() == 100_000 })
	if v, err := rc.Get(ctx, "dash:spend:daily:forge:micros").Int64(); err != nil || v != 100_000 {
		t.Errorf("agent counter after the rebuild: %d, %v", v, err)
	}

	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "counters rebuilt after FLUSHALL", 30*time.Second, func() bool { return counter() == 100_000 })
	report("after", 10)
	eventually(t, "counter follows new spend", 10*time.Second, func() bool { return counter() == 110_000 })
}
