//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"golang.org/x/time/rate"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// TestFlood replays, one case per row, what one hostile or buggy caller did
// to starve everyone else. Each case starts its own control plane, measures
// a calm client (its own agent token) alone, then again while the load
// runs: the calm client must keep its claim+complete p99 under 100 ms and
// at least 80 % of its throughput, and the control plane's RSS must stay
// under the case's bound.
func TestFlood(t *testing.T) {
	rows := []struct {
		name   string
		replay func(t *testing.T)
	}{
		{"01 idle watch streams", floodRow01IdleWatchers},
		{"02 watch streams that never read", floodRow02NonReadingWatchers},
		{"03 thousands of streams during a fan-out", floodRow03ManyStreams},
		{"04 megabyte payloads, then a list and a claim", floodRow04LargePayloads},
		{"05 a loop on a refused call", floodRow05RefusedLoop},
		{"06 random bearer tokens", floodRow06RandomTokens},
		{"07 a sidecar reconnecting with new agents", floodRow07GhostAgents},
		{"08 spend for thousands of model names", floodRow08ModelNames},
	}
	for _, r := range rows {
		t.Run(r.name, r.replay)
	}
}

// Calm-client thresholds under load.
const (
	calmMaxP99      = 100 * time.Millisecond
	calmMinFraction = 0.8
	// calmMaxCyclesPerSec keeps the calm client (a claim and a completion
	// a cycle) under the default per-caller rate limit of 2000 calls/s.
	calmMaxCyclesPerSec = 900
)

// flood is a control plane, an operator connection, and a calm client that
// claims and completes tasks of its own role.
type flood struct {
	cp   *controlPlane
	op   *grpc.ClientConn
	calm *grpc.ClientConn
	// acked and unsure count the calm client's completions: acknowledged,
	// and failed with an error (the reply may have been lost after the
	// completion took effect).
	acked, unsure int
}

// newFlood starts a control plane (extra args go to it) and a calm agent
// token. The calm client's role is "calm"; its tasks are created as needed.
func newFlood(t *testing.T, args ...string) *flood {
	t.Helper()
	cp := startControlPlane(t, "controlplane", t.TempDir(), "", args...)
	op := dial(t, cp.addr, cp.operatorToken(t))
	return &flood{cp: cp, op: op, calm: dial(t, cp.addr, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "calm", "calm"))}
}

// calmResult is what the calm client managed in one measurement.
type calmResult struct {
	cycles  int
	perSec  float64
	p99     time.Duration
	errors  int
	lastErr error
}

func (r calmResult) String() string {
	return fmt.Sprintf("%d cycles (%.0f/s), p99 %s, %d errors", r.cycles, r.perSec, r.p99, r.errors)
}

// measureCalm runs claim+complete cycles, one task at a time, for d.
func (f *flood) measureCalm(t *testing.T, d time.Duration) calmResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	q := factoryv1.NewQueueServiceClient(f.op)
	batch := make([]*factoryv1.CreateTaskRequest, 1000)
	for i := range batch {
		batch[i] = &factoryv1.CreateTaskRequest{Title: "calm work", Role: "calm"}
	}
	// Calm work is created by the thousand, outside the timed cycles, so
	// the client never runs dry however fast it goes.
	refill := func() {
		if _, err := q.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: batch}); err != nil {
			t.Fatalf("create calm tasks: %v", err)
		}
	}
	refill()
	agent := factoryv1.NewQueueServiceClient(f.calm)
	var res calmResult
	var lat []time.Duration
	var refilling time.Duration
	// An honest agent stays under its own rate limit (2000 calls/s by
	// default, two calls a cycle). Unpaced, a fast enough machine made the
	// calm client trip its own limit under load and count that as the
	// flood's harm.
	pace := rate.NewLimiter(rate.Limit(calmMaxCyclesPerSec), 1)
	start := time.Now()
	for time.Since(start)-refilling < d {
		if err := pace.Wait(ctx); err != nil {
			t.Fatalf("pacing the calm client: %v", err)
		}
		t0 := time.Now()
		c, err := agent.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "calm", Roles: []string{"calm"}, MaxTasks: 1})
		if err == nil && len(c.GetTasks()) == 0 {
			r0 := time.Now()
			refill()
			refilling += time.Since(r0)
			continue
		}
		if err == nil {
			task := c.GetTasks()[0]
			_, err = agent.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: task.GetId(), Agent: "calm", FencingToken: task.GetLease().GetToken()})
		}
		lat = append(lat, time.Since(t0))
		if err != nil {
			res.errors++
			res.lastErr = err
			continue
		}
		res.cycles++
	}
	elapsed := time.Since(start) - refilling
	f.acked += res.cycles
	f.unsure += res.errors
	res.perSec = float64(res.cycles) / elapsed.Seconds()
	slices.Sort(lat)
	if len(lat) > 0 {
		res.p99 = lat[(len(lat)*99)/100]
	}
	return res
}

