package fleet

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
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

func TestHostsAgent(t *testing.T) {
	r, _ := newRegistry()
	ctx := context.Background()
	_ = r.Register(Hello{Host: "gpu-1", Agents: []AgentInfo{{Name: "forge"}, {Name: "hammer"}}})
	_ = r.Register(Hello{Host: "cpu-1", Agents: []AgentInfo{{Name: "scout"}}})
	r.AgentSeen("loner", "")
	for _, c := range []struct {
		host, agent string
		want        bool
	}{
		{"gpu-1", "forge", true}, {"gpu-1", "hammer", true}, {"gpu-1", "scout", false},
		{"cpu-1", "scout", true}, {"cpu-1", "forge", false}, {"gpu-1", "loner", false},
		{"", "loner", false}, {"gpu-1", "nobody", false},
	} {
		if got, _ := r.HostsAgent(ctx, c.host, c.agent); got != c.want {
			t.Errorf("HostsAgent(%s, %s) = %v", c.host, c.agent, got)
		}
	}
	// A reconnect that no longer declares hammer detaches it; forge moving
	// to cpu-1 follows the latest Hello.
	_ = r.Register(Hello{Host: "gpu-1", Agents: []AgentInfo{{Name: "forge"}}})
	if ok, _ := r.HostsAgent(ctx, "gpu-1", "hammer"); ok {
		t.Error("hammer still on gpu-1")
	}
	_ = r.Register(Hello{Host: "cpu-1", Agents: []AgentInfo{{Name: "scout"}, {Name: "forge"}}})
	if ok, _ := r.HostsAgent(ctx, "gpu-1", "forge"); ok {
		t.Error("forge still acts from gpu-1")
	}
	if ok, _ := r.HostsAgent(ctx, "cpu-1", "forge"); !ok {
		t.Error("forge not on cpu-1")
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
