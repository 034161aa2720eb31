package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// The dump group proves DumpRead and DumpLoad: what one store reads out,
// another stores as it was (and reads out the same), under the rules of
// store.LoadDump.
func (s *suite) testDump(t *testing.T) {
	s.runCases(t, []testCase{
		{"RoundTripKeepsEveryRow", s.dumpRoundTrip},
		{"LoadedStoreCarriesOn", s.dumpCarriesOn},
		{"EmptyStoreReadsQueueOnly", func(t *testing.T, h *harness) {
			recs := h.dump()
			if len(recs) != 1 || recs[0].Queue == nil || *recs[0].Queue != (store.QueueSettings{}) {
				t.Fatalf("an empty store dumps %s, want one queue record that is not paused", recordsText(recs))
			}
		}},
		{"NotEmptyIsRefused", func(t *testing.T, h *harness) {
			src := richDump(t, s.setup(t))
			for name, fill := range map[string]func(h *harness){
				"a task":  func(h *harness) { h.createReady("mine") },
				"a token": func(h *harness) { h.createToken(newToken("mine", store.RoleAgent, "forge")) },
				"an audit entry": func(h *harness) {
					h.audit(&store.AuditEntry{Time: h.now(), Who: "ops", Role: store.RoleOperator, RPC: "/x", Outcome: "OK"})
				},
				"a paused queue": func(h *harness) { h.pause("maintenance") },
			} {
				t.Run(name, func(t *testing.T) {
					dst := s.setup(t)
					fill(dst)
					before := dst.dump()
					_, err := dst.s.DumpLoad(dst.ctx, &store.DumpLoadParams{Records: store.DumpRecords(src...)})
					requireIs(t, err, store.ErrLoadRefused, "load into a store holding "+name)
					requireSameRecords(t, "after the refused load", dst.dump(), before)
				})
			}
		}},
		{"KeptTokensDoNotCount", func(t *testing.T, h *harness) {
			src := richDump(t, s.setup(t))
			boot := newToken("boot", store.RoleOperator, "operator")
			boot.CreatedBy = "bootstrap"
			boot = h.createToken(boot)
			n, err := h.s.DumpLoad(h.ctx, &store.DumpLoadParams{Records: store.DumpRecords(src...), KeepTokens: []string{"boot"}})
			if err != nil {
				t.Fatalf("load beside a kept token: %v", err)
			}
			requireCounts(t, n, countRecords(src))
			got := h.dump()
			// The kept token stays, first among tokens; the rest is the dump.
			if toks := recordsOf(got, store.DumpToken); len(toks) == 0 || toks[0].Token.ID != "boot" {
				t.Fatalf("tokens after the load: %s", recordsText(toks))
			}
			requireSameRecords(t, "the loaded rows", without(got, "token boot"), src)

			// A dump token colliding with the kept one is refused.
			dst := s.setup(t)
			dst.createToken(boot)
			clash := *boot
			clash.ID = "other"
			_, err = dst.s.DumpLoad(dst.ctx, &store.DumpLoadParams{
				Records: store.DumpRecords(&store.DumpRecord{Token: &clash}), KeepTokens: []string{"boot"}})
			requireIs(t, err, store.ErrAlreadyExists, "a dump token with the kept token's hash")
		}},
		{"FleetEventsDoNotCountAndRepeatsAreSkipped", func(t *testing.T, h *harness) {
			src := richDump(t, s.setup(t))
			events := recordsOf(src, store.DumpFleetEvent)
			// A sidecar reached this control plane before the import and
			// reported an event the dump holds, and one it does not.
			h.appendEvents(events[1].FleetEvent)
			own := &store.FleetEvent{ID: "0195-new", Host: "gpu-3", Kind: "model_swap", Time: h.now()}
			h.appendEvents(own)
			n, err := h.s.DumpLoad(h.ctx, &store.DumpLoadParams{Records: store.DumpRecords(src...)})
			if err != nil {
				t.Fatalf("load into a store holding only fleet events: %v", err)
			}
			want := countRecords(src)
			want.FleetEvents--
			requireCounts(t, n, want)
			got := h.dump()
			requireIDs(t, "fleet events after the load", recordIDs(recordsOf(got, store.DumpFleetEvent)),
				[]string{"0194-c", "0195-new", "0194-b", "0194-a"})
			var others []*store.DumpRecord
			for _, r := range src {
				if r.FleetEvent == nil {
					others = append(others, r)
				}
			}
			requireSameRecords(t, "the loaded rows", got[:len(others)], others)
			requireSameRecords(t, "the event stored before the load", recordsOf(got, store.DumpFleetEvent)[:1], events[1:2])
		}},
		{"Merge", s.dumpMerge},
		{"AllOrNone", s.dumpAllOrNone},
		{"BadRecords", func(t *testing.T, h *harness) {
			at := h.now()
			good := func() *store.Task {
				return &store.Task{ID: "t", State: store.StateReady, MaxAttempts: 3, CreatedAt: at, UpdatedAt: at, StateChangedAt: at}
			}
			bad := map[string]*store.DumpRecord{
				"no kind":        {},
				"two kinds":      {Task: good(), Token: newToken("x", store.RoleAgent, "forge")},
				"unknown state":  {Task: func() *store.Task { x := good(); x.State = 42; return x }()},
				"lease on READY": {Task: func() *store.Task { x := good(); x.LeaseHolder = "forge"; return x }()},
				"IN_PROGRESS without a lease": {Task: func() *store.Task {
					x := good()
					x.State = store.StateInProgress
					return x
				}()},
				"no created_at":  {Task: func() *store.Task { x := good(); x.CreatedAt = time.Time{}; return x }()},
				"self-dependent": {Task: func() *store.Task { x := good(); x.DependsOn = []string{"t"}; return x }()},
				"missing dependency": {Task: func() *store.Task {
					x := good()
					x.DependsOn = []string{"nowhere"}
					return x
				}()},
				"token without hash":    {Token: &store.Token{ID: "x", Role: store.RoleAgent, Subject: "s", CreatedAt: at}},
				"token role":            {Token: &store.Token{ID: "x", Hash: "h", Role: "admin", Subject: "s", CreatedAt: at}},
				"token session_of":      {Token: &store.Token{ID: "x", Hash: "h", Role: store.RoleOperator, Subject: "s", CreatedAt: at, SessionOf: "not an id"}},
				"token its own session": {Token: &store.Token{ID: "x", Hash: "h", Role: store.RoleOperator, Subject: "s", CreatedAt: at, SessionOf: "x"}},
				"audit id 0":            {Audit: &store.AuditEntry{Time: at, Who: "w", Role: store.RoleOperator, RPC: "/x", Outcome: "OK"}},
				"unpaused reason":       {Queue: &store.QueueSettings{Reason: "why"}},
				"fleet event host":      {FleetEvent: &store.FleetEvent{ID: "e", Kind: "model_swap", Time: at}},
				"fleet event time":      {FleetEvent: &store.FleetEvent{ID: "e", Host: "gpu-1", Kind: "model_swap"}},
				"event and audit":       {FleetEvent: &store.FleetEvent{ID: "e", Host: "gpu-1", Kind: "k", Time: at}, Audit: auditAt(1, at)},
			}
			for name, rec := range bad {
				_, err := h.s.DumpLoad(h.ctx, &store.DumpLoadParams{Records: store.DumpRecords(rec)})
				if !errors.Is(err, store.ErrInvalidArgument) {
					t.Errorf("%s: got %v, want an invalid argument", name, err)
				}
			}
			for name, recs := range map[string][]*store.DumpRecord{
				"a task twice":          {{Task: good()}, {Task: good()}},
				"two queue records":     {{Queue: &store.QueueSettings{}}, {Queue: &store.QueueSettings{}}},
				"audit ids not growing": {{Audit: auditAt(2, at)}, {Audit: auditAt(2, at)}},
				"a fleet event twice": {{FleetEvent: &store.FleetEvent{ID: "e", Host: "gpu-1", Kind: "k", Time: at}},
					{FleetEvent: &store.FleetEvent{ID: "e", Host: "gpu-2", Kind: "k", Time: at}}},
				"dependency comes later": {{Task: func() *store.Task { x := good(); x.ID = "a"; x.DependsOn = []string{"b"}; return x }()},
					{Task: func() *store.Task { x := good(); x.ID = "b"; return x }()}},
			} {
				_, err := h.s.DumpLoad(h.ctx, &store.DumpLoadParams{Records: store.DumpRecords(recs...)})
				if !errors.Is(err, store.ErrInvalidArgument) {
					t.Errorf("%s: got %v, want an invalid argument", name, err)
				}
			}
			requireSameRecords(t, "after refused loads", h.dump(), []*store.DumpRecord{{Queue: &store.QueueSettings{}}})
		}},
	})
}

