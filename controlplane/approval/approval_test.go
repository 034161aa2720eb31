package approval

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// recorder keeps the published events.
type recorder struct {
	mu     sync.Mutex
	events []notify.Event
}

func (r *recorder) Publish(_ context.Context, e notify.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) byEvent(what string) []notify.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []notify.Event
	for _, e := range r.events {
		if e.Attributes["event"] == what {
			out = append(out, e)
		}
	}
	return out
}

type bundle struct {
	svc   *Service
	q     *queue.Service
	st    store.Store
	clock *fakeClock
	pub   *recorder
}

func setup(t *testing.T, mut func(*Config)) *bundle {
	t.Helper()
	st, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "factory.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	q, err := queue.New(queue.Config{Store: st, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	pub := &recorder{}
	cfg := Config{Store: st, Clock: clock, Publisher: pub, Queue: q}
	if mut != nil {
		mut(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{svc: svc, q: q, st: st, clock: clock, pub: pub}
}

func (b *bundle) request(t *testing.T, p RequestParams) *store.Approval {
	t.Helper()
	if p.What == "" {
		p.What = "deploy v2 to production"
	}
	if p.Agent == "" {
		p.Agent = "forge"
	}
	if p.Risk == 0 {
		p.Risk = store.RiskHigh
	}
	if p.Tier == 0 {
		p.Tier = 2
	}
	a, err := b.svc.Request(t.Context(), p)
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	return a
}

var alice = Decider{Name: "alice", Operator: true}

func requireField(t *testing.T, err error, field string) {
	t.Helper()
	var fe *store.FieldError
	if !errors.As(err, &fe) || fe.Field != field {
		t.Fatalf("error %v, want a FieldError on %q", err, field)
	}
}

func TestRequestPendingForTier2AndCardSent(t *testing.T) {
	b := setup(t, nil)
	a := b.request(t, RequestParams{Why: "release day", Timeout: 30 * time.Minute, PayloadJSON: `{"version":"2"}`})
	if a.State != store.ApprovalPending || a.AutoApproved {
		t.Fatalf("tier 2 request is %s (auto %v), want PENDING", a.State, a.AutoApproved)
	}
	if a.DefaultOnTimeout != store.DecisionReject {
		t.Fatalf("default on timeout %s, want REJECT (deny unless stated)", a.DefaultOnTimeout)
	}
	if got, want := a.Deadline, b.clock.Now().Add(30*time.Minute); !got.Equal(want) {
		t.Fatalf("deadline %s, want %s", got, want)
	}
	if got, want := a.ReminderAt, b.clock.Now().Add(15*time.Minute); !got.Equal(want) {
		t.Fatalf("reminder at %s, want half-way %s", got, want)
	}
	cards := b.pub.byEvent("requested")
	if len(cards) != 1 {
		t.Fatalf("%d request cards, want 1", len(cards))
	}
	e := cards[0]
	if e.Kind != notify.KindApproval || e.Attributes["id"] != a.ID || e.Attributes["agent"] != "forge" ||
		e.Attributes["risk"] != "high" || e.Attributes["tier"] != "2" || e.Attributes["state"] != "PENDING" || e.Attributes["deadline"] == "" {
		t.Fatalf("card attributes %v", e.Attributes)
	}
	for _, want := range []string{"What: deploy v2 to production", "Why: release day", "Agent: forge", "risk high", "Deadline:", "factory approve " + a.ID, "factory reject " + a.ID} {
		if !strings.Contains(e.Text, want) {
			t.Errorf("card lacks %q:\n%s", want, e.Text)
		}
	}
}

func TestPolicyAutoApprovesLowTiersAndRaisesKinds(t *testing.T) {
	b := setup(t, nil)
	low := b.request(t, RequestParams{Tier: 1, Risk: store.RiskLow, Kind: "research"})
	if low.State != store.ApprovalApproved || !low.AutoApproved || low.DecidedBy != store.DecidedByPolicy || low.Outcome != store.DecisionApprove {
		t.Fatalf("tier 1 request %+v, want APPROVED by policy", low)
	}
	if len(b.pub.byEvent("auto-approved")) != 1 {
		t.Fatal("auto-approval was not notified")
	}
	for _, kind := range []string{"production_deploy", "first_customer_message", "dns_change", "domain_change", "certificate_change", "public_post"} {
		a, err := b.svc.Request(t.Context(), RequestParams{What: "x", Agent: "forge", Risk: store.RiskLow, Tier: 0, Kind: kind})
		if err != nil {
			t.Fatal(err)
		}
		if a.Tier != 2 || a.State != store.ApprovalPending {
			t.Errorf("kind %s declared tier 0: tier %d %s, want raised to 2 and PENDING", kind, a.Tier, a.State)
		}
	}
	small := b.request(t, RequestParams{Tier: 1, Kind: "spend", PayloadJSON: `{"amount_micros": 19000000}`})
	big := b.request(t, RequestParams{Tier: 1, Kind: "spend", PayloadJSON: `{"amount_micros": 20000001}`})
	if small.State != store.ApprovalApproved || big.Tier != 2 || big.State != store.ApprovalPending {
		t.Fatalf("spend $19: %s; spend $20.000001: tier %d %s", small.State, big.Tier, big.State)
	}
}

func TestRequestChecksPayloadHash(t *testing.T) {
	b := setup(t, nil)
	_, err := b.svc.Request(t.Context(), RequestParams{What: "x", Agent: "forge", Risk: store.RiskLow, Tier: 2, PayloadJSON: `{"a":1}`,
		PayloadSHA256: strings.Repeat("0", 64)})
	requireField(t, err, "payload_sha256")
	// sha256 of {"a":1}
	a, err := b.svc.Request(t.Context(), RequestParams{What: "x", Agent: "forge", Risk: store.RiskLow, Tier: 2, PayloadJSON: `{"a":1}`,
		PayloadSHA256: "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"})
	if err != nil {
		t.Fatal(err)
	}
	if a.PayloadSHA256 != "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862" {
		t.Fatalf("stored hash %s", a.PayloadSHA256)
	}
	_, err = b.svc.Request(t.Context(), RequestParams{What: "x", Agent: "forge", Risk: store.RiskLow, Tier: 2, PayloadJSON: `{nope`})
	requireField(t, err, "payload_json")
	_, err = b.svc.Request(t.Context(), RequestParams{What: "x", Agent: "forge", Risk: store.RiskLow, Tier: 2, Deadline: b.clock.Now().Add(-time.Second)})
	requireField(t, err, "deadline")
}

func TestSelfApprovalRefused(t *testing.T) {
	b := setup(t, nil)
	a := b.request(t, RequestParams{Agent: "forge"})
	// Even holding an operator token, the requester may not decide.
	_, err := b.svc.Decide(t.Context(), DecideParams{ID: a.ID, Decision: store.DecisionApprove, By: Decider{Name: "forge", Operator: true}})
	if !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("self-approval: %v, want ErrPermissionDenied", err)
	}
	got, _ := b.svc.Get(t.Context(), a.ID)
	if got.State != store.ApprovalPending {
		t.Fatalf("refused self-approval changed the request to %s", got.State)
	}
}

func TestNonOperatorCannotDecide(t *testing.T) {
	b := setup(t, nil)
	a := b.request(t, RequestParams{Agent: "forge"})
	_, err := b.svc.Decide(t.Context(), DecideParams{ID: a.ID, Decision: store.DecisionApprove, By: Decider{Name: "hammer", Operator: false}})
	if !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("agent decision: %v, want ErrPermissionDenied", err)
	}
}

