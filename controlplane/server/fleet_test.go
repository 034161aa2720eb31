package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// connect opens a Connect stream as host and waits for the config reply.
func connect(ctx context.Context, t *testing.T, c factoryv1.FleetServiceClient, host string, agents ...string) (factoryv1.FleetService_ConnectClient, *factoryv1.SidecarConfig, error) {
	t.Helper()
	stream, err := c.Connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	hello := &factoryv1.Hello{Host: host, Version: "test"}
	for _, a := range agents {
		hello.Agents = append(hello.Agents, &factoryv1.HostedAgent{Name: a, Roles: []string{"builder"}})
	}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		return nil, nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, nil, err
	}
	return stream, resp.GetConfig(), nil
}

func nodeStateOf(t *testing.T, c factoryv1.FleetServiceClient, host string) factoryv1.NodeState {
	t.Helper()
	resp, err := c.ListNodes(context.Background(), &factoryv1.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range resp.GetNodes() {
		if n.GetHost() == host {
			return n.GetState()
		}
	}
	return factoryv1.NodeState_NODE_STATE_UNSPECIFIED
}

func TestSidecarConnectsAndItsNodeAgesByTheClock(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	secret, _ := b.mintToken(t, store.RoleSidecar, "gpu-1")
	side := b.clientsAs(t, secret).f
	ops := b.clientsAs(t, b.operator).f
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := ops.PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: "forge", Host: "gpu-1"}); err != nil {
		t.Fatal(err)
	}

	stream, cfg, err := connect(ctx, t, side, "gpu-1", "forge")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.GetHeartbeatInterval().AsDuration(); got != 10*time.Second {
		t.Errorf("heartbeat interval %v, want 10s", got)
	}
	if refused := cfg.GetRefusedAgents(); len(refused) != 0 {
		t.Errorf("refused %v, want none: forge is placed on gpu-1", refused)
	}
	if got := nodeStateOf(t, ops, "gpu-1"); got != factoryv1.NodeState_NODE_STATE_ONLINE {
		t.Fatalf("after Hello: %v, want ONLINE", got)
	}
	agents, err := ops.ListAgents(ctx, &factoryv1.ListAgentsRequest{Host: "gpu-1"})
	if err != nil || len(agents.GetAgents()) != 1 || agents.GetAgents()[0].GetName() != "forge" {
		t.Fatalf("agents on gpu-1: %v, %v", agents, err)
	}

	// Telemetry is a sign of life and is what GetHealth reads: a full disk
	// and a nearly full GPU fail their checks.
	tel := &factoryv1.Telemetry{
		Disks:  []*factoryv1.DiskUsage{{Path: "/", TotalBytes: 100, UsedBytes: 90}},
		Gpus:   []*factoryv1.GpuDevice{{Name: "H100", MemoryTotalBytes: 24 << 30, MemoryUsedBytes: 23 << 30}},
		Probes: []*factoryv1.ProbeResult{{Name: "litellm", Ok: true}},
	}
	clock.Advance(25 * time.Second)
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: tel}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		n, _ := ops.ListNodes(ctx, &factoryv1.ListNodesRequest{})
		return len(n.GetNodes()) == 1 && n.GetNodes()[0].GetTelemetry() != nil
	})
	h, err := ops.GetHealth(ctx, &factoryv1.GetHealthRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"queue": true, "node gpu-1": true, "probe gpu-1:litellm": true, "disk gpu-1:/": false, "gpu gpu-1:0": false,
		"model swaps gpu-1": true}
	for _, c := range h.GetChecks() {
		if w, ok := want[c.GetName()]; !ok || w != c.GetOk() {
			t.Errorf("check %s ok=%v (%s); want %v", c.GetName(), c.GetOk(), c.GetDetail(), w)
		}
		delete(want, c.GetName())
	}
	if len(want) > 0 || h.GetFailed() != 2 {
		t.Errorf("missing checks %v; failed %d, want 2", want, h.GetFailed())
	}

	// Silence: two missed heartbeats and a half make it STALE; five
	// minutes OFFLINE.
	clock.Advance(26 * time.Second)
	if got := nodeStateOf(t, ops, "gpu-1"); got != factoryv1.NodeState_NODE_STATE_STALE {
		t.Errorf("after 26s of silence: %v, want STALE", got)
	}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Heartbeat{Heartbeat: &factoryv1.Heartbeat{SentAt: timestamppb.Now()}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return nodeStateOf(t, ops, "gpu-1") == factoryv1.NodeState_NODE_STATE_ONLINE })
	clock.Advance(5 * time.Minute)
	if got := nodeStateOf(t, ops, "gpu-1"); got != factoryv1.NodeState_NODE_STATE_OFFLINE {
		t.Errorf("after 5m of silence: %v, want OFFLINE", got)
	}
}

