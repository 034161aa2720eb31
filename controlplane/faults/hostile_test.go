//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// rawCodec sends bytes as they are: what a broken or hostile client sends.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}
func (rawCodec) Name() string { return "proto" }

// TestHostileInput sends what a broken or hostile client would: every call
// gets a clear error, the store is unchanged, and a flood from one token
// leaves other clients served.
func TestHostileInput(t *testing.T) {
	cp := startControlPlane(t, "controlplane", t.TempDir(), "", "--rate-limit", "200", "--rate-burst", "200")
	op := dial(t, cp.addr, cp.operatorToken(t))
	q := factoryv1.NewQueueServiceClient(op)
	budget := factoryv1.NewBudgetServiceClient(op)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if _, err := q.CreateTask(ctx, &factoryv1.CreateTaskRequest{TaskId: "victim", Title: "a task hostile input must not touch", Role: "w"}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, ctx, q, budget)

	huge := strings.Repeat("x", 5<<20)
	nested := strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000)
	var invalidUTF8 []byte
	invalidUTF8 = protowire.AppendTag(invalidUTF8, 2, protowire.BytesType)
	invalidUTF8 = protowire.AppendBytes(invalidUTF8, []byte{'b', 0xff, 0xfe, 'd'})

	cases := []struct {
		name string
		call func() error
		code codes.Code
		says string // a word the message must contain
	}{
		{"payload over the 4 MiB message limit", func() error {
			_, err := q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "huge", PayloadJson: `"` + huge + `"`})
			return err
		}, codes.ResourceExhausted, "larger than max"},
		{"payload over the 1 MiB field limit", func() error {
			_, err := q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "big", PayloadJson: `"` + huge[:2<<20] + `"`})
			return err
		}, codes.InvalidArgument, "payload_json"},
		{"deeply nested JSON", func() error {
			_, err := q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "nested", PayloadJson: nested})
			return err
		}, codes.InvalidArgument, "payload_json"},
		{"invalid UTF-8 in a string field", func() error {
			var reply []byte
			return op.Invoke(ctx, factoryv1.QueueService_CreateTask_FullMethodName, invalidUTF8, &reply, grpc.ForceCodecV2(rawCodec{}))
		}, codes.InvalidArgument, "UTF-8"},
		{"unknown enum value in a move", func() error {
			_, err := q.MoveTask(ctx, &factoryv1.MoveTaskRequest{TaskId: "victim", To: factoryv1.TaskState(99), Reason: "x"})
			return err
		}, codes.InvalidArgument, "to"},
		{"unknown spend tier", func() error {
			cost := int64(1)
			_, err := budget.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: &factoryv1.SpendEvent{
				Id: "hostile-1", Agent: "a", Model: "m", Tier: factoryv1.SpendTier(42), CostMicros: &cost, OccurredAt: timestamppb.Now()}})
			return err
		}, codes.InvalidArgument, "tier"},
		{"negative cost", func() error {
			cost := int64(-5)
			_, err := budget.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: &factoryv1.SpendEvent{
				Id: "hostile-2", Agent: "a", Model: "m", Tier: factoryv1.SpendTier_SPEND_TIER_MID, CostMicros: &cost, OccurredAt: timestamppb.Now()}})
			return err
		}, codes.InvalidArgument, "cost_micros"},
	}
	for _, c := range cases {
		err := c.call()
		if status.Code(err) != c.code || !strings.Contains(status.Convert(err).Message(), c.says) {
			t.Errorf("%s: got %v, want %s saying %q", c.name, err, c.code, c.says)
		}
	}

	// A sidecar claiming another host's name.
	sidecarSecret := mintToken(t, op, factoryv1.Role_ROLE_SIDECAR, "host-a")
	sc := dial(t, cp.addr, sidecarSecret)
	stream, err := factoryv1.NewFleetServiceClient(sc).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: &factoryv1.Hello{Host: "host-b"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Errorf("sidecar of host-a saying hello as host-b: got %v, want PermissionDenied", err)
	}

	after := snapshot(t, ctx, q, budget)
	if before != after {
		t.Errorf("hostile input changed the store:\nbefore %s\nafter  %s", before, after)
	}

	// Replayed fencing tokens: an old holder's token after a re-claim.
	agentSecret := mintToken(t, op, factoryv1.Role_ROLE_AGENT, "agent-r")
	aq := factoryv1.NewQueueServiceClient(dial(t, cp.addr, agentSecret))
	first, err := aq.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "agent-r", Roles: []string{"w"}})
	if err != nil || len(first.GetTasks()) != 1 {
		t.Fatalf("claim: %v %v", first, err)
	}
	old := first.GetTasks()[0].GetLease().GetToken()
	if _, err := q.MoveTask(ctx, &factoryv1.MoveTaskRequest{TaskId: "victim", To: factoryv1.TaskState_TASK_STATE_READY, Reason: "requeue"}); err != nil {
		t.Fatal(err)
	}
	second, err := aq.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "agent-r", Roles: []string{"w"}})
	if err != nil || len(second.GetTasks()) != 1 {
		t.Fatalf("re-claim: %v %v", second, err)
	}
	for _, call := range []func() error{
		func() error {
			_, err := aq.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: "victim", Agent: "agent-r", FencingToken: old})
			return err
		},
		func() error {
			_, err := aq.RenewLease(ctx, &factoryv1.RenewLeaseRequest{TaskId: "victim", Agent: "agent-r", FencingToken: old})
			return err
		},
		func() error {
			_, err := aq.FailTask(ctx, &factoryv1.FailTaskRequest{TaskId: "victim", Agent: "agent-r", FencingToken: old, Error: "replayed"})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("replayed fencing token %d: got %v, want FailedPrecondition", old, err)
		}
	}
	// The refused replays left the task as the second claim holds it.
	if res, err := q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: "victim"}); err != nil {
		t.Fatal(err)
	} else if got := res.GetTask(); got.GetState() != factoryv1.TaskState_TASK_STATE_IN_PROGRESS || got.GetLease().GetToken() != second.GetTasks()[0].GetLease().GetToken() {
		t.Errorf("after replayed tokens the task is %s under token %d, want IN_PROGRESS under %d",
			got.GetState(), got.GetLease().GetToken(), second.GetTasks()[0].GetLease().GetToken())
	}
	// A flood from one token: refused with RESOURCE_EXHAUSTED, while
	// another caller's calls all succeed.
	flooder := factoryv1.NewQueueServiceClient(dial(t, cp.addr, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "flooder")))
	calm := factoryv1.NewQueueServiceClient(dial(t, cp.addr, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "calm")))
	var refused, served atomic.Int64
	floodCtx, stopFlood := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for floodCtx.Err() == nil {
				_, err := flooder.GetQueueStats(floodCtx, &factoryv1.GetQueueStatsRequest{})
				switch status.Code(err) {
				case codes.ResourceExhausted:
					refused.Add(1)
				case codes.OK:
					served.Add(1)
				}
			}
		}()
	}
	var worst time.Duration
	for i := range 100 {
		start := time.Now()
		if _, err := calm.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: "victim"}); err != nil {
			t.Errorf("call %d of a calm client during the flood: %v", i, err)
		}
		worst = max(worst, time.Since(start))
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := calm.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "calm", Roles: []string{"none"}, Wait: durationpb.New(10 * time.Millisecond)}); err != nil {
		t.Errorf("calm claim during the flood: %v", err)
	}
	stopFlood()
	wg.Wait()
	if refused.Load() == 0 {
		t.Errorf("a flood of %d calls from one token was never refused", served.Load())
	}
	t.Logf("flood: %d served, %d refused with RESOURCE_EXHAUSTED; the calm client's slowest call took %s", served.Load(), refused.Load(), worst)
}

// snapshot is a summary of what the store holds: every task's state,
// attempt and note, and the spend ledger's totals.
func snapshot(t *testing.T, ctx context.Context, q factoryv1.QueueServiceClient, b factoryv1.BudgetServiceClient) string {
	t.Helper()
	var parts []string
	for _, task := range listAll(t, ctx, q) {
		parts = append(parts, fmt.Sprintf("%s:%s:%d:%s", task.GetId(), task.GetState(), task.GetAttempt(), task.GetLastError()))
	}
	rep, err := b.GetSpend(ctx, &factoryv1.GetSpendRequest{Days: 2})
	if err != nil {
		t.Fatalf("get spend: %v", err)
	}
	parts = append(parts, fmt.Sprintf("spend:%d:%d", rep.GetTotals().GetEvents(), rep.GetTotals().GetCostMicros()))
	return strings.Join(parts, " ")
}
