//go:build faults

package faults_test

import "testing"

// TestHostileAgent replays, one case per row, what a hostile or
// prompt-injected agent (or a sidecar token acting beyond its host) could
// do before the control plane contained it. Each case sends the same
// requests as the original repro against the real binaries and checks that
// they are refused or contained, and that nothing was stored that should
// not have been.
func TestHostileAgent(t *testing.T) {
	rows := []struct {
		name   string
		replay func(t *testing.T)
	}{
		{"01 an agent defaults its own production deploy to APPROVE", hostileRow01SelfApproval},
		{"02 gated kinds, near-spellings and untyped amounts slip past review", hostileRow02UngatedKinds},
		{"03 a sidecar adopts another host's agent and reports its spend", hostileRow03AdoptAgent},
		{"04 an agent claims a role it was never granted", hostileRow04ClaimAnyRole},
		{"05 an agent reuses another agent's spend id, or rewrites its own", hostileRow05StealSpendID},
		{"06 server-priced events overflow the day", hostileRow06OverflowDay},
		{"07 one bogus event halts the fleet for the day", hostileRow07OneEventHaltsFleet},
		{"08 a revoked token's streams stay open", hostileRow08RevokedStreams},
		{"09 a crafted target passes the loopback rule", hostileRow09PlaintextTarget},
		{"10 the sidecar's spend endpoint takes simple requests and drops them later", hostileRow10SpendEndpoint},
		{"11 task titles rewrite the operator's terminal", hostileRow11TerminalEscapes},
		{"12 an agent named total writes the total counter", hostileRow12CounterCollision},
		{"13 data files are readable by everyone", hostileRow13DataFileModes},
	}
	for _, r := range rows {
		t.Run(r.name, r.replay)
	}
}
