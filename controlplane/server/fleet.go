package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Health thresholds of GetHealth (the runbook's health-check script).
const (
	// diskFullPercent is the disk usage at which a disk check fails.
	diskFullPercent = 85
	// A GPU whose used memory reaches gpuFullNum/gpuFullDen of its total
	// fails: a model swap into it would run out of memory.
	gpuFullNum, gpuFullDen = 23, 24
)

// fleetServer adapts controlplane/fleet to FleetService.
type fleetServer struct {
	factoryv1.UnimplementedFleetServiceServer
	fleet *fleet.Registry
	// placements decide which agents a Hello may declare; nil registers
	// none a sidecar token declares (fail closed).
	placements *fleet.Placements
	// events stores the events sidecars must not lose; nil leaves them
	// unacked, so sidecars keep them spooled.
	events *fleet.Events
	// history stores a downsampled copy of the telemetry; nil keeps only
	// the latest readings, in memory.
	history *fleet.History
	// cmds carries operators' commands to the connected sidecars.
	cmds     *fleet.Commands
	q        *queue.Service
	log      *slog.Logger
	stopping <-chan struct{}
	// budget, when set, tells sidecars of the emergency stop
	// (fleet_stop.go).
	budget *budget.Service
}

func (s *fleetServer) err(ctx context.Context, err error) error { return toStatus(ctx, s.log, err) }

func (s *fleetServer) ready() error {
	if s.fleet == nil {
		return status.Error(codes.Unimplemented, "this control plane runs no fleet service")
	}
	return nil
}

// Connect registers the sidecar on its Hello, answers with the config and
// then records heartbeats and telemetry until the stream ends.
func (s *fleetServer) Connect(stream factoryv1.FleetService_ConnectServer) error {
	if err := s.ready(); err != nil {
		return err
	}
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.FailedPrecondition, "the first message on a Connect stream must be a Hello")
	}
	// A sidecar token speaks for one host only: its subject. Checked here
	// because the host is in the stream's first message, not in metadata.
	c, ok := access.FromContext(ctx)
	if ok && c.Role == store.RoleSidecar && c.Subject != hello.GetHost() {
		return status.Errorf(codes.PermissionDenied, "sidecar %s may not connect as host %s", c.Subject, hello.GetHost())
	}
	admitted, refused, err := s.admit(ctx, helloFromProto(hello), ok && c.Role == store.RoleOperator)
	if err != nil {
		return s.err(ctx, err)
	}
	if err := s.fleet.Register(admitted); err != nil {
		return s.err(ctx, err)
	}
	host := hello.GetHost()
	defer s.fleet.Disconnected(host)
	var cmds <-chan fleet.Command
	if s.cmds != nil {
		var detach func()
		cmds, detach = s.cmds.Attach(host)
		defer detach()
	}
	interval := s.fleet.Config().HeartbeatInterval
	if err := stream.Send(&factoryv1.ConnectResponse{Config: &factoryv1.SidecarConfig{
		HeartbeatInterval: durationpb.New(interval), TelemetryInterval: durationpb.New(interval),
		RefusedAgents: refusedToProto(refused),
	}}); err != nil {
		return err
	}
	stops, unwatch, toldStopped, err := s.watchStop(ctx, stream)
	if err != nil {
		return err
	}
	defer unwatch()
	msgs := make(chan *factoryv1.ConnectRequest)
	errs := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				errs <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			// Closed: the client went away, or its token stopped working
			// (streams.go answers with the reason).
			return status.FromContextError(ctx.Err()).Err()
		case <-s.stopping:
			// Shutdown: the sidecar reconnects to this replica or another.
			return status.Error(codes.Unavailable, "the control plane is shutting down")
		case err := <-errs:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case c := <-cmds:
			if err := stream.Send(&factoryv1.ConnectResponse{Command: commandToProto(c)}); err != nil {
				return err
			}
		case sig := <-stops:
			if !stopChanged(toldStopped, sig) {
				continue
			}
			if err := stream.Send(stopMessage(sig)); err != nil {
				return err
			}
			toldStopped = sig.Stopped
		case m := <-msgs:
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err() // nothing a closed stream sent is stored
			}
			switch msg := m.GetMsg().(type) {
			case *factoryv1.ConnectRequest_Heartbeat:
				if err = s.fleet.Heartbeat(host); err == nil {
					heartbeatLatency.record(time.Since(msg.Heartbeat.GetSentAt().AsTime()))
				}
			case *factoryv1.ConnectRequest_Telemetry:
				// History first: once the live view shows a reading, the
				// history has taken it (or decided to skip it) already.
				s.recordHistory(ctx, host, msg.Telemetry)
				s.fleet.ReportedGPUs(host, len(msg.Telemetry.GetGpus()))
				err = s.fleet.Telemetry(host, msg.Telemetry)
			case *factoryv1.ConnectRequest_Events:
				err = s.storeEvents(ctx, stream, host, msg.Events.GetEvents())
			case *factoryv1.ConnectRequest_CommandResult:
				if s.cmds != nil {
					s.cmds.Deliver(commandResultFromProto(msg.CommandResult))
				}
			case *factoryv1.ConnectRequest_Hello:
				return status.Error(codes.FailedPrecondition, "Hello is sent once, as a Connect stream's first message")
			}
			if err != nil {
				return s.err(ctx, err)
			}
		}
	}
}

