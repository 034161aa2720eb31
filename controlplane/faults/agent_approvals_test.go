//go:build faults

package faults_test

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// hostileRow01SelfApproval: agent forge asked for its own Tier 3
// production deploy with a one-second timeout and APPROVE as the default;
// a second later it was EXPIRED with APPROVE applied and `factory
// approvals watch` exited 0. Now the request is refused naming the field,
// nothing is stored, and a Tier 2 request that nobody answers expires
// denied, which watch reports with exit 3.
func hostileRow01SelfApproval(t *testing.T) {
	// A low minimum, so that an expiry is seen within the test; the
	// default minimum is 5 minutes.
	cp := startControlPlane(t, "controlplane", t.TempDir(), "", "--approval-min-timeout", "2s")
	op := dial(t, cp.addr, cp.operatorToken(t))
	forgeToken := mintToken(t, op, factoryv1.Role_ROLE_AGENT, "forge")
	forge := factoryv1.NewApprovalServiceClient(dial(t, cp.addr, forgeToken))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	deploy := &factoryv1.RequestApprovalRequest{
		What: "Deploy api 1.4.2 to production", Why: "release", Agent: "forge",
		Risk: factoryv1.ApprovalRisk_APPROVAL_RISK_HIGH, Tier: 3, Kind: "production_deploy",
		Timeout:          durationpb.New(time.Second),
		DefaultOnTimeout: factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE,
	}
	_, err := forge.RequestApproval(ctx, deploy)
	approvalRefusedNaming(t, err, "default_on_timeout")
	// A legal timeout does not make APPROVE legal.
	deploy.Timeout = durationpb.New(time.Hour)
	_, err = forge.RequestApproval(ctx, deploy)
	approvalRefusedNaming(t, err, "default_on_timeout")
	// Nor does leaving the default out make one second enough.
	deploy.DefaultOnTimeout, deploy.Timeout = factoryv1.ApprovalDecision_APPROVAL_DECISION_UNSPECIFIED, durationpb.New(time.Second)
	_, err = forge.RequestApproval(ctx, deploy)
	approvalRefusedNaming(t, err, "timeout")
	if all := approvalList(t, ctx, forge); len(all) != 0 {
		t.Fatalf("refused requests were stored: %v", all)
	}

	// A Tier 2 request with a legal timeout that nobody answers expires
	// denied: EXPIRED with REJECT applied, by the timeout, never a person.
	deploy.Tier, deploy.Timeout = 2, durationpb.New(2*time.Second)
	res, err := forge.RequestApproval(ctx, deploy)
	if err != nil {
		t.Fatalf("a Tier 2 request with a legal timeout: %v", err)
	}
	id := res.GetApproval().GetId()
	if got := res.GetApproval(); got.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_PENDING ||
		got.GetDefaultOnTimeout() != factoryv1.ApprovalDecision_APPROVAL_DECISION_REJECT {
		t.Fatalf("stored request %v, want PENDING with REJECT at its deadline", got)
	}
	var final *factoryv1.Approval
	eventually(t, "the request expires", 30*time.Second, func() bool {
		got, err := forge.GetApproval(ctx, &factoryv1.GetApprovalRequest{ApprovalId: id})
		final = got.GetApproval()
		return err == nil && final.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_PENDING
	})
	if final.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_EXPIRED || !final.GetExpired() ||
		final.GetAppliedOutcome() != factoryv1.ApprovalDecision_APPROVAL_DECISION_REJECT || final.GetDecidedBy() != "timeout" {
		t.Fatalf("after the deadline: %v, want EXPIRED with REJECT applied by the timeout", final)
	}

	// The agent's own wait says no: exit 3.
	cmd := exec.CommandContext(ctx, binary(t, "factory"), "--addr", cp.addr, "--token", forgeToken, "approvals", "watch", id)
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var exit *exec.ExitError
	if err := cmd.Run(); !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("factory approvals watch of the expired request: %v, want exit 3\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "EXPIRED") {
		t.Fatalf("watch printed:\n%s", stdout.String())
	}
}

