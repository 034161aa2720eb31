package storetest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (s *suite) testClaim(t *testing.T) {
	s.runCases(t, []testCase{
		{"EmptyQueue", func(t *testing.T, h *harness) {
			h.requireNoClaim("agent-1", nil)
		}},
		{"PriorityThenCreationOrder", func(t *testing.T, h *harness) {
			// Ids run against creation order, and two batches share a
			// timestamp, so only true creation order passes: not id order,
			// not CreatedAt alone.
			h.create(
				&store.TaskCreate{ID: "m-low-1", Priority: 0},
				&store.TaskCreate{ID: "k-high-1", Priority: 5},
			)
			h.create(
				&store.TaskCreate{ID: "z-low-2", Priority: 0},
				&store.TaskCreate{ID: "a-high-2", Priority: 5},
				&store.TaskCreate{ID: "q-top", Priority: 9},
			)
			h.clock.Advance(time.Second)
			h.create(
				&store.TaskCreate{ID: "b-low-3", Priority: 0},
				&store.TaskCreate{ID: "n-negative", Priority: -3},
			)
			want := []string{"q-top", "k-high-1", "a-high-2", "m-low-1", "z-low-2", "b-low-3", "n-negative"}
			for _, id := range want {
				h.claimOne("agent-1", id)
			}
			h.requireNoClaim("agent-1", nil)
		}},
		{"BatchTakesTheHead", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "p0-a", Priority: 0},
				&store.TaskCreate{ID: "p3-a", Priority: 3},
				&store.TaskCreate{ID: "p0-b", Priority: 0},
				&store.TaskCreate{ID: "p3-b", Priority: 3},
				&store.TaskCreate{ID: "p1", Priority: 1},
				&store.TaskCreate{ID: "p0-c", Priority: 0},
			)
			got := h.claim("agent-1", nil, 4)
			requireSameIDs(t, "first batch", taskIDs(got), []string{"p3-a", "p3-b", "p1", "p0-a"})
			got = h.claim("agent-2", nil, 4)
			requireSameIDs(t, "second batch", taskIDs(got), []string{"p0-b", "p0-c"})
		}},
		{"MaxLimitsCount", func(t *testing.T, h *harness) {
			h.createReady("a", "b", "c", "d", "e")
			if got := h.claim("agent-1", nil, 2); len(got) != 2 {
				t.Fatalf("claimed %d tasks with Max 2", len(got))
			}
			if n := h.stats().Counts[store.StateReady]; n != 3 {
				t.Fatalf("%d READY after claiming 2 of 5, want 3", n)
			}
		}},
		{"RunAfter", func(t *testing.T, h *harness) {
			start := h.now()
			h.create(
				&store.TaskCreate{ID: "later", Priority: 9, RunAfter: start.Add(10 * time.Minute)},
				&store.TaskCreate{ID: "now", Priority: 0},
			)
			h.claimOne("agent-1", "now")
			h.requireNoClaim("agent-1", nil)
			h.clock.Set(start.Add(10*time.Minute - time.Second))
			h.requireNoClaim("agent-1", nil)
			h.clock.Set(start.Add(10 * time.Minute)) // RunAfter <= Now
			h.claimOne("agent-1", "later")
		}},
		{"RolesRestrictAgent", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "any"},
				&store.TaskCreate{ID: "role-a", Role: "a"},
				&store.TaskCreate{ID: "role-b", Role: "b"},
				&store.TaskCreate{ID: "role-c", Role: "c", Priority: 10},
			)
			got := h.claim("agent-ab", []string{"a", "b"}, 10)
			requireSameIDs(t, "agent with roles a,b", taskIDs(got), []string{"any", "role-a", "role-b"})
			h.requireNoClaim("agent-ab", []string{"a", "b"})
			h.requireState("role-c", store.StateReady)
			got = h.claim("agent-c", []string{"c"}, 10)
			requireSameIDs(t, "agent with role c", taskIDs(got), []string{"role-c"})
		}},
		{"AgentWithoutRolesGetsOnlyRolelessTasks", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "role-a", Role: "a", Priority: 10},
				&store.TaskCreate{ID: "any-1"},
				&store.TaskCreate{ID: "any-2"},
			)
			got := h.claim("agent-plain", nil, 10)
			requireSameIDs(t, "agent without roles", taskIDs(got), []string{"any-1", "any-2"})
			h.requireNoClaim("agent-plain", []string{})
			h.requireState("role-a", store.StateReady)
		}},
		{"Assignee", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "mine", Assignee: "agent-7"},
				&store.TaskCreate{ID: "mine-with-role", Assignee: "agent-7", Role: "builder"},
			)
			h.requireNoClaim("agent-8", []string{"builder"})
			// Assignee and role must both match.
			h.claimOne("agent-7", "mine")
			h.requireNoClaim("agent-7", nil)
			got := h.claim("agent-7", []string{"builder"}, 10)
			requireSameIDs(t, "assignee with role", taskIDs(got), []string{"mine-with-role"})
		}},
		{"SetsLease", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", Title: "the task"})
			h.clock.Advance(5 * time.Second)
			now := h.now()
			got := h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Max: 1, LeaseDuration: 90 * time.Second, Now: now})
			if len(got) != 1 {
				t.Fatalf("claimed %d tasks", len(got))
			}
			c := got[0]
			if c.State != store.StateInProgress || c.Attempt != 1 || c.LeaseHolder != "agent-1" || c.FencingToken <= 0 {
				t.Fatalf("claimed task: state %s attempt %d holder %q token %d; want IN_PROGRESS 1 agent-1 >0",
					c.State, c.Attempt, c.LeaseHolder, c.FencingToken)
			}
			requireTime(t, "ClaimedAt", c.ClaimedAt, now)
			requireTime(t, "RenewedAt", c.RenewedAt, now)
			requireTime(t, "LeaseExpiresAt", c.LeaseExpiresAt, now.Add(90*time.Second))
			requireTime(t, "StateChangedAt", c.StateChangedAt, now)
			requireTime(t, "CreatedAt", c.CreatedAt, baseTime)
			if d := diffTask(c, h.get("a")); len(d) > 0 {
				t.Fatalf("claim result differs from stored task:\n%s", strings.Join(d, "\n"))
			}
		}},
		{"FencingTokenGrows", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", MaxAttempts: 10})
			// Every way a lease can end must leave the next claim a
			// larger token than any the task had.
			releases := []struct {
				name string
				end  func(task *store.Task)
			}{
				{"retryable failure", func(task *store.Task) { h.fail(task, "flaky", false, noBackoff) }},
				{"lease expiry", func(task *store.Task) {
					h.clock.Set(task.LeaseExpiresAt)
					if got := h.rescue(noBackoff); len(got) != 1 {
						t.Fatalf("rescued %v, want [a]", changeIDs(got))
					}
				}},
				{"operator requeue", func(task *store.Task) { h.move(task.ID, store.StateReady) }},
				{"stuck requeue", func(task *store.Task) {
					h.clock.Advance(30 * time.Second)
					if _, err := h.s.TaskRequeueStuck(h.ctx, &store.TaskRequeueStuckParams{OlderThan: 30 * time.Second, Now: h.now()}); err != nil {
						t.Fatal(err)
					}
				}},
			}
			prev := h.get("a").FencingToken
			for i, r := range releases {
				agent := []string{"agent-1", "agent-2"}[i%2]
				task := h.claimOne(agent, "a")
				if task.FencingToken <= prev {
					t.Fatalf("claim after %d releases: token %d, not greater than %d", i, task.FencingToken, prev)
				}
				prev = task.FencingToken
				r.end(task)
				h.requireState("a", store.StateReady)
				h.clock.Advance(time.Second)
			}
			if task := h.claimOne("agent-1", "a"); task.FencingToken <= prev {
				t.Fatalf("last claim: token %d, not greater than %d", task.FencingToken, prev)
			}
		}},
		{"TimeZones", func(t *testing.T, h *harness) {
			// Callers may pass Now in any zone (the runbook's is NZ). A
			// driver that compared zoned text would see 22:00+13:00 as
			// later than 10:00Z; instants are what count.
			nz := time.FixedZone("NZDT", 13*60*60)
			t0 := h.now()
			h.create(&store.TaskCreate{ID: "a", RunAfter: t0.Add(10 * time.Minute).In(nz)})
			if got := h.get("a"); got.CreatedAt.Location() != time.UTC || got.RunAfter.Location() != time.UTC {
				t.Fatalf("times come back in %s and %s, want UTC", got.CreatedAt.Location(), got.RunAfter.Location())
			}
			early := h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Max: 1, LeaseDuration: time.Minute, Now: t0.Add(5 * time.Minute).In(nz)})
			if len(early) != 0 {
				t.Fatal("claimed before RunAfter when Now was given in another zone")
			}
			next, ok, err := h.s.TaskNextRunAfter(h.ctx, t0.In(nz))
			if err != nil || !ok || !next.Equal(t0.Add(10*time.Minute)) {
				t.Fatalf("TaskNextRunAfter = %s %v %v, want t0+10m", fmtTime(next), ok, err)
			}
			claimed := h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Max: 1, LeaseDuration: time.Minute, Now: t0.Add(10 * time.Minute).In(nz)})
			if len(claimed) != 1 {
				t.Fatal("not claimable at RunAfter when Now was given in another zone")
			}
			requireTime(t, "LeaseExpiresAt", claimed[0].LeaseExpiresAt, t0.Add(11*time.Minute))
			rescued, err := h.s.TaskRescueExpired(h.ctx, &store.TaskRescueExpiredParams{Backoff: noBackoff, Now: t0.Add(10*time.Minute + 30*time.Second)})
			if err != nil || len(rescued) != 0 {
				t.Fatalf("rescue before expiry: %v %v", changeIDs(rescued), err)
			}
			rescued, err = h.s.TaskRescueExpired(h.ctx, &store.TaskRescueExpiredParams{Backoff: noBackoff, Now: t0.Add(11 * time.Minute).In(nz)})
			if err != nil || len(rescued) != 1 {
				t.Fatalf("rescue at expiry: %v %v", changeIDs(rescued), err)
			}
		}},
		{"ByteBudgetCommitsOnlyWhatFits", func(t *testing.T, h *harness) {
			// Five tasks of about 100 KiB; a budget of 250 KiB carries two.
			for i := range 5 {
				h.create(&store.TaskCreate{ID: fmt.Sprintf("big-%d", i), PayloadJSON: jsonString(100 << 10), Priority: int32(-i)})
			}
			budget := int64(250 << 10)
			for _, want := range [][]string{{"big-0", "big-1"}, {"big-2", "big-3"}, {"big-4"}} {
				got := h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Max: 5, LeaseDuration: time.Hour, Now: h.now(), MaxBytes: budget})
				requireSameIDs(t, "claim within 250 KiB", taskIDs(got), want)
				// What did not fit was never taken: still READY, no attempt used.
				for _, task := range h.list(&store.TaskListParams{States: []store.TaskState{store.StateReady}}).Tasks {
					if task.Attempt != 0 || task.FencingToken != 0 {
						t.Fatalf("READY task %s has attempt %d and token %d after a claim passed it over", task.ID, task.Attempt, task.FencingToken)
					}
				}
			}
			if n := h.stats().Counts[store.StateInProgress]; n != 5 {
				t.Fatalf("%d IN_PROGRESS, want 5", n)
			}
		}},
		{"ByteBudgetHandsOutOneTaskLargerThanIt", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "huge", PayloadJSON: jsonString(300 << 10), Priority: 1},
				&store.TaskCreate{ID: "small"},
			)
			got := h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Max: 10, LeaseDuration: time.Hour, Now: h.now(), MaxBytes: 100 << 10})
			requireSameIDs(t, "claim of a task larger than the budget", taskIDs(got), []string{"huge"})
			h.requireState("small", store.StateReady)
		}},
		{"ByteBudgetKeepsClaimOrder", func(t *testing.T, h *harness) {
			// A task that does not fit ends the claim: a smaller one behind
			// it is not taken out of turn.
			h.create(
				&store.TaskCreate{ID: "first", Priority: 3},
				&store.TaskCreate{ID: "big", PayloadJSON: jsonString(200 << 10), Priority: 2},
				&store.TaskCreate{ID: "last", Priority: 1},
			)
			got := h.claimParams(&store.TaskClaimParams{Agent: "agent-1", Max: 3, LeaseDuration: time.Hour, Now: h.now(), MaxBytes: 150 << 10})
			requireSameIDs(t, "claim within 150 KiB", taskIDs(got), []string{"first"})
			h.requireState("big", store.StateReady)
			h.requireState("last", store.StateReady)
		}},
		{"ReleaseUndoesUndeliveredClaim", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", MaxAttempts: 1}, &store.TaskCreate{ID: "b", MaxAttempts: 1})
			claimed := h.claim("agent-1", nil, 2)
			h.clock.Advance(time.Second)
			changes, err := h.s.TaskRelease(h.ctx, &store.TaskReleaseParams{Leases: []store.LeaseRef{leaseOf(claimed[0]), leaseOf(claimed[1])}, Now: h.now()})
			if err != nil {
				t.Fatalf("TaskRelease: %v", err)
			}
			requireSameIDs(t, "released", changeIDs(changes), []string{"a", "b"})
			for _, c := range claimed {
				requireChange(t, changes, c.ID, store.StateInProgress, store.StateReady)
				got := h.requireState(c.ID, store.StateReady)
				if got.Attempt != 0 {
					t.Fatalf("%s: attempt %d after release, want 0 (the attempt given back)", c.ID, got.Attempt)
				}
				requireNoLease(t, got)
				requireTime(t, "StateChangedAt", got.StateChangedAt, h.now())
			}
			// With its one attempt given back the task is claimable again,
			// under a token the released lease never had.
			again := h.claimOne("agent-2", "a")
			if again.Attempt != 1 || again.FencingToken <= claimed[0].FencingToken {
				t.Fatalf("claim after release: attempt %d token %d; want 1 and a token above %d", again.Attempt, again.FencingToken, claimed[0].FencingToken)
			}
			// The released lease is stale.
			res, _ := h.completeItem(store.TaskCompleteItem{Lease: leaseOf(claimed[0])})
			requireIs(t, res.Err, store.ErrStaleLease, "completion under a released lease")
		}},
		{"ReleasePassesOverLeasesNoLongerHeld", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a"})
			old := h.claimOne("agent-1", "a")
			h.move("a", store.StateReady)
			current := h.claimOne("agent-2", "a")
			changes, err := h.s.TaskRelease(h.ctx, &store.TaskReleaseParams{
				Leases: []store.LeaseRef{leaseOf(old), {TaskID: "missing", Agent: "agent-1", FencingToken: 1}}, Now: h.now(),
			})
			if err != nil || len(changes) != 0 {
				t.Fatalf("release of a lost lease: changes %v, err %v; want none", changeIDs(changes), err)
			}
			h.requireUnchanged(current)
		}},
		{"ReleaseIntoPausedQueue", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a"})
			claimed := h.claimOne("agent-1", "a")
			h.pause("maintenance")
			if _, err := h.s.TaskRelease(h.ctx, &store.TaskReleaseParams{Leases: []store.LeaseRef{leaseOf(claimed)}, Now: h.now()}); err != nil {
				t.Fatalf("TaskRelease: %v", err)
			}
			if got := h.requireState("a", store.StatePaused); !got.PausedByQueue || got.Attempt != 0 {
				t.Fatalf("released into a paused queue: paused by queue %v, attempt %d; want true, 0", got.PausedByQueue, got.Attempt)
			}
			h.resume()
			h.requireState("a", store.StateReady)
		}},
		{"SkipsTasksNotReady", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "backlog", InitialState: store.StateBacklog},
				&store.TaskCreate{ID: "paused", InitialState: store.StatePaused},
				&store.TaskCreate{ID: "review", InitialState: store.StateReview},
				&store.TaskCreate{ID: "done", InitialState: store.StateDone},
				&store.TaskCreate{ID: "failed", InitialState: store.StateFailed},
				&store.TaskCreate{ID: "held"},
			)
			h.claimOne("agent-1", "held")
			h.requireNoClaim("agent-2", nil)
		}},
	})
}

// jsonString is a JSON payload of about n bytes.
func jsonString(n int) string { return `"` + strings.Repeat("x", n-2) + `"` }
