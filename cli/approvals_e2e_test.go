package cli_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestApprovalsEndToEnd runs the gated-task flow through the real
// binaries: an agent creates a task that needs approval, an operator sees
// it pending, the agent waits on it with `factory approvals watch`, and
// the operator's decision moves the task and ends the wait.
func TestApprovalsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds both binaries and runs the control plane as a process; skipped under -short")
	}
	bin := t.TempDir()
	controlPlane := filepath.Join(bin, "factory-controlplane")
	factory := factoryBinary(t)
	goBuild(t, controlPlane, "github.com/factory/factory/controlplane/cmd/factory-controlplane")
	work := t.TempDir()
	cp := startProcess(t, controlPlane, filepath.Join(work, "data"))
	e := &e2e{t: t, bin: factory, addr: cp.addr, stateFile: filepath.Join(t.TempDir(), "leases.json"), dir: work}

	orch := strings.TrimSpace(e.ok("token", "create", "--role", "agent", "--subject", "orchestrator", "--quiet"))
	var task map[string]any
	e.jsonOf(&task, "--token", orch, "task", "create", "--id", "deploy", "--title", "Deploy api 1.4.2", "--kind", "build", "--requires-approval", "-o", "json")
	if task["state"] != "TASK_STATE_BACKLOG" || task["approval_pending"] != true {
		t.Fatalf("gated task %v", task)
	}
	apID, _ := task["approval_id"].(string)
	if out := e.ok("approvals"); !strings.Contains(out, apID) || !strings.Contains(out, "left") {
		t.Fatalf("approvals:\n%s", out)
	}

	// The agent waits for the decision by stream.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	watch := exec.CommandContext(ctx, factory, "--token", orch, "approvals", "watch", apID)
	watch.Env = append(cleanEnv(), "FACTORY_ADDR="+e.addr, "XDG_CONFIG_HOME="+t.TempDir())
	var watchOut syncBuffer
	watch.Stdout = &watchOut
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- watch.Wait() }()
	for !strings.Contains(watchOut.String(), "PENDING") {
		select {
		case err := <-waited:
			t.Fatalf("watch ended before the decision: %v\n%s", err, watchOut.String())
		case <-time.After(10 * time.Millisecond):
		}
	}

	// An agent token cannot decide; an operator can, once.
	if r := e.run("--token", orch, "approve", apID); r.code != 1 || !strings.Contains(r.stderr, "PERMISSION_DENIED") {
		t.Fatalf("agent approve: exit %d %q", r.code, r.stderr)
	}
	e.ok("approve", apID, "--note", "go")
	select {
	case err := <-waited:
		if err != nil || !strings.Contains(watchOut.String(), "APPROVED") {
			t.Fatalf("watch after approval: %v\n%s", err, watchOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("watch did not end after the decision")
	}
	e.wantState("deploy", "TASK_STATE_READY")
	if r := e.run("reject", apID, "--reason", "late"); r.code != 1 || !strings.Contains(r.stderr, "FAILED_PRECONDITION") {
		t.Fatalf("second decision: exit %d %q", r.code, r.stderr)
	}
	if out := e.ok("task", "claim", "--agent", "deployer"); !strings.Contains(out, "deploy") {
		t.Fatalf("claim after approval:\n%s", out)
	}

	// Rejected: the task fails with the reason.
	e.jsonOf(&task, "--token", orch, "task", "create", "--id", "post", "--title", "Post the launch", "--requires-approval", "-o", "json")
	e.ok("reject", task["approval_id"].(string), "--reason", "not yet")
	post := e.task("post")
	if post["state"] != "TASK_STATE_FAILED" || !strings.Contains(post["last_error"].(string), "not yet") {
		t.Fatalf("rejected task %v", post)
	}
	var audit []map[string]any
	e.jsonOf(&audit, "audit", "ls", "-o", "json")
	decisions := 0
	for _, entry := range audit {
		if strings.HasSuffix(entry["rpc"].(string), "/Decide") && entry["outcome"] == "OK" {
			decisions++
		}
	}
	if decisions != 2 {
		t.Fatalf("%d decisions in the audit log, want 2", decisions)
	}
}
