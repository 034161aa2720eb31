package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// fakeWorkQueue serves Work (and MoveTask, for handing back) over a
// shared pool of tasks, in request order as the control plane does. It
// answers a completion only once the request after it (or the end of the
// sending side) has arrived: an agent that waits for its completions'
// answers before sending its next claim never gets them, so only a
// pipelining agent gets through.
type fakeWorkQueue struct {
	factoryv1.UnimplementedQueueServiceServer
	run string

	mu sync.Mutex
	// ready is the tasks to hand out, in claim order; held the claimed
	// ones by id, with their fencing token; done those completed.
	ready []*factoryv1.Task
	held  map[string]int64
	done  map[string]bool
	// handedBack is the ids moved back to READY with MoveTask.
	handedBack []string
	nextToken  int64
	// refuseCompletes answers every completion with FAILED_PRECONDITION;
	// refuseClaims every claim with PERMISSION_DENIED.
	refuseCompletes, refuseClaims bool
	// closedCleanly counts the streams that ended with the client's
	// CloseSend; requests is every stream's calls, "claim"/"complete".
	closedCleanly atomic.Int64
	requests      [][]string
}

func newFakeWorkQueue(run string, tasks int, foreign ...string) *fakeWorkQueue {
	f := &fakeWorkQueue{run: run, held: map[string]int64{}, done: map[string]bool{}}
	for _, id := range foreign {
		f.ready = append(f.ready, &factoryv1.Task{Id: id})
	}
	for i := range tasks {
		f.ready = append(f.ready, &factoryv1.Task{Id: fmt.Sprintf("%s-%d", run, i), Role: run})
	}
	return f
}

func (f *fakeWorkQueue) Work(stream grpc.BidiStreamingServer[factoryv1.WorkRequest, factoryv1.WorkResponse]) error {
	var held []*factoryv1.WorkResponse
	flush := func() error {
		for _, r := range held {
			if err := stream.Send(r); err != nil {
				return err
			}
		}
		held = nil
		return nil
	}
	var calls []string
	defer func() {
		f.mu.Lock()
		f.requests = append(f.requests, calls)
		f.mu.Unlock()
	}()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			f.closedCleanly.Add(1)
			return flush()
		}
		if err != nil {
			return err
		}
		resp := &factoryv1.WorkResponse{Ref: req.GetRef()}
		switch c := req.GetCall().(type) {
		case *factoryv1.WorkRequest_Complete:
			calls = append(calls, "complete")
			f.complete(resp, c.Complete)
			held = append(held, resp)
			continue
		case *factoryv1.WorkRequest_CompleteMany:
			calls = append(calls, "complete")
			many := &factoryv1.CompleteTasksResponse{}
			for _, item := range c.CompleteMany.GetItems() {
				one := &factoryv1.WorkResponse{}
				f.complete(one, item)
				r := &factoryv1.CompleteTaskResult{}
				if e := one.GetError(); e != nil {
					r.ErrorCode = codes.Code(e.GetCode()).String()
				}
				many.Results = append(many.Results, r)
			}
			resp.Result = &factoryv1.WorkResponse_CompleteMany{CompleteMany: many}
			held = append(held, resp)
			continue
		case *factoryv1.WorkRequest_Claim:
			calls = append(calls, "claim")
			f.claim(resp, c.Claim)
		default:
			return status.Errorf(codes.InvalidArgument, "unexpected call %T", c)
		}
		if err := flush(); err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func (f *fakeWorkQueue) claim(resp *factoryv1.WorkResponse, req *factoryv1.ClaimTaskRequest) {
	if f.refuseClaims {
		resp.Result = &factoryv1.WorkResponse_Error{Error: &factoryv1.WorkError{Code: int32(codes.PermissionDenied), Message: "agent not allowed"}}
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := min(int(req.GetMaxTasks()), len(f.ready))
	tasks := f.ready[:n]
	f.ready = f.ready[n:]
	for _, t := range tasks {
		f.nextToken++
		t.Lease = &factoryv1.Lease{Token: f.nextToken}
		f.held[t.GetId()] = f.nextToken
	}
	resp.Result = &factoryv1.WorkResponse_Claim{Claim: &factoryv1.ClaimTaskResponse{Tasks: tasks}}
}

func (f *fakeWorkQueue) complete(resp *factoryv1.WorkResponse, req *factoryv1.CompleteTaskRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if token, ok := f.held[req.GetTaskId()]; !ok || token != req.GetFencingToken() || f.refuseCompletes {
		resp.Result = &factoryv1.WorkResponse_Error{Error: &factoryv1.WorkError{Code: int32(codes.FailedPrecondition), Message: "lease lost"}}
		return
	}
	delete(f.held, req.GetTaskId())
	f.done[req.GetTaskId()] = true
	resp.Result = &factoryv1.WorkResponse_Complete{Complete: &factoryv1.CompleteTaskResponse{}}
}

func (f *fakeWorkQueue) MoveTask(_ context.Context, req *factoryv1.MoveTaskRequest) (*factoryv1.MoveTaskResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.held, req.GetTaskId())
	f.handedBack = append(f.handedBack, req.GetTaskId())
	return &factoryv1.MoveTaskResponse{}, nil
}

