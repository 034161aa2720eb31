package server

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// WakeAt makes the test clock a fleet.Waker: the channel closes once the
// clock has been moved to t. It watches the fake clock, not the wall
// clock, so a test that moves time past a liveness threshold sees the
// server wake at once.
func (c *fakeClock) WakeAt(t time.Time) (<-chan struct{}, func()) {
	ch, done := make(chan struct{}), make(chan struct{})
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if !c.Now().Before(t) {
					close(ch)
					return
				}
			}
		}
	}()
	return ch, sync.OnceFunc(func() { close(done) })
}

func sendTelemetry(t *testing.T, stream factoryv1.FleetService_ConnectClient, tel *factoryv1.Telemetry) {
	t.Helper()
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: tel}}); err != nil {
		t.Fatal(err)
	}
}

// healthOf waits for host's latest telemetry to be what GetHealth reads
// (a check named want exists) and returns the checks by name.
func healthOf(t *testing.T, c factoryv1.FleetServiceClient, want string) (map[string]*factoryv1.HealthCheck, *factoryv1.GetHealthResponse) {
	t.Helper()
	var h *factoryv1.GetHealthResponse
	by := map[string]*factoryv1.HealthCheck{}
	waitFor(t, func() bool {
		var err error
		if h, err = c.GetHealth(context.Background(), &factoryv1.GetHealthRequest{}); err != nil {
			t.Fatal(err)
		}
		clear(by)
		for _, ch := range h.GetChecks() {
			by[ch.GetName()] = ch
		}
		return by[want] != nil
	})
	return by, h
}

// A STALE host's readings are not current: its probe, disk and GPU
// checks are UNKNOWN with the age of the reading, not ✅, and count as
// failed.
func TestStaleHostsReadingsAreUnknownNotHealthy(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	ops := b.clientsAs(t, b.operator).f
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, _, err := connect(ctx, t, ops, "gpu-1")
	if err != nil {
		t.Fatal(err)
	}
	sendTelemetry(t, stream, &factoryv1.Telemetry{
		Disks:  []*factoryv1.DiskUsage{{Path: "/", TotalBytes: 100, UsedBytes: 10, AvailableBytes: 85}},
		Gpus:   []*factoryv1.GpuDevice{{Name: "H100", MemoryTotalBytes: 80 << 30, MemoryUsedBytes: 1 << 30}},
		Probes: []*factoryv1.ProbeResult{{Name: "litellm", Ok: true, Detail: "200"}},
	})
	by, h := healthOf(t, ops, "probe gpu-1:litellm")
	if h.GetFailed() != 0 || h.GetUnknown() != 0 {
		t.Fatalf("ONLINE host: failed %d unknown %d, want 0: %v", h.GetFailed(), h.GetUnknown(), h.GetChecks())
	}
	for _, name := range []string{"probe gpu-1:litellm", "disk gpu-1:/", "gpu gpu-1:0"} {
		if c := by[name]; c.GetState() != factoryv1.HealthCheckState_HEALTH_CHECK_STATE_OK || !c.GetOk() {
			t.Errorf("ONLINE %s: %v", name, c)
		}
	}

	clock.Advance(26 * time.Second) // past two missed heartbeats and a half: STALE
	by, h = healthOf(t, ops, "probe gpu-1:litellm")
	for _, name := range []string{"probe gpu-1:litellm", "disk gpu-1:/", "gpu gpu-1:0"} {
		c := by[name]
		if c.GetOk() || c.GetState() != factoryv1.HealthCheckState_HEALTH_CHECK_STATE_UNKNOWN {
			t.Errorf("STALE host's %s: ok=%v state=%v, want UNKNOWN and not ok", name, c.GetOk(), c.GetState())
		}
		if c.GetAge().AsDuration() != 26*time.Second || !strings.Contains(c.GetDetail(), "26s old") || !strings.Contains(c.GetDetail(), "STALE") {
			t.Errorf("STALE host's %s: age %v detail %q, want 26s and the host's state", name, c.GetAge().AsDuration(), c.GetDetail())
		}
	}
	// The node check fails, and the three readings are unknown: four.
	if h.GetFailed() != 4 || h.GetUnknown() != 3 {
		t.Errorf("STALE host: failed %d unknown %d, want 4 and 3", h.GetFailed(), h.GetUnknown())
	}
}

