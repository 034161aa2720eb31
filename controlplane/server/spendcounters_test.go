package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// countersDB is the Redis database this test owns: the control plane
// writes the runbook's fixed key names, and the test flushes it.
const countersDB = 14

// TestControlPlaneKeepsTheRedisCounters: with --redis-url the control plane
// counts each report under dash:spend:daily:*, rebuilds the counters
// after a FLUSHDB, and on start from the ledger.
func TestControlPlaneKeepsTheRedisCounters(t *testing.T) {
	u := os.Getenv("FACTORY_TEST_REDIS_URL")
	if u == "" {
		t.Skip("FACTORY_TEST_REDIS_URL is not set: the live counters are tested against a real Redis only")
	}
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	opt.DB = countersDB
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatalf("redis: %v", err)
	}
	url := "redis://" + opt.Addr + "/14"
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func() (factoryv1.BudgetServiceClient, func()) {
		t.Helper()
		rctx, cancel := context.WithCancel(ctx)
		addrCh := make(chan net.Addr, 1)
		errCh := make(chan error, 1)
		go func() {
			errCh <- Run(rctx, Config{Listen: "127.0.0.1:0", DataDir: dir, Logger: log, TracerProvider: noop.NewTracerProvider(),
				RedisURL: url, OnListening: func(a net.Addr) { addrCh <- a }})
		}()
		var addr net.Addr
		select {
		case addr = <-addrCh:
		case err := <-errCh:
			t.Fatalf("Run: %v", err)
		}
		conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()), operatorFrom(t, dir))
		if err != nil {
			t.Fatal(err)
		}
		return factoryv1.NewBudgetServiceClient(conn), func() {
			conn.Close()
			cancel()
			if err := <-errCh; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v", err)
			}
		}
	}
	get := func(key string) string {
		v, err := rdb.Get(ctx, key).Result()
		if err != nil {
			return "(" + err.Error() + ")"
		}
		return v
	}
	waitFor := func(what, key, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for get(key) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GET %s = %q, want %q", what, key, get(key), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	client, stop := start()
	cost := int64(1_500_000)
	if _, err := client.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: &factoryv1.SpendEvent{
		Id: "c-1", Agent: "planner-01", Model: "claude-sonnet-4", Tier: factoryv1.SpendTier_SPEND_TIER_FRONTIER,
		CostMicros: &cost, OccurredAt: timestamppb.Now()}}); err != nil {
		t.Fatal(err)
	}
	waitFor("after a report", "dash:spend:daily:total", "1.500000")
	if got := get("dash:spend:daily:planner-01:micros"); got != "1500000" {
		t.Errorf("agent counter %q", got)
	}
	if got := get("dash:spend:daily:tier:frontier"); got != "1.500000" {
		t.Errorf("tier counter %q", got)
	}
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor("after FLUSHDB", "dash:spend:daily:total", "1.500000")
	stop()

	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	_, stop = start()
	defer stop()
	waitFor("after a restart", "dash:spend:daily:model:claude-sonnet-4", "1.500000")
}