func auditAt(id int64, at time.Time) *store.AuditEntry {
	return &store.AuditEntry{ID: id, Time: at, Who: "ops", Role: store.RoleOperator, TokenID: "op", RPC: "/factory.v1.QueueService/MoveTask", Outcome: "OK"}
}

// richState fills h's store with every kind of row: a task in every state
// (a held lease, a retried task in backoff, a dependency chain, a task the
// queue paused and one an operator paused), labels and an unusual payload,
// a paused queue, live, revoked, expiring and used tokens, a console
// session made from one, and audit entries. Times carry odd fractions of a second on purpose.
func richState(t *testing.T, h *harness) {
	t.Helper()
	h.clock.Advance(1234567 * time.Microsecond)
	h.create(
		&store.TaskCreate{ID: "done", Title: "Write the spec", Kind: "research", Role: "researcher", Priority: 2,
			PayloadJSON: `{"z": 1,  "a": [true, null, 2.50], "nested": {"b": "é\u00e9", "a": "<&>"}}`,
			Labels:      map[string]string{"proj": "factory", "b": "2", "a": "1"}, Note: "from the runbook"},
		&store.TaskCreate{ID: "review", Title: "Review me", Role: "builder", MaxAttempts: 5, ApprovalTier: 2, Tier: store.TierFrontier},
		&store.TaskCreate{ID: "held", Title: "Being worked", Role: "builder", Assignee: "forge", Priority: 1},
		&store.TaskCreate{ID: "retry", Title: "Flaky", MaxAttempts: 4},
		&store.TaskCreate{ID: "dead", Title: "Broken", MaxAttempts: 1},
		&store.TaskCreate{ID: "waits", Title: "After held and done", DependsOn: []string{"held", "done"}},
		&store.TaskCreate{ID: "promoted", Title: "After done", DependsOn: []string{"done"}},
		&store.TaskCreate{ID: "parked", Title: "Operator's pause"},
		&store.TaskCreate{ID: "later", Title: "Not yet", RunAfter: h.now().Add(90 * time.Minute), Labels: map[string]string{"x": "y"}},
		&store.TaskCreate{ID: "queued", Title: "Plain"},
	)
	h.clock.Advance(1500 * time.Millisecond)
	if r, _ := h.completeItem(store.TaskCompleteItem{Lease: leaseOf(h.claimAs("agent-a", "researcher", "done")),
		ResultJSON: `{"findings": ["a", "b"], "score": 0.5}`}); r.Err != nil {
		t.Fatal(r.Err)
	}
	h.clock.Advance(time.Second)
	rev := h.claimAs("agent-b", "builder", "review")
	if r, _ := h.completeItem(store.TaskCompleteItem{Lease: leaseOf(rev), Review: true, Note: "please check"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	h.clock.Advance(time.Second)
	held := h.claimAs("forge", "builder", "held")
	h.clock.Advance(10 * time.Second)
	if _, err := h.s.TaskRenew(h.ctx, &store.TaskRenewParams{Lease: leaseOf(held), LeaseDuration: 5 * time.Minute, Progress: "half way", Now: h.now()}); err != nil {
		t.Fatal(err)
	}
	h.fail(h.claimOne("agent-c", "retry"), "timeout talking to the model", false, func(int32) time.Duration { return 45 * time.Second })
	h.fail(h.claimOne("agent-d", "dead"), "bad input", true, nil)
	h.move("parked", store.StatePaused)
	h.clock.Advance(333 * time.Millisecond)
	h.pause("spend over budget")

	h.createToken(newToken("op", store.RoleOperator, "ops"))
	h.clock.Advance(time.Second)
	exp := newToken("exp", store.RoleAgent, "hammer")
	exp.ExpiresAt = h.now().Add(24 * time.Hour)
	exp.Roles = []string{"builder", "tester"}
	h.createToken(exp)
	h.createToken(newToken("gone", store.RoleSidecar, "gpu-1"))
	sess := newToken("sess", store.RoleOperator, "ops")
	sess.SessionOf = "op"
	sess.ExpiresAt = h.now().Add(12 * time.Hour)
	h.createToken(sess)
	h.clock.Advance(time.Second)
	if _, err := h.s.TokenRevoke(h.ctx, &store.TokenRevokeParams{ID: "gone", Now: h.now()}); err != nil {
		t.Fatal(err)
	}
	if err := h.s.TokenTouch(h.ctx, &store.TokenTouchParams{ID: "op", Now: h.now()}); err != nil {
		t.Fatal(err)
	}
	h.audit(
		&store.AuditEntry{Time: h.now(), Who: "ops", Role: store.RoleOperator, TokenID: "op", RPC: "/factory.v1.QueueService/MoveTask",
			Target: "parked", BeforeJSON: `{"state":"READY"}`, AfterJSON: `{"state":"PAUSED"}`, TraceID: "0af7651916cd43dd8448eb211c80319c", Outcome: "OK"},
		&store.AuditEntry{Time: h.now(), Who: "hammer", Role: store.RoleAgent, TokenID: "exp", RPC: "/factory.v1.QueueService/PauseQueue",
			Outcome: "PERMISSION_DENIED", Detail: "agent hammer may not call PauseQueue"},
	)
	h.clock.Advance(time.Second)
	h.audit(&store.AuditEntry{Time: h.now(), Who: "ops", Role: store.RoleOperator, TokenID: "op", RPC: "/factory.v1.QueueService/PauseQueue",
		Target: "queue", AfterJSON: `{"paused":true}`, Outcome: "OK"})
	// Fleet events taken out of time order, with ids out of both orders:
	// the dump must keep the order the store took them in.
	h.clock.Advance(777 * time.Microsecond)
	h.appendEvents(
		&store.FleetEvent{ID: "0194-b", Host: "gpu-1", Kind: "model_swap", Time: h.now(),
			Attributes: map[string]string{"to": "qwen-32b", "from": "llama-70b", "reason": "queue <mix> & load"}},
		&store.FleetEvent{ID: "0194-c", Host: "gpu-2", Kind: "log_count", Time: h.now().Add(-time.Hour)},
	)
	h.appendEvents(&store.FleetEvent{ID: "0194-a", Host: "gpu-1", Kind: "log_count", Time: h.now().Add(1500 * time.Microsecond),
		Attributes: map[string]string{"pattern": "CUDA error", "count": "3"}})
}

// claimAs claims one task with a role and fails unless it is want.
func (h *harness) claimAs(agent, role, want string) *store.Task {
	h.t.Helper()
	got := h.claim(agent, []string{role}, 1)
	if len(got) != 1 || got[0].ID != want {
		h.t.Fatalf("%s (role %s) claimed %v, want %s", agent, role, taskIDs(got), want)
	}
	return got[0]
}

// richDump is the dump of a store richState filled.
func richDump(t *testing.T, h *harness) []*store.DumpRecord {
	t.Helper()
	richState(t, h)
	return h.dump()
}

func (s *suite) dumpRoundTrip(t *testing.T, h *harness) {
	recs := richDump(t, h)
	// The source holds what richState made, in DumpRead's order.
	var kinds []string
	for _, r := range recs {
		kinds = append(kinds, string(r.Kind()))
	}
	wantKinds := "queue " + strings.Repeat("task ", 10) + strings.Repeat("token ", 4) + "audit audit audit " +
		"fleet_event fleet_event fleet_event"
	if strings.Join(kinds, " ") != strings.TrimSpace(wantKinds) {
		t.Fatalf("dump order: %v, want %s", kinds, wantKinds)
	}
	states := map[string]store.TaskState{}
	for _, r := range recordsOf(recs, store.DumpTask) {
		states[r.Task.ID] = r.Task.State
	}
	for id, want := range map[string]store.TaskState{
		"done": store.StateDone, "review": store.StateReview, "held": store.StateInProgress, "retry": store.StatePaused,
		"dead": store.StateFailed, "waits": store.StateBacklog, "promoted": store.StatePaused, "parked": store.StatePaused,
		"later": store.StatePaused, "queued": store.StatePaused,
	} {
		if states[id] != want {
			t.Fatalf("source task %s is %s, want %s", id, states[id], want)
		}
	}

	dst := s.setup(t)
	n, err := dst.s.DumpLoad(dst.ctx, &store.DumpLoadParams{Records: store.DumpRecords(recs...)})
	if err != nil {
		t.Fatalf("DumpLoad into an empty store: %v", err)
	}
	requireIDs(t, "fleet events in the dump", recordIDs(recordsOf(recs, store.DumpFleetEvent)), []string{"0194-b", "0194-c", "0194-a"})
	requireCounts(t, n, countRecords(recs))
	requireSameRecords(t, "dump of the loaded store", dst.dump(), recs)
}

// dumpCarriesOn proves the loaded rows work, not just read back: the held
// lease still holds under its fencing token, claims keep their order and
// their tokens grow, resume restores what the queue paused, audit ids go
// on from the dump's, a token is found by its hash, and revoking a token
// takes the console sessions made from it.
func (s *suite) dumpCarriesOn(t *testing.T, h *harness) {
	recs := richDump(t, h)
	dst := s.setup(t)
	dst.clock.Set(h.now())
	if _, err := dst.s.DumpLoad(dst.ctx, &store.DumpLoadParams{Records: store.DumpRecords(recs...)}); err != nil {
		t.Fatal(err)
	}
	if st := dst.stats(); !st.Paused || st.PauseReason != "spend over budget" {
		t.Fatalf("queue after the load: paused %v reason %q", st.Paused, st.PauseReason)
	}
	dst.resume()
	dst.requireState("parked", store.StatePaused) // the operator's pause stays

	held := dst.requireState("held", store.StateInProgress)
	if held.LeaseHolder != "forge" || held.FencingToken != 1 || held.Progress != "half way" {
		t.Fatalf("held after the load: holder %q token %d progress %q", held.LeaseHolder, held.FencingToken, held.Progress)
	}
	// The holder finishes under its old fencing token; its dependent
	// moves on.
	dst.complete(held)
	dst.requireState("waits", store.StateReady)

	dst.clock.Advance(time.Minute)
	// Creation order among equal priorities: the dump kept it ("later"
	// is still in its backoff).
	got := taskIDs(dst.claim("agent-z", nil, 10))
	requireIDs(t, "claim order after the load", got, []string{"retry", "waits", "promoted", "queued"})
	retry := dst.get("retry")
	if retry.Attempt != 2 || retry.FencingToken != 2 {
		t.Fatalf("retry claimed again: attempt %d token %d, want 2 and 2", retry.Attempt, retry.FencingToken)
	}
	dst.audit(&store.AuditEntry{Time: dst.now(), Who: "ops", Role: store.RoleOperator, RPC: "/x", Outcome: "OK"})
	entries := recordsOf(dst.dump(), store.DumpAudit)
	if last := entries[len(entries)-1].Audit.ID; last != 4 {
		t.Fatalf("an append after the load got id %d, want 4", last)
	}
	if tok := dst.tokenByHash("hash-of-gone"); tok.RevokedAt.IsZero() {
		t.Fatal("the revoked token is active after the load")
	}
	if _, err := dst.s.TokenRevoke(dst.ctx, &store.TokenRevokeParams{ID: "op", Now: dst.now()}); err != nil {
		t.Fatal(err)
	}
	if tok := dst.tokenByHash("hash-of-sess"); tok.SessionOf != "op" || !tok.RevokedAt.Equal(dst.now()) {
		t.Fatalf("the loaded session after revoking its token: session_of %q revoked at %v", tok.SessionOf, tok.RevokedAt)
	}
	// The loaded events list by time, and a sidecar's replay of one
	// counts nothing.
	requireIDs(t, "fleet events listed after the load", eventIDs(dst.listEvents(nil)), []string{"0194-c", "0194-b", "0194-a"})
	if n := dst.appendEvents(recordsOf(recs, store.DumpFleetEvent)[0].FleetEvent); n != 0 {
		t.Fatalf("a replayed event after the load was added %d times, want 0", n)
	}
}

func (s *suite) dumpMerge(t *testing.T, h *harness) {
	src := s.setup(t)
	src.create(&store.TaskCreate{ID: "a", Title: "first"}, &store.TaskCreate{ID: "b", DependsOn: []string{"a"}})
	src.createToken(newToken("theirs", store.RoleAgent, "anvil"))
	src.audit(&store.AuditEntry{Time: src.now(), Who: "ops", Role: store.RoleOperator, RPC: "/x", Target: "a", Outcome: "OK"})
	swap := &store.FleetEvent{ID: "ev-swap", Host: "gpu-1", Kind: "model_swap", Time: src.now(), Attributes: map[string]string{"to": "m2"}}
	src.appendEvents(swap, &store.FleetEvent{ID: "ev-count", Host: "gpu-1", Kind: "log_count", Time: src.now()})
	recs := src.dump()
	// b also depends on "mine", which only the merge target holds.
	taskOf(recs, "b").DependsOn = []string{"a", "mine"}

	h.create(&store.TaskCreate{ID: "mine"})
	h.createToken(newToken("ours", store.RoleOperator, "ops"))
	h.audit(&store.AuditEntry{Time: h.now(), Who: "ops", Role: store.RoleOperator, RPC: "/y", Outcome: "OK"})
	// The sidecar reported the swap to both control planes: the merge
	// skips it.
	h.appendEvents(swap)

	_, err := h.s.DumpLoad(h.ctx, &store.DumpLoadParams{Records: store.DumpRecords(recs...)})
	requireIs(t, err, store.ErrLoadRefused, "load without merge into a store with rows")

	n, err := h.s.DumpLoad(h.ctx, &store.DumpLoadParams{Records: store.DumpRecords(recs...), Merge: true})
	if err != nil {
		t.Fatalf("merge: %v", err)
	}
	// The queue record agreed and was kept; the swap was stored already.
	requireCounts(t, n, store.DumpCounts{Tasks: 2, Tokens: 1, Audit: 1, FleetEvents: 1})
	got := h.dump()
	requireIDs(t, "tasks after the merge", recordIDs(recordsOf(got, store.DumpTask)), []string{"mine", "a", "b"})
	requireIDs(t, "tokens after the merge", recordIDs(recordsOf(got, store.DumpToken)), []string{"ours", "theirs"})
	requireIDs(t, "fleet events after the merge", recordIDs(recordsOf(got, store.DumpFleetEvent)), []string{"ev-swap", "ev-count"})
	audit := recordsOf(got, store.DumpAudit)
	if len(audit) != 2 || audit[0].Audit.RPC != "/y" || audit[1].Audit.RPC != "/x" || audit[1].Audit.ID <= audit[0].Audit.ID {
		t.Fatalf("audit after the merge: %s", recordsText(audit))
	}
	// What merged is what was dumped, but for the new audit id.
	for _, want := range recs[1:] {
		var found bool
		for _, r := range got {
			// Audit entries are matched by content: their ids change.
			sameRow := want.Audit == nil && recordID(r) == recordID(want)
			sameEntry := r.Audit != nil && want.Audit != nil && r.Audit.RPC == want.Audit.RPC
			if sameRow || sameEntry {
				w := *want
				if w.Audit != nil {
					e := *w.Audit
					e.ID = r.Audit.ID
					w.Audit = &e
				}
				requireSameRecords(t, "merged "+recordID(want), []*store.DumpRecord{r}, []*store.DumpRecord{&w})
				found = true
			}
		}
		if !found {
			t.Fatalf("merged record %s is missing", recordID(want))
		}
	}

	before := h.dump()
	for name, c := range map[string]struct {
		recs []*store.DumpRecord
		want error
	}{
		"a task that exists": {[]*store.DumpRecord{{Task: taskOf(recs, "a")}}, store.ErrAlreadyExists},
		"a token that exists": {[]*store.DumpRecord{{Token: func() *store.Token {
			tok := *recordsOf(recs, store.DumpToken)[0].Token
			tok.Hash = "fresh"
			return &tok
		}()}}, store.ErrAlreadyExists},
		"a token hash that exists": {[]*store.DumpRecord{{Token: func() *store.Token {
			tok := *recordsOf(recs, store.DumpToken)[0].Token
			tok.ID = "fresh"
			return &tok
		}()}}, store.ErrAlreadyExists},
		"a paused queue into one that is not": {[]*store.DumpRecord{{Queue: &store.QueueSettings{Paused: true, Reason: "r", PausedAt: h.now()}}}, store.ErrLoadRefused},
	} {
		_, err := h.s.DumpLoad(h.ctx, &store.DumpLoadParams{Records: store.DumpRecords(c.recs...), Merge: true})
		requireIs(t, err, c.want, "merging "+name)
		if name == "a task that exists" && !strings.Contains(err.Error(), `"a"`) {
			t.Fatalf("the refusal does not name the task: %v", err)
		}
	}
	requireSameRecords(t, "after refused merges", h.dump(), before)

	// Merging into an empty store is a plain load: ids and the queue kept.
	empty := s.setup(t)
	if _, err := empty.s.DumpLoad(empty.ctx, &store.DumpLoadParams{Records: store.DumpRecords(src.dump()...), Merge: true}); err != nil {
		t.Fatal(err)
	}
	requireSameRecords(t, "merge into an empty store", empty.dump(), src.dump())
}

func (s *suite) dumpAllOrNone(t *testing.T, h *harness) {
	full := richDump(t, s.setup(t))
	// Appending to recs must never write into full's array.
	recs := full[:len(full):len(full)]
	// Many tasks, so the load spans several of the drivers' batches before
	// it fails.
	at := h.now()
	var many []*store.DumpRecord
	for i := range 1200 {
		many = append(many, &store.DumpRecord{Task: &store.Task{ID: fmt.Sprintf("bulk-%04d", i), State: store.StateReady,
			MaxAttempts: 3, CreatedAt: at, UpdatedAt: at, StateChangedAt: at}})
	}
	// In DumpRead's order: the bulk after the other tasks.
	lastTask := len(recordsOf(recs, store.DumpTask))
	bulk := append(append(append([]*store.DumpRecord(nil), recs[:1+lastTask]...), many...), recs[1+lastTask:]...)
	broken := errors.New("the dump file ends early")
	for name, c := range map[string]struct {
		records func(yield func(*store.DumpRecord) error) error
		want    error
	}{
		"the source fails at the end": {func(yield func(*store.DumpRecord) error) error {
			if err := store.DumpRecords(bulk...)(yield); err != nil {
				return err
			}
			return broken
		}, broken},
		"the last record is bad": {store.DumpRecords(append(append(recs, many...),
			&store.DumpRecord{Task: &store.Task{ID: "orphan", State: store.StateBacklog, MaxAttempts: 1, DependsOn: []string{"nowhere"},
				CreatedAt: at, UpdatedAt: at, StateChangedAt: at}})...), store.ErrInvalidArgument},
		"the last token clashes": {store.DumpRecords(append(append(recs, many...),
			&store.DumpRecord{Token: recordsOf(recs, store.DumpToken)[0].Token})...), store.ErrInvalidArgument},
		// The fleet events before it were inserted and must go too.
		"the last fleet event repeats": {store.DumpRecords(append(append(recs, many...),
			&store.DumpRecord{FleetEvent: recordsOf(recs, store.DumpFleetEvent)[0].FleetEvent})...), store.ErrInvalidArgument},
	} {
		_, err := h.s.DumpLoad(h.ctx, &store.DumpLoadParams{Records: c.records})
		requireIs(t, err, c.want, name)
		requireSameRecords(t, "after a failed load ("+name+")", h.dump(), []*store.DumpRecord{{Queue: &store.QueueSettings{}}})
	}
	// The store is still empty, and takes the whole dump.
	n, err := h.s.DumpLoad(h.ctx, &store.DumpLoadParams{Records: store.DumpRecords(bulk...)})
	if err != nil {
		t.Fatal(err)
	}
	if n.Tasks != 1210 {
		t.Fatalf("loaded %d tasks, want 1210", n.Tasks)
	}
	requireSameRecords(t, "the bulk load", h.dump(), bulk)
}

// dump reads the store's dump, leaving out the rows of Singleton tables
// (the emergency stop's switch, which every store holds from its first
// migration on): the DumpRows group covers those.
func (h *harness) dump() []*store.DumpRecord {
	h.t.Helper()
	var out []*store.DumpRecord
	if err := h.s.DumpRead(h.ctx, func(r *store.DumpRecord) error {
		if r.Row != nil && store.DumpTableNamed(r.Row.Table).Singleton {
			return nil
		}
		out = append(out, r)
		return nil
	}); err != nil {
		h.t.Fatalf("DumpRead: %v", err)
	}
	return out
}

func (h *harness) audit(entries ...*store.AuditEntry) {
	h.t.Helper()
	if err := h.s.AuditAppend(h.ctx, &store.AuditAppendParams{Entries: entries}); err != nil {
		h.t.Fatalf("AuditAppend: %v", err)
	}
}

// recordText renders a record for comparison: every field, times as
// instants.
func recordText(r *store.DumpRecord) string {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Sprintf("(unencodable: %v)", err)
	}
	return string(b)
}

func recordsText(recs []*store.DumpRecord) string {
	lines := make([]string, len(recs))
	for i, r := range recs {
		lines[i] = "  " + recordText(r)
	}
	return "\n" + strings.Join(lines, "\n")
}

// requireSameRecords compares two dumps record by record, order included.
func requireSameRecords(t *testing.T, what string, got, want []*store.DumpRecord) {
	t.Helper()
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = recordText(got[i])
		}
		if i < len(want) {
			w = recordText(want[i])
		}
		if g != w {
			t.Fatalf("%s: record %d differs:\n got  %s\n want %s", what, i, g, w)
		}
	}
}

