package cli_test

import (
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// approvalOf fetches an approval request as JSON.
func (s *shell) approvalOf(id string) map[string]any {
	s.t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s.ok("approvals", "show", id, "-o", "json")), &m); err != nil {
		s.t.Fatal(err)
	}
	return m
}

// gatedTask creates a gated task as the orchestrator agent and returns its
// approval id.
func (s *shell) gatedTask(orch, id, title string) string {
	s.t.Helper()
	r := s.as(orch, "task", "create", "--id", id, "--title", title, "--requires-approval", "-o", "json")
	if r.code != 0 {
		s.t.Fatalf("create gated task: exit %d: %s", r.code, r.stderr)
	}
	var task map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &task); err != nil {
		s.t.Fatal(err)
	}
	if task["state"] != "TASK_STATE_BACKLOG" || task["requires_approval"] != true || task["approval_pending"] != true {
		s.t.Fatalf("gated task %v", task)
	}
	return task["approval_id"].(string)
}

func TestApprovalGatedTaskFlow(t *testing.T) {
	sh := newShell(t)
	orch := sh.mint("agent", "orchestrator")

	// Approve: the task becomes claimable.
	apID := sh.gatedTask(orch, "deploy", "Deploy api 1.4.2")
	out := sh.ok("approvals")
	if !strings.Contains(out, apID) || !strings.Contains(out, "PENDING") || !strings.Contains(out, "left") || !strings.Contains(out, "orchestrator") {
		t.Fatalf("approvals:\n%s", out)
	}
	var pending []map[string]any
	if err := json.Unmarshal([]byte(sh.ok("approvals", "-o", "json")), &pending); err != nil || len(pending) != 1 || pending[0]["time_left"] == nil {
		t.Fatalf("approvals -o json: %v %v", pending, err)
	}
	if r := sh.agent("claim", "forge"); strings.Contains(r.stdout, "deploy") {
		t.Fatalf("a gated task was claimable before approval: %s", r.stdout)
	}
	// The requesting agent may not decide, with its own token.
	if r := sh.as(orch, "approve", apID); r.code != 1 || !strings.Contains(r.stderr, "PERMISSION_DENIED") {
		t.Fatalf("agent approve: exit %d, stderr %q", r.code, r.stderr)
	}
	if out := sh.ok("approve", apID, "--note", "ship it"); !strings.Contains(out, "APPROVED") {
		t.Fatalf("approve:\n%s", out)
	}
	if got := sh.task("deploy"); got["state"] != "TASK_STATE_READY" || got["approval_pending"] == true {
		t.Fatalf("approved task %v", got)
	}
	// A decision is final.
	if r := sh.run("reject", apID, "--reason", "changed my mind"); r.code != 1 || !strings.Contains(r.stderr, "FAILED_PRECONDITION") {
		t.Fatalf("second decision: exit %d, stderr %q", r.code, r.stderr)
	}
	if !strings.Contains(sh.agent("claim", "forge").stdout, "deploy") {
		t.Fatal("approved task was not claimable")
	}

	// Reject: the task fails with the reason; a wait on it exits 3.
	apID = sh.gatedTask(orch, "post", "Post the launch tweet")
	if r := sh.run("reject", apID); r.code != 2 {
		t.Fatalf("reject without --reason: exit %d", r.code)
	}
	sh.ok("reject", apID, "--reason", "not before launch day")
	if got := sh.task("post"); got["state"] != "TASK_STATE_FAILED" || !strings.Contains(got["last_error"].(string), "not before launch day") {
		t.Fatalf("rejected task %v", got)
	}
	if r := sh.run("approvals", "watch", apID); r.code != 3 || !strings.Contains(r.stdout, "REJECTED") {
		t.Fatalf("watch of a rejected request: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Modify: the task goes ahead with the instructions attached.
	apID = sh.gatedTask(orch, "dns", "Point www at the new host")
	sh.ok("modify", apID, "--instructions", "lower the TTL first", "--reason", "safer rollout")
	got := sh.task("dns")
	if got["state"] != "TASK_STATE_READY" || !strings.Contains(got["note"].(string), "lower the TTL first") {
		t.Fatalf("modified task %v", got)
	}
	ap := sh.approvalOf(apID)
	if ap["state"] != "APPROVAL_STATE_MODIFIED" || ap["instructions"] != "lower the TTL first" || ap["task_id"] != "dns" {
		t.Fatalf("modified request %v", ap)
	}
	if r := sh.run("approvals", "watch", apID, "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, "APPROVAL_STATE_MODIFIED") {
		t.Fatalf("watch of a modified request: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Nothing left pending; --all lists them all.
	if out := sh.ok("approvals"); !strings.Contains(out, "no approval requests") {
		t.Fatalf("approvals after deciding all:\n%s", out)
	}
	if out := sh.ok("approvals", "--all"); strings.Count(out, "orchestrator") != 3 {
		t.Fatalf("approvals --all:\n%s", out)
	}
	// --newest-first: the latest request first.
	var decided []map[string]any
	if err := json.Unmarshal([]byte(sh.ok("approvals", "--all", "--newest-first", "-o", "json")), &decided); err != nil || len(decided) != 3 {
		t.Fatalf("approvals --all --newest-first: %v %v", decided, err)
	}
	if decided[0]["task_id"] != "dns" || decided[2]["task_id"] != "deploy" {
		t.Fatalf("approvals --all --newest-first: tasks %v, %v, %v; want dns first, deploy last", decided[0]["task_id"], decided[1]["task_id"], decided[2]["task_id"])
	}
}

func TestApprovalRequestAndWait(t *testing.T) {
	sh := newShell(t)
	forge := sh.mint("agent", "forge")
	// Tier 0-1 are approved by policy at once.
	r := sh.as(forge, "approvals", "request", "--agent", "forge", "--what", "read the docs", "--risk", "low", "--tier", "1", "--kind", "research", "--wait")
	if r.code != 0 || !strings.Contains(r.stdout, "APPROVED") {
		t.Fatalf("tier 1 request: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// An agent may request only as itself.
	if r := sh.as(forge, "approvals", "request", "--agent", "hammer", "--what", "x", "--risk", "low"); r.code != 1 || !strings.Contains(r.stderr, "PERMISSION_DENIED") {
		t.Fatalf("request as another agent: exit %d %q", r.code, r.stderr)
	}
	var a map[string]any
	r = sh.as(forge, "approvals", "request", "--agent", "forge", "--what", "deploy", "--risk", "high", "--kind", "production_deploy", "--tier", "0", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &a); err != nil || a["state"] != "APPROVAL_STATE_PENDING" || a["tier"] != float64(2) {
		t.Fatalf("production deploy declared tier 0: %v %v %s", a, err, r.stderr)
	}
	if out := sh.ok("approvals", "show", a["id"].(string)); !strings.Contains(out, "production_deploy") || !strings.Contains(out, "deny") {
		t.Fatalf("show:\n%s", out)
	}
}

// An operator who queues gated work (a production deploy at 7am) can
// approve it: the request asks on behalf of the agent that will do the
// work, and no agent can decide.
func TestOperatorApprovesGatedWorkItQueued(t *testing.T) {
	sh := newShell(t)
	r := sh.run("task", "create", "--id", "ship", "--title", "Deploy api 1.5", "--kind", "production_deploy", "-o", "json")
	if r.code != 0 {
		t.Fatalf("create: exit %d: %s", r.code, r.stderr)
	}
	var task map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &task); err != nil || task["approval_pending"] != true {
		t.Fatalf("a production deploy is gated: %v %v", task, err)
	}
	apID := task["approval_id"].(string)
	if out := sh.ok("approvals", "show", apID); !strings.Contains(out, "queue") {
		t.Fatalf("the request should ask for whichever agent claims the task:\n%s", out)
	}
	if out := sh.ok("approve", apID); !strings.Contains(out, "APPROVED") {
		t.Fatalf("approve:\n%s", out)
	}
	if got := sh.task("ship"); got["state"] != "TASK_STATE_READY" {
		t.Fatalf("approved task %v", got)
	}
}

// An agent cannot make silence approve a gated request, nor give a person
// no time to look; the amount of a spend is a flag, and over $20 waits for
// an operator.
func TestApprovalRequestFailsClosed(t *testing.T) {
	sh := newShell(t)
	forge := sh.mint("agent", "forge")
	base := []string{"approvals", "request", "--agent", "forge", "--what", "deploy", "--risk", "high"}
	r := sh.as(forge, append(base, "--kind", "production_deploy", "--tier", "3", "--timeout", "1s", "--default", "approve")...)
	if r.code != 1 || !strings.Contains(r.stderr, "INVALID_ARGUMENT") || !strings.Contains(r.stderr, "default_on_timeout") {
		t.Fatalf("default approve on a production deploy: exit %d %q", r.code, r.stderr)
	}
	r = sh.as(forge, append(base, "--kind", "production-deploy", "--timeout", "1s")...)
	if r.code != 1 || !strings.Contains(r.stderr, "INVALID_ARGUMENT") || !strings.Contains(r.stderr, "timeout") {
		t.Fatalf("a 1s timeout on a production deploy: exit %d %q", r.code, r.stderr)
	}
	if r := sh.as(forge, append(base, "--kind", "spend", "--amount", "lots")...); r.code != 2 || !strings.Contains(r.stderr, "--amount") {
		t.Fatalf("--amount lots: exit %d %q", r.code, r.stderr)
	}
	if out := sh.ok("approvals", "--all"); !strings.Contains(out, "no approval requests") {
		t.Fatalf("refused requests were stored:\n%s", out)
	}
	var a map[string]any
	r = sh.as(forge, append(base, "--kind", "spend", "--tier", "1", "--amount", "25.00", "-o", "json")...)
	if err := json.Unmarshal([]byte(r.stdout), &a); err != nil || a["state"] != "APPROVAL_STATE_PENDING" || a["tier"] != float64(2) {
		t.Fatalf("a $25 spend: %v %v %s", a, err, r.stderr)
	}
}

// expiredServer answers every wait with a request that expired with
// APPROVE applied, as a control plane from before approvals failed closed
// could store one.
type expiredServer struct {
	factoryv1.UnimplementedApprovalServiceServer
}

func (expiredServer) WaitApproval(r *factoryv1.WaitApprovalRequest, stream factoryv1.ApprovalService_WaitApprovalServer) error {
	return stream.Send(&factoryv1.WaitApprovalResponse{Final: true, Approval: &factoryv1.Approval{
		Id: r.GetApprovalId(), State: factoryv1.ApprovalState_APPROVAL_STATE_EXPIRED, Expired: true,
		DefaultOnTimeout: factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE,
		AppliedOutcome:   factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE, DecidedBy: "timeout",
	}})
}

// An expiry is never read as an approval: `factory approvals watch ID &&
// ./deploy.sh` must not deploy when nobody decided, whatever default the
// request had.
func TestWatchExitsNonZeroForAnExpiryWithApproveApplied(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	factoryv1.RegisterApprovalServiceServer(srv, expiredServer{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	sh := &shell{t: t, addr: lis.Addr().String(), token: "unused", stateFile: filepath.Join(t.TempDir(), "leases.json")}
	r := sh.run("approvals", "watch", "ap-1")
	if r.code != 3 || !strings.Contains(r.stdout, "EXPIRED") || !strings.Contains(r.stderr, "may not go ahead") {
		t.Fatalf("watch of an expiry with APPROVE applied: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