// NVML failing on a host shows as a failing GPU check with the error,
// not as no GPU line at all; a host that reported GPUs and now reports
// none fails the same check.
func TestNVMLFailureAndGoneGPUsFailHealth(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	ops := b.clientsAs(t, b.operator).f
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	broken, _, err := connect(ctx, t, ops, "gpu-broken")
	if err != nil {
		t.Fatal(err)
	}
	sendTelemetry(t, broken, &factoryv1.Telemetry{GpuError: "no GPU: NVML init: Driver/library version mismatch",
		NvmlError: "NVML init: Driver/library version mismatch"})
	by, _ := healthOf(t, ops, "gpu gpu-broken")
	if c := by["gpu gpu-broken"]; c.GetOk() || !strings.Contains(c.GetDetail(), "version mismatch") {
		t.Errorf("NVML failing: %v, want a failing check with the error", c)
	}

	gone, _, err := connect(ctx, t, ops, "gpu-2")
	if err != nil {
		t.Fatal(err)
	}
	sendTelemetry(t, gone, &factoryv1.Telemetry{Gpus: []*factoryv1.GpuDevice{{Index: 0, Name: "H100", MemoryTotalBytes: 80 << 30}}})
	healthOf(t, ops, "gpu gpu-2:0")
	sendTelemetry(t, gone, &factoryv1.Telemetry{GpuError: "no GPU: no device"})
	by, _ = healthOf(t, ops, "gpu gpu-2")
	if c := by["gpu gpu-2"]; c.GetOk() || !strings.Contains(c.GetDetail(), "1 of the 1 GPU(s)") {
		t.Errorf("GPU gone: %v, want a failing check", c)
	}
	// A host that never had a GPU has no GPU check.
	none, _, err := connect(ctx, t, ops, "cpu-1")
	if err != nil {
		t.Fatal(err)
	}
	sendTelemetry(t, none, &factoryv1.Telemetry{GpuError: "no GPU: NVML init: Library Not Found", Probes: []*factoryv1.ProbeResult{{Name: "p", Ok: true}}})
	by, _ = healthOf(t, ops, "probe cpu-1:p")
	if c, ok := by["gpu cpu-1"]; ok {
		t.Errorf("a host without NVIDIA's library: %v, want no GPU check", c)
	}
	// A device whose readings fail fails its own check.
	sendTelemetry(t, gone, &factoryv1.Telemetry{Gpus: []*factoryv1.GpuDevice{{Index: 0, Name: "H100", Error: "GPU is lost (mem_v2: GPU is lost)"}}})
	waitFor(t, func() bool {
		by, _ = healthOf(t, ops, "gpu gpu-2:0")
		return by["gpu gpu-2"] == nil
	})
	if c := by["gpu gpu-2:0"]; c.GetOk() || !strings.Contains(c.GetDetail(), "lost") {
		t.Errorf("lost GPU: %v", c)
	}
}

// dfPercent is what df prints in its Use% column for path (rounded up),
// or -1 where df cannot say.
func dfPercent(t *testing.T, path string) int {
	out, err := exec.Command("df", "--output=pcent", path).Output()
	if err != nil {
		return -1
	}
	f := strings.Fields(string(out))
	n, err := strconv.Atoi(strings.TrimSuffix(f[len(f)-1], "%"))
	if err != nil {
		return -1
	}
	return n
}

// The disk health check's number is df's: used / (used + available),
// checked on the test's own filesystem and on a disk whose reserved blocks
// make the difference (used/total would say 80%, df says 84.2%).
func TestDiskUsageIsDfs(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	ops := b.clientsAs(t, b.operator).f
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	bs := uint64(st.Bsize)
	total, used, avail := st.Blocks*bs, (st.Blocks-st.Bfree)*bs, st.Bavail*bs
	want := float64(used) * 100 / float64(used+avail)
	if df := dfPercent(t, dir); df >= 0 && int(want+0.999999) != df {
		t.Fatalf("statfs gives %.2f%%, df says %d%%: the test's own arithmetic is off", want, df)
	}
	stream, _, err := connect(ctx, t, ops, "gpu-1")
	if err != nil {
		t.Fatal(err)
	}
	sendTelemetry(t, stream, &factoryv1.Telemetry{Disks: []*factoryv1.DiskUsage{
		{Path: dir, TotalBytes: total, UsedBytes: used, AvailableBytes: avail},
		{Path: "/reserved", TotalBytes: 100 << 30, UsedBytes: 80 << 30, AvailableBytes: 15 << 30},
	}})
	by, _ := healthOf(t, ops, "disk gpu-1:"+dir)
	if got, w := by["disk gpu-1:"+dir].GetDetail(), fmt.Sprintf("%.1f%% used", want); !strings.HasPrefix(got, w) {
		t.Errorf("own filesystem: %q, want %q (df's)", got, w)
	}
	if c := by["disk gpu-1:/reserved"]; !strings.HasPrefix(c.GetDetail(), "84.2% used") || !c.GetOk() {
		t.Errorf("reserved blocks: %v, want 84.2%% used (under 85%%)", c)
	}
}

