package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// A Hello registers only the agents the host may declare; the rest come
// back in the config with the reason, and the stream carries on.
func TestHelloRegistersOnlyPlacedAgents(t *testing.T) {
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ops := b.clientsAs(t, b.operator).f
	if _, err := ops.PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: "forge", Host: "gpu-1"}); err != nil {
		t.Fatal(err)
	}
	secret, _ := b.mintToken(t, store.RoleSidecar, "gpu-1")
	_, cfg, err := connect(ctx, t, b.clientsAs(t, secret).f, "gpu-1", "forge", "stray")
	if err != nil {
		t.Fatal(err)
	}
	refused := cfg.GetRefusedAgents()
	if len(refused) != 1 || refused[0].GetName() != "stray" || !strings.Contains(refused[0].GetReason(), "not placed on host gpu-1") {
		t.Fatalf("refused %v, want stray, not placed on gpu-1", refused)
	}
	agents, err := ops.ListAgents(ctx, &factoryv1.ListAgentsRequest{})
	if err != nil || len(agents.GetAgents()) != 1 || agents.GetAgents()[0].GetName() != "forge" {
		t.Fatalf("agents: %v, %v; want forge only", agents.GetAgents(), err)
	}

	// An operator's connection (make run's sidecar) adopts agents placed
	// nowhere, but not one placed on another host.
	_, cfg, err = connect(ctx, t, ops, "laptop", "forge", "local-agent")
	if err != nil {
		t.Fatal(err)
	}
	if refused := cfg.GetRefusedAgents(); len(refused) != 1 || refused[0].GetName() != "forge" || !strings.Contains(refused[0].GetReason(), "placed on host gpu-1") {
		t.Fatalf("operator connection refused %v, want forge only", refused)
	}
	agents, err = ops.ListAgents(ctx, &factoryv1.ListAgentsRequest{Host: "laptop"})
	if err != nil || len(agents.GetAgents()) != 1 || agents.GetAgents()[0].GetName() != "local-agent" {
		t.Fatalf("agents on laptop: %v, %v; want local-agent", agents.GetAgents(), err)
	}
}
