package console

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/fleet"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// The fleet page's bounds. A factory has a handful of hosts, but a page
// must stay small whatever it has: the host table stops at fleetMaxHosts,
// the detail cards (every GPU, disk and probe) at fleetMaxHostCards, the
// agent table at fleetMaxAgents, and each says how many it left out.
const (
	fleetMaxHosts     = 200
	fleetMaxHostCards = 12
	fleetMaxAgents    = 200
	fleetMaxFailing   = 20
	// fleetMaxGPUProcs bounds the processes listed per GPU: a GPU may run
	// a thousand, the agents behind the largest few are what an operator
	// looks for.
	fleetMaxGPUProcs = 8
)

// The lines GetHealth draws (controlplane/server's health checks and the
// proto's doc): the page marks the same readings its checks fail.
const (
	// fleetDiskFullPercent: a disk this full fails its check.
	fleetDiskFullPercent = 85
	// fleetGPUFullNum / fleetGPUFullDen: a GPU with this share of its
	// memory in use fails its check (23/24, the gpu_memory_high rule).
	fleetGPUFullNum, fleetGPUFullDen = 23, 24
	// fleetSwapsThrashing: more model swaps an hour than this and the host
	// loads weights instead of serving agents.
	fleetSwapsThrashing = 20
)

func (s *Server) routeFleet(mux *http.ServeMux) {
	mux.Handle("GET /fleet", s.page(s.fleetPage))
}

// fleetData is `factory nodes`, `factory agents`, `factory gpu` and
// `factory health` as one page.
type fleetData struct {
	// Host is the ?host= filter: one host's card and agents.
	Host string
	// HostMissing is set when the filter names no host the fleet knows.
	HostMissing bool

	Hosts      []fleetHost // the host table, at most fleetMaxHosts
	MoreHosts  int         // hosts left out of the table
	Cards      []fleetHost // the detail cards, at most fleetMaxHostCards
	MoreCards  int         // hosts in the table without a card
	HostCounts agentCounts // every host's liveness, shown or not

	Agents      []*factoryv1.Agent
	MoreAgents  int
	AgentCounts agentCounts // every agent's liveness, shown or not

	Health      *factoryv1.GetHealthResponse
	Failing     []*factoryv1.HealthCheck // at most fleetMaxFailing
	MoreFailing int

	// Unavailable names sections this control plane does not serve.
	Unavailable map[string]string
}

// fleetHost is a node with its readings worked out for the page.
type fleetHost struct {
	*factoryv1.Node
	GPUs   []fleetGPU
	Disks  []fleetDisk
	Probes []fleetProbe
	// ProbesOK counts the probes that passed.
	ProbesOK int
	// Unknown: the host is not ONLINE, so its readings are old and say
	// nothing about now (shown unknown, not ok).
	Unknown bool
	// GPUError says why there are no GPU readings ("no GPU").
	GPUError string
	// ReadAt is when the latest readings arrived: every GPU, disk and
	// probe shown is that old.
	ReadAt *timestamppb.Timestamp
	// Thrashing: model swaps above fleetSwapsThrashing in the last hour.
	Thrashing bool
	// WorstDisk is the fullest readable disk's percent used; DiskFull is
	// set when any disk is past the line, DiskUnreadable counts those
	// that could not be read (both fail their health check).
	WorstDisk      int
	DiskFull       bool
	DiskUnreadable int
	// GPUMemMax is the highest GPU memory percent used; GPUAlarm is set
	// when any GPU's memory is past the line.
	GPUMemMax int
	GPUAlarm  bool
}

// fleetGPU is one GPU's readings in the units people read.
type fleetGPU struct {
	*factoryv1.GpuDevice
	UsedMiB, TotalMiB, HighMiB uint64
	MemPercent                 int
	MemFull                    bool
	Used, Total                string
	PowerW, PowerLimitW        uint32
	Procs                      []fleetGPUProc // the largest, at most fleetMaxGPUProcs
	MoreProcs                  int
}

// fleetGPUProc is a compute process on a GPU and the agent behind it,
// when the sidecar could tell (by the agent's pid).
type fleetGPUProc struct {
	Pid   uint32
	Agent string
	Used  string
}

// fleetProbe is one service probe's outcome. Its latency is shown to the
// millisecond: a probe answers in milliseconds, and "now" would say
// nothing.
type fleetProbe struct {
	*factoryv1.ProbeResult
	Took string
	// Unknown: its host is not ONLINE.
	Unknown bool
}