// A watcher hears STALE when the threshold passes, not on a polling
// tick: the server wakes at the earliest threshold any node crosses.
func TestWatchFleetHearsStaleAtTheThreshold(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	ops := b.clientsAs(t, b.operator).f
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, cfg, err := connect(ctx, t, ops, "gpu-1")
	if err != nil {
		t.Fatal(err)
	}
	interval := cfg.GetHeartbeatInterval().AsDuration()
	watch, err := ops.WatchFleet(ctx, &factoryv1.WatchFleetRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil || len(first.GetNodes()) != 1 || first.GetNodes()[0].GetState() != factoryv1.NodeState_NODE_STATE_ONLINE {
		t.Fatalf("first view %v, %v", first, err)
	}
	// A heartbeat moves the threshold on; a wake-up that changes no
	// state sends nothing.
	clock.Advance(interval)
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Heartbeat{Heartbeat: &factoryv1.Heartbeat{SentAt: timestamppb.Now()}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		n, _ := ops.ListNodes(ctx, &factoryv1.ListNodesRequest{})
		return n.GetNodes()[0].GetLastSeen().AsTime().Equal(clock.Now())
	})
	// STALE is due 2.5 intervals after the heartbeat; move just past it.
	clock.Advance(interval*5/2 + time.Millisecond)
	got := make(chan factoryv1.NodeState, 1)
	go func() {
		for {
			v, err := watch.Recv()
			if err != nil {
				return
			}
			if s := v.GetNodes()[0].GetState(); s != factoryv1.NodeState_NODE_STATE_ONLINE {
				got <- s
				return
			}
		}
	}()
	// The old server re-read on a 5 s wall-clock tick; the threshold is
	// heard as soon as the clock passes it.
	select {
	case s := <-got:
		if s != factoryv1.NodeState_NODE_STATE_STALE {
			t.Fatalf("watcher heard %v, want STALE", s)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the watcher did not hear STALE within 2s of the threshold passing")
	}
}

// ForgetNode removes a gone host, its agents and their placements, so
// health stops failing on it; an ONLINE host takes force; it is audited.
func TestForgetNodeRemovesAGoneHost(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	ops := b.clientsAs(t, b.operator).f
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := ops.PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: "forge", Host: "gpu-gone"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := connect(ctx, t, ops, "gpu-gone", "forge"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := connect(ctx, t, ops, "gpu-live"); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.ForgetNode(ctx, &factoryv1.ForgetNodeRequest{Host: "gpu-gone"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("forgetting an ONLINE host: %v, want FAILED_PRECONDITION", err)
	}
	clock.Advance(6 * time.Minute) // both OFFLINE
	if h, _ := ops.GetHealth(ctx, &factoryv1.GetHealthRequest{}); h.GetFailed() != 2 {
		t.Fatalf("two OFFLINE hosts: %d failed checks, want 2", h.GetFailed())
	}
	res, err := ops.ForgetNode(ctx, &factoryv1.ForgetNodeRequest{Host: "gpu-gone"})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetNode().GetHost() != "gpu-gone" || res.GetNode().GetState() != factoryv1.NodeState_NODE_STATE_OFFLINE ||
		strings.Join(res.GetUnplacedAgents(), ",") != "forge" {
		t.Errorf("forget: %v", res)
	}
	nodes, _ := ops.ListNodes(ctx, &factoryv1.ListNodesRequest{})
	if len(nodes.GetNodes()) != 1 || nodes.GetNodes()[0].GetHost() != "gpu-live" {
		t.Errorf("nodes after forget: %v", nodes.GetNodes())
	}
	agents, _ := ops.ListAgents(ctx, &factoryv1.ListAgentsRequest{})
	if len(agents.GetAgents()) != 0 {
		t.Errorf("agents after forget: %v", agents.GetAgents())
	}
	pl, _ := ops.ListPlacements(ctx, &factoryv1.ListPlacementsRequest{})
	if len(pl.GetPlacements()) != 0 {
		t.Errorf("placements after forget: %v", pl.GetPlacements())
	}
	if h, _ := ops.GetHealth(ctx, &factoryv1.GetHealthRequest{}); h.GetFailed() != 1 {
		t.Errorf("after forgetting one: %d failed, want 1 (gpu-live)", h.GetFailed())
	}
	if _, err := ops.ForgetNode(ctx, &factoryv1.ForgetNodeRequest{Host: "gpu-gone"}); status.Code(err) != codes.NotFound {
		t.Errorf("forgetting it again: %v, want NOT_FOUND", err)
	}
	clock.Advance(-6 * time.Minute)
	live, _, err := connect(ctx, t, ops, "gpu-live")
	if err != nil {
		t.Fatal(err)
	}
	_ = live
	if _, err := ops.ForgetNode(ctx, &factoryv1.ForgetNodeRequest{Host: "gpu-live", Force: true}); err != nil {
		t.Errorf("forced forget of an ONLINE host: %v", err)
	}
	found := false
	for _, e := range auditOf(t, b, &factoryv1.ListAuditRequest{}) {
		if e.GetRpc() == factoryv1.FleetService_ForgetNode_FullMethodName && e.GetTarget() == "node gpu-gone" {
			found = strings.Contains(e.GetBeforeJson(), "forge") && strings.Contains(e.GetBeforeJson(), "OFFLINE")
		}
	}
	if !found {
		t.Error("no audit entry for forgetting gpu-gone, with its agents and state")
	}
	// Sidecars and agents may not forget hosts.
	for _, role := range []store.Role{store.RoleSidecar, store.RoleAgent} {
		secret, _ := b.mintToken(t, role, "gpu-live")
		if _, err := b.clientsAs(t, secret).f.ForgetNode(ctx, &factoryv1.ForgetNodeRequest{Host: "gpu-live", Force: true}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s forgetting a host: %v, want PERMISSION_DENIED", role, err)
		}
	}
}

// answerCommands plays a sidecar: every command on stream succeeds.
func answerCommands(t *testing.T, stream factoryv1.FleetService_ConnectClient) {
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			if c := m.GetCommand(); c != nil {
				_ = stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_CommandResult{CommandResult: &factoryv1.CommandResult{Id: c.GetId(), Ok: true}}})
			}
		}
	}()
}

