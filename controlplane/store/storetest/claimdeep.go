package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// testClaimDeep checks claim order and role routing when the queue holds
// a deep backlog that the claimer may not take: other roles' tasks ahead
// of its own in claim order, tasks assigned to other agents, tasks
// waiting for their RunAfter. A driver that walks each role on its own
// (to keep a claim's cost independent of other roles' backlogs) must
// still merge the walks into one claim order.
func (s *suite) testClaimDeep(t *testing.T) {
	s.runCases(t, []testCase{
		{"OrderAndRoutingBehindOtherRoles", func(t *testing.T, h *harness) {
			const backlog = 2000
			start := h.now()
			type spec struct {
				tc   *store.TaskCreate
				mine bool // claimable by agent-1 with roles a, b
			}
			var specs []spec
			add := func(tc *store.TaskCreate, mine bool) {
				tc.ID = fmt.Sprintf("t%05d-%s", len(specs), tc.Role)
				specs = append(specs, spec{tc, mine})
			}
			// The other role's backlog comes first and outranks everything.
			for range backlog {
				add(&store.TaskCreate{Role: "other", Priority: 7}, false)
			}
			for i := range 90 {
				switch i % 9 {
				case 0, 1:
					add(&store.TaskCreate{Role: "a", Priority: int32(i % 4)}, true)
				case 2:
					add(&store.TaskCreate{Role: "b", Priority: int32(i%5 - 1)}, true)
				case 3:
					add(&store.TaskCreate{Priority: int32(i % 3)}, true) // no role: everyone's
				case 4:
					add(&store.TaskCreate{Role: "a", Priority: 9, Assignee: "agent-2"}, false)
				case 5:
					add(&store.TaskCreate{Role: "b", Priority: 9, Assignee: "agent-1"}, true)
				case 6:
					add(&store.TaskCreate{Role: "a", Priority: 9, RunAfter: start.Add(time.Hour)}, false)
				case 7:
					add(&store.TaskCreate{Role: "other", Priority: 8}, false)
				case 8:
					add(&store.TaskCreate{Role: "c", Priority: 2}, false)
				}
			}
			for batch := range slices.Chunk(specs, 500) {
				tcs := make([]*store.TaskCreate, len(batch))
				for i, sp := range batch {
					tcs[i] = sp.tc
				}
				h.create(tcs...)
				h.clock.Advance(time.Millisecond)
			}
			var want []*store.TaskCreate
			for _, sp := range specs {
				if sp.mine {
					want = append(want, sp.tc)
				}
			}
			// Claim order: priority, then creation (the stable sort keeps
			// creation order within a priority).
			slices.SortStableFunc(want, func(a, b *store.TaskCreate) int { return int(b.Priority - a.Priority) })
			wantIDs := make([]string, len(want))
			for i, tc := range want {
				wantIDs[i] = tc.ID
			}

			// Batches of changing sizes, roles named twice and in either
			// order: the concatenated claims are the claim order.
			var got []string
			sizes := []int{1, 3, 7, 2}
			roleSets := [][]string{{"a", "b"}, {"b", "a", "a"}, {"b", "a"}}
			for i := 0; len(got) < len(wantIDs) && i < len(wantIDs); i++ {
				claimed := h.claim("agent-1", roleSets[i%len(roleSets)], sizes[i%len(sizes)])
				if len(claimed) == 0 {
					break
				}
				got = append(got, taskIDs(claimed)...)
			}
			requireIDs(t, "claims of agent-1 (roles a, b) behind 2,000 tasks of role other", got, wantIDs)
			h.requireNoClaim("agent-1", []string{"a", "b"})

			// The backlog's own agent still gets it in claim order: the
			// priority-8 tasks, then the first of the priority-7 backlog.
			claimed := h.claim("agent-o", []string{"other"}, 12)
			var wantOther []string
			for _, sp := range specs {
				if sp.tc.Role == "other" && sp.tc.Priority == 8 {
					wantOther = append(wantOther, sp.tc.ID)
				}
			}
			wantOther = append(wantOther, specs[0].tc.ID, specs[1].tc.ID)
			requireIDs(t, "claims of agent-o (role other)", taskIDs(claimed), wantOther)
		}},
		{"TooManyRoles", func(t *testing.T, h *harness) {
			roles := make([]string, store.MaxClaimRoles+1)
			for i := range roles {
				roles[i] = fmt.Sprintf("r%d", i)
			}
			h.create(&store.TaskCreate{ID: "a", Role: "r0"})
			_, err := h.s.TaskClaim(h.ctx, &store.TaskClaimParams{Agent: "agent-1", Roles: roles, Max: 1, LeaseDuration: time.Minute, Now: h.now()})
			if !errors.Is(err, store.ErrInvalidArgument) || !strings.Contains(err.Error(), "roles") {
				t.Fatalf("claim naming %d roles: %v, want ErrInvalidArgument naming roles", len(roles), err)
			}
			h.requireState("a", store.StateReady)
			// As many as allowed is fine, and finds the task.
			claimed := h.claim("agent-1", roles[:store.MaxClaimRoles], 1)
			requireIDs(t, "claim with 64 roles", taskIDs(claimed), []string{"a"})
		}},
	})
}
