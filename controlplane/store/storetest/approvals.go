package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// pendingApproval is a new PENDING request with a deadline an hour out.
func (h *harness) pendingApproval(id string) *store.ApprovalCreate {
	return &store.ApprovalCreate{
		ID: id, What: "deploy " + id, Why: "release", Agent: "forge", Risk: store.RiskHigh, Tier: 2,
		Kind: "production_deploy", PayloadJSON: `{"v":1}`, PayloadSHA256: "abc",
		Deadline: h.now().Add(time.Hour), DefaultOnTimeout: store.DecisionReject, State: store.ApprovalPending,
	}
}

func (h *harness) requestApproval(c *store.ApprovalCreate) *store.Approval {
	h.t.Helper()
	a, err := h.s.ApprovalCreate(h.ctx, &store.ApprovalCreateParams{Approval: c, Now: h.now()})
	if err != nil {
		h.t.Fatalf("ApprovalCreate %s: %v", c.ID, err)
	}
	return a
}

func (h *harness) decide(id string, d store.ApprovalDecision, reason, instructions string) (*store.ApprovalDecideResult, error) {
	return h.s.ApprovalDecide(h.ctx, &store.ApprovalDecideParams{
		ID: id, Decision: d, DecidedBy: "alice", Reason: reason, Instructions: instructions, Now: h.now(),
	})
}

// gated is a task gated by a new PENDING request.
func (h *harness) gated(id string, deps ...string) *store.TaskCreate {
	return &store.TaskCreate{ID: id, Title: "gated " + id, Kind: "production_deploy", DependsOn: deps, Approval: h.pendingApproval("ap-" + id)}
}

