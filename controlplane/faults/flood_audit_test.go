//go:build faults

package faults_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Row 5: an agent looped on PauseQueue, which agents may not call, and
// wrote one audit row per refusal (43,995 in 20 s). Identical refusals now
// share one row per audit window, whose count says how many calls it
// stands for: the log stays small and nothing is lost. A repeated refusal
// is answered after a pause, so the loop cannot take the CPU either.
func floodRow05RefusedLoop(t *testing.T) {
	f := newFlood(t)
	looper := dial(t, f.cp.addr, mintToken(t, f.op, factoryv1.Role_ROLE_AGENT, "looper"))
	q := factoryv1.NewQueueServiceClient(looper)
	var denied, other atomic.Int64
	f.underLoad(t, 300, func(ctx context.Context) {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for ctx.Err() == nil {
					_, err := q.PauseQueue(ctx, &factoryv1.PauseQueueRequest{Reason: "looping"})
					switch status.Code(err) {
					case codes.PermissionDenied:
						denied.Add(1)
					case codes.OK:
						t.Errorf("an agent paused the queue")
						return
					default:
						other.Add(1)
					}
				}
			})
		}
		wg.Wait()
	})
	// Repeats are answered after a pause, so the loop makes about ten
	// calls a second per goroutine instead of thousands.
	if denied.Load() < 50 {
		t.Fatalf("the loop got only %d refusals (%d other errors); the replay did not load the server", denied.Load(), other.Load())
	}

	entries := auditOf(t, f.op, "looper")
	var total int64
	for _, e := range entries {
		if e.GetOutcome() != "PERMISSION_DENIED" || !strings.HasSuffix(e.GetRpc(), "/PauseQueue") {
			t.Errorf("unexpected audit entry for the looper: %v", e)
		}
		if e.GetLastSeen().AsTime().Before(e.GetTime().AsTime()) {
			t.Errorf("entry %s last seen %s before first seen %s", e.GetId(), e.GetLastSeen().AsTime(), e.GetTime().AsTime())
		}
		total += e.GetCount()
	}
	t.Logf("%d refusals in the loop, %d other errors; %d audit rows with counts adding up to %d", denied.Load(), other.Load(), len(entries), total)
	// The loop ran well within one window (a minute); a second row only if
	// it straddled a window's end.
	if len(entries) == 0 || len(entries) > 2 {
		t.Errorf("%d audit rows for one repeated refusal, want 1 (2 across a window's end)", len(entries))
	}
	// A refusal whose answer the loop's own cancellation cut off is
	// recorded all the same: at most one per looping goroutine.
	if total < denied.Load() || total > denied.Load()+4 {
		t.Errorf("audit counts add up to %d, want every one of the %d refusals the loop saw (and at most 4 it gave up on)", total, denied.Load())
	}
}

// auditOf lists every audit entry of who with the operator's connection.
func auditOf(t *testing.T, op *grpc.ClientConn, who string) []*factoryv1.AuditEntry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	acc := factoryv1.NewAccessServiceClient(op)
	req := &factoryv1.ListAuditRequest{Who: who, PageSize: 1000}
	var out []*factoryv1.AuditEntry
	for {
		resp, err := acc.ListAudit(ctx, req)
		if err != nil {
			t.Fatalf("ListAudit(%s): %v", who, err)
		}
		out = append(out, resp.GetEntries()...)
		if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
			return out
		}
	}
}