// fleetDisk is one filesystem's usage.
type fleetDisk struct {
	*factoryv1.DiskUsage
	Percent     int
	Full        bool
	Unreadable  bool // its error says why, or it reads as empty
	Used, Total string
}

func (s *Server) fleetPage(rq *request) error {
	host := strings.TrimSpace(rq.r.URL.Query().Get("host"))
	var (
		nodes  *factoryv1.ListNodesResponse
		agents *factoryv1.ListAgentsResponse
		health *factoryv1.GetHealthResponse
		d      = fleetData{Host: host}
	)
	r := newReads(rq.ctx)
	r.must(func(ctx context.Context) (err error) {
		nodes, err = s.fleet.ListNodes(ctx, &factoryv1.ListNodesRequest{})
		return err
	})
	r.must(func(ctx context.Context) (err error) {
		// All agents, even with a host filter: the counts at the top are
		// the fleet's.
		agents, err = s.fleet.ListAgents(ctx, &factoryv1.ListAgentsRequest{})
		return err
	})
	// Health is a summary beside the readings: a control plane that does
	// not serve it still shows its fleet.
	r.optional("health", func(ctx context.Context) (err error) {
		health, err = s.fleet.GetHealth(ctx, &factoryv1.GetHealthRequest{})
		return err
	})
	if err := r.wait(); err != nil {
		return err
	}
	d.Unavailable = r.unavailable
	d.fill(nodes.GetNodes(), agents.GetAgents(), health)
	title := "Fleet"
	if host != "" {
		title = host + " · Fleet"
	}
	return s.render(rq, http.StatusOK, "fleet", view{Title: title, Nav: "fleet", Topics: "fleet"}, d)
}

// fill works out the page from the API's answers, keeping it bounded.
func (d *fleetData) fill(nodes []*factoryv1.Node, agents []*factoryv1.Agent, health *factoryv1.GetHealthResponse) {
	for _, n := range nodes {
		tallyLiveness(&d.HostCounts, n.GetState())
	}
	for _, a := range agents {
		tallyLiveness(&d.AgentCounts, a.GetState())
	}
	if d.Host != "" {
		nodes = filterNodes(nodes, d.Host)
		d.HostMissing = len(nodes) == 0
		var mine []*factoryv1.Agent
		for _, a := range agents {
			if a.GetHost() == d.Host {
				mine = append(mine, a)
			}
		}
		agents = mine
	}
	shown := nodes
	if len(shown) > fleetMaxHosts {
		d.MoreHosts = len(shown) - fleetMaxHosts
		shown = shown[:fleetMaxHosts]
	}
	d.Hosts = make([]fleetHost, len(shown))
	for i, n := range shown {
		d.Hosts[i] = newFleetHost(n)
	}
	d.Cards = d.Hosts
	if len(d.Cards) > fleetMaxHostCards {
		d.MoreCards = len(d.Cards) - fleetMaxHostCards
		d.Cards = d.Cards[:fleetMaxHostCards]
	}
	d.Agents = agents
	if len(d.Agents) > fleetMaxAgents {
		d.MoreAgents = len(d.Agents) - fleetMaxAgents
		d.Agents = d.Agents[:fleetMaxAgents]
	}
	if health != nil {
		d.Health = health
		for _, c := range health.GetChecks() {
			if c.GetOk() {
				continue
			}
			if len(d.Failing) == fleetMaxFailing {
				d.MoreFailing++
				continue
			}
			d.Failing = append(d.Failing, c)
		}
	}
}

func filterNodes(nodes []*factoryv1.Node, host string) []*factoryv1.Node {
	for _, n := range nodes {
		if n.GetHost() == host {
			return []*factoryv1.Node{n}
		}
	}
	return nil
}

// tallyLiveness counts one node's or agent's liveness.
func tallyLiveness(c *agentCounts, st factoryv1.NodeState) {
	switch st {
	case factoryv1.NodeState_NODE_STATE_ONLINE:
		c.Online++
	case factoryv1.NodeState_NODE_STATE_STALE:
		c.Stale++
	default:
		c.Offline++
	}
}

