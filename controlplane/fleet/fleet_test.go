package fleet

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newRegistry() (*Registry, *fakeClock) {
	clk := &fakeClock{now: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)}
	return New(clk, Config{}), clk
}

func nodeState(t *testing.T, r *Registry, host string) State {
	t.Helper()
	for _, n := range r.Nodes() {
		if n.Host == host {
			return n.State
		}
	}
	t.Fatalf("no node %s", host)
	return StateUnknown
}

func agentOf(t *testing.T, r *Registry, name string) Agent {
	t.Helper()
	for _, a := range r.Agents() {
		if a.Name == name {
			return a
		}
	}
	t.Fatalf("no agent %s", name)
	return Agent{}
}

func TestNodeLivenessByTheClock(t *testing.T) {
	r, clk := newRegistry()
	if err := r.Register(Hello{Host: "gpu-1", Agents: []AgentInfo{{Name: "forge", Role: "builder"}}}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		advance time.Duration
		beat    bool
		want    State
	}{
		{0, false, StateOnline},
		{10 * time.Second, true, StateOnline},  // on time
		{20 * time.Second, false, StateOnline}, // two intervals: the 2nd may be in flight
		{4 * time.Second, false, StateOnline},  // 24s: within half an interval of grace
		{2 * time.Second, false, StateStale},   // 26s: two missed
		{time.Second, true, StateOnline},       // a heartbeat revives it
		{5*time.Minute - time.Second, false, StateStale},
		{time.Second, false, StateOffline}, // five minutes of silence
		{time.Hour, false, StateOffline},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		if s.beat {
			if err := r.Heartbeat("gpu-1"); err != nil {
				t.Fatal(err)
			}
		}
		if got := nodeState(t, r, "gpu-1"); got != s.want {
			t.Fatalf("step %d (+%s beat=%v): %s, want %s", i, s.advance, s.beat, got, s.want)
		}
	}
	// Telemetry counts as a heartbeat.
	if err := r.Telemetry("gpu-1", "reading"); err != nil {
		t.Fatal(err)
	}
	if got := nodeState(t, r, "gpu-1"); got != StateOnline {
		t.Fatalf("after telemetry: %s", got)
	}
	if n := r.Nodes()[0]; n.Telemetry != "reading" || !n.TelemetryAt.Equal(clk.Now()) {
		t.Errorf("telemetry %+v", n)
	}
	if err := r.Heartbeat("nobody"); !errors.Is(err, ErrUnknownNode) {
		t.Errorf("heartbeat from an unregistered host: %v", err)
	}
}

func TestConfigurableThresholds(t *testing.T) {
	clk := &fakeClock{now: time.Unix(0, 0)}
	r := New(clk, Config{HeartbeatInterval: time.Second, StaleAfterMissed: 3, OfflineAfter: 10 * time.Second})
	_ = r.Register(Hello{Host: "h"})
	clk.Advance(3500 * time.Millisecond)
	if s := nodeState(t, r, "h"); s != StateOnline {
		t.Errorf("3.5s: %s", s)
	}
	clk.Advance(time.Millisecond)
	if s := nodeState(t, r, "h"); s != StateStale {
		t.Errorf("3.501s: %s", s)
	}
	clk.Advance(10 * time.Second)
	if s := nodeState(t, r, "h"); s != StateOffline {
		t.Errorf("13.5s: %s", s)
	}
}

func TestAgentLivenessFollowsHostAndOwnCalls(t *testing.T) {
	r, clk := newRegistry()
	_ = r.Register(Hello{Host: "gpu-1", Agents: []AgentInfo{{Name: "forge", Role: "builder"}}})
	clk.Advance(time.Minute)
	if a := agentOf(t, r, "forge"); a.State != StateStale || a.Host != "gpu-1" || a.Role != "builder" {
		t.Fatalf("%+v", a)
	}
	// Its own claim is a sign of life even while its sidecar is silent.
	r.AgentSeen("forge", "task-1")
	if a := agentOf(t, r, "forge"); a.State != StateOnline || a.CurrentTask != "task-1" || !a.LastSeen.Equal(clk.Now()) {
		t.Fatalf("after claim %+v", a)
	}
	clk.Advance(5 * time.Minute)
	if a := agentOf(t, r, "forge"); a.State != StateOffline {
		t.Fatalf("5 min later %+v", a)
	}
	_ = r.Heartbeat("gpu-1")
	if a := agentOf(t, r, "forge"); a.State != StateOnline {
		t.Fatalf("host heartbeat %+v", a)
	}
	r.AgentIdle("forge")
	if a := agentOf(t, r, "forge"); a.CurrentTask != "" {
		t.Fatalf("idle %+v", a)
	}
	// An agent no sidecar declared (it runs off-fleet) is still tracked.
	r.AgentSeen("scout", "")
	if a := agentOf(t, r, "scout"); a.Host != "" || a.State != StateOnline {
		t.Fatalf("%+v", a)
	}
}