func TestSecondDecisionRefused(t *testing.T) {
	b := setup(t, nil)
	a := b.request(t, RequestParams{})
	if _, err := b.svc.Decide(t.Context(), DecideParams{ID: a.ID, Decision: store.DecisionReject, Reason: "not today", By: alice}); err != nil {
		t.Fatal(err)
	}
	_, err := b.svc.Decide(t.Context(), DecideParams{ID: a.ID, Decision: store.DecisionApprove, By: Decider{Name: "bob", Operator: true}})
	if !errors.Is(err, store.ErrIllegalTransition) {
		t.Fatalf("second decision: %v, want ErrIllegalTransition (FAILED_PRECONDITION)", err)
	}
	got, _ := b.svc.Get(t.Context(), a.ID)
	if got.State != store.ApprovalRejected || got.DecidedBy != "alice" {
		t.Fatalf("after a refused second decision: %s by %s", got.State, got.DecidedBy)
	}
}

func TestDecideNeedsReasonToRejectOrModify(t *testing.T) {
	b := setup(t, nil)
	a := b.request(t, RequestParams{})
	_, err := b.svc.Decide(t.Context(), DecideParams{ID: a.ID, Decision: store.DecisionReject, By: alice})
	requireField(t, err, "reason")
	_, err = b.svc.Decide(t.Context(), DecideParams{ID: a.ID, Decision: store.DecisionModify, Reason: "r", By: alice})
	requireField(t, err, "instructions")
	_, err = b.svc.Decide(t.Context(), DecideParams{ID: a.ID, Decision: store.DecisionModify, Instructions: "i", By: alice})
	requireField(t, err, "reason")
	got, _ := b.svc.Get(t.Context(), a.ID)
	if got.State != store.ApprovalPending {
		t.Fatalf("bad decisions changed the request to %s", got.State)
	}
}