// recordHistory stores host's reading in the telemetry history when the
// sampling interval allows; most readings are dropped before they are
// marshalled. A failed write is logged, not returned: the reading is
// already live in memory, and losing one history sample is no reason to
// drop the sidecar's stream.
func (s *fleetServer) recordHistory(ctx context.Context, host string, t *factoryv1.Telemetry) {
	if s.history == nil {
		return
	}
	_, err := s.history.Record(ctx, host, func() (string, error) {
		b, err := protojson.Marshal(t)
		return string(b), err
	})
	if err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "storing telemetry history failed", "host", host, "err", err)
	}
}

// storeEvents stores a batch of a host's events and acks every id in it,
// replays included: the ack is only sent after the store has committed, so
// an acked event is never lost, and a replayed id is stored once.
func (s *fleetServer) storeEvents(ctx context.Context, stream factoryv1.FleetService_ConnectServer, host string, in []*factoryv1.FleetEvent) error {
	if s.events == nil {
		return nil
	}
	evs := make([]*store.FleetEvent, len(in))
	ids := make([]string, len(in))
	for i, e := range in {
		evs[i] = &store.FleetEvent{ID: e.GetId(), Host: host, Kind: e.GetKind(), Time: e.GetTime().AsTime(), Attributes: e.GetAttributes()}
		ids[i] = e.GetId()
	}
	if _, err := s.events.Record(ctx, host, evs); err != nil {
		return err
	}
	return stream.Send(&factoryv1.ConnectResponse{EventAck: &factoryv1.EventAck{Ids: ids}})
}

func helloFromProto(h *factoryv1.Hello) fleet.Hello {
	out := fleet.Hello{Host: h.GetHost(), Version: h.GetVersion(), Labels: h.GetLabels(), Capabilities: h.GetCapabilities(), Drained: h.GetDrained()}
	for _, a := range h.GetAgents() {
		role := ""
		if rs := a.GetRoles(); len(rs) > 0 {
			role = rs[0]
		}
		out.Agents = append(out.Agents, fleet.AgentInfo{Name: a.GetName(), Role: role, Capabilities: a.GetRoles()})
	}
	return out
}

