// Package fleet keeps the control plane's view of its hosts (nodes, each
// with a sidecar) and of the agents they run: who is alive, what each last
// reported, and which agents each host declares now. Which host may run
// which agent is not decided here from what sidecars say but by the
// operators' placements (placement.go), kept in the store so every
// replica agrees; they are what lets a sidecar token act for an agent.
//
// Liveness is computed from the last sign of life against an injected
// clock, never by a timer per node: ONLINE while heartbeats arrive; STALE
// once two are missed (plus half an interval of grace, so one heartbeat in
// flight does not flap a node); OFFLINE after five minutes without one
// (runbook §5.1). An agent's own queue calls also count as signs of life.
//
// Only the latest readings are kept, in memory, and only the agents each
// host's latest Hello declares (at most Config.MaxAgentsPerHost), so the
// registry stays bounded however often a host reconnects.
package fleet

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// State is a node's or an agent's liveness.
type State int

// Liveness states.
const (
	StateUnknown State = iota
	StateOnline
	StateStale
	StateOffline
)

func (s State) String() string {
	switch s {
	case StateOnline:
		return "ONLINE"
	case StateStale:
		return "STALE"
	case StateOffline:
		return "OFFLINE"
	}
	return "UNKNOWN"
}

// Clock is the time source; tests drive a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock is the real clock.
var SystemClock Clock = systemClock{}

// Config sets the liveness thresholds.
type Config struct {
	// HeartbeatInterval is what the server tells sidecars to use (10s).
	HeartbeatInterval time.Duration
	// StaleAfterMissed is how many missed heartbeats make a node STALE (2).
	StaleAfterMissed int
	// OfflineAfter is how long without a sign of life makes it OFFLINE (5m).
	OfflineAfter time.Duration
	// HistoryEvery is the telemetry history's sampling interval: at most one
	// reading per host per interval is stored (1m).
	HistoryEvery time.Duration
	// HistoryRetention is how long stored readings are kept (7 days).
	HistoryRetention time.Duration
	// MaxAgentsPerHost bounds the agents one Hello may declare
	// (DefaultMaxAgentsPerHost), so one host cannot grow the registry
	// without bound.
	MaxAgentsPerHost int
}

// DefaultMaxAgentsPerHost is the per-host limit on declared agents: far
// more than one machine runs, and what one Hello can carry on the wire.
const DefaultMaxAgentsPerHost = 256

// DefaultConfig is the runbook's thresholds.
func DefaultConfig() Config {
	return Config{HeartbeatInterval: 10 * time.Second, StaleAfterMissed: 2, OfflineAfter: 5 * time.Minute,
		HistoryEvery: time.Minute, HistoryRetention: 7 * 24 * time.Hour, MaxAgentsPerHost: DefaultMaxAgentsPerHost}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.StaleAfterMissed <= 0 {
		c.StaleAfterMissed = d.StaleAfterMissed
	}
	if c.OfflineAfter <= 0 {
		c.OfflineAfter = d.OfflineAfter
	}
	if c.HistoryEvery <= 0 {
		c.HistoryEvery = d.HistoryEvery
	}
	if c.HistoryRetention <= 0 {
		c.HistoryRetention = d.HistoryRetention
	}
	if c.MaxAgentsPerHost <= 0 {
		c.MaxAgentsPerHost = d.MaxAgentsPerHost
	}
	return c
}

// staleAfter is the silence that makes a node STALE.
func (c Config) staleAfter() time.Duration {
	return time.Duration(c.StaleAfterMissed)*c.HeartbeatInterval + c.HeartbeatInterval/2
}

// state is the liveness of something last seen at seen.
func (c Config) state(now, seen time.Time) State {
	if seen.IsZero() {
		return StateUnknown
	}
	switch since := now.Sub(seen); {
	case since >= c.OfflineAfter:
		return StateOffline
	case since > c.staleAfter():
		return StateStale
	}
	return StateOnline
}

// AgentInfo is an agent as a sidecar declares it in its Hello.
type AgentInfo struct {
	Name         string
	Role         string
	Capabilities []string
}