// A drained host takes no new placement; undrain (audited) makes it
// eligible again.
func TestUndrainRestoresPlacementEligibility(t *testing.T) {
	b := setup(t, nil)
	ops := b.clientsAs(t, b.operator).f
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, _, err := connect(ctx, t, ops, "gpu-1")
	if err != nil {
		t.Fatal(err)
	}
	answerCommands(t, stream)
	if _, err := ops.SendCommand(ctx, &factoryv1.SendCommandRequest{Host: "gpu-1", Command: &factoryv1.SendCommandRequest_Drain{Drain: &factoryv1.DrainHost{}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: "forge", Host: "gpu-1"}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "undrain") {
		t.Fatalf("placing on a drained host: %v, want FAILED_PRECONDITION saying undrain", err)
	}
	if _, err := ops.SendCommand(ctx, &factoryv1.SendCommandRequest{Host: "gpu-1", Command: &factoryv1.SendCommandRequest_Undrain{Undrain: &factoryv1.UndrainHost{}}}); err != nil {
		t.Fatal(err)
	}
	if nodeDrained(t, ops, "gpu-1") {
		t.Error("still drained after undrain")
	}
	if _, err := ops.PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: "forge", Host: "gpu-1"}); err != nil {
		t.Errorf("placing after undrain: %v", err)
	}
	undrains := 0
	for _, e := range auditOf(t, b, &factoryv1.ListAuditRequest{}) {
		if e.GetRpc() == factoryv1.FleetService_SendCommand_FullMethodName && strings.Contains(e.GetAfterJson()+e.GetBeforeJson()+e.GetDetail(), `"undrain":true`) {
			undrains++
		}
	}
	if undrains != 1 {
		t.Errorf("%d audited undrains, want 1", undrains)
	}
}

func nodeDrained(t *testing.T, c factoryv1.FleetServiceClient, host string) bool {
	t.Helper()
	resp, err := c.ListNodes(context.Background(), &factoryv1.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range resp.GetNodes() {
		if n.GetHost() == host {
			return n.GetDrained()
		}
	}
	return false
}

// The digest's disk line uses df's number: 81 used and 14 available
// (5 reserved) is 85%, where used / total would say 81% and stay quiet.
func TestDigestDiskLineIsDfs(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	reg := fleet.New(clock, fleet.Config{})
	if err := reg.Register(fleet.Hello{Host: "gpu-1"}); err != nil {
		t.Fatal(err)
	}
	const g = 1 << 30
	if err := reg.Telemetry("gpu-1", &factoryv1.Telemetry{Disks: []*factoryv1.DiskUsage{{Path: "/", TotalBytes: 100 * g, UsedBytes: 81 * g, AvailableBytes: 14 * g}}}); err != nil {
		t.Fatal(err)
	}
	lines, err := FleetInfra{Fleet: reg}.Infrastructure(context.Background())
	if err != nil || len(lines) != 1 || lines[0] != "gpu-1 disk /: 85% used, 14.0 GiB free" {
		t.Errorf("digest lines %q, %v", lines, err)
	}
}