// ListNodes lists every node.
func (s *fleetServer) ListNodes(ctx context.Context, _ *factoryv1.ListNodesRequest) (*factoryv1.ListNodesResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	nodes := nodesToProto(s.fleet.Nodes())
	if s.events != nil {
		swaps, err := s.events.SwapRates(ctx)
		if err != nil {
			return nil, s.err(ctx, err)
		}
		for _, n := range nodes {
			n.ModelSwapsLastHour = int32(swaps[n.GetHost()])
		}
	}
	return &factoryv1.ListNodesResponse{Nodes: nodes}, nil
}

// ListAgents lists the agents, optionally of one host.
func (s *fleetServer) ListAgents(_ context.Context, req *factoryv1.ListAgentsRequest) (*factoryv1.ListAgentsResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	var out []*factoryv1.Agent
	for _, a := range agentsToProto(s.fleet.Agents()) {
		if req.GetHost() == "" || a.GetHost() == req.GetHost() {
			out = append(out, a)
		}
	}
	return &factoryv1.ListAgentsResponse{Agents: out}, nil
}

// GetHealth runs every check.
func (s *fleetServer) GetHealth(ctx context.Context, _ *factoryv1.GetHealthRequest) (*factoryv1.GetHealthResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	h := &healthChecks{}
	if s.q == nil {
		h.add("queue", false, "no queue service")
	} else if st, _, err := s.q.Stats(ctx); err != nil {
		h.add("queue", false, "store unreachable: "+err.Error())
	} else {
		h.add("queue", true, fmt.Sprintf("store reachable; %d tasks", totalTasks(st)))
	}
	var swaps map[string]int
	if s.events != nil {
		var err error
		if swaps, err = s.events.SwapRates(ctx); err != nil {
			h.add("model swaps", false, "store unreachable: "+err.Error())
		}
	}
	now := s.fleet.Clock().Now()
	for _, n := range s.fleet.Nodes() {
		h.add("node "+n.Host, n.State == fleet.StateOnline, fmt.Sprintf("%s, last seen %s", n.State, n.LastSeen.UTC().Format(time.RFC3339)))
		if swaps != nil {
			// A host swapping models this often spends its GPU time
			// loading weights instead of serving agents.
			c := swaps[n.Host]
			h.add("model swaps "+n.Host, c < fleet.MaxSwapsPerHour,
				fmt.Sprintf("%d in the last hour (limit %d)", c, fleet.MaxSwapsPerHour))
		}
		nodeReadingChecks(h, n, now)
	}
	return h.response(), nil
}

// healthChecks collects GetHealth's checks.
type healthChecks struct{ checks []*factoryv1.HealthCheck }

func (h *healthChecks) add(name string, ok bool, detail string) *factoryv1.HealthCheck {
	c := &factoryv1.HealthCheck{Name: name, Ok: ok, Detail: detail, State: factoryv1.HealthCheckState_HEALTH_CHECK_STATE_FAILED}
	if ok {
		c.State = factoryv1.HealthCheckState_HEALTH_CHECK_STATE_OK
	}
	h.checks = append(h.checks, c)
	return c
}

func (h *healthChecks) response() *factoryv1.GetHealthResponse {
	out := &factoryv1.GetHealthResponse{Checks: h.checks}
	for _, c := range h.checks {
		if !c.GetOk() {
			out.Failed++
		}
		if c.GetState() == factoryv1.HealthCheckState_HEALTH_CHECK_STATE_UNKNOWN {
			out.Unknown++
		}
	}
	return out
}