// Hello is what a sidecar says when it connects.
type Hello struct {
	Host         string
	Version      string
	Labels       map[string]string
	Agents       []AgentInfo
	Capabilities []string
	// Drained: the sidecar was drained before this (re)connect.
	Drained bool
}

// Node is a host as the fleet sees it now.
type Node struct {
	Host         string
	Version      string
	Labels       map[string]string
	Agents       []string
	Capabilities []string
	Connected    bool
	ConnectedAt  time.Time
	LastSeen     time.Time
	State        State
	// Telemetry is the latest reading the sidecar sent (nil before the
	// first); the fleet does not look inside it.
	Telemetry any
	// TelemetryAt is when Telemetry arrived.
	TelemetryAt time.Time
	// Drained is set by a drain command (or a Hello that says so): the
	// host's agents are to claim no new work.
	Drained bool
	// GPUsReported is the most GPUs the host has reported since it first
	// registered (a reconnect keeps it): a host that reported GPUs and
	// now reports fewer lost one, or its driver.
	GPUsReported int
}

// Agent is an agent as the fleet sees it now.
type Agent struct {
	Name         string
	Host         string
	Role         string
	Capabilities []string
	// LastSeen is the later of its host's last heartbeat and its own last
	// queue call.
	LastSeen    time.Time
	State       State
	CurrentTask string
}

// Errors at the boundary of the fleet.
var (
	ErrUnknownNode = errors.New("node not registered: send Hello first")
	ErrInvalid     = errors.New("invalid")
)

type node struct {
	Node
}

type agent struct {
	Agent
	ownSeen time.Time // last queue call of the agent itself
}

// Registry is the fleet's in-memory state. It is safe for concurrent use.
type Registry struct {
	clock Clock
	cfg   Config

	mu     sync.Mutex
	nodes  map[string]*node
	agents map[string]*agent
	subs   map[chan struct{}]struct{}
}

// New returns an empty registry.
func New(clock Clock, cfg Config) *Registry {
	if clock == nil {
		clock = SystemClock
	}
	return &Registry{clock: clock, cfg: cfg.withDefaults(), nodes: map[string]*node{}, agents: map[string]*agent{}, subs: map[chan struct{}]struct{}{}}
}

// Clock is the registry's time source.
func (r *Registry) Clock() Clock { return r.clock }

// Config is the registry's effective configuration.
func (r *Registry) Config() Config { return r.cfg }

// Register records a sidecar's Hello, whose agents the caller has
// admitted (Placements.Admit). A host that says Hello again (a reconnect)
// replaces its agent list, and the agents it no longer declares are
// forgotten, so however often a host reconnects the registry holds at
// most its latest Hello's agents. An agent that moved to another host
// follows its latest Hello. More agents than MaxAgentsPerHost is a
// *store.QuotaError and changes nothing.
func (r *Registry) Register(h Hello) error {
	if h.Host == "" {
		return fmt.Errorf("%w: host is empty", ErrInvalid)
	}
	if len(h.Agents) > r.cfg.MaxAgentsPerHost {
		return &store.QuotaError{Subject: "fleet:agents-per-host",
			Description: fmt.Sprintf("host %s declares %d agents; at most %d per host", h.Host, len(h.Agents), r.cfg.MaxAgentsPerHost)}
	}
	var names []string
	for _, a := range h.Agents {
		if a.Name == "" {
			return fmt.Errorf("%w: agent with an empty name on host %s", ErrInvalid, h.Host)
		}
		names = append(names, a.Name)
	}
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[h.Host]
	if !ok {
		n = &node{}
		r.nodes[h.Host] = n
	}
	// Agents this host no longer declares are forgotten, not kept as
	// ghosts: an agent that still works shows up again on its next queue
	// call, and on its host's next Hello.
	for _, old := range n.Agents {
		if a := r.agents[old]; a != nil && a.Host == h.Host && !slices.Contains(names, old) {
			delete(r.agents, old)
		}
	}
	n.Node = Node{Host: h.Host, Version: h.Version, Labels: h.Labels, Agents: names, Capabilities: h.Capabilities,
		Connected: true, ConnectedAt: now, LastSeen: now, Telemetry: n.Telemetry, TelemetryAt: n.TelemetryAt,
		Drained: h.Drained || n.Drained, GPUsReported: n.GPUsReported}
	for _, ai := range h.Agents {
		a, ok := r.agents[ai.Name]
		if !ok {
			a = &agent{}
			r.agents[ai.Name] = a
		}
		// Moved here from another host: that host no longer lists it.
		if prev, ok := r.nodes[a.Host]; ok && a.Host != h.Host {
			prev.Agents = slices.DeleteFunc(slices.Clone(prev.Agents), func(name string) bool { return name == ai.Name })
		}
		a.Name, a.Host, a.Role, a.Capabilities = ai.Name, h.Host, ai.Role, ai.Capabilities
	}
	r.notifyLocked()
	return nil
}

