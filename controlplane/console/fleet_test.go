package console

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/access"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// fleetTestNow is the clock of the page tests: every "ago" is fixed.
var fleetTestNow = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

// pageTestServer is a console whose API clients are the fakes given, for
// rendering pages from hand-built answers.
func pageTestServer(t *testing.T, fleet factoryv1.FleetServiceClient, ops factoryv1.OpsServiceClient) *Server {
	t.Helper()
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Now: func() time.Time { return fleetTestNow }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.WithDefaults()
	return &Server{cfg: cfg, log: cfg.Logger, pages: pages, fleet: fleet, ops: ops}
}

// pageTestRequest is a signed-in request to target; form, when set, is
// its parsed POST body.
func pageTestRequest(method, target string, form url.Values) (*request, *httptest.ResponseRecorder) {
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(method, target, nil)
	if form != nil {
		r.PostForm = form
	}
	return &request{w: rec, r: r, ctx: context.Background(), who: access.Caller{Subject: "ops"}, csrf: "csrf-token"}, rec
}

type fakeFleet struct {
	factoryv1.FleetServiceClient
	nodes  []*factoryv1.Node
	agents []*factoryv1.Agent
	health *factoryv1.GetHealthResponse
}

func (f *fakeFleet) ListNodes(context.Context, *factoryv1.ListNodesRequest, ...grpc.CallOption) (*factoryv1.ListNodesResponse, error) {
	return &factoryv1.ListNodesResponse{Nodes: f.nodes}, nil
}

func (f *fakeFleet) ListAgents(context.Context, *factoryv1.ListAgentsRequest, ...grpc.CallOption) (*factoryv1.ListAgentsResponse, error) {
	return &factoryv1.ListAgentsResponse{Agents: f.agents}, nil
}

func (f *fakeFleet) GetHealth(context.Context, *factoryv1.GetHealthRequest, ...grpc.CallOption) (*factoryv1.GetHealthResponse, error) {
	if f.health == nil {
		return &factoryv1.GetHealthResponse{}, nil
	}
	return f.health, nil
}

func fleetTestAgo(d time.Duration) *timestamppb.Timestamp {
	return timestamppb.New(fleetTestNow.Add(-d))
}

// inferenceHost is a host like the runbook's: an H100 serving two agents'
// models (the readings are those of shared/fixtures/nvml), a disk nearly
// full, one probe failing.
func inferenceHost() *factoryv1.Node {
	const gib = 1 << 30
	return &factoryv1.Node{
		Host: "gpu-1", State: factoryv1.NodeState_NODE_STATE_ONLINE, Version: "1.4.0",
		Labels: map[string]string{"site": "akl"}, Agents: []string{"forge", "scout"},
		LastSeen: fleetTestAgo(4 * time.Second), TelemetryAt: fleetTestAgo(12 * time.Second), ModelSwapsLastHour: 23,
		Telemetry: &factoryv1.Telemetry{
			Gpus: []*factoryv1.GpuDevice{{
				Index: 0, Name: "NVIDIA H100 80GB HBM3", MemoryUsedBytes: 82_000_000_000, MemoryTotalBytes: 85_520_809_984,
				UtilizationPercent: 87, TemperatureCelsius: 64, PowerMilliwatts: 412_000, PowerLimitMilliwatts: 700_000,
				Processes: []*factoryv1.GpuProcess{
					{Pid: 4242, UsedMemoryBytes: 61 * gib, Agent: "forge"},
					{Pid: 5151, UsedMemoryBytes: 14 * gib},
				},
			}},
			Disks: []*factoryv1.DiskUsage{{Path: "/", TotalBytes: 1000 * gib, UsedBytes: 910 * gib, AvailableBytes: 90 * gib}},
			Probes: []*factoryv1.ProbeResult{
				{Name: "litellm", Kind: "http", Target: "http://127.0.0.1:4000/health/readiness", Ok: true, Latency: durationpb.New(31 * time.Millisecond)},
				{Name: "qdrant", Kind: "http", Target: "http://127.0.0.1:6333/readyz", Ok: false, Detail: "503 some shards are not ready", Latency: durationpb.New(2 * time.Second)},
			},
		},
	}
}