// nodeReadingChecks adds the checks of a node's latest readings: each
// probe, disk and GPU, and NVML itself. A node that is not ONLINE has no
// current readings: each check is UNKNOWN, with the age of the reading it
// would have judged, and is not healthy.
func nodeReadingChecks(h *healthChecks, n fleet.Node, now time.Time) {
	t, _ := n.Telemetry.(*factoryv1.Telemetry)
	var age time.Duration
	if !n.TelemetryAt.IsZero() {
		age = max(now.Sub(n.TelemetryAt), 0)
	}
	add := func(name string, ok bool, detail string) {
		c := h.add(name, ok, detail)
		c.Age = durationpb.New(age)
		if n.State != fleet.StateOnline {
			c.Ok, c.State = false, factoryv1.HealthCheckState_HEALTH_CHECK_STATE_UNKNOWN
			c.Detail = fmt.Sprintf("unknown: host %s, reading %s old (was: %s)", n.State, age.Round(time.Second), detail)
		}
	}
	for _, p := range t.GetProbes() {
		add(fmt.Sprintf("probe %s:%s", n.Host, p.GetName()), p.GetOk(), p.GetDetail())
	}
	for _, d := range t.GetDisks() {
		name := fmt.Sprintf("disk %s:%s", n.Host, d.GetPath())
		if d.GetError() != "" || d.GetUsedBytes()+d.GetAvailableBytes() == 0 {
			add(name, false, "unreadable: "+d.GetError())
			continue
		}
		pct := fleet.DiskUsedRatio(d.GetUsedBytes(), d.GetAvailableBytes()) * 100
		add(name, pct < diskFullPercent, fmt.Sprintf("%.1f%% used (limit %d%%)", pct, diskFullPercent))
	}
	// NVML failing, or fewer GPUs than the host reported before: the
	// runbook's "GPU available" check. A host with no NVIDIA library and
	// no GPU ever reported has no GPU check.
	switch gpus := len(t.GetGpus()); {
	case t.GetNvmlError() != "":
		add("gpu "+n.Host, false, "NVML failing: "+t.GetNvmlError())
	case gpus < n.GPUsReported:
		detail := fmt.Sprintf("%d of the %d GPU(s) this host reported are gone", n.GPUsReported-gpus, n.GPUsReported)
		if e := t.GetGpuError(); e != "" {
			detail += ": " + e
		}
		add("gpu "+n.Host, false, detail)
	}
	for _, g := range t.GetGpus() {
		name := fmt.Sprintf("gpu %s:%d", n.Host, g.GetIndex())
		if e := g.GetError(); e != "" {
			add(name, false, fmt.Sprintf("%s: %s", g.GetName(), e))
			continue
		}
		used, total := g.GetMemoryUsedBytes(), g.GetMemoryTotalBytes()
		add(name, total > 0 && used*gpuFullDen < total*gpuFullNum,
			fmt.Sprintf("%s: %d/%d MiB VRAM", g.GetName(), used>>20, total>>20))
	}
}

func totalTasks(st *store.QueueStats) int64 {
	var n int64
	for _, c := range st.Counts {
		n += c
	}
	return n
}

// WatchFleet sends the view now, then again on every change: a signalled
// one (a Hello, telemetry, a disconnect) at once, and a liveness change by
// the clock alone (STALE, OFFLINE) at the moment it is due, by a timer set
// to the earliest threshold any node or agent crosses next. A timer that
// finds no state changed (a heartbeat moved the threshold) sends nothing.
func (s *fleetServer) WatchFleet(_ *factoryv1.WatchFleetRequest, stream factoryv1.FleetService_WatchFleetServer) error {
	if err := s.ready(); err != nil {
		return err
	}
	ch, cancel := s.fleet.Subscribe()
	defer cancel()
	var sent string
	send := true
	for {
		nodes, agents := s.fleet.Nodes(), s.fleet.Agents()
		if states := livenessKey(nodes, agents); send || states != sent {
			if err := stream.Send(&factoryv1.WatchFleetResponse{Nodes: nodesToProto(nodes), Agents: agentsToProto(agents)}); err != nil {
				return err
			}
			sent = states
		}
		wake, stop := s.fleet.LivenessTimer()
		select {
		case <-stream.Context().Done():
			stop()
			return nil
		case <-s.stopping:
			stop()
			return status.Error(codes.Unavailable, "the control plane is shutting down")
		case <-ch:
			send = true
		case <-wake:
			send = false
		}
		stop()
	}
}

