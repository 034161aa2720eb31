//go:build soak

package faults_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// latencies collects call durations per reporting interval.
type latencies struct {
	mu sync.Mutex
	d  map[string][]time.Duration
}

func (l *latencies) add(op string, d time.Duration) {
	l.mu.Lock()
	l.d[op] = append(l.d[op], d)
	l.mu.Unlock()
}

// take returns the p99 of each op since the last take and starts over.
func (l *latencies) take() map[string]time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]time.Duration{}
	for op, ds := range l.d {
		if len(ds) == 0 {
			continue
		}
		slices.Sort(ds)
		out[op] = ds[min(len(ds)-1, len(ds)*99/100)]
	}
	l.d = map[string][]time.Duration{}
	return out
}

// TestSoak runs 200 agents and 200 sidecars against one control plane for
// SOAK_DURATION (default 10m), reporting throughput, p99 latencies and the
// control plane's RSS every SOAK_EVERY (default 30s). A flat RSS line means
// no leak; the test fails when RSS at the end is more than twice what it
// was after warm-up. SOAK_STORE=postgres://... runs it on PostgreSQL;
// SOAK_REPORT=FILE also writes the table there.
func TestSoak(t *testing.T) {
	duration := envDuration("SOAK_DURATION", 10*time.Minute)
	every := envDuration("SOAK_EVERY", 30*time.Second)
	const agents, sidecars = 200, 200
	args := []string{"--rate-limit", "0", "--heartbeat-interval", "2s"}
	if url := os.Getenv("SOAK_STORE"); url != "" {
		schema := freshSchema(t, url)
		args = append(args, "--store", url, "--pg-schema", schema)
	}
	cp := startControlPlane(t, "controlplane", t.TempDir(), "", args...)
	conn := dial(t, cp.addr, cp.operatorToken(t))
	q := factoryv1.NewQueueServiceClient(conn)
	budget := factoryv1.NewBudgetServiceClient(conn)
	fl := factoryv1.NewFleetServiceClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), duration+time.Minute)
	defer cancel()
	// The soak spends about $1 a second: far past the runbook's $100 a
	// day emergency threshold, which would (rightly) halt the fleet.
	if _, err := budget.SetBudget(ctx, &factoryv1.SetBudgetRequest{Budget: &factoryv1.Budget{
		Scope: factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL, TargetMicros: 30_000_000, AlertMicros: 50_000_000,
		EmergencyMicros: 1_000_000_000_000}}); err != nil {
		t.Fatalf("raise the emergency threshold for the soak: %v", err)
	}
	loadCtx, stopLoad := context.WithTimeout(ctx, duration)
	defer stopLoad()
	lat := &latencies{d: map[string][]time.Duration{}}
	var done, spent, beats, errs atomic.Int64
	var wg sync.WaitGroup

	// The producer keeps about 400 tasks READY.
	wg.Add(1)
	go func() {
		defer wg.Done()
		n := 0
		for loadCtx.Err() == nil {
			s, err := q.GetQueueStats(loadCtx, &factoryv1.GetQueueStatsRequest{})
			if err == nil && stateCount(s, factoryv1.TaskState_TASK_STATE_READY) < 400 {
				var reqs []*factoryv1.CreateTaskRequest
				for range 100 {
					reqs = append(reqs, &factoryv1.CreateTaskRequest{Title: fmt.Sprintf("soak %d", n), Role: "w", PayloadJson: `{"step":"soak"}`})
					n++
				}
				start := time.Now()
				if _, err := q.CreateTasks(loadCtx, &factoryv1.CreateTasksRequest{Tasks: reqs}); err != nil && loadCtx.Err() == nil {
					errs.Add(1)
				}
				lat.add("create100", time.Since(start))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	for i := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("soak-agent-%03d", i)
			for n := 0; loadCtx.Err() == nil; n++ {
				start := time.Now()
				resp, err := q.ClaimTask(loadCtx, &factoryv1.ClaimTaskRequest{Agent: name, Roles: []string{"w"}, Wait: durationpb.New(time.Second)})
				if err != nil {
					if loadCtx.Err() == nil {
						errs.Add(1)
						t.Logf("%s: claim: %v", name, err)
						time.Sleep(time.Second) // as an agent backs off
					}
					continue
				}
				if len(resp.GetTasks()) == 0 {
					continue
				}
				lat.add("claim", time.Since(start))
				task := resp.GetTasks()[0]
				time.Sleep(time.Duration(n%20) * time.Millisecond) // the work
				start = time.Now()
				if _, err := q.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: task.GetId(), Agent: name, FencingToken: task.GetLease().GetToken()}); err != nil {
					errs.Add(1)
					continue
				}
				lat.add("complete", time.Since(start))
				done.Add(1)
				cost := int64(1000 + n%500)
				start = time.Now()
				_, err = budget.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: &factoryv1.SpendEvent{
					Id: fmt.Sprintf("%s-%d", name, n), Agent: name, Host: fmt.Sprintf("soak-host-%03d", i%sidecars),
					Model: "claude-sonnet-4", Provider: "anthropic", Tier: factoryv1.SpendTier_SPEND_TIER_MID,
					InputTokens: 2000, OutputTokens: 300, CostMicros: &cost, TaskId: task.GetId(), OccurredAt: timestamppb.Now()}})
				if err != nil {
					errs.Add(1)
					continue
				}
				lat.add("report_spend", time.Since(start))
				spent.Add(1)
			}
		}()
	}
	for i := range sidecars {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := soakSidecar(loadCtx, fl, i, &beats, lat); err != nil && loadCtx.Err() == nil {
				errs.Add(1)
				t.Logf("sidecar %d: %v", i, err)
			}
		}()
	}

	header := "| elapsed | tasks/s | spend events/s | heartbeats/s | p99 claim | p99 complete | p99 report spend | p99 create ×100 | errors | RSS MiB |"
	rows := []string{header, "|---|---|---|---|---|---|---|---|---|---|"}
	var rss []float64
	began := time.Now()
	tick := time.NewTicker(every)
	var lastDone, lastSpent, lastBeats int64
	for loadCtx.Err() == nil {
		select {
		case <-loadCtx.Done():
		case <-tick.C:
			d, s, b := done.Load(), spent.Load(), beats.Load()
			p := lat.take()
			r := rssMiB(cp.Pid())
			rss = append(rss, r)
			secs := every.Seconds()
			row := fmt.Sprintf("| %s | %.0f | %.0f | %.0f | %s | %s | %s | %s | %d | %.0f |",
				time.Since(began).Round(time.Second), float64(d-lastDone)/secs, float64(s-lastSpent)/secs, float64(b-lastBeats)/secs,
				p["claim"].Round(100*time.Microsecond), p["complete"].Round(100*time.Microsecond),
				p["report_spend"].Round(100*time.Microsecond), p["create100"].Round(100*time.Microsecond), errs.Load(), r)
			rows = append(rows, row)
			t.Log(row)
			lastDone, lastSpent, lastBeats = d, s, b
		}
	}
	tick.Stop()
	wg.Wait()
	table := strings.Join(rows, "\n")
	t.Logf("soak over %s, %d agents, %d sidecars: %d tasks done, %d spend events\n%s", duration, agents, sidecars, done.Load(), spent.Load(), table)
	if path := os.Getenv("SOAK_REPORT"); path != "" {
		_ = os.WriteFile(path, []byte(table+"\n"), 0o644)
	}
	if len(rss) >= 4 {
		warm, end := rss[1], rss[len(rss)-1]
		if end > 2*warm {
			t.Errorf("RSS grew from %.0f MiB after warm-up to %.0f MiB: a leak", warm, end)
		}
	}
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// soakSidecar is a simulated sidecar: Hello with one agent, then a
// heartbeat every second and telemetry every tenth.
func soakSidecar(ctx context.Context, fl factoryv1.FleetServiceClient, i int, beats *atomic.Int64, lat *latencies) error {
	host := fmt.Sprintf("soak-host-%03d", i)
	stream, err := fl.Connect(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: &factoryv1.Hello{
		Host: host, Version: "soak", Agents: []*factoryv1.HostedAgent{{Name: fmt.Sprintf("soak-agent-%03d", i), Roles: []string{"w"}}},
		Capabilities: []string{"disk", "probe", "gpu"}}}}); err != nil {
		return err
	}
	if _, err := stream.Recv(); err != nil {
		return err
	}
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		msg := &factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Heartbeat{Heartbeat: &factoryv1.Heartbeat{SentAt: timestamppb.Now()}}}
		if n%10 == 9 {
			msg = &factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: &factoryv1.Telemetry{
				CollectedAt: timestamppb.Now(),
				Disks:       []*factoryv1.DiskUsage{{Path: "/", TotalBytes: 1 << 40, UsedBytes: 1 << 39, AvailableBytes: 1 << 39}},
				Gpus: []*factoryv1.GpuDevice{{Index: 0, Uuid: fmt.Sprintf("GPU-%s", host), Name: "NVIDIA H100 80GB HBM3",
					MemoryTotalBytes: 85899345920, MemoryUsedBytes: uint64(n%80) << 30, UtilizationPercent: uint32(n % 100)}},
			}}}
		}
		start := time.Now()
		if err := stream.Send(msg); err != nil {
			return err
		}
		lat.add("sidecar_send", time.Since(start))
		beats.Add(1)
	}
}