func newFleetHost(n *factoryv1.Node) fleetHost {
	t := n.GetTelemetry()
	h := fleetHost{
		Node:      n,
		GPUError:  t.GetGpuError(),
		ReadAt:    n.GetTelemetryAt(),
		Thrashing: n.GetModelSwapsLastHour() > fleetSwapsThrashing,
		Unknown:   n.GetState() != factoryv1.NodeState_NODE_STATE_ONLINE,
	}
	if e := t.GetNvmlError(); e != "" {
		h.GPUError = "NVML failing: " + e
	}
	for _, g := range t.GetGpus() {
		fg := newFleetGPU(g)
		h.GPUMemMax = max(h.GPUMemMax, fg.MemPercent)
		h.GPUAlarm = h.GPUAlarm || fg.MemFull
		h.GPUs = append(h.GPUs, fg)
	}
	for _, du := range t.GetDisks() {
		fd := fleetDisk{DiskUsage: du, Used: fleetBytes(du.GetUsedBytes()), Total: fleetBytes(du.GetTotalBytes())}
		if du.GetError() != "" || du.GetUsedBytes()+du.GetAvailableBytes() == 0 {
			// An unreadable disk fails its health check, whatever the
			// others read.
			fd.Unreadable = true
			h.DiskUnreadable++
		} else {
			// df's usage, as the health check and the alert judge it.
			ratio := fleet.DiskUsedRatio(du.GetUsedBytes(), du.GetAvailableBytes())
			fd.Percent = min(100, int(ratio*100+0.5))
			fd.Full = ratio*100 >= fleetDiskFullPercent
			h.WorstDisk = max(h.WorstDisk, fd.Percent)
			h.DiskFull = h.DiskFull || fd.Full
		}
		h.Disks = append(h.Disks, fd)
	}
	for _, p := range t.GetProbes() {
		if p.GetOk() {
			h.ProbesOK++
		}
		h.Probes = append(h.Probes, fleetProbe{ProbeResult: p, Took: fleetLatency(p.GetLatency()), Unknown: h.Unknown})
	}
	return h
}

func newFleetGPU(g *factoryv1.GpuDevice) fleetGPU {
	used, total := g.GetMemoryUsedBytes(), g.GetMemoryTotalBytes()
	fg := fleetGPU{
		GpuDevice:   g,
		UsedMiB:     used >> 20,
		TotalMiB:    total >> 20,
		HighMiB:     (total >> 20) * fleetGPUFullNum / fleetGPUFullDen,
		MemPercent:  fleetPercent(used, total),
		MemFull:     total == 0 || used*fleetGPUFullDen >= total*fleetGPUFullNum,
		Used:        fleetBytes(used),
		Total:       fleetBytes(total),
		PowerW:      g.GetPowerMilliwatts() / 1000,
		PowerLimitW: g.GetPowerLimitMilliwatts() / 1000,
	}
	procs := slices.Clone(g.GetProcesses())
	slices.SortStableFunc(procs, func(a, b *factoryv1.GpuProcess) int {
		return cmp.Compare(b.GetUsedMemoryBytes(), a.GetUsedMemoryBytes())
	})
	if len(procs) > fleetMaxGPUProcs {
		fg.MoreProcs = len(procs) - fleetMaxGPUProcs
		procs = procs[:fleetMaxGPUProcs]
	}
	for _, p := range procs {
		fg.Procs = append(fg.Procs, fleetGPUProc{Pid: p.GetPid(), Agent: p.GetAgent(), Used: fleetBytes(p.GetUsedMemoryBytes())})
	}
	return fg
}

// fleetLatency is a probe's latency: milliseconds under a second (a
// timeout shows as seconds), "—" when it was not measured.
func fleetLatency(d *durationpb.Duration) string {
	if d == nil {
		return "—"
	}
	l := d.AsDuration()
	if l < time.Millisecond {
		return "<1 ms"
	}
	if l < time.Second {
		return fmt.Sprintf("%d ms", l.Milliseconds())
	}
	return l.Round(10 * time.Millisecond).String()
}

// fleetPercent is part of whole in whole percent, 0 for an empty whole.
// The readings are bounded by the proto (2^62 bytes at most), so the
// float is exact enough and nothing overflows.
func fleetPercent(part, whole uint64) int {
	if whole == 0 {
		return 0
	}
	return min(100, int(float64(part)*100/float64(whole)+0.5))
}

// fleetBytes is a size in binary units, to three figures: GPU memory and
// disks are sold and read in GiB.
func fleetBytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit && exp < 5; n /= unit {
		div *= unit
		exp++
	}
	v := float64(b) / float64(div)
	suffix := "KMGTPE"[exp : exp+1]
	if v >= 100 {
		return fmt.Sprintf("%.0f %siB", v, suffix)
	}
	return fmt.Sprintf("%.1f %siB", v, suffix)
}