func TestFleetPageShowsGPUsAndTheAgentsBehindThem(t *testing.T) {
	f := &fakeFleet{
		nodes: []*factoryv1.Node{
			inferenceHost(),
			{Host: "ws-1", State: factoryv1.NodeState_NODE_STATE_STALE, LastSeen: fleetTestAgo(40 * time.Second), TelemetryAt: fleetTestAgo(40 * time.Second),
				Telemetry: &factoryv1.Telemetry{GpuError: "no GPU: NVML not found",
					Disks: []*factoryv1.DiskUsage{{Path: "/srv/models", Error: "no such file or directory"}}}},
		},
		agents: []*factoryv1.Agent{
			{Name: "forge", State: factoryv1.NodeState_NODE_STATE_ONLINE, Host: "gpu-1", Role: "builder", LastSeen: fleetTestAgo(4 * time.Second),
				CurrentTask: "0193b4c2-7d1e-7c3a-9f00-5b2d1c0e4a11"},
			{Name: "scout", State: factoryv1.NodeState_NODE_STATE_OFFLINE, Host: "gpu-1", Role: "researcher", LastSeen: fleetTestAgo(10 * time.Minute)},
		},
		health: &factoryv1.GetHealthResponse{Failed: 1, Checks: []*factoryv1.HealthCheck{
			{Name: "queue", Ok: true}, {Name: "probe gpu-1:qdrant", Detail: "503 some shards are not ready"}}},
	}
	s := pageTestServer(t, f, nil)
	rq, rec := pageTestRequest(http.MethodGet, "/fleet", nil)
	if err := s.fleetPage(rq); err != nil {
		t.Fatal(err)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`<span class="chip ok">1 online</span>`, `<span class="chip bad">1 offline</span>`, // agents
		`<span class="chip warn">1 stale</span>`, // hosts
		`1 of 2 checks failing`, `probe gpu-1:qdrant`,
		`chip s-ONLINE">ONLINE`, `chip s-STALE">STALE`,
		`NVIDIA H100 80GB HBM3`, `<meter min="0" max="81559" low="78160" high="78160" optimum="0" value="78201"`, // MiB
		`<span class="chip bad">76.4 GiB / 79.6 GiB</span>`, // past 23/24 of its memory
		`87%`, `64 °C`, `412 / 700 W`,
		`<a href="#agent-forge">forge</a> <span class="muted">pid 4242 · 61.0 GiB</span>`,
		`no agent</span> <span class="muted">pid 5151`,
		`<span class="chip bad">91%</span>`, `910 GiB / 1000 GiB`,
		`litellm`, `31 ms`, `2s`, `read 12s ago`, `<span class="chip bad">failing</span>`, `503 some shards are not ready`,
		`23 model swaps in the last hour: thrashing`,
		`No GPU readings (no GPU: NVML not found).`,
		`<td class="num"> <span class="chip bad">1 unreadable</span></td>`, `no such file or directory`,
		`<a href="/tasks/0193b4c2-7d1e-7c3a-9f00-5b2d1c0e4a11"`,
		`<tr id="agent-scout">`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(body)
	}
}

func TestFleetPageWithoutGPUsOrReadings(t *testing.T) {
	f := &fakeFleet{nodes: []*factoryv1.Node{{Host: "laptop", State: factoryv1.NodeState_NODE_STATE_ONLINE, LastSeen: fleetTestAgo(time.Second)}}}
	s := pageTestServer(t, f, nil)
	rq, rec := pageTestRequest(http.MethodGet, "/fleet", nil)
	if err := s.fleetPage(rq); err != nil {
		t.Fatal(err)
	}
	body := rec.Body.String()
	for _, want := range []string{"No GPU readings yet.", "No disk is watched (no readings yet).", "No service is probed (no readings yet).", "No agent has connected"} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

// A fleet of many hosts is shown in part, and the page says how much is
// left out; one host stays reachable by name.
func TestFleetPageIsBounded(t *testing.T) {
	f := &fakeFleet{}
	for i := range 230 {
		n := inferenceHost()
		n.Host = fmt.Sprintf("gpu-%03d", i)
		f.nodes = append(f.nodes, n)
		for j := range 2 {
			f.agents = append(f.agents, &factoryv1.Agent{Name: fmt.Sprintf("agent-%03d-%d", i, j), Host: n.Host,
				State: factoryv1.NodeState_NODE_STATE_ONLINE, LastSeen: fleetTestAgo(time.Second)})
		}
	}
	s := pageTestServer(t, f, nil)
	rq, rec := pageTestRequest(http.MethodGet, "/fleet", nil)
	if err := s.fleetPage(rq); err != nil {
		t.Fatal(err)
	}
	body := rec.Body.String()
	for _, want := range []string{"Showing the first 200 hosts; 30 more", "Details above for the first 12 hosts", "Showing the first 200 agents; 260 more", "460 online"} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(body, `href="/fleet?host=gpu-200"`) {
		t.Error("host 201 is in the table")
	}
	if n := len(body); n > 200_000 {
		t.Errorf("the page is %d bytes", n)
	}

	rq, rec = pageTestRequest(http.MethodGet, "/fleet?host=gpu-215", nil)
	if err := s.fleetPage(rq); err != nil {
		t.Fatal(err)
	}
	body = rec.Body.String()
	if !strings.Contains(body, `id="host-gpu-215"`) || !strings.Contains(body, `<tr id="agent-agent-215-1">`) {
		t.Error("the host filter does not show the host's card and agents")
	}
	if strings.Contains(body, `agent-001-0`) {
		t.Error("the host filter shows another host's agents")
	}
}

func TestFleetBytes(t *testing.T) {
	for in, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 85_520_809_984: "79.6 GiB", 1 << 40: "1.0 TiB", 500 << 30: "500 GiB"} {
		if got := fleetBytes(in); got != want {
			t.Errorf("fleetBytes(%d) = %q, want %q", in, got, want)
		}
	}
}

// A host that is not ONLINE shows its probes unknown, not ok, and a
// failing NVML as the reason there are no GPU readings.
func TestFleetPageShowsAStaleHostsProbesUnknown(t *testing.T) {
	stale := inferenceHost()
	stale.State = factoryv1.NodeState_NODE_STATE_STALE
	stale.Telemetry.Probes = stale.Telemetry.Probes[:1] // litellm, ok when read
	stale.Telemetry.Gpus = nil
	stale.Telemetry.NvmlError = "NVML init: Driver/library version mismatch"
	s := pageTestServer(t, &fakeFleet{nodes: []*factoryv1.Node{stale}}, nil)
	rq, rec := pageTestRequest(http.MethodGet, "/fleet", nil)
	if err := s.fleetPage(rq); err != nil {
		t.Fatal(err)
	}
	body := rec.Body.String()
	for _, want := range []string{`1 unknown</span>`, `>unknown</span>`, `NVML failing: NVML init: Driver/library version mismatch`} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(body, `<span class="chip ok">ok</span>`) {
		t.Error("a STALE host's probe shows ok")
	}
}