func TestSidecarMayNotConnectAsAnotherHost(t *testing.T) {
	b := setup(t, nil)
	secret, _ := b.mintToken(t, store.RoleSidecar, "gpu-1")
	side := b.clientsAs(t, secret).f
	_, _, err := connect(context.Background(), t, side, "gpu-2")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "sidecar gpu-1 may not connect as host gpu-2") {
		t.Fatalf("sidecar gpu-1 connecting as gpu-2: %v", err)
	}
	if len(b.fleet.Nodes()) != 0 {
		t.Errorf("a refused Hello registered a node: %v", b.fleet.Nodes())
	}
}

func TestConnectMustStartWithHello(t *testing.T) {
	b := setup(t, nil)
	stream, err := b.clientsAs(t, b.operator).f.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Heartbeat{Heartbeat: &factoryv1.Heartbeat{SentAt: timestamppb.Now()}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("heartbeat before Hello: %v, want FAILED_PRECONDITION", err)
	}
}

func TestWatchFleetSendsStateThenChanges(t *testing.T) {
	b := setup(t, nil)
	ops := b.clientsAs(t, b.operator).f
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := ops.WatchFleet(ctx, &factoryv1.WatchFleetRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := w.Recv()
	if err != nil || len(first.GetNodes()) != 0 {
		t.Fatalf("first view %v, %v; want an empty fleet", first, err)
	}
	if _, _, err := connect(ctx, t, ops, "gpu-1"); err != nil {
		t.Fatal(err)
	}
	next, err := w.Recv()
	if err != nil || len(next.GetNodes()) != 1 || next.GetNodes()[0].GetHost() != "gpu-1" {
		t.Fatalf("after a Hello: %v, %v", next, err)
	}
}

// waitFor polls cond until it holds: stream messages are handled on the
// server's goroutine, after Send returns.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAnAgentsClaimIsASignOfLifeWithItsTask(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	created, err := b.client.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "build it"})
	if err != nil {
		t.Fatal(err)
	}
	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	forge := b.clientsAs(t, forgeSecret)
	if _, err := forge.q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge"}); err != nil {
		t.Fatal(err)
	}
	resp, err := forge.f.ListAgents(ctx, &factoryv1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetAgents()) != 1 || resp.GetAgents()[0].GetCurrentTask() != created.GetTask().GetId() ||
		resp.GetAgents()[0].GetState() != factoryv1.NodeState_NODE_STATE_ONLINE {
		t.Fatalf("agents after forge's claim: %v", resp.GetAgents())
	}
}

// TestAnAgentPollingAnEmptyQueueStaysOnline: an agent whose only calls are
// empty claims is alive, though its host's sidecar has gone quiet, and an
// agent no sidecar declared shows up by its claims alone.
func TestAnAgentPollingAnEmptyQueueStaysOnline(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ops := b.clientsAs(t, b.operator).f
	if _, err := ops.PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: "forge", Host: "gpu-1"}); err != nil {
		t.Fatal(err)
	}
	sidecar, _ := b.mintToken(t, store.RoleSidecar, "gpu-1")
	if _, _, err := connect(ctx, t, b.clientsAs(t, sidecar).f, "gpu-1", "forge"); err != nil {
		t.Fatal(err)
	}
	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	scoutSecret, _ := b.mintToken(t, store.RoleAgent, "scout")
	forge, scout := b.clientsAs(t, forgeSecret).q, b.clientsAs(t, scoutSecret).q
	for range 7 {
		clock.Advance(time.Minute)
		for name, q := range map[string]factoryv1.QueueServiceClient{"forge": forge, "scout": scout} {
			resp, err := q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: name})
			if err != nil || len(resp.GetTasks()) != 0 {
				t.Fatalf("%s's claim: %v, %v; want an empty answer", name, resp, err)
			}
		}
	}
	if got := nodeStateOf(t, ops, "gpu-1"); got != factoryv1.NodeState_NODE_STATE_OFFLINE {
		t.Fatalf("gpu-1 after 7 silent minutes: %v, want OFFLINE", got)
	}
	resp, err := ops.ListAgents(ctx, &factoryv1.ListAgentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]factoryv1.NodeState{}
	for _, a := range resp.GetAgents() {
		states[a.GetName()] = a.GetState()
	}
	for _, name := range []string{"forge", "scout"} {
		if states[name] != factoryv1.NodeState_NODE_STATE_ONLINE {
			t.Errorf("%s, claiming every minute from an empty queue: %v, want ONLINE (agents: %v)", name, states[name], states)
		}
	}
}

func TestConnectMessagesAreValidated(t *testing.T) {
	b := setup(t, nil)
	stream, err := b.clientsAs(t, b.operator).f.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hello := &factoryv1.Hello{Host: "gpu-1", Agents: []*factoryv1.HostedAgent{{Name: "forge"}, {Name: "forge"}}}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if st := wantCode(t, err, codes.InvalidArgument); !strings.Contains(st.Message(), "agent names must be unique") {
		t.Fatalf("duplicate agents: %v", err)
	}
}
