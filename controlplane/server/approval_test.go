package server

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/approval"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// approvalParty is a client of the ApprovalService and the queue as one
// caller.
type approvalParty struct {
	ap factoryv1.ApprovalServiceClient
	q  factoryv1.QueueServiceClient
}

func (b *testBundle) approvalAs(t *testing.T, secret string) approvalParty {
	c := b.clientsAs(t, secret)
	return approvalParty{ap: c.ap, q: c.q}
}

func requestTier2(t *testing.T, p approvalParty, agent string) *factoryv1.Approval {
	t.Helper()
	res, err := p.ap.RequestApproval(context.Background(), &factoryv1.RequestApprovalRequest{
		What: "deploy v2 to production", Why: "release", Agent: agent, Risk: factoryv1.ApprovalRisk_APPROVAL_RISK_HIGH,
		Tier: 2, Kind: "production_deploy", PayloadJson: `{"version":"2"}`, Timeout: durationpb.New(30 * time.Minute),
	})
	if err != nil {
		t.Fatalf("RequestApproval: %v", err)
	}
	return res.GetApproval()
}

func approve(id string) *factoryv1.DecideRequest {
	return &factoryv1.DecideRequest{ApprovalId: id, Decision: factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE}
}

// TestWaitApprovalStreamHearsDecisionWithin100ms: the server's store
// re-read is hourly in this bundle, so the decision can only arrive by push.
func TestWaitApprovalStreamHearsDecisionWithin100ms(t *testing.T) {
	b := setup(t, nil)
	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	forge := b.approvalAs(t, forgeSecret)
	op := b.approvalAs(t, b.operator)
	a := requestTier2(t, forge, "forge")
	if a.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_PENDING || a.GetTimeLeft().AsDuration() <= 0 {
		t.Fatalf("request %v, want PENDING with time left", a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := forge.ap.WaitApproval(ctx, &factoryv1.WaitApprovalRequest{ApprovalId: a.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.GetFinal() || first.GetApproval().GetState() != factoryv1.ApprovalState_APPROVAL_STATE_PENDING {
		t.Fatalf("first message %v, want the current state PENDING", first)
	}
	got := make(chan *factoryv1.WaitApprovalResponse, 1)
	errs := make(chan error, 1)
	go func() {
		m, err := stream.Recv()
		if err != nil {
			errs <- err
			return
		}
		got <- m
	}()
	if _, err := op.ap.Decide(ctx, approve(a.GetId())); err != nil {
		t.Fatal(err)
	}
	decided := time.Now()
	select {
	case m := <-got:
		if !m.GetFinal() || m.GetApproval().GetState() != factoryv1.ApprovalState_APPROVAL_STATE_APPROVED {
			t.Fatalf("final message %v", m)
		}
		if d := time.Since(decided); d > 100*time.Millisecond {
			t.Fatalf("the waiting agent heard %s after Decide returned, want within 100ms", d)
		}
	case err := <-errs:
		t.Fatal(err)
	case <-time.After(100 * time.Millisecond):
		t.Fatal("the waiting agent did not have the decision within 100ms of Decide")
	}
}

func TestAgentTokenCannotDecide(t *testing.T) {
	b := setup(t, nil)
	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	hammerSecret, _ := b.mintToken(t, store.RoleAgent, "hammer")
	a := requestTier2(t, b.approvalAs(t, forgeSecret), "forge")
	for _, secret := range []string{forgeSecret, hammerSecret} {
		_, err := b.approvalAs(t, secret).ap.Decide(context.Background(), approve(a.GetId()))
		wantCode(t, err, codes.PermissionDenied)
	}
	got, _ := b.approvals.Get(context.Background(), a.GetId())
	if got.State != store.ApprovalPending {
		t.Fatalf("a refused decision changed the request to %s", got.State)
	}
}

func TestSelfApprovalRefusedWhateverTheToken(t *testing.T) {
	b := setup(t, nil)
	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	// The same name holding an operator token is still the requester.
	forgeOpSecret, _ := b.mintToken(t, store.RoleOperator, "forge")
	a := requestTier2(t, b.approvalAs(t, forgeSecret), "forge")
	_, err := b.approvalAs(t, forgeOpSecret).ap.Decide(context.Background(), approve(a.GetId()))
	st := wantCode(t, err, codes.PermissionDenied)
	if !strings.Contains(st.Message(), "may not decide") {
		t.Fatalf("refusal %q does not say why", st.Message())
	}
	// An operator requesting as an agent is refused too.
	b2 := requestTier2(t, b.approvalAs(t, forgeOpSecret), "forge")
	_, err = b.approvalAs(t, forgeOpSecret).ap.Decide(context.Background(), approve(b2.GetId()))
	wantCode(t, err, codes.PermissionDenied)
}

func TestSecondDecisionFailedPrecondition(t *testing.T) {
	b := setup(t, nil)
	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	op := b.approvalAs(t, b.operator)
	a := requestTier2(t, b.approvalAs(t, forgeSecret), "forge")
	ctx := context.Background()
	if _, err := op.ap.Decide(ctx, &factoryv1.DecideRequest{ApprovalId: a.GetId(), Decision: factoryv1.ApprovalDecision_APPROVAL_DECISION_REJECT, Reason: "not today"}); err != nil {
		t.Fatal(err)
	}
	_, err := op.ap.Decide(ctx, approve(a.GetId()))
	wantCode(t, err, codes.FailedPrecondition)
}

func TestDecisionIsAudited(t *testing.T) {
	b := setup(t, nil)
	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	op := b.approvalAs(t, b.operator)
	a := requestTier2(t, b.approvalAs(t, forgeSecret), "forge")
	ctx := context.Background()
	if _, err := op.ap.Decide(ctx, &factoryv1.DecideRequest{ApprovalId: a.GetId(), Decision: factoryv1.ApprovalDecision_APPROVAL_DECISION_MODIFY,
		Reason: "too broad", Instructions: "canary first"}); err != nil {
		t.Fatal(err)
	}
	audit, err := b.clientsAs(t, b.operator).a.ListAudit(ctx, &factoryv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range audit.GetEntries() {
		if e.GetRpc() != factoryv1.ApprovalService_Decide_FullMethodName {
			continue
		}
		var after map[string]any
		_ = json.Unmarshal([]byte(e.GetAfterJson()), &after)
		if e.GetTarget() != "approval:"+a.GetId() || after["outcome"] != "MODIFY" || after["instructions"] != "canary first" || after["agent"] != "forge" || e.GetWho() == "" {
			t.Fatalf("audit entry %v does not say who decided what", e)
		}
		return
	}
	t.Fatal("no audit entry for the decision")
}

func TestApprovalBadInputNamesTheField(t *testing.T) {
	b := setup(t, nil)
	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	forge := b.approvalAs(t, forgeSecret)
	ctx := context.Background()
	_, err := forge.ap.RequestApproval(ctx, &factoryv1.RequestApprovalRequest{What: "x", Agent: "forge", Risk: factoryv1.ApprovalRisk_APPROVAL_RISK_LOW,
		PayloadJson: `{"a":1}`, PayloadSha256: strings.Repeat("0", 64)})
	requireViolation(t, err, "payload_sha256")
	a := requestTier2(t, forge, "forge")
	_, err = b.approvalAs(t, b.operator).ap.Decide(ctx, &factoryv1.DecideRequest{ApprovalId: a.GetId(), Decision: factoryv1.ApprovalDecision_APPROVAL_DECISION_REJECT})
	requireViolation(t, err, "reason")
}

func requireViolation(t *testing.T, err error, field string) {
	t.Helper()
	st := wantCode(t, err, codes.InvalidArgument)
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field {
					return
				}
			}
		}
	}
	t.Fatalf("INVALID_ARGUMENT %q does not name %s", st.Message(), field)
}

func TestGatedTaskOverGRPC(t *testing.T) {
	b := setup(t, nil)
	orchSecret, _ := b.mintToken(t, store.RoleAgent, "orchestrator")
	orch := b.approvalAs(t, orchSecret)
	op := b.approvalAs(t, b.operator)
	ctx := context.Background()
	res, err := orch.q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "ship v2", RequiresApproval: true})
	if err != nil {
		t.Fatal(err)
	}
	task := res.GetTask()
	if task.GetState() != factoryv1.TaskState_TASK_STATE_BACKLOG || !task.GetRequiresApproval() || !task.GetApprovalPending() || task.GetApprovalId() == "" {
		t.Fatalf("gated task %v", task)
	}
	a, err := op.ap.GetApproval(ctx, &factoryv1.GetApprovalRequest{ApprovalId: task.GetApprovalId()})
	if err != nil {
		t.Fatal(err)
	}
	if a.GetApproval().GetAgent() != "orchestrator" || a.GetApproval().GetWhat() != "ship v2" || a.GetApproval().GetTaskId() != task.GetId() {
		t.Fatalf("gating request %v", a.GetApproval())
	}
	if _, err := op.ap.Decide(ctx, &factoryv1.DecideRequest{ApprovalId: task.GetApprovalId(), Decision: factoryv1.ApprovalDecision_APPROVAL_DECISION_MODIFY,
		Reason: "scope", Instructions: "only the API"}); err != nil {
		t.Fatal(err)
	}
	got, err := op.q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: task.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetTask().GetState() != factoryv1.TaskState_TASK_STATE_READY || got.GetTask().GetApprovalPending() || !strings.Contains(got.GetTask().GetNote(), "only the API") {
		t.Fatalf("task after modify: %v", got.GetTask())
	}
}

