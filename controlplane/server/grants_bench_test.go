package server

import (
	"context"
	"testing"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// BenchmarkClaimPolicy is the per-claim cost of the policy with and
// without the role gate: the grant travels with the cached caller, so the
// gate is a scan of a short slice and reads nothing.
func BenchmarkClaimPolicy(b *testing.B) {
	p := newPolicy(nil)
	c := access.Caller{Role: store.RoleAgent, Subject: "scout", TokenID: "t", Roles: []string{"researcher", "writer"}}
	req := &factoryv1.ClaimTaskRequest{Agent: "scout", Roles: []string{"writer"}}
	withGate := rules[factoryv1.QueueService_ClaimTask_FullMethodName]
	withoutGate := withGate
	withoutGate.claims = nil
	for name, r := range map[string]rule{"with the role gate": withGate, "without": withoutGate} {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				if _, err := p.check(ctx, c, r, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