// agentNames lists the registry's agents as "name@host".
func agentNames(r *Registry) []string {
	var out []string
	for _, a := range r.Agents() {
		out = append(out, a.Name+"@"+a.Host)
	}
	return out
}

func TestAHostsAgentsAreItsLatestHellos(t *testing.T) {
	r, _ := newRegistry()
	_ = r.Register(Hello{Host: "gpu-1", Agents: []AgentInfo{{Name: "forge"}, {Name: "hammer"}}})
	_ = r.Register(Hello{Host: "cpu-1", Agents: []AgentInfo{{Name: "scout"}}})
	// A reconnect that no longer declares hammer forgets it: no ghost.
	_ = r.Register(Hello{Host: "gpu-1", Agents: []AgentInfo{{Name: "forge"}}})
	if got := fmt.Sprint(agentNames(r)); got != "[forge@gpu-1 scout@cpu-1]" {
		t.Fatalf("after gpu-1 dropped hammer: %s", got)
	}
	// forge moving to cpu-1 follows the latest Hello, and gpu-1 no longer
	// lists it.
	_ = r.Register(Hello{Host: "cpu-1", Agents: []AgentInfo{{Name: "scout"}, {Name: "forge"}}})
	if got := fmt.Sprint(agentNames(r)); got != "[forge@cpu-1 scout@cpu-1]" {
		t.Fatalf("after forge moved: %s", got)
	}
	for _, n := range r.Nodes() {
		if n.Host == "gpu-1" && len(n.Agents) != 0 {
			t.Fatalf("gpu-1 still lists %v", n.Agents)
		}
	}
	// gpu-1's next Hello without forge does not take it from cpu-1.
	_ = r.Register(Hello{Host: "gpu-1"})
	if got := fmt.Sprint(agentNames(r)); got != "[forge@cpu-1 scout@cpu-1]" {
		t.Fatalf("after gpu-1 declared nothing: %s", got)
	}
}

func TestReconnectsNamingNewAgentsLeaveOnlyTheLastHellos(t *testing.T) {
	r, _ := newRegistry()
	for i := range 100 {
		h := Hello{Host: "gpu-1"}
		for j := range DefaultMaxAgentsPerHost {
			h.Agents = append(h.Agents, AgentInfo{Name: fmt.Sprintf("ghost-%d-%d", i, j)})
		}
		if err := r.Register(h); err != nil {
			t.Fatal(err)
		}
	}
	agents := r.Agents()
	if len(agents) != DefaultMaxAgentsPerHost || agents[0].Name != "ghost-99-0" {
		t.Fatalf("%d agents after 100 reconnects (first %v), want the last Hello's %d", len(agents), agents[0], DefaultMaxAgentsPerHost)
	}
}

func TestAHelloOverThePerHostLimitIsRefusedWhole(t *testing.T) {
	clk := &fakeClock{now: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)}
	r := New(clk, Config{MaxAgentsPerHost: 2})
	_ = r.Register(Hello{Host: "gpu-1", Agents: []AgentInfo{{Name: "forge"}}})
	err := r.Register(Hello{Host: "gpu-1", Agents: []AgentInfo{{Name: "a"}, {Name: "b"}, {Name: "c"}}})
	var qe *store.QuotaError
	if !errors.As(err, &qe) || !strings.Contains(qe.Description, "at most 2") {
		t.Fatalf("3 agents over a limit of 2: %v, want a QuotaError naming the limit", err)
	}
	if got := fmt.Sprint(agentNames(r)); got != "[forge@gpu-1]" {
		t.Fatalf("the refused Hello changed the registry: %s", got)
	}
}

func TestRegisterValidatesAndNotifies(t *testing.T) {
	r, _ := newRegistry()
	if err := r.Register(Hello{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty host: %v", err)
	}
	if err := r.Register(Hello{Host: "h", Agents: []AgentInfo{{}}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty agent: %v", err)
	}
	ch, cancel := r.Subscribe()
	defer cancel()
	_ = r.Register(Hello{Host: "h"})
	select {
	case <-ch:
	default:
		t.Fatal("no notification on Hello")
	}
	r.Disconnected("h")
	<-ch
	if n := r.Nodes()[0]; n.Connected || n.State != StateOnline {
		t.Errorf("just disconnected: %+v", n)
	}
}
