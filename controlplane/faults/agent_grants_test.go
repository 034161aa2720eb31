//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// sayHello opens a sidecar's Connect stream as host, declaring agents, and
// returns the stream (kept open until the test ends) and the config the
// server answered with.
func sayHello(t *testing.T, ctx context.Context, conn *grpc.ClientConn, host string, agents ...string) (factoryv1.FleetService_ConnectClient, *factoryv1.SidecarConfig) {
	t.Helper()
	stream, err := factoryv1.NewFleetServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatalf("connect as %s: %v", host, err)
	}
	hello := &factoryv1.Hello{Host: host}
	for _, a := range agents {
		hello.Agents = append(hello.Agents, &factoryv1.HostedAgent{Name: a})
	}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		t.Fatalf("hello as %s: %v", host, err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("hello as %s: %v", host, err)
	}
	return stream, resp.GetConfig()
}

func spendOf(agent, id string, costMicros int64) *factoryv1.SpendEvent {
	return &factoryv1.SpendEvent{Id: id, Agent: agent, Model: "claude-opus-4", Tier: factoryv1.SpendTier_SPEND_TIER_FRONTIER,
		CostMicros: &costMicros, OccurredAt: timestamppb.Now()}
}

// Row 3: gpu-01's sidecar token says Hello with agents:[forge] while forge
// is placed on gpu-02, which is ONLINE, then reports a $50,000 event for
// forge. Before: forge was adopted, the event stored and the fleet halted,
// and gpu-02 was refused for its own agent; and with two replicas the
// honest sidecar's spend was refused by the one it had not said Hello to.
func hostileRow03AdoptAgent(t *testing.T) {
	t.Run("one control plane", adoptAgentOnOne)
	t.Run("two replicas", adoptAgentOnTwoReplicas)
}

func adoptAgentOnOne(t *testing.T) {
	cp := startControlPlane(t, "controlplane", t.TempDir(), "")
	op := dial(t, cp.addr, cp.operatorToken(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fleet := factoryv1.NewFleetServiceClient(op)
	budget := factoryv1.NewBudgetServiceClient(op)

	// The real host: forge placed on gpu-02 by an operator, connected.
	real := dial(t, cp.addr, mintToken(t, op, factoryv1.Role_ROLE_SIDECAR, "gpu-02", "forge"))
	if _, cfg := sayHello(t, ctx, real, "gpu-02", "forge"); len(cfg.GetRefusedAgents()) != 0 {
		t.Fatalf("gpu-02 declaring its own agent was refused: %v", cfg.GetRefusedAgents())
	}

	// The repro: gpu-01's token adopts forge.
	hostile := dial(t, cp.addr, mintToken(t, op, factoryv1.Role_ROLE_SIDECAR, "gpu-01"))
	_, cfg := sayHello(t, ctx, hostile, "gpu-01", "forge")
	refused := cfg.GetRefusedAgents()
	if len(refused) != 1 || refused[0].GetName() != "forge" || !strings.Contains(refused[0].GetReason(), "placed on host gpu-02") {
		t.Errorf("gpu-01 declaring forge: refused %v, want forge, saying it is placed on gpu-02", refused)
	}
	agents, err := fleet.ListAgents(ctx, &factoryv1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if a := agents.GetAgents(); len(a) != 1 || a[0].GetName() != "forge" || a[0].GetHost() != "gpu-02" {
		t.Errorf("agents after gpu-01's Hello: %v, want forge on gpu-02 only", a)
	}

	_, err = factoryv1.NewBudgetServiceClient(hostile).ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: spendOf("forge", "row03-hostile", 50_000_000_000)})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not placed on host gpu-01") {
		t.Errorf("gpu-01 reporting forge's spend: %v, want PERMISSION_DENIED saying forge is not placed on gpu-01", err)
	}
	spend, err := budget.GetSpend(ctx, &factoryv1.GetSpendRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := spend.GetTotals().GetEvents(); n != 0 {
		t.Errorf("the refused event was stored: %d events", n)
	}
	if stop, err := budget.GetEmergencyStop(ctx, &factoryv1.GetEmergencyStopRequest{}); err != nil || stop.GetState().GetStopped() {
		t.Errorf("emergency stop after the refused event: %v, %v", stop, err)
	}

	// The real host keeps reporting for its own agent.
	if _, err := factoryv1.NewBudgetServiceClient(real).ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: spendOf("forge", "row03-real", 1_000_000)}); err != nil {
		t.Errorf("gpu-02 reporting its own agent's spend: %v", err)
	}
	spend, err = budget.GetSpend(ctx, &factoryv1.GetSpendRequest{})
	if err != nil || spend.GetTotals().GetEvents() != 1 || spend.GetTotals().GetCostMicros() != 1_000_000 {
		t.Errorf("spend after gpu-02's report: %v, %v; want its one $1 event", spend.GetTotals(), err)
	}
}

