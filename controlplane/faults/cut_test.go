//go:build faults

package faults_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// sidecarConfig writes a sidecar config for host with one agent, its spool
// in dir, and no GPU.
func sidecarConfig(t *testing.T, dir, host, agent string) string {
	t.Helper()
	path := filepath.Join(dir, "sidecar.yaml")
	body := fmt.Sprintf("host: %s\ngpu: {disabled: true}\nagents:\n  - {name: %s, role: w}\nspool: {path: %s}\n",
		host, agent, filepath.Join(dir, "spool.jsonl"))
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// agentState is the fleet's view of one agent.
func agentState(ctx context.Context, fl factoryv1.FleetServiceClient, name string) factoryv1.NodeState {
	resp, err := fl.ListAgents(ctx, &factoryv1.ListAgentsRequest{})
	if err != nil {
		return factoryv1.NodeState_NODE_STATE_UNSPECIFIED
	}
	for _, a := range resp.GetAgents() {
		if a.GetName() == name {
			return a.GetState()
		}
	}
	return factoryv1.NodeState_NODE_STATE_UNSPECIFIED
}

// TestConnectionCut partitions a sidecar from the control plane with a
// proxy that drops traffic: its agent goes STALE, then OFFLINE, and comes
// back ONLINE when the network heals.
func TestConnectionCut(t *testing.T) {
	cp := startControlPlane(t, "controlplane", t.TempDir(), "", "--heartbeat-interval", "200ms", "--offline-after", "3s")
	op := dial(t, cp.addr, cp.operatorToken(t))
	fl := factoryv1.NewFleetServiceClient(op)
	px := startProxy(t, cp.addr)

	dir := t.TempDir()
	secret := mintToken(t, op, factoryv1.Role_ROLE_SIDECAR, "cut-host", "cut-agent")
	start(t, "sidecar", binary(t, "factory-sidecar"), []string{"FACTORY_TOKEN=" + secret},
		"--addr", px.addr(), "--config", sidecarConfig(t, dir, "cut-host", "cut-agent"))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	state := func() factoryv1.NodeState { return agentState(ctx, fl, "cut-agent") }
	eventually(t, "agent ONLINE", 30*time.Second, func() bool { return state() == factoryv1.NodeState_NODE_STATE_ONLINE })

	px.partition()
	cutAt := time.Now()
	eventually(t, "agent STALE after the cut", 10*time.Second, func() bool { return state() == factoryv1.NodeState_NODE_STATE_STALE })
	staleAfter := time.Since(cutAt)
	eventually(t, "agent OFFLINE after the cut", 15*time.Second, func() bool { return state() == factoryv1.NodeState_NODE_STATE_OFFLINE })
	offlineAfter := time.Since(cutAt)

	px.heal()
	healedAt := time.Now()
	eventually(t, "agent ONLINE after the network healed", 30*time.Second, func() bool { return state() == factoryv1.NodeState_NODE_STATE_ONLINE })
	t.Logf("STALE %s and OFFLINE %s after the cut; ONLINE %s after healing",
		staleAfter.Round(time.Millisecond), offlineAfter.Round(time.Millisecond), time.Since(healedAt).Round(time.Millisecond))
}