// underLoad measures the calm client alone, then while load runs (load
// must return when its context ends), and checks the thresholds and that
// the control plane's RSS stayed under rssBoundMiB.
func (f *flood) underLoad(t *testing.T, rssBoundMiB float64, load func(ctx context.Context)) {
	t.Helper()
	const window = 4 * time.Second
	alone := f.measureCalm(t, window)
	t.Logf("calm client alone: %s", alone)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { load(ctx) })
	time.Sleep(time.Second) // let the load build up
	loaded := f.measureCalm(t, window)
	rss := rssMiB(f.cp.Pid())
	cancel()
	wg.Wait()
	t.Logf("calm client under load: %s; control plane RSS %.0f MiB", loaded, rss)

	if loaded.errors > 0 {
		t.Errorf("calm client got %d errors under load, the last: %v", loaded.errors, loaded.lastErr)
	}
	if loaded.p99 > calmMaxP99 {
		t.Errorf("calm p99 %s under load, want under %s", loaded.p99, calmMaxP99)
	}
	if loaded.perSec < calmMinFraction*alone.perSec {
		// This host's speed drifts by a third between windows of a few
		// seconds (other tenants): before calling it starvation, measure
		// the calm client alone again now that the load is gone, and
		// hold the loaded window to the slower baseline. A load that
		// starves the calm client still fails: alone again, it is fast.
		again := f.measureCalm(t, window)
		t.Logf("calm client alone again, after the load: %s", again)
		alone.perSec = min(alone.perSec, again.perSec)
	}
	if loaded.perSec < calmMinFraction*alone.perSec {
		t.Errorf("calm throughput %.0f/s under load is under %.0f %% of %.0f/s alone", loaded.perSec, calmMinFraction*100, alone.perSec)
	}
	if rss > rssBoundMiB {
		t.Errorf("control plane RSS %.0f MiB under load, bound %.0f MiB", rss, rssBoundMiB)
	}
	f.checkAcknowledged(t)
}

// checkAcknowledged checks, once the load has stopped, that every
// completion the calm client was acknowledged is DONE in the store.
func (f *flood) checkAcknowledged(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := factoryv1.NewQueueServiceClient(f.op)
	done, token := 0, ""
	for {
		resp, err := q.ListTasks(ctx, &factoryv1.ListTasksRequest{States: []factoryv1.TaskState{factoryv1.TaskState_TASK_STATE_DONE}, Role: "calm", PageSize: 1000, PageToken: token})
		if err != nil {
			t.Fatalf("list the calm client's DONE tasks: %v", err)
		}
		done += len(resp.GetTasks())
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if done < f.acked || done > f.acked+f.unsure {
		t.Errorf("%d calm tasks DONE after the load, want %d acknowledged completions (plus at most %d unsure)", done, f.acked, f.unsure)
	}
}

// resumeMissesNothing watches role (changes only) and stops reading at
// once, as a client cut off would; then runs do, which creates n tasks of
// role, and resumes from the cursor it had: every one of the n tasks must
// come back as CREATED.
func (f *flood) resumeMissesNothing(ctx context.Context, t *testing.T, role string, n int, do func()) {
	t.Helper()
	q := factoryv1.NewQueueServiceClient(f.calm)
	wctx, stop := context.WithCancel(ctx)
	stream, err := q.WatchTasks(wctx, &factoryv1.WatchTasksRequest{Role: role, ChangesOnly: true})
	var first *factoryv1.WatchTasksResponse
	if err == nil {
		first, err = stream.Recv()
	}
	stop()
	if err != nil || first.GetCursor() == "" {
		t.Errorf("calm watch of role %s: %v (first message %v, want SYNCED with a cursor)", role, err, first)
		return
	}
	do()
	// Its own deadline: the load ending does not excuse a missed event.
	rctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resumed, err := q.WatchTasks(rctx, &factoryv1.WatchTasksRequest{Role: role, ChangesOnly: true, ResumeCursor: first.GetCursor()})
	if err != nil {
		t.Errorf("resume from %s: %v", first.GetCursor(), err)
		return
	}
	seen := map[string]bool{}
	for len(seen) < n {
		ev, err := resumed.Recv()
		if err != nil {
			t.Errorf("resumed watch from %s ended after %d of %d created tasks: %v", first.GetCursor(), len(seen), n, err)
			return
		}
		if ev.GetType() == factoryv1.TaskEventType_TASK_EVENT_TYPE_CREATED {
			seen[ev.GetTask().GetId()] = true
		}
	}
}