// Row 6: random bearer tokens from 32 connections made 83,570 calls, none
// limited, each a store lookup. Failed authentications are now limited per
// peer address (loopback included) before any store work; the calm
// client, on the same address with a valid token, is not.
func floodRow06RandomTokens(t *testing.T) {
	f := newFlood(t)
	var unauthenticated, exhausted, other atomic.Int64
	var lastOther atomic.Value
	start := time.Now()
	var loadTime time.Duration
	f.underLoad(t, 300, func(ctx context.Context) {
		var wg sync.WaitGroup
		for range 32 {
			conn, err := grpc.NewClient(f.cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			defer conn.Close()
			q := factoryv1.NewQueueServiceClient(conn)
			wg.Go(func() {
				for ctx.Err() == nil {
					var b [32]byte
					_, _ = rand.Read(b[:])
					cctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+hex.EncodeToString(b[:]))
					_, err := q.GetQueueStats(cctx, &factoryv1.GetQueueStatsRequest{})
					switch status.Code(err) {
					case codes.Unauthenticated:
						unauthenticated.Add(1)
					case codes.ResourceExhausted:
						exhausted.Add(1)
					default:
						if ctx.Err() == nil {
							other.Add(1)
							lastOther.Store(fmt.Sprint(err))
						}
					}
				}
			})
		}
		start = time.Now()
		wg.Wait()
		loadTime = time.Since(start)
	})
	calls := unauthenticated.Load() + exhausted.Load() + other.Load()
	t.Logf("%d calls with random tokens in %s: %d UNAUTHENTICATED (looked up), %d RESOURCE_EXHAUSTED (refused by the limit), %d other",
		calls, loadTime.Round(time.Millisecond), unauthenticated.Load(), exhausted.Load(), other.Load())
	if other.Load() > 0 {
		t.Errorf("%d calls failed otherwise, the last: %v", other.Load(), lastOther.Load())
	}
	// The default limit: 20 failures a second after a burst of 40. Each
	// UNAUTHENTICATED answer is at most one store lookup.
	maxLookups := int64(40 + 20*loadTime.Seconds()*1.1 + 5)
	if unauthenticated.Load() > maxLookups {
		t.Errorf("%d random tokens were looked up in %s, want at most %d (20/s, burst 40)", unauthenticated.Load(), loadTime, maxLookups)
	}
	// Refusals by the limit are answered after a pause, which is what
	// keeps 32 looping connections from taking the CPU.
	if calls < 200 || exhausted.Load() < calls/2 {
		t.Errorf("%d of %d calls refused by the limit, want most of at least 200", exhausted.Load(), calls)
	}
}

// Row 8: spend reported for 20,000 distinct model names hit the SDK's
// 2,000-series limit on the per-model metric. Each label taking values
// from traffic is now bounded at 100 values plus one "other" series.
func floodRow08ModelNames(t *testing.T) {
	const models = 20000
	const maxLabelValues = 100 // metrics.MaxLabelValues, as the README states
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	f := newFlood(t, "--metrics-listen", metricsAddr)
	agent := factoryv1.NewBudgetServiceClient(dial(t, f.cp.addr, mintToken(t, f.op, factoryv1.Role_ROLE_AGENT, "spender")))
	var reported atomic.Int64
	var scrapes atomic.Int64
	f.underLoad(t, 400, func(ctx context.Context) {
		run := randomName("")
		for i := 0; i < models && ctx.Err() == nil; i += 1000 {
			events := make([]*factoryv1.SpendEvent, 1000)
			for j := range events {
				cost := int64(1)
				events[j] = &factoryv1.SpendEvent{
					Id: fmt.Sprintf("flood-%s-%d", run, i+j), Agent: "spender", Model: fmt.Sprintf("model-%s-%05d", run, i+j),
					Tier: factoryv1.SpendTier_SPEND_TIER_LOCAL, CostMicros: &cost, OccurredAt: timestamppb.Now(),
				}
			}
			if _, err := agent.ReportSpendBatch(ctx, &factoryv1.ReportSpendBatchRequest{Events: events}); err != nil {
				if ctx.Err() == nil {
					t.Errorf("report spend: %v", err)
				}
				return
			}
			reported.Add(int64(len(events)))
		}
		// Prometheus scrapes while the names pile up.
		for ctx.Err() == nil {
			if _, err := scrapeMetrics(metricsAddr); err != nil {
				t.Errorf("scrape during the load: %v", err)
				return
			}
			scrapes.Add(1)
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	})
	if reported.Load() < models {
		t.Fatalf("only %d of %d model names reported during the load", reported.Load(), models)
	}
	body, err := scrapeMetrics(metricsAddr)
	if err != nil {
		t.Fatal(err)
	}
	series, other := 0, false
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "factory_spend_model_today_micros{") {
			continue
		}
		series++
		other = other || strings.Contains(line, `model="other"`)
		if strings.Contains(line, "otel_metric_overflow") {
			t.Errorf("the SDK's overflow series appeared: %s", line)
		}
	}
	t.Logf("%d model names reported, %d scrapes during the load; /metrics has %d per-model series", reported.Load(), scrapes.Load(), series)
	if series > maxLabelValues+1 {
		t.Errorf("%d per-model series, want at most %d and \"other\"", series, maxLabelValues)
	}
	if !other {
		t.Errorf("no model=\"other\" series for the names past the limit")
	}
}

func scrapeMetrics(addr string) (string, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("scrape: %d %v", resp.StatusCode, err)
	}
	return string(b), nil
}