func recordsOf(recs []*store.DumpRecord, kind store.DumpKind) []*store.DumpRecord {
	var out []*store.DumpRecord
	for _, r := range recs {
		if r.Kind() == kind {
			out = append(out, r)
		}
	}
	return out
}

// recordID names a record: "task a", "token op", "audit 3", "queue".
func recordID(r *store.DumpRecord) string {
	switch {
	case r.Task != nil:
		return "task " + r.Task.ID
	case r.Token != nil:
		return "token " + r.Token.ID
	case r.Audit != nil:
		return fmt.Sprintf("audit %d", r.Audit.ID)
	case r.FleetEvent != nil:
		return "fleet_event " + r.FleetEvent.ID
	}
	return string(r.Kind())
}

func recordIDs(recs []*store.DumpRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = strings.SplitN(recordID(r), " ", 2)[1]
	}
	return out
}

// without drops the record named id.
func without(recs []*store.DumpRecord, id string) []*store.DumpRecord {
	var out []*store.DumpRecord
	for _, r := range recs {
		if recordID(r) != id {
			out = append(out, r)
		}
	}
	return out
}

func taskOf(recs []*store.DumpRecord, id string) *store.Task {
	for _, r := range recs {
		if r.Task != nil && r.Task.ID == id {
			return r.Task
		}
	}
	return nil
}

func countRecords(recs []*store.DumpRecord) store.DumpCounts {
	var n store.DumpCounts
	for _, r := range recs {
		n.Add(r.Kind())
	}
	return n
}

func requireCounts(t *testing.T, got *store.DumpCounts, want store.DumpCounts) {
	t.Helper()
	if got == nil || *got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
}