// livenessKey sums up every node's and agent's state, to tell whether a
// timer's wake-up changed any.
func livenessKey(nodes []fleet.Node, agents []fleet.Agent) string {
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "n%s=%d;", n.Host, n.State)
	}
	for _, a := range agents {
		fmt.Fprintf(&b, "a%s=%d;", a.Name, a.State)
	}
	return b.String()
}

func stateToProto(s fleet.State) factoryv1.NodeState {
	switch s {
	case fleet.StateOnline:
		return factoryv1.NodeState_NODE_STATE_ONLINE
	case fleet.StateStale:
		return factoryv1.NodeState_NODE_STATE_STALE
	case fleet.StateOffline:
		return factoryv1.NodeState_NODE_STATE_OFFLINE
	}
	return factoryv1.NodeState_NODE_STATE_UNSPECIFIED
}

func tsOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func nodesToProto(nodes []fleet.Node) []*factoryv1.Node {
	out := make([]*factoryv1.Node, len(nodes))
	for i, n := range nodes {
		t, _ := n.Telemetry.(*factoryv1.Telemetry)
		out[i] = &factoryv1.Node{Host: n.Host, State: stateToProto(n.State), Version: n.Version, Labels: n.Labels,
			Agents: n.Agents, Capabilities: n.Capabilities, Connected: n.Connected, ConnectedAt: tsOrNil(n.ConnectedAt),
			LastSeen: tsOrNil(n.LastSeen), Telemetry: t, TelemetryAt: tsOrNil(n.TelemetryAt), Drained: n.Drained}
	}
	return out
}

func agentsToProto(agents []fleet.Agent) []*factoryv1.Agent {
	out := make([]*factoryv1.Agent, len(agents))
	for i, a := range agents {
		out[i] = &factoryv1.Agent{Name: a.Name, State: stateToProto(a.State), Host: a.Host, Role: a.Role,
			LastSeen: tsOrNil(a.LastSeen), CurrentTask: a.CurrentTask}
	}
	return out
}

// defaultHistoryPage is GetNodeHistory's page size when the request leaves
// it 0: the proto's upper bound, so one call covers most of a day.
const defaultHistoryPage = 1000

// GetNodeHistory returns a host's stored readings in a window.
func (s *fleetServer) GetNodeHistory(ctx context.Context, req *factoryv1.GetNodeHistoryRequest) (*factoryv1.GetNodeHistoryResponse, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if s.history == nil {
		return nil, status.Error(codes.Unimplemented, "this control plane keeps no telemetry history")
	}
	limit := int(req.GetPageSize())
	if limit <= 0 {
		limit = defaultHistoryPage
	}
	p := &store.TelemetryListParams{Host: req.GetHost(), Limit: limit + 1}
	if req.GetSince() != nil {
		p.Since = req.GetSince().AsTime()
	}
	if req.GetUntil() != nil {
		p.Until = req.GetUntil().AsTime()
	}
	samples, err := s.history.List(ctx, p)
	if err != nil {
		return nil, s.err(ctx, err)
	}
	resp := &factoryv1.GetNodeHistoryResponse{}
	// One more than the page was asked for, so a full page says whether
	// anything is left without a second query.
	if len(samples) > limit {
		samples, resp.Truncated = samples[:limit], true
	}
	resp.Readings = make([]*factoryv1.NodeReading, 0, len(samples))
	for _, x := range samples {
		t := &factoryv1.Telemetry{}
		// A reading stored by an older sidecar may carry fields this build
		// does not know; they are skipped, not an error.
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(x.JSON), t); err != nil {
			return nil, s.err(ctx, fmt.Errorf("telemetry history of %s at %s: %w", x.Host, x.Time.Format(time.RFC3339), err))
		}
		resp.Readings = append(resp.Readings, &factoryv1.NodeReading{Time: timestamppb.New(x.Time), Telemetry: t})
	}
	return resp, nil
}
