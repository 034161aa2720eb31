package fleet

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

// countingPlacements counts the placement reads that reach the store.
type countingPlacements struct {
	store.Store
	reads atomic.Int64
}

func (s *countingPlacements) PlacementList(ctx context.Context, p *store.PlacementListParams) (*store.PlacementListResult, error) {
	s.reads.Add(1)
	return s.Store.PlacementList(ctx, p)
}

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: t.TempDir() + "/factory.db", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestPlacementsAreSharedThroughTheStore(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	clk := &fakeClock{now: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)}
	// Two replicas on one store.
	here, there := &countingPlacements{Store: st}, &countingPlacements{Store: st}
	a, b := NewPlacements(here, clk, 0), NewPlacements(there, clk, 0)

	if _, _, err := a.Place(ctx, "forge", "gpu-02", "ops"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Placements{a, b} {
		if ok, err := p.HostsAgent(ctx, "gpu-02", "forge"); !ok || err != nil {
			t.Fatalf("forge on gpu-02: %v, %v", ok, err)
		}
		if ok, _ := p.HostsAgent(ctx, "gpu-01", "forge"); ok {
			t.Fatal("gpu-01 may act for forge")
		}
	}
	// Cached: a thousand spend checks within the TTL read the store once.
	reads := there.reads.Load()
	for range 1000 {
		if ok, _ := b.HostsAgent(ctx, "gpu-02", "forge"); !ok {
			t.Fatal("forge left gpu-02")
		}
	}
	if n := there.reads.Load() - reads; n != 0 {
		t.Fatalf("1000 checks within the TTL read the store %d times", n)
	}

	// A move holds at once on the replica that made it, and on the other
	// once its cached read is older than the TTL.
	if _, _, err := a.Place(ctx, "forge", "gpu-01", "ops"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := a.HostsAgent(ctx, "gpu-01", "forge"); !ok {
		t.Fatal("the replica that moved forge does not see the move")
	}
	clk.Advance(DefaultPlacementTTL)
	if ok, _ := b.HostsAgent(ctx, "gpu-02", "forge"); ok {
		t.Fatal("the other replica still lets gpu-02 act for forge a TTL after the move")
	}
	if _, err := a.Unplace(ctx, "forge"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := a.HostsAgent(ctx, "gpu-01", "forge"); ok {
		t.Fatal("an unplaced agent is still on gpu-01")
	}
}

func TestAdmitLetsAHostDeclareOnlyItsAgents(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	reg, clk := newRegistry()
	p := NewPlacements(st, clk, 0)
	for agent, host := range map[string]string{"forge": "gpu-02", "scout": "gpu-01"} {
		if _, _, err := p.Place(ctx, agent, host, "ops"); err != nil {
			t.Fatal(err)
		}
	}
	hello := Hello{Host: "gpu-01", Agents: []AgentInfo{{Name: "scout"}, {Name: "forge"}, {Name: "stray"}}}

	// A sidecar token: only what is placed on its host.
	admitted, refused, err := p.Admit(ctx, reg, hello, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(admitted.Agents) != 1 || admitted.Agents[0].Name != "scout" {
		t.Fatalf("admitted %+v, want scout only", admitted.Agents)
	}
	if len(refused) != 2 || refused[0].Name != "forge" || refused[1].Name != "stray" {
		t.Fatalf("refused %+v, want forge and stray", refused)
	}

	// An operator's connection also adopts agents placed nowhere, but
	// never one placed elsewhere, nor one another ONLINE host declares.
	if err := reg.Register(Hello{Host: "cpu-9", Agents: []AgentInfo{{Name: "loner"}}}); err != nil {
		t.Fatal(err)
	}
	hello.Agents = append(hello.Agents, AgentInfo{Name: "loner"})
	admitted, refused, err = p.Admit(ctx, reg, hello, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(admitted.Agents); got != "[scout stray]" {
		t.Fatalf("operator connection admitted %s, want [scout stray]", got)
	}
	if len(refused) != 2 || refused[0].Name != "forge" || refused[1].Name != "loner" {
		t.Fatalf("operator connection refused %+v, want forge and loner", refused)
	}
	// Once cpu-9 is OFFLINE, its undeclared-elsewhere agent may be adopted.
	clk.Advance(reg.Config().OfflineAfter)
	admitted, _, _ = p.Admit(ctx, reg, hello, true)
	if got := names(admitted.Agents); got != "[scout stray loner]" {
		t.Fatalf("after cpu-9 went OFFLINE: admitted %s", got)
	}
}

func names(agents []AgentInfo) string {
	out := make([]string, len(agents))
	for i, a := range agents {
		out[i] = a.Name
	}
	return fmt.Sprint(out)
}