// adoptAgentOnTwoReplicas: placement is in the store, so the replica the
// honest sidecar never said Hello to accepts its spend, refuses the other
// host's, and follows a move within about a second.
func adoptAgentOnTwoReplicas(t *testing.T) {
	url := postgresURL(t)
	schema := freshSchema(t, url)
	a := startControlPlane(t, "replica-a", t.TempDir(), "", "--store", url, "--pg-schema", schema)
	b := startControlPlane(t, "replica-b", t.TempDir(), "", "--store", url, "--pg-schema", schema)
	op := dial(t, a.addr, a.operatorToken(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	realSecret := mintToken(t, op, factoryv1.Role_ROLE_SIDECAR, "gpu-02", "forge")
	hostileSecret := mintToken(t, op, factoryv1.Role_ROLE_SIDECAR, "gpu-01")
	if _, cfg := sayHello(t, ctx, dial(t, a.addr, realSecret), "gpu-02", "forge"); len(cfg.GetRefusedAgents()) != 0 {
		t.Fatalf("gpu-02 declaring forge on replica a: refused %v", cfg.GetRefusedAgents())
	}

	realOnB := factoryv1.NewBudgetServiceClient(dial(t, b.addr, realSecret))
	if _, err := realOnB.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: spendOf("forge", "row03-b-real", 1_000_000)}); err != nil {
		t.Errorf("gpu-02's spend for forge on the replica it did not say Hello to: %v", err)
	}
	hostileOnB := factoryv1.NewBudgetServiceClient(dial(t, b.addr, hostileSecret))
	if _, err := hostileOnB.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: spendOf("forge", "row03-b-hostile", 50_000_000_000)}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("gpu-01's spend for forge on replica b: %v, want PERMISSION_DENIED", err)
	}

	// An operator moves forge to gpu-01 on replica a: replica b follows.
	if _, err := factoryv1.NewFleetServiceClient(op).PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: "forge", Host: "gpu-01"}); err != nil {
		t.Fatal(err)
	}
	moved := time.Now()
	n := 0
	eventually(t, "replica b refusing gpu-02 for forge after the move", 5*time.Second, func() bool {
		n++
		_, err := realOnB.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: spendOf("forge", fmt.Sprintf("row03-b-after-%d", n), 1)})
		return status.Code(err) == codes.PermissionDenied
	})
	if took := time.Since(moved); took > 2*time.Second {
		t.Errorf("replica b followed the move after %s, want about a second", took)
	}
	if _, err := hostileOnB.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: spendOf("forge", "row03-b-moved", 1_000_000)}); err != nil {
		t.Errorf("gpu-01's spend for forge on replica b once forge is placed there: %v", err)
	}
}

// Row 4: scout's token, granted researcher, claims with roles:["deployer"]
// and used to get forge's production deploy.
func hostileRow04ClaimAnyRole(t *testing.T) {
	cp := startControlPlane(t, "controlplane", t.TempDir(), "")
	op := dial(t, cp.addr, cp.operatorToken(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := factoryv1.NewQueueServiceClient(op)
	deploy, err := q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "forge: deploy release 1.2", Role: "deployer"})
	if err != nil {
		t.Fatal(err)
	}
	if deploy.GetTask().GetState() != factoryv1.TaskState_TASK_STATE_READY {
		t.Fatalf("the deploy task is %v, want READY", deploy.GetTask().GetState())
	}

	scout := factoryv1.NewQueueServiceClient(dial(t, cp.addr, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "scout", "researcher")))
	_, err = scout.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "scout", Roles: []string{"deployer"}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "may not claim role deployer") {
		t.Errorf("scout claiming deployer: %v, want PERMISSION_DENIED naming the role", err)
	}
	got, err := q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: deploy.GetTask().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if task := got.GetTask(); task.GetState() != factoryv1.TaskState_TASK_STATE_READY || task.GetAttempt() != 0 || task.GetLease().GetHolder() != "" {
		t.Errorf("forge's deploy after scout's claim: %v attempt %d holder %q, want READY, untouched", task.GetState(), task.GetAttempt(), task.GetLease().GetHolder())
	}
	// Its own role still works, and reaches nothing else.
	if c, err := scout.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "scout", Roles: []string{"researcher"}}); err != nil || len(c.GetTasks()) != 0 {
		t.Errorf("scout claiming researcher: %v, %v; want no task and no error", c.GetTasks(), err)
	}
}
