//go:build faults

package faults_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// TestControlPlaneKilledUnderLoad kills the control plane with SIGKILL in
// the middle of queue and spend load and restarts it on the same data:
// every task ends in exactly one state, no completion is acknowledged
// twice, leases of agents that died with the control plane are rescued
// once they expire, and every acknowledged spend event is counted exactly
// once.
func TestControlPlaneKilledUnderLoad(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		testKilledUnderLoad(t, t.TempDir())
	})
	t.Run("postgres", func(t *testing.T) {
		url := postgresURL(t)
		schema := freshSchema(t, url)
		testKilledUnderLoad(t, t.TempDir(), "--store", url, "--pg-schema", schema)
	})
}

const (
	crashTasks   = 1500
	crashAgents  = 16
	crashDoomed  = 4 // agents that die with the control plane, holding leases
	crashLease   = 2 * time.Second
	spendWorkers = 4
)

// crashLedger is what the simulated agents and reporters were told.
type crashLedger struct {
	mu         sync.Mutex
	violations []string
	completed  map[string]string // task id → agent whose completion was acknowledged
	spendSent  map[string]int64  // event id → cost, acknowledged or not
	spendAcked map[string]bool
}

func (l *crashLedger) violate(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.violations) < 20 {
		l.violations = append(l.violations, fmt.Sprintf(format, args...))
	}
}

func testKilledUnderLoad(t *testing.T, dataDir string, storeArgs ...string) {
	args := append([]string{
		"--default-lease", crashLease.String(), "--rescue-interval", "200ms",
		"--retry-base", "100ms", "--retry-max", "1s", "--rate-limit", "0",
	}, storeArgs...)
	cp := startControlPlane(t, "controlplane", dataDir, "", args...)
	conn := dial(t, cp.addr, cp.operatorToken(t))
	q := factoryv1.NewQueueServiceClient(conn)
	budget := factoryv1.NewBudgetServiceClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for i := 0; i < crashTasks; i += 500 {
		var reqs []*factoryv1.CreateTaskRequest
		for j := i; j < i+500 && j < crashTasks; j++ {
			reqs = append(reqs, &factoryv1.CreateTaskRequest{TaskId: fmt.Sprintf("t-%04d", j), Title: "crash load", Role: "w", MaxAttempts: 20})
		}
		if _, err := q.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: reqs}); err != nil {
			t.Fatalf("create tasks: %v", err)
		}
	}

	l := &crashLedger{completed: map[string]string{}, spendSent: map[string]int64{}, spendAcked: map[string]bool{}}
	var crashed atomic.Bool
	var doneCount atomic.Int64
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	dead := map[string]bool{}
	for i := range crashAgents {
		name := fmt.Sprintf("agent-%02d", i)
		doomed := i < crashDoomed
		if doomed {
			dead[name] = true
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runCrashAgent(ctx, q, name, doomed, &crashed, stopLoad, l, &doneCount)
		}()
	}
	for i := range spendWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runSpendReporter(ctx, budget, i, stopLoad, l)
		}()
	}

	// Let the load build up, then crash.
	eventually(t, "a third of the tasks done before the crash", 60*time.Second, func() bool { return doneCount.Load() >= crashTasks/3 })
	crashed.Store(true)
	cp.Kill9()
	killedAt := time.Now()
	time.Sleep(300 * time.Millisecond) // calls in flight meet a dead server
	cp = cp.restart(t)
	t.Logf("restarted %s after the kill", time.Since(killedAt).Round(time.Millisecond))

	// No lease of a dead agent outlives its expiry by more than the
	// sweeper's interval and some slack.
	time.Sleep(crashLease + time.Second)
	for _, task := range listAll(t, ctx, q, factoryv1.TaskState_TASK_STATE_IN_PROGRESS) {
		lease := task.GetLease()
		if dead[lease.GetHolder()] && time.Since(lease.GetExpiresAt().AsTime()) > time.Second {
			t.Errorf("task %s still held by dead agent %s, lease expired %s ago", task.GetId(), lease.GetHolder(),
				time.Since(lease.GetExpiresAt().AsTime()).Round(time.Millisecond))
		}
	}

	eventually(t, "every task DONE after the restart", 90*time.Second, func() bool {
		s, err := q.GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{})
		return err == nil && stateCount(s, factoryv1.TaskState_TASK_STATE_DONE) == crashTasks
	})
	close(stopLoad)
	wg.Wait()

	// Every task exactly once, in exactly one state.
	all := listAll(t, ctx, q)
	seen := map[string]bool{}
	for _, task := range all {
		if seen[task.GetId()] {
			t.Errorf("task %s listed twice", task.GetId())
		}
		seen[task.GetId()] = true
		if task.GetState() != factoryv1.TaskState_TASK_STATE_DONE {
			t.Errorf("task %s is %s", task.GetId(), task.GetState())
		}
	}
	if len(seen) != crashTasks {
		t.Errorf("%d distinct tasks, want %d", len(seen), crashTasks)
	}

	// Spend: an acknowledged event is stored (a resend is a duplicate);
	// after resending every event once, the ledger counts each id once.
	var sent, acked, ackedLost int
	var want int64
	for id, cost := range l.spendSent {
		sent++
		want += cost
		resp, err := budget.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: spendEvent(id, cost)})
		if err != nil {
			t.Fatalf("resend %s: %v", id, err)
		}
		if l.spendAcked[id] {
			acked++
			if !resp.GetDuplicate() {
				ackedLost++
			}
		}
	}
	if ackedLost > 0 {
		t.Errorf("%d of %d acknowledged spend events were lost in the crash", ackedLost, acked)
	}
	rep, err := budget.GetSpend(ctx, &factoryv1.GetSpendRequest{Days: 3})
	if err != nil {
		t.Fatal(err)
	}
	if rep.GetTotals().GetEvents() != int64(sent) || rep.GetTotals().GetCostMicros() != want {
		t.Errorf("ledger holds %d events costing %d µ$, want %d events costing %d µ$ (each id once)",
			rep.GetTotals().GetEvents(), rep.GetTotals().GetCostMicros(), sent, want)
	}
	t.Logf("%d tasks done, %d spend events sent (%d acknowledged before the end)", crashTasks, sent, acked)
	for _, v := range l.violations {
		t.Error(v)
	}
}