func TestExpiryOverGRPCAppliesDenyAndRecordsExpired(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	forge := b.approvalAs(t, forgeSecret)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := requestTier2(t, forge, "forge")
	gated, err := forge.q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "ship", RequiresApproval: true})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := forge.ap.WaitApproval(ctx, &factoryv1.WaitApprovalRequest{ApprovalId: a.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if err := b.approvals.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := m.GetApproval()
	if !m.GetFinal() || got.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_EXPIRED || !got.GetExpired() ||
		got.GetAppliedOutcome() != factoryv1.ApprovalDecision_APPROVAL_DECISION_REJECT || got.GetDecidedBy() != store.DecidedByTimeout {
		t.Fatalf("after the deadline: %v, want EXPIRED with REJECT applied by timeout", got)
	}
	task, err := forge.q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: gated.GetTask().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if task.GetTask().GetState() != factoryv1.TaskState_TASK_STATE_FAILED {
		t.Fatalf("gated task after its approval expired: %s", task.GetTask().GetState())
	}
}

// TestApprovalsFailClosedOverGRPC replays, as an agent token, what a
// hostile agent asked for: silence approving its own production deploy,
// a one-second deadline, and gated kinds in other spellings. Each is
// refused naming the field, or waits for an operator; nothing refused is
// stored.
func TestApprovalsFailClosedOverGRPC(t *testing.T) {
	b := setup(t, nil)
	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	forge := b.approvalAs(t, forgeSecret)
	ctx := context.Background()
	ask := func(kind string, tier int32, mut func(*factoryv1.RequestApprovalRequest)) (*factoryv1.Approval, error) {
		r := &factoryv1.RequestApprovalRequest{What: "act", Agent: "forge", Risk: factoryv1.ApprovalRisk_APPROVAL_RISK_HIGH, Tier: tier, Kind: kind,
			Timeout: durationpb.New(30 * time.Minute)}
		if mut != nil {
			mut(r)
		}
		res, err := forge.ap.RequestApproval(ctx, r)
		return res.GetApproval(), err
	}
	approveAtDeadline := func(r *factoryv1.RequestApprovalRequest) {
		r.DefaultOnTimeout = factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE
	}

	_, err := ask("production_deploy", 3, func(r *factoryv1.RequestApprovalRequest) {
		approveAtDeadline(r)
		r.Timeout = durationpb.New(time.Second)
	})
	requireViolation(t, err, "default_on_timeout")
	_, err = ask("dns", 1, approveAtDeadline)
	requireViolation(t, err, "default_on_timeout")
	_, err = ask("production_deploy", 3, func(r *factoryv1.RequestApprovalRequest) { r.Timeout = durationpb.New(time.Second) })
	requireViolation(t, err, "timeout")
	_, err = ask("production_deploy", 3, func(r *factoryv1.RequestApprovalRequest) {
		r.Timeout, r.Deadline = nil, timestamppb.New(time.Now().Add(time.Minute))
	})
	requireViolation(t, err, "deadline")
	_, err = ask("spend", 1, func(r *factoryv1.RequestApprovalRequest) { r.AmountMicros = -1 })
	requireViolation(t, err, "amount_micros")
	if n := len(b.listApprovals(t)); n != 0 {
		t.Fatalf("%d refused requests were stored", n)
	}

	for _, kind := range []string{"dns", "customer_message", "production-deploy", "production_deploy ", "not_a_kind_policy_knows", ""} {
		a, err := ask(kind, 0, nil)
		if err != nil {
			t.Fatalf("kind %q: %v", kind, err)
		}
		if a.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_PENDING || a.GetTier() < 2 ||
			a.GetDefaultOnTimeout() != factoryv1.ApprovalDecision_APPROVAL_DECISION_REJECT {
			t.Errorf("kind %q declared tier 0: %v, want PENDING, Tier 2+, denied at its deadline", kind, a)
		}
	}
	a, err := ask("spend", 1, func(r *factoryv1.RequestApprovalRequest) { r.AmountMicros = 25_000_000 })
	if err != nil || a.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_PENDING || a.GetTier() != 2 {
		t.Fatalf("a $25 spend with amount_micros: %v %v, want PENDING Tier 2", a, err)
	}
	a, err = ask("research", 0, approveAtDeadline)
	if err != nil || a.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_APPROVED || !a.GetAutoApproved() {
		t.Fatalf("tier 0 research: %v %v, want approved by policy", a, err)
	}

	// A task of a gated kind, in another spelling, waits for approval.
	res, err := forge.q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "ship", Kind: "Production-Deploy"})
	if err != nil || !res.GetTask().GetApprovalPending() {
		t.Fatalf("task of kind Production-Deploy: %v %v, want gated", res.GetTask(), err)
	}
}

func (b *testBundle) listApprovals(t *testing.T) []*store.Approval {
	t.Helper()
	res, err := b.approvals.List(context.Background(), approval.ListParams{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Approvals
}