func (s *suite) testApprovals(t *testing.T) {
	s.runCases(t, []testCase{
		{"CreateGetRoundTrip", func(t *testing.T, h *harness) {
			c := h.pendingApproval("ap1")
			c.ReminderAt = h.now().Add(45 * time.Minute)
			got := h.requestApproval(c)
			read, err := h.s.ApprovalGet(h.ctx, "ap1")
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range []*store.Approval{got, read} {
				if a.State != store.ApprovalPending || a.What != "deploy ap1" || a.Agent != "forge" || a.Risk != store.RiskHigh ||
					a.Tier != 2 || a.PayloadSHA256 != "abc" || a.DefaultOnTimeout != store.DecisionReject {
					t.Fatalf("approval %+v does not match the request", a)
				}
				requireTime(t, "Deadline", a.Deadline, h.now().Add(time.Hour))
				requireTime(t, "ReminderAt", a.ReminderAt, h.now().Add(45*time.Minute))
				requireTime(t, "CreatedAt", a.CreatedAt, h.now())
			}
			if _, err := h.s.ApprovalCreate(h.ctx, &store.ApprovalCreateParams{Approval: h.pendingApproval("ap1"), Now: h.now()}); !errors.Is(err, store.ErrAlreadyExists) {
				t.Fatalf("second create with the same id: %v, want ErrAlreadyExists", err)
			}
			if _, err := h.s.ApprovalGet(h.ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("get missing: %v, want ErrNotFound", err)
			}
		}},
		{"CreateRefusesUnknownTask", func(t *testing.T, h *harness) {
			c := h.pendingApproval("ap1")
			c.TaskID = "no-such-task"
			_, err := h.s.ApprovalCreate(h.ctx, &store.ApprovalCreateParams{Approval: c, Now: h.now()})
			requireFieldError(t, err, "task_id")
			if _, err := h.s.ApprovalGet(h.ctx, "ap1"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("refused request was stored: %v", err)
			}
		}},
		{"DecideIsFinal", func(t *testing.T, h *harness) {
			h.requestApproval(h.pendingApproval("ap1"))
			h.clock.Advance(time.Minute)
			res, err := h.decide("ap1", store.DecisionModify, "smaller", "deploy to canary first")
			if err != nil {
				t.Fatal(err)
			}
			a := res.Approval
			if a.State != store.ApprovalModified || a.Outcome != store.DecisionModify || a.DecidedBy != "alice" ||
				a.Reason != "smaller" || a.Instructions != "deploy to canary first" || a.AutoApproved {
				t.Fatalf("decided %+v", a)
			}
			requireTime(t, "DecidedAt", a.DecidedAt, h.now())
			_, err = h.decide("ap1", store.DecisionApprove, "", "")
			var de *store.DecidedError
			if !errors.As(err, &de) || !errors.Is(err, store.ErrIllegalTransition) || de.State != store.ApprovalModified {
				t.Fatalf("second decision: %v, want a DecidedError (MODIFIED) matching ErrIllegalTransition", err)
			}
			read, _ := h.s.ApprovalGet(h.ctx, "ap1")
			if read.State != store.ApprovalModified || read.Instructions != "deploy to canary first" {
				t.Fatalf("second decision changed the request: %+v", read)
			}
			if _, err := h.decide("nope", store.DecisionApprove, "", ""); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("decide missing: %v, want ErrNotFound", err)
			}
		}},
		{"ConcurrentDecisionsOneWins", func(t *testing.T, h *harness) {
			h.requestApproval(h.pendingApproval("ap1"))
			const n = 8
			var (
				wg   sync.WaitGroup
				mu   sync.Mutex
				wins int
				errs []error
			)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					d := store.DecisionApprove
					if i%2 == 1 {
						d = store.DecisionReject
					}
					_, err := h.s.ApprovalDecide(h.ctx, &store.ApprovalDecideParams{ID: "ap1", Decision: d, DecidedBy: fmt.Sprintf("op%d", i), Reason: "r", Now: h.now()})
					mu.Lock()
					defer mu.Unlock()
					if err == nil {
						wins++
					} else if !errors.Is(err, store.ErrIllegalTransition) {
						errs = append(errs, err)
					}
				}()
			}
			wg.Wait()
			if wins != 1 || len(errs) > 0 {
				t.Fatalf("%d decisions won (want 1), unexpected errors %v", wins, errs)
			}
		}},
		{"ExpireAppliesDefault", func(t *testing.T, h *harness) {
			deny := h.pendingApproval("deny")
			allow := h.pendingApproval("allow")
			allow.DefaultOnTimeout = store.DecisionApprove
			later := h.pendingApproval("later")
			later.Deadline = h.now().Add(2 * time.Hour)
			h.requestApproval(deny)
			h.requestApproval(allow)
			h.requestApproval(later)
			res, err := h.s.ApprovalExpire(h.ctx, &store.ApprovalExpireParams{Now: h.now().Add(time.Hour - time.Second)})
			if err != nil || len(res) != 0 {
				t.Fatalf("expire before the deadline: %d expired, %v", len(res), err)
			}
			h.clock.Advance(time.Hour)
			res, err = h.s.ApprovalExpire(h.ctx, &store.ApprovalExpireParams{Now: h.now()})
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != 2 {
				t.Fatalf("expired %d, want 2", len(res))
			}
			for _, id := range []string{"deny", "allow"} {
				a, _ := h.s.ApprovalGet(h.ctx, id)
				want := store.DecisionReject
				if id == "allow" {
					want = store.DecisionApprove
				}
				if a.State != store.ApprovalExpired || a.Outcome != want || a.DecidedBy != store.DecidedByTimeout {
					t.Fatalf("%s after expiry: %+v, want EXPIRED with %s by timeout", id, a, want)
				}
				requireTime(t, "DecidedAt", a.DecidedAt, h.now())
			}
			if a, _ := h.s.ApprovalGet(h.ctx, "later"); a.State != store.ApprovalPending {
				t.Fatalf("later expired early: %s", a.State)
			}
			if _, err := h.decide("deny", store.DecisionApprove, "", ""); !errors.Is(err, store.ErrIllegalTransition) {
				t.Fatalf("decision after expiry: %v, want ErrIllegalTransition", err)
			}
			next, ok, err := h.s.ApprovalNextDue(h.ctx)
			if err != nil || !ok {
				t.Fatalf("next due: %v %v", ok, err)
			}
			requireTime(t, "next due", next, later.Deadline)
		}},
		{"RemindersGoOutOnce", func(t *testing.T, h *harness) {
			c := h.pendingApproval("ap1")
			c.ReminderAt = h.now().Add(30 * time.Minute)
			h.requestApproval(c)
			h.requestApproval(h.pendingApproval("ap2")) // no reminder
			next, ok, _ := h.s.ApprovalNextDue(h.ctx)
			if !ok {
				t.Fatal("no next due")
			}
			requireTime(t, "next due", next, c.ReminderAt)
			got, err := h.s.ApprovalTakeReminders(h.ctx, &store.ApprovalRemindParams{Now: h.now().Add(29 * time.Minute)})
			if err != nil || len(got) != 0 {
				t.Fatalf("early reminders %d, %v", len(got), err)
			}
			h.clock.Advance(30 * time.Minute)
			got, err = h.s.ApprovalTakeReminders(h.ctx, &store.ApprovalRemindParams{Now: h.now()})
			if err != nil || len(got) != 1 || got[0].ID != "ap1" {
				t.Fatalf("reminders %v, %v; want ap1", got, err)
			}
			requireTime(t, "RemindedAt", got[0].RemindedAt, h.now())
			got, _ = h.s.ApprovalTakeReminders(h.ctx, &store.ApprovalRemindParams{Now: h.now().Add(time.Minute)})
			if len(got) != 0 {
				t.Fatalf("reminder sent twice")
			}
		}},
		{"ListPendingFirstAndPages", func(t *testing.T, h *harness) {
			for i := range 5 {
				h.requestApproval(h.pendingApproval(fmt.Sprintf("ap%d", i)))
			}
			if _, err := h.decide("ap0", store.DecisionApprove, "", ""); err != nil {
				t.Fatal(err)
			}
			if _, err := h.decide("ap2", store.DecisionReject, "no", ""); err != nil {
				t.Fatal(err)
			}
			var ids []string
			cursor := ""
			for {
				page, err := h.s.ApprovalList(h.ctx, &store.ApprovalListParams{Limit: 2, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range page.Approvals {
					ids = append(ids, a.ID)
				}
				if page.NextCursor == "" {
					break
				}
				cursor = page.NextCursor
			}
			requireIDs(t, "list order", ids, []string{"ap1", "ap3", "ap4", "ap0", "ap2"})
			page, err := h.s.ApprovalList(h.ctx, &store.ApprovalListParams{States: []store.ApprovalState{store.ApprovalRejected}})
			if err != nil || len(page.Approvals) != 1 || page.Approvals[0].ID != "ap2" {
				t.Fatalf("state filter: %v %v", page, err)
			}
			_, err = h.s.ApprovalList(h.ctx, &store.ApprovalListParams{Cursor: "garbage"})
			requireFieldError(t, err, "page_token")
		}},
		{"ListNewestFirst", func(t *testing.T, h *harness) {
			// Pending ap1 ap3 ap4 ap7, decided ap0 ap2 ap5 ap6; ap3 and ap6
			// come from another agent.
			for i := range 8 {
				c := h.pendingApproval(fmt.Sprintf("ap%d", i))
				if i == 3 || i == 6 {
					c.Agent = "other"
				}
				h.requestApproval(c)
			}
			for _, d := range []struct {
				id       string
				decision store.ApprovalDecision
			}{{"ap6", store.DecisionModify}, {"ap0", store.DecisionApprove}, {"ap5", store.DecisionApprove}, {"ap2", store.DecisionReject}} {
				// Decided out of creation order: the list follows creation.
				if _, err := h.decide(d.id, d.decision, "because", "do less"); err != nil {
					t.Fatal(err)
				}
			}
			decided := []store.ApprovalState{store.ApprovalApproved, store.ApprovalRejected, store.ApprovalModified, store.ApprovalExpired}
			for _, c := range []struct {
				name string
				p    store.ApprovalListParams
				want []string
			}{
				{"all", store.ApprovalListParams{}, []string{"ap7", "ap4", "ap3", "ap1", "ap6", "ap5", "ap2", "ap0"}},
				{"decided", store.ApprovalListParams{States: decided}, []string{"ap6", "ap5", "ap2", "ap0"}},
				{"pending", store.ApprovalListParams{States: []store.ApprovalState{store.ApprovalPending}}, []string{"ap7", "ap4", "ap3", "ap1"}},
				{"pending and rejected", store.ApprovalListParams{States: []store.ApprovalState{store.ApprovalRejected, store.ApprovalPending}}, []string{"ap7", "ap4", "ap3", "ap1", "ap2"}},
				{"approved", store.ApprovalListParams{States: []store.ApprovalState{store.ApprovalApproved}}, []string{"ap5", "ap0"}},
				{"agent", store.ApprovalListParams{Agent: "other"}, []string{"ap3", "ap6"}},
				{"agent and decided", store.ApprovalListParams{Agent: "forge", States: decided}, []string{"ap5", "ap2", "ap0"}},
				{"unknown agent", store.ApprovalListParams{Agent: "nobody"}, nil},
			} {
				p := c.p
				p.NewestFirst, p.Limit = true, 100
				page, err := h.s.ApprovalList(h.ctx, &p)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				requireIDs(t, c.name, approvalIDs(page.Approvals), c.want)
				if page.NextCursor != "" {
					t.Fatalf("%s: a complete page has cursor %q", c.name, page.NextCursor)
				}
			}
		}},
		{"ListIDPrefix", func(t *testing.T, h *harness) {
			for _, id := range []string{"0190abc9-1111", "0190abc:", "0190abca-0000", "0190abc9-2222", "ap1"} {
				h.requestApproval(h.pendingApproval(id))
			}
			if _, err := h.decide("0190abc9-2222", store.DecisionApprove, "", ""); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name string
				p    store.ApprovalListParams
				want []string
			}{
				{"prefix", store.ApprovalListParams{IDPrefix: "0190abc9"}, []string{"0190abc9-1111", "0190abc9-2222"}},
				{"newest first", store.ApprovalListParams{IDPrefix: "0190abc9", NewestFirst: true}, []string{"0190abc9-1111", "0190abc9-2222"}},
				{"shorter", store.ApprovalListParams{IDPrefix: "0190abc", NewestFirst: true}, []string{"0190abca-0000", "0190abc:", "0190abc9-1111", "0190abc9-2222"}},
				{"pending", store.ApprovalListParams{IDPrefix: "0190abc9-", States: []store.ApprovalState{store.ApprovalPending}}, []string{"0190abc9-1111"}},
				{"whole id", store.ApprovalListParams{IDPrefix: "ap1"}, []string{"ap1"}},
				{"none", store.ApprovalListParams{IDPrefix: "0190abd"}, nil},
			} {
				p := c.p
				p.Limit = 100
				page, err := h.s.ApprovalList(h.ctx, &p)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				requireIDs(t, c.name, approvalIDs(page.Approvals), c.want)
			}
		}},
		{"ListPagesInBothOrders", func(t *testing.T, h *harness) {
			// 11 requests, every third decided: groups of 7 and 4 that
			// pages of 1 to 4 split in every way.
			var pending, rest []string
			for i := range 11 {
				id := fmt.Sprintf("ap%02d", i)
				h.requestApproval(h.pendingApproval(id))
				if i%3 == 1 {
					if _, err := h.decide(id, store.DecisionApprove, "", ""); err != nil {
						t.Fatal(err)
					}
					rest = append(rest, id)
				} else {
					pending = append(pending, id)
				}
			}
			oldest := slices.Concat(pending, rest)
			newest := slices.Concat(reversed(pending), reversed(rest))
			for limit := 1; limit <= 4; limit++ {
				for _, c := range []struct {
					name string
					p    store.ApprovalListParams
					want []string
				}{
					{"oldest", store.ApprovalListParams{}, oldest},
					{"newest", store.ApprovalListParams{NewestFirst: true}, newest},
					{"newest decided", store.ApprovalListParams{NewestFirst: true, States: []store.ApprovalState{store.ApprovalApproved}}, reversed(rest)},
					{"newest pending", store.ApprovalListParams{NewestFirst: true, States: []store.ApprovalState{store.ApprovalPending}}, reversed(pending)},
				} {
					p := c.p
					p.Limit = limit
					var got []string
					for pages := 0; ; pages++ {
						if pages > 20 {
							t.Fatalf("%s by %d: paging did not end: %v", c.name, limit, got)
						}
						page, err := h.s.ApprovalList(h.ctx, &p)
						if err != nil {
							t.Fatalf("%s by %d: %v", c.name, limit, err)
						}
						if len(page.Approvals) > limit {
							t.Fatalf("%s: page of %d with Limit %d", c.name, len(page.Approvals), limit)
						}
						got = append(got, approvalIDs(page.Approvals)...)
						if p.Cursor = page.NextCursor; p.Cursor == "" {
							break
						}
					}
					requireIDs(t, fmt.Sprintf("%s by %d", c.name, limit), got, c.want)
				}
			}
		}},
		{"ListCursorOfTheOtherOrderIsRefused", func(t *testing.T, h *harness) {
			for i := range 5 {
				h.requestApproval(h.pendingApproval(fmt.Sprintf("ap%d", i)))
			}
			for _, id := range []string{"ap0", "ap1"} {
				if _, err := h.decide(id, store.DecisionApprove, "", ""); err != nil {
					t.Fatal(err)
				}
			}
			for _, newest := range []bool{false, true} {
				// A cursor in each group: after the first pending request,
				// and after the first decided one.
				for _, limit := range []int{1, 4} {
					page, err := h.s.ApprovalList(h.ctx, &store.ApprovalListParams{Limit: limit, NewestFirst: newest})
					if err != nil || page.NextCursor == "" {
						t.Fatalf("newest %v, limit %d: cursor %q, %v", newest, limit, page.NextCursor, err)
					}
					_, err = h.s.ApprovalList(h.ctx, &store.ApprovalListParams{Limit: limit, Cursor: page.NextCursor, NewestFirst: !newest})
					requireFieldError(t, err, "page_token")
				}
				for _, cursor := range []string{"garbage", "n", "n2.1", "n0", "0", "n0.-1"} {
					_, err := h.s.ApprovalList(h.ctx, &store.ApprovalListParams{Cursor: cursor, NewestFirst: newest})
					requireFieldError(t, err, "page_token")
				}
			}
		}},
		{"GatedTaskWaitsForApproval", func(t *testing.T, h *harness) {
			changes := h.create(h.gated("deploy"))
			task := changes[0].Task
			if task.State != store.StateBacklog || !task.ApprovalPending || task.ApprovalID != "ap-deploy" {
				t.Fatalf("gated task created %s pending=%v approval=%q, want BACKLOG pending ap-deploy", task.State, task.ApprovalPending, task.ApprovalID)
			}
			a, err := h.s.ApprovalGet(h.ctx, "ap-deploy")
			if err != nil || a.TaskID != "deploy" {
				t.Fatalf("gating request: %+v %v", a, err)
			}
			h.requireNoClaim("agent-1", nil)
			res, err := h.decide("ap-deploy", store.DecisionApprove, "", "")
			if err != nil {
				t.Fatal(err)
			}
			requireChange(t, res.TaskChanges, "deploy", store.StateBacklog, store.StateReady)
			got := h.requireState("deploy", store.StateReady)
			if got.ApprovalPending {
				t.Fatal("approval still pending on the task after approval")
			}
			h.claimOne("agent-1", "deploy")
		}},
		{"GatedTaskRejectFails", func(t *testing.T, h *harness) {
			h.create(h.gated("deploy"))
			res, err := h.decide("ap-deploy", store.DecisionReject, "not on a Friday", "")
			if err != nil {
				t.Fatal(err)
			}
			requireChange(t, res.TaskChanges, "deploy", store.StateBacklog, store.StateFailed)
			got := h.requireState("deploy", store.StateFailed)
			if got.LastError != "approval rejected: not on a Friday" {
				t.Fatalf("last error %q", got.LastError)
			}
		}},
		{"GatedTaskModifyCarriesInstructions", func(t *testing.T, h *harness) {
			h.create(h.gated("deploy"))
			if _, err := h.decide("ap-deploy", store.DecisionModify, "too wide", "canary only"); err != nil {
				t.Fatal(err)
			}
			got := h.requireState("deploy", store.StateReady)
			if got.Note != "approval instructions: canary only" {
				t.Fatalf("note %q, want the instructions", got.Note)
			}
		}},
		{"GatedTaskExpiryAppliesDefault", func(t *testing.T, h *harness) {
			h.create(h.gated("deny"))
			allow := h.gated("allow")
			allow.Approval.DefaultOnTimeout = store.DecisionApprove
			h.create(allow)
			h.clock.Advance(time.Hour)
			res, err := h.s.ApprovalExpire(h.ctx, &store.ApprovalExpireParams{Now: h.now()})
			if err != nil || len(res) != 2 {
				t.Fatalf("expired %d, %v", len(res), err)
			}
			h.requireState("deny", store.StateFailed)
			h.requireState("allow", store.StateReady)
		}},
		{"PromotionSkipsPendingApproval", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "build"})
			h.create(h.gated("deploy", "build"))
			// Approval before the dependency is done: stays BACKLOG.
			res, err := h.decide("ap-deploy", store.DecisionApprove, "", "")
			if err != nil {
				t.Fatal(err)
			}
			requireChange(t, res.TaskChanges, "deploy", store.StateBacklog, store.StateBacklog)
			h.requireState("deploy", store.StateBacklog)
			changes := h.claimAndComplete("build")
			requireChange(t, changes, "deploy", store.StateBacklog, store.StateReady)
			h.claimAndComplete("deploy")

			// Dependency done first: promotion passes the task over until
			// the approval.
			h.create(&store.TaskCreate{ID: "build2"})
			h.create(h.gated("deploy2", "build2"))
			changes = h.claimAndComplete("build2")
			if _, _, ok := findChange(changes, "deploy2"); ok {
				t.Fatalf("gated task promoted before approval: %v", changeIDs(changes))
			}
			h.requireState("deploy2", store.StateBacklog)
			res, err = h.decide("ap-deploy2", store.DecisionApprove, "", "")
			if err != nil {
				t.Fatal(err)
			}
			requireChange(t, res.TaskChanges, "deploy2", store.StateBacklog, store.StateReady)
		}},
		{"GatedCreateIsAllOrNothing", func(t *testing.T, h *harness) {
			h.requestApproval(h.pendingApproval("ap-taken"))
			c := h.gated("x")
			c.Approval.ID = "ap-taken"
			_, err := h.s.TaskCreate(h.ctx, &store.TaskCreateParams{Tasks: []*store.TaskCreate{c}, Now: h.now()})
			if !errors.Is(err, store.ErrAlreadyExists) {
				t.Fatalf("gated create with a taken approval id: %v, want ErrAlreadyExists", err)
			}
			h.requireAbsent("x")
			bad := h.gated("y")
			bad.InitialState = store.StateDone
			_, err = h.s.TaskCreate(h.ctx, &store.TaskCreateParams{Tasks: []*store.TaskCreate{bad}, Now: h.now()})
			requireFieldError(t, err, "initial_state")
		}},
		{"AutoApprovedDoesNotGate", func(t *testing.T, h *harness) {
			c := &store.TaskCreate{ID: "t", Approval: &store.ApprovalCreate{
				ID: "ap-t", What: "t", Agent: "forge", Tier: 0, Deadline: h.now().Add(time.Hour), DefaultOnTimeout: store.DecisionReject,
				State: store.ApprovalApproved, AutoApproved: true, Outcome: store.DecisionApprove, DecidedBy: store.DecidedByPolicy, DecidedAt: h.now(),
			}}
			changes := h.create(c)
			if changes[0].Task.State != store.StateReady || changes[0].Task.ApprovalPending {
				t.Fatalf("auto-approved task created %s pending=%v, want READY", changes[0].Task.State, changes[0].Task.ApprovalPending)
			}
			a, _ := h.s.ApprovalGet(h.ctx, "ap-t")
			if !a.AutoApproved || a.State != store.ApprovalApproved || a.DecidedBy != store.DecidedByPolicy {
				t.Fatalf("auto-approved request %+v", a)
			}
		}},
	})
}

func approvalIDs(approvals []*store.Approval) []string {
	ids := make([]string, len(approvals))
	for i, a := range approvals {
		ids[i] = a.ID
	}
	return ids
}

// reversed returns a reversed copy of ids.
func reversed(ids []string) []string {
	out := slices.Clone(ids)
	slices.Reverse(out)
	return out
}