// runCrashAgent claims and completes until stopLoad. A doomed agent stops
// at the crash with whatever it holds, like a process that died with it.
func runCrashAgent(ctx context.Context, q factoryv1.QueueServiceClient, name string, doomed bool, crashed *atomic.Bool, stopLoad <-chan struct{}, l *crashLedger, done *atomic.Int64) {
	for {
		select {
		case <-stopLoad:
			return
		default:
		}
		if doomed && crashed.Load() {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := q.ClaimTask(cctx, &factoryv1.ClaimTaskRequest{Agent: name, Roles: []string{"w"}, Wait: durationpb.New(500 * time.Millisecond)})
		cancel()
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for _, task := range resp.GetTasks() {
			if doomed && crashed.Load() {
				return
			}
			completeWithRetry(ctx, q, name, task, l, done)
		}
	}
}

func completeWithRetry(ctx context.Context, q factoryv1.QueueServiceClient, name string, task *factoryv1.Task, l *crashLedger, done *atomic.Int64) {
	for attempt := 0; attempt < 50; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := q.CompleteTask(cctx, &factoryv1.CompleteTaskRequest{TaskId: task.GetId(), Agent: name, FencingToken: task.GetLease().GetToken()})
		cancel()
		switch status.Code(err) {
		case codes.OK:
			l.mu.Lock()
			if prev, ok := l.completed[task.GetId()]; ok {
				l.mu.Unlock()
				l.violate("task %s: completion acknowledged to %s and before to %s", task.GetId(), name, prev)
				return
			}
			l.completed[task.GetId()] = name
			l.mu.Unlock()
			done.Add(1)
			return
		case codes.FailedPrecondition, codes.NotFound:
			// The lease ended (expired across the crash and the task was
			// claimed again): someone else finishes it. A completion that
			// landed but whose answer was lost is not here: the retry with
			// the same token answers OK with the task as it is.
			return
		default:
			if errors.Is(ctx.Err(), context.Canceled) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func spendEvent(id string, cost int64) *factoryv1.SpendEvent {
	return &factoryv1.SpendEvent{
		Id: id, Agent: "reporter", Host: "crash-host", Model: "claude-sonnet-4", Provider: "anthropic",
		Tier: factoryv1.SpendTier_SPEND_TIER_MID, InputTokens: 1000, OutputTokens: 200,
		CostMicros: &cost, OccurredAt: timestamppb.Now(),
	}
}

// runSpendReporter reports spend until stopLoad: worker 0 in batches of
// 50, the others one event per call. It never resends: the test does,
// once, at the end.
func runSpendReporter(ctx context.Context, b factoryv1.BudgetServiceClient, worker int, stopLoad <-chan struct{}, l *crashLedger) {
	for n := 0; ; n++ {
		select {
		case <-stopLoad:
			return
		default:
		}
		var events []*factoryv1.SpendEvent
		size := 1
		if worker == 0 {
			size = 50
		}
		for k := range size {
			id := fmt.Sprintf("w%d-%06d-%02d", worker, n, k)
			cost := int64(1000 + (n*7+k)%13)
			events = append(events, spendEvent(id, cost))
			l.mu.Lock()
			l.spendSent[id] = cost
			l.mu.Unlock()
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var err error
		if size == 1 {
			_, err = b.ReportSpend(cctx, &factoryv1.ReportSpendRequest{Event: events[0]})
		} else {
			_, err = b.ReportSpendBatch(cctx, &factoryv1.ReportSpendBatchRequest{Events: events})
		}
		cancel()
		if err != nil {
			if status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded && ctx.Err() == nil {
				l.violate("report spend: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		l.mu.Lock()
		for _, e := range events {
			l.spendAcked[e.GetId()] = true
		}
		l.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
}