// hostileRow02UngatedKinds: kinds the API's own docs list, near-spellings
// of the runbook's gated kinds, a kind nobody defined, and a $25 spend were
// approved by policy at once. Now every one of them waits for an operator,
// as does a task of a gated kind in another spelling, while a known
// harmless kind is still approved at once.
func hostileRow02UngatedKinds(t *testing.T) {
	cp := startControlPlane(t, "controlplane", t.TempDir(), "")
	op := dial(t, cp.addr, cp.operatorToken(t))
	forgeConn := dial(t, cp.addr, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "forge"))
	forge := factoryv1.NewApprovalServiceClient(forgeConn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ask := func(kind string, tier int32, amount int64) *factoryv1.Approval {
		t.Helper()
		res, err := forge.RequestApproval(ctx, &factoryv1.RequestApprovalRequest{
			What: "do " + kind, Agent: "forge", Risk: factoryv1.ApprovalRisk_APPROVAL_RISK_LOW, Tier: tier, Kind: kind,
			AmountMicros: amount,
		})
		if err != nil {
			t.Fatalf("RequestApproval kind %q: %v", kind, err)
		}
		return res.GetApproval()
	}
	cases := []struct {
		what   string
		kind   string
		amount int64
	}{
		{"a DNS change, as the docs spell it", "dns", 0},
		{"the first customer message, as the docs spell it", "customer_message", 0},
		{"a production deploy with a dash", "production-deploy", 0},
		{"a production deploy with a trailing space", "production_deploy ", 0},
		{"a kind nobody defined", "rotate_all_the_keys", 0},
		{"a $25 spend, typed", "spend", 25_000_000},
	}
	for _, c := range cases {
		a := ask(c.kind, 1, c.amount)
		if a.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_PENDING || a.GetAutoApproved() || a.GetTier() < 2 {
			t.Errorf("%s (kind %q, declared Tier 1): %s tier %d auto=%v, want PENDING for an operator",
				c.what, c.kind, a.GetState(), a.GetTier(), a.GetAutoApproved())
		}
	}
	for _, a := range approvalList(t, ctx, forge) {
		if a.GetDecidedBy() == "policy" {
			t.Errorf("approved by policy: %v", a)
		}
	}

	// A known harmless kind is still approved at once.
	if a := ask("research", 0, 0); a.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_APPROVED || !a.GetAutoApproved() {
		t.Fatalf("Tier 0 research: %s auto=%v, want approved by policy", a.GetState(), a.GetAutoApproved())
	}

	// Tasks are read the same way: a production deploy in another
	// spelling waits in BACKLOG for an operator.
	task, err := factoryv1.NewQueueServiceClient(forgeConn).CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "ship it", Kind: "Production-Deploy "})
	if err != nil {
		t.Fatal(err)
	}
	if got := task.GetTask(); got.GetState() != factoryv1.TaskState_TASK_STATE_BACKLOG || !got.GetApprovalPending() {
		t.Fatalf("task of kind %q: %s approval_pending=%v, want gated", "Production-Deploy ", got.GetState(), got.GetApprovalPending())
	}
}

// approvalRefusedNaming fails unless err is INVALID_ARGUMENT naming field.
func approvalRefusedNaming(t *testing.T, err error, field string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("got %v, want INVALID_ARGUMENT naming %s", err, field)
	}
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

// approvalList is every approval request the caller can list.
func approvalList(t *testing.T, ctx context.Context, c factoryv1.ApprovalServiceClient) []*factoryv1.Approval {
	t.Helper()
	res, err := c.ListApprovals(ctx, &factoryv1.ListApprovalsRequest{PageSize: 1000})
	if err != nil {
		t.Fatalf("list approvals: %v", err)
	}
	return res.GetApprovals()
}