// TestWaitHearsDecisionWithin100ms proves the decision is pushed: the
// deadline (the only re-read) is an hour off, so only the push can deliver it.
func TestWaitHearsDecisionWithin100ms(t *testing.T) {
	b := setup(t, nil)
	a := b.request(t, RequestParams{})
	got := make(chan *store.Approval, 2)
	done := make(chan error, 1)
	go func() {
		done <- b.svc.Wait(t.Context(), a.ID, func(a *store.Approval) error {
			got <- a
			return nil
		})
	}()
	first := <-got
	if first.State != store.ApprovalPending {
		t.Fatalf("first message %s, want the current state PENDING", first.State)
	}
	if _, err := b.svc.Decide(t.Context(), DecideParams{ID: a.ID, Decision: store.DecisionApprove, By: alice}); err != nil {
		t.Fatal(err)
	}
	decided := time.Now()
	select {
	case final := <-got:
		if final.State != store.ApprovalApproved || final.DecidedBy != "alice" {
			t.Fatalf("final message %s by %s", final.State, final.DecidedBy)
		}
		if d := time.Since(decided); d > 100*time.Millisecond {
			t.Fatalf("decision reached the waiter %s after Decide, want within 100ms", d)
		}
	case <-time.After(100 * time.Millisecond):
		t.Fatal("the waiter did not hear the decision within 100ms")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := b.svc.hub.waiters(a.ID); n != 0 {
		t.Fatalf("%d waiters left behind", n)
	}
}

func TestWaitOnFinalRequestSendsOnce(t *testing.T) {
	b := setup(t, nil)
	a := b.request(t, RequestParams{Tier: 1, Risk: store.RiskLow, Kind: "research"})
	var n int
	if err := b.svc.Wait(t.Context(), a.ID, func(*store.Approval) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d messages for a final request, want 1", n)
	}
}

// TestWaitHearsDecisionRelayedFromAnotherReplica decides on a second
// Service over the same store whose cards reach the waiter's Decisions hub,
// as the event relay carries them between replicas: the waiter hears it by
// push, within 100ms.
func TestWaitHearsDecisionRelayedFromAnotherReplica(t *testing.T) {
	relayed := notify.NewHub(0)
	b := setup(t, func(c *Config) { c.Decisions = relayed })
	other, err := New(Config{Store: b.st, Clock: b.clock, Publisher: relayed})
	if err != nil {
		t.Fatal(err)
	}
	a := b.request(t, RequestParams{})
	got := make(chan *store.Approval, 2)
	done := make(chan error, 1)
	go func() {
		done <- b.svc.Wait(t.Context(), a.ID, func(a *store.Approval) error { got <- a; return nil })
	}()
	<-got
	if _, err := other.Decide(t.Context(), DecideParams{ID: a.ID, Decision: store.DecisionApprove, By: Decider{Name: "bob", Operator: true}}); err != nil {
		t.Fatal(err)
	}
	select {
	case final := <-got:
		if final.State != store.ApprovalApproved || final.DecidedBy != "bob" {
			t.Fatalf("final %s by %s", final.State, final.DecidedBy)
		}
	case <-time.After(100 * time.Millisecond):
		t.Fatal("a decision made on another replica did not reach the waiter within 100ms")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestWaitRereadsOnceOverdue covers a lost card: a decision made where no
// push reaches the waiter is read when the request falls due.
func TestWaitRereadsOnceOverdue(t *testing.T) {
	b := setup(t, func(c *Config) {
		c.SweepInterval = 10 * time.Millisecond
		c.MinTimeout = 100 * time.Millisecond
	})
	a := b.request(t, RequestParams{Timeout: 500 * time.Millisecond})
	got := make(chan *store.Approval, 2)
	done := make(chan error, 1)
	go func() {
		done <- b.svc.Wait(t.Context(), a.ID, func(a *store.Approval) error { got <- a; return nil })
	}()
	<-got
	if _, err := b.st.ApprovalDecide(t.Context(), &store.ApprovalDecideParams{ID: a.ID, Decision: store.DecisionApprove, DecidedBy: "bob", Now: b.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	select {
	case final := <-got:
		t.Fatalf("heard %s before the deadline with no push", final.State)
	case <-time.After(100 * time.Millisecond):
	}
	select {
	case final := <-got:
		if final.State != store.ApprovalApproved || final.DecidedBy != "bob" {
			t.Fatalf("final %s by %s", final.State, final.DecidedBy)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter never re-read the overdue request")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestExpiryUnderFakeClockAppliesDenyAndRecordsExpired(t *testing.T) {
	b := setup(t, nil)
	a := b.request(t, RequestParams{Timeout: 10 * time.Minute})
	got := make(chan *store.Approval, 2)
	go func() {
		_ = b.svc.Wait(t.Context(), a.ID, func(a *store.Approval) error { got <- a; return nil })
	}()
	<-got
	b.clock.Advance(10*time.Minute - time.Second)
	if err := b.svc.Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	if cur, _ := b.svc.Get(t.Context(), a.ID); cur.State != store.ApprovalPending {
		t.Fatalf("expired a second early: %s", cur.State)
	}
	b.clock.Advance(time.Second)
	if err := b.svc.Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	cur, _ := b.svc.Get(t.Context(), a.ID)
	if cur.State != store.ApprovalExpired || cur.Outcome != store.DecisionReject || cur.DecidedBy != store.DecidedByTimeout {
		t.Fatalf("after the deadline: %s outcome %s by %q, want EXPIRED with REJECT applied by timeout (never a person)", cur.State, cur.Outcome, cur.DecidedBy)
	}
	select {
	case final := <-got:
		if final.State != store.ApprovalExpired {
			t.Fatalf("waiter heard %s", final.State)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter did not hear the expiry")
	}
	if len(b.pub.byEvent("expired")) != 1 {
		t.Fatal("expiry was not notified")
	}
	if _, err := b.svc.Decide(t.Context(), DecideParams{ID: a.ID, Decision: store.DecisionApprove, By: alice}); !errors.Is(err, store.ErrIllegalTransition) {
		t.Fatalf("decision after expiry: %v", err)
	}
}

func TestReminderAtFraction(t *testing.T) {
	b := setup(t, func(c *Config) {
		c.Policy = DefaultPolicy()
		c.Policy.ReminderFraction = 0.75
	})
	a := b.request(t, RequestParams{Timeout: 40 * time.Minute})
	b.clock.Advance(29 * time.Minute)
	if err := b.svc.Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(b.pub.byEvent("reminder")); n != 0 {
		t.Fatalf("%d reminders before 75%%", n)
	}
	b.clock.Advance(time.Minute)
	_ = b.svc.Sweep(t.Context())
	_ = b.svc.Sweep(t.Context())
	rem := b.pub.byEvent("reminder")
	if len(rem) != 1 || rem[0].Attributes["id"] != a.ID || !strings.HasPrefix(rem[0].Title, "Reminder:") {
		t.Fatalf("reminders %v, want one for %s", rem, a.ID)
	}
}

func TestGatedTaskFlowThroughQueue(t *testing.T) {
	b := setup(t, nil)
	ctx := t.Context()
	tasks, err := b.q.Create(ctx, []*store.TaskCreate{{Title: "ship v2", Kind: "build", RequiresApproval: true}})
	if err != nil {
		t.Fatal(err)
	}
	task := tasks[0]
	if task.State != store.StateBacklog || !task.ApprovalPending || task.ApprovalID == "" {
		t.Fatalf("gated task %s pending=%v id=%q", task.State, task.ApprovalPending, task.ApprovalID)
	}
	a, err := b.svc.Get(ctx, task.ApprovalID)
	if err != nil || a.What != "ship v2" || a.TaskID != task.ID || a.Tier < 2 || a.State != store.ApprovalPending {
		t.Fatalf("gating request %+v, %v", a, err)
	}
	// A claimer waiting for work is woken by the approval, not by a poll.
	claimed := make(chan []*store.Task, 1)
	go func() {
		got, _ := b.q.Claim(ctx, queue.ClaimParams{Agent: "forge", Wait: 30 * time.Second})
		claimed <- got
	}()
	if _, err := b.svc.Decide(ctx, DecideParams{ID: a.ID, Decision: store.DecisionApprove, By: alice}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-claimed:
		if len(got) != 1 || got[0].ID != task.ID {
			t.Fatalf("claimed %v, want the approved task", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting claimer was not woken by the approval")
	}

	// A kind policy puts at Tier 2 is gated without asking.
	tasks, err = b.q.Create(ctx, []*store.TaskCreate{{Title: "deploy", Kind: "production_deploy"}})
	if err != nil {
		t.Fatal(err)
	}
	if !tasks[0].ApprovalPending {
		t.Fatal("a production_deploy task was not gated")
	}
	if _, err := b.svc.Decide(ctx, DecideParams{ID: tasks[0].ApprovalID, Decision: store.DecisionReject, Reason: "freeze", By: alice}); err != nil {
		t.Fatal(err)
	}
	got, _ := b.q.Get(ctx, tasks[0].ID)
	if got.State != store.StateFailed || !strings.Contains(got.LastError, "freeze") {
		t.Fatalf("rejected task %s %q", got.State, got.LastError)
	}
	// An ordinary task is not gated.
	tasks, _ = b.q.Create(ctx, []*store.TaskCreate{{Title: "research"}})
	if tasks[0].ApprovalID != "" || tasks[0].State != store.StateReady {
		t.Fatalf("ordinary task gated: %+v", tasks[0])
	}
}

func TestLoadPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("auto_approve_max_tier: 0\nreminder_fraction: 0.8\nkind_tiers:\n  model_swap: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPolicy(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.AutoApproveMaxTier != 0 || p.ReminderFraction != 0.8 || p.KindTiers["model_swap"] != 3 || p.KindTiers["production_deploy"] != 2 {
		t.Fatalf("policy %+v", p)
	}
	if err := os.WriteFile(path, []byte("bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPolicy(path); err == nil {
		t.Fatal("unknown key accepted")
	}
}

func BenchmarkDecideToWaiter(b *testing.B) {
	st, err := sqlite.Open(b.Context(), sqlite.Config{Path: filepath.Join(b.TempDir(), "factory.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	svc, err := New(Config{Store: st, Policy: Policy{AutoApproveMaxTier: -1}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	b.ResetTimer()
	for b.Loop() {
		a, err := svc.Request(ctx, RequestParams{What: "x", Agent: "forge", Risk: store.RiskLow, Tier: 2})
		if err != nil {
			b.Fatal(err)
		}
		got := make(chan struct{}, 2)
		go func() {
			_ = svc.Wait(ctx, a.ID, func(*store.Approval) error { got <- struct{}{}; return nil })
		}()
		<-got
		if _, err := svc.Decide(ctx, DecideParams{ID: a.ID, Decision: store.DecisionApprove, By: alice}); err != nil {
			b.Fatal(err)
		}
		<-got
	}
}

// chanPublisher hands every event to a channel, so a test can wait for the
// sweeper's work without polling.
type chanPublisher chan notify.Event

func (c chanPublisher) Publish(_ context.Context, e notify.Event) { c <- e }

func TestRunSweeperExpiresAndAnnouncesGatedTasks(t *testing.T) {
	events := make(chanPublisher, 16)
	b := setup(t, func(c *Config) {
		c.Publisher = events
		c.SweepInterval = 5 * time.Millisecond
	})
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- b.svc.RunSweeper(ctx) }()
	next := func(what string) notify.Event {
		t.Helper()
		for {
			select {
			case e := <-events:
				if e.Attributes["event"] == what {
					return e
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no %q event from the sweeper", what)
			}
		}
	}
	a := b.request(t, RequestParams{Timeout: DefaultMinTimeout})
	next("requested")
	b.clock.Advance(DefaultMinTimeout)
	if e := next("expired"); e.Attributes["id"] != a.ID || e.Attributes["state"] != "EXPIRED" {
		t.Fatalf("expiry event %v", e.Attributes)
	}
	// A task gated as it is created gets its card from the sweeper's
	// replica.
	tasks, err := b.q.Create(ctx, []*store.TaskCreate{{Title: "ship", RequiresApproval: true}})
	if err != nil {
		t.Fatal(err)
	}
	if e := next("requested"); e.Attributes["task_id"] != tasks[0].ID {
		t.Fatalf("gated task card %v", e.Attributes)
	}
	cancel()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// TestCardsLinkToTheConsole: with a console URL, every card carries the
// link to its request's page (text and attribute), so the operator taps
// from his chat app; without one, no link is made up.
func TestCardsLinkToTheConsole(t *testing.T) {
	b := setup(t, func(c *Config) { c.ConsoleURL = "https://factory.example:7421/" })
	a := b.request(t, RequestParams{})
	want := "https://factory.example:7421/approvals/" + a.ID
	cards := b.pub.byEvent("requested")
	if len(cards) != 1 {
		t.Fatalf("%d requested cards, want 1", len(cards))
	}
	if got := cards[0].Attributes["url"]; got != want {
		t.Errorf("url attribute %q, want %q", got, want)
	}
	if !strings.Contains(cards[0].Text, "Open: "+want) {
		t.Errorf("card text has no link:\n%s", cards[0].Text)
	}

	plain := setup(t, nil)
	plain.request(t, RequestParams{})
	c := plain.pub.byEvent("requested")[0]
	if c.Attributes["url"] != "" || strings.Contains(c.Text, "Open:") {
		t.Errorf("a card without a console URL links somewhere: %q\n%s", c.Attributes["url"], c.Text)
	}
}