// Heartbeat records a sign of life from host.
func (r *Registry) Heartbeat(host string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[host]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownNode, host)
	}
	n.LastSeen = r.clock.Now()
	return nil
}

// ReportedGPUs records that host's latest readings hold gpus GPUs; the
// node's GPUs keeps the most ever reported.
func (r *Registry) ReportedGPUs(host string, gpus int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n, ok := r.nodes[host]; ok && gpus > n.GPUsReported {
		n.GPUsReported = gpus
	}
}

// Telemetry stores host's latest readings; it also counts as a heartbeat.
func (r *Registry) Telemetry(host string, t any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[host]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownNode, host)
	}
	now := r.clock.Now()
	n.LastSeen, n.Telemetry, n.TelemetryAt = now, t, now
	r.notifyLocked()
	return nil
}

// Disconnected marks host's stream as gone. Its liveness still runs out by
// the clock: a sidecar reconnecting within the grace stays ONLINE.
func (r *Registry) Disconnected(host string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n, ok := r.nodes[host]; ok {
		n.Connected = false
		r.notifyLocked()
	}
}

// AgentSeen is the hook the queue handlers call on an agent's own RPCs
// (claim, renew, complete): a sign of life, and the task it works on ("" to
// leave it unchanged). An agent no sidecar declared is added without a host.
func (r *Registry) AgentSeen(name, task string) {
	if name == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.agents[name]
	if !ok {
		a = &agent{Agent: Agent{Name: name}}
		r.agents[name] = a
	}
	a.ownSeen = r.clock.Now()
	if task != "" {
		a.CurrentTask = task
	}
}

// AgentIdle clears an agent's current task (it completed or failed it).
func (r *Registry) AgentIdle(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.agents[name]; ok {
		a.CurrentTask = ""
		a.ownSeen = r.clock.Now()
	}
}

// heldByOtherOnline names the host other than host that declares agent
// and is ONLINE now, or "".
func (r *Registry) heldByOtherOnline(agentName, host string) string {
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.agents[agentName]
	if !ok || a.Host == "" || a.Host == host {
		return ""
	}
	if n, ok := r.nodes[a.Host]; ok && r.cfg.state(now, n.LastSeen) == StateOnline {
		return a.Host
	}
	return ""
}

// Nodes returns every node with its liveness now, sorted by host.
func (r *Registry) Nodes() []Node {
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Node, 0, len(r.nodes))
	for _, n := range r.nodes {
		out = append(out, r.view(n, now))
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Host, b.Host) })
	return out
}

// Agents returns every agent with its liveness now, sorted by name.
func (r *Registry) Agents() []Agent {
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Agent, 0, len(r.agents))
	for _, a := range r.agents {
		v := a.Agent
		v.LastSeen = a.ownSeen
		if n, ok := r.nodes[a.Host]; ok && n.LastSeen.After(v.LastSeen) {
			v.LastSeen = n.LastSeen
		}
		v.State = r.cfg.state(now, v.LastSeen)
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b Agent) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Subscribe returns a channel that receives (coalesced) when a node
// registers, disconnects, reports telemetry or is forgotten, and a cancel
// func. Liveness changes by the clock alone are not signalled here: a
// watcher also waits on LivenessTimer, which fires when the next one is
// due.
func (r *Registry) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	r.mu.Lock()
	r.subs[ch] = struct{}{}
	r.mu.Unlock()
	return ch, func() {
		r.mu.Lock()
		delete(r.subs, ch)
		r.mu.Unlock()
	}
}

func (r *Registry) notifyLocked() {
	for ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