// serveFakeWorkQueue serves f in memory until the test ends and returns
// a client of it.
func serveFakeWorkQueue(t *testing.T, f *fakeWorkQueue) factoryv1.QueueServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	factoryv1.RegisterQueueServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return factoryv1.NewQueueServiceClient(conn)
}

// TestBenchStreamAgents runs the throughput phase with --stream against
// the fake: every task is completed and none left held, a task of another
// role is handed back, each agent pipelines (the fake answers nothing
// else), ends its stream with CloseSend, and every claim has a latency.
func TestBenchStreamAgents(t *testing.T) {
	const run, tasks = "bench-stream", 53
	f := newFakeWorkQueue(run, tasks, "someone-elses")
	q := serveFakeWorkQueue(t, f)
	cfg := benchConfig{agents: 4, tasks: tasks, batch: 3, stream: true}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lat, seconds, empty, completeErrs, err := runBenchAgents(ctx, []factoryv1.QueueServiceClient{q}, run, cfg, map[string]string{}, 10*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.done) != tasks || len(f.held) != 0 || completeErrs != 0 || seconds <= 0 {
		t.Errorf("%d done, %d held, %d complete errors, %.3fs: want all %d done, none held", len(f.done), len(f.held), completeErrs, seconds, tasks)
	}
	if len(f.handedBack) != 1 || f.handedBack[0] != "someone-elses" {
		t.Errorf("handed back %v, want the task of another role", f.handedBack)
	}
	if n := f.closedCleanly.Load(); n != int64(cfg.agents) {
		t.Errorf("%d streams ended with CloseSend, want %d", n, cfg.agents)
	}
	claims := 0
	for _, calls := range f.requests {
		for i, c := range calls {
			if c == "claim" {
				claims++
			} else if i == 0 {
				t.Errorf("a stream began with %s, want a claim: %v", c, calls)
			}
		}
	}
	if len(lat) != claims {
		t.Errorf("%d claim latencies for %d claims", len(lat), claims)
	}
	// 53 tasks and a foreign one, 3 a claim: 18 claims take tasks, the
	// rest come back empty.
	if int(empty) != claims-18 {
		t.Errorf("%d empty of %d claims, want %d", empty, claims, claims-18)
	}
}

// TestBenchStreamRefusals: refused completions are counted, not fatal, and
// the agent still ends its stream cleanly; a refused claim ends the agent
// with the control plane's code and message.
func TestBenchStreamRefusals(t *testing.T) {
	const run = "bench-stream"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agent := func(f *fakeWorkQueue) (*streamBenchAgent, *atomic.Int64) {
		var claimed, completed atomic.Int64
		var empty, errs int64
		var lat []time.Duration
		return &streamBenchAgent{q: serveFakeWorkQueue(t, f), run: run, agent: run + "-agent-0", batch: 2, total: 5,
			claimed: &claimed, completed: &completed, empty: &empty, completeErrs: &errs, latencies: &lat}, &completed
	}

	f := newFakeWorkQueue(run, 5)
	f.refuseCompletes = true
	a, completed := agent(f)
	if err := a.work(ctx); err != nil {
		t.Fatal(err)
	}
	if *a.completeErrs != 5 || completed.Load() != 0 || f.closedCleanly.Load() != 1 {
		t.Errorf("%d complete errors, %d completed, %d streams closed: want 5 refusals counted and the stream closed", *a.completeErrs, completed.Load(), f.closedCleanly.Load())
	}

	f = newFakeWorkQueue(run, 5)
	f.refuseClaims = true
	a, _ = agent(f)
	err := a.work(ctx)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "agent not allowed") || !strings.Contains(err.Error(), a.agent) {
		t.Errorf("refused claim: %v, want the agent, PermissionDenied and its message", err)
	}
}

// TestBenchStreamReported: a --stream run says so in the table's run line
// and in JSON.
func TestBenchStreamReported(t *testing.T) {
	res := benchResult{Run: "bench-x", Agents: 2, Tasks: 10, Batch: 1, Connections: 1, Stream: true, CycleSeconds: 1, CreateSeconds: 1}
	var table bytes.Buffer
	if err := writeBenchTable(&table, &res); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "batch 1, 1 connection(s), stream)") {
		t.Errorf("run line without stream:\n%s", table.String())
	}
	raw, _ := json.Marshal(res)
	if !strings.Contains(string(raw), `"stream":true`) {
		t.Errorf("json without stream: %s", raw)
	}

	res.Stream = false
	table.Reset()
	if err := writeBenchTable(&table, &res); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(table.String(), "stream") {
		t.Errorf("a unary run's table mentions stream:\n%s", table.String())
	}
}
