package postgres

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// Claims by one agent that run in one grouped transaction share its room
// under the cap, in arrival order: together they never take it past
// MaxHeld, the claim left no room is refused, and another agent's claim
// in the same group is not held back.
func TestGroupedClaimsShareTheLeaseCap(t *testing.T) {
	url := testURL(t)
	s := openTest(t, url, testSchema(t, url), Config{})
	ctx := context.Background()
	ids := make([]string, 30)
	for i := range ids {
		ids[i] = fmt.Sprintf("t-%02d", i)
	}
	createReady(t, s, ids...)
	req := func(agent string, max int) *claimReq {
		return &claimReq{request: newRequest(ctx), now: t0,
			p: &store.TaskClaimParams{Agent: agent, Max: max, MaxHeld: 5, LeaseDuration: time.Minute, Now: t0}}
	}
	// agent-a holds 1 already.
	if _, err := s.TaskClaim(ctx, &store.TaskClaimParams{Agent: "agent-a", Max: 1, LeaseDuration: time.Minute, Now: t0}); err != nil {
		t.Fatal(err)
	}
	a1, a2, a3, b := req("agent-a", 3), req("agent-a", 3), req("agent-a", 1), req("agent-b", 5)
	if err := s.runGroup(ctx, []groupRequest{a1, b, a2, a3}); err != nil {
		t.Fatal(err)
	}
	if len(a1.out) != 3 || len(a2.out) != 1 || len(b.out) != 5 {
		t.Fatalf("claimed a1 %d, a2 %d, b %d; want 3, 1 and 5", len(a1.out), len(a2.out), len(b.out))
	}
	if !errors.Is(a3.err, store.ErrQuotaExceeded) || len(a3.out) != 0 {
		t.Fatalf("the third claim of agent-a: %d tasks, %v; want the refusal", len(a3.out), a3.err)
	}
	if a1.err != nil || a2.err != nil || b.err != nil {
		t.Fatalf("errors: %v, %v, %v", a1.err, a2.err, b.err)
	}
}
