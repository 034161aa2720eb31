package cli_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/factory/factory/controlplane/access"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// mcpAgent is an MCP client session with `factory mcp` run as a process,
// the way Claude Desktop or Claude Code runs it.
type mcpAgent struct {
	t        *testing.T
	session  *mcp.ClientSession
	stderr   *syncBuffer
	progress chan string
}

func startMCP(t *testing.T, bin, addr, token, agent string, extra ...string) *mcpAgent {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"mcp", "--agent", agent}, extra...)...)
	cmd.Env = append(cleanEnv(), "FACTORY_ADDR="+addr, "FACTORY_TOKEN="+token, "XDG_CONFIG_HOME="+t.TempDir())
	m := &mcpAgent{t: t, stderr: &syncBuffer{}, progress: make(chan string, 16)}
	cmd.Stderr = m.stderr
	client := mcp.NewClient(&mcp.Implementation{Name: "factory-test", Version: "v0"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			select {
			case m.progress <- req.Params.Message:
			default:
			}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	session, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect to factory mcp: %v\nstderr:\n%s", err, m.stderr.String())
	}
	m.session = session
	t.Cleanup(func() { _ = session.Close() })
	return m
}

// call calls a tool with a progress token and decodes its structured
// result into out (when the call succeeded and out is not nil).
func (m *mcpAgent) call(name string, args map[string]any, out any) *mcp.CallToolResult {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	params := &mcp.CallToolParams{Name: name, Arguments: args}
	params.SetProgressToken(name)
	res, err := m.session.CallTool(ctx, params)
	if err != nil {
		m.t.Fatalf("%s: protocol error %v\nstderr:\n%s", name, err, m.stderr.String())
	}
	if !res.IsError && out != nil {
		b, err := json.Marshal(res.StructuredContent)
		if err != nil {
			m.t.Fatal(err)
		}
		if err := json.Unmarshal(b, out); err != nil {
			m.t.Fatalf("%s: structured content %s: %v", name, b, err)
		}
	}
	return res
}

// ok calls a tool that must succeed.
func (m *mcpAgent) ok(name string, args map[string]any, out any) {
	m.t.Helper()
	if res := m.call(name, args, out); res.IsError {
		m.t.Fatalf("%s(%v): tool error %q", name, args, resultText(res))
	}
}

// refused calls a tool that must fail with a tool error (not a protocol
// error) whose text contains each of want.
func (m *mcpAgent) refused(name string, args map[string]any, want ...string) {
	m.t.Helper()
	res := m.call(name, args, nil)
	text := resultText(res)
	if !res.IsError {
		m.t.Fatalf("%s(%v) succeeded, want a tool error: %s", name, args, text)
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			m.t.Fatalf("%s(%v): tool error %q lacks %q", name, args, text, w)
		}
	}
}

func resultText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

type mcpTaskResult struct {
	ID             string         `json:"id"`
	State          string         `json:"state"`
	Attempt        int32          `json:"attempt"`
	Payload        map[string]any `json:"payload"`
	LeaseExpiresAt string         `json:"lease_expires_at"`
	HeldByYou      bool           `json:"held_by_you"`
}

type mcpClaimResult struct {
	Claimed bool          `json:"claimed"`
	Task    mcpTaskResult `json:"task"`
	Message string        `json:"message"`
}

// TestMCPServer drives the built factory binary's MCP server with the
// SDK's client over stdio against a real control plane: the tools and
// their schemas, claim, spend, an approval decided by an operator while
// the tool waits, completion, background lease renewal, a lost lease,
// the hand-back of unfinished work at disconnect, and an agent token
// that tries to serve another agent.
func TestMCPServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the factory binary and runs it as an MCP server; skipped under -short")
	}
	bin := factoryBinary(t)
	sh := newShell(t)
	forge := sh.mint("agent", "forge", "builder")
	conn, err := grpc.NewClient(sh.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(access.Bearer{Secret: sh.token, Plaintext: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	queue := factoryv1.NewQueueServiceClient(conn)
	ctx := context.Background()
	task := func(id string) *factoryv1.Task {
		t.Helper()
		resp, err := queue.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: id})
		if err != nil {
			t.Fatalf("GetTask %s: %v", id, err)
		}
		return resp.GetTask()
	}

	t.Run("another agent's token is refused at start", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cctx, bin, "mcp", "--agent", "scout")
		cmd.Env = append(cleanEnv(), "FACTORY_ADDR="+sh.addr, "FACTORY_TOKEN="+forge, "XDG_CONFIG_HOME="+t.TempDir())
		var stdout, stderr syncBuffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 {
			t.Fatalf("factory mcp --agent scout with forge's token: %v, want exit 1", err)
		}
		for _, want := range []string{"agent forge's", "--agent scout", "PERMISSION_DENIED"} {
			if !strings.Contains(stderr.String(), want) {
				t.Fatalf("stderr lacks %q:\n%s", want, stderr.String())
			}
		}
		if stdout.String() != "" {
			t.Fatalf("stdout is the protocol and must stay empty: %q", stdout.String())
		}
	})

	agent := startMCP(t, bin, sh.addr, forge, "forge")

	t.Run("tools and their schemas", func(t *testing.T) {
		res, err := agent.session.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"budget_status", "claim_task", "complete_task", "fail_task", "get_task", "queue_status",
			"report_progress", "report_spend", "request_approval", "wait_approval"}
		schemas := map[string]map[string]any{}
		var names []string
		for _, tool := range res.Tools {
			names = append(names, tool.Name)
			if tool.Description == "" {
				t.Errorf("%s has no description", tool.Name)
			}
			b, _ := json.Marshal(tool.InputSchema)
			var s map[string]any
			if err := json.Unmarshal(b, &s); err != nil || s["type"] != "object" {
				t.Fatalf("%s: input schema %s", tool.Name, b)
			}
			props, _ := s["properties"].(map[string]any)
			if _, ok := props["agent"]; ok {
				t.Errorf("%s offers an agent input: the agent is fixed at start", tool.Name)
			}
			schemas[tool.Name] = props
		}
		slices.Sort(names)
		if !slices.Equal(names, want) {
			t.Fatalf("tools %v, want %v", names, want)
		}
		prop := func(tool, name, key string) any {
			p, _ := schemas[tool][name].(map[string]any)
			return p[key]
		}
		checks := []struct {
			tool, prop, key string
			want            any
		}{
			{"claim_task", "wait_seconds", "maximum", 60.0},
			{"claim_task", "lease_seconds", "maximum", 3600.0},
			{"report_progress", "note", "maxLength", 4096.0},
			{"report_spend", "model", "maxLength", 200.0},
			{"request_approval", "what", "maxLength", 500.0},
			{"request_approval", "tier", "maximum", 3.0},
			{"get_task", "task_id", "pattern", `^[A-Za-z0-9._:-]{1,128}$`},
		}
		for _, c := range checks {
			if got := prop(c.tool, c.prop, c.key); got != c.want {
				t.Errorf("%s.%s %s = %v, want %v", c.tool, c.prop, c.key, got, c.want)
			}
		}
		if enum, _ := prop("report_spend", "tier", "enum").([]any); len(enum) != 4 {
			t.Errorf("report_spend.tier enum %v", enum)
		}
	})

	sh.ok("task", "create", "--id", "mcp-build", "--title", "Build it", "--role", "builder", "--payload", `{"repo":"factory","n":3}`)
	t.Run("claim", func(t *testing.T) {
		var got mcpClaimResult
		agent.ok("claim_task", map[string]any{"wait_seconds": 2}, &got)
		if !got.Claimed || got.Task.ID != "mcp-build" || got.Task.Attempt != 1 || got.Task.Payload["repo"] != "factory" ||
			got.Task.State != "IN_PROGRESS" || !got.Task.HeldByYou || got.Task.LeaseExpiresAt == "" {
			t.Fatalf("claim_task: %+v", got)
		}
		if lease := task("mcp-build").GetLease(); lease.GetHolder() != "forge" {
			t.Fatalf("lease holder %q", lease.GetHolder())
		}
		var none mcpClaimResult
		agent.ok("claim_task", nil, &none)
		if none.Claimed || !strings.Contains(none.Message, "no task") {
			t.Fatalf("claim_task on an empty queue: %+v", none)
		}
		agent.refused("complete_task", map[string]any{"task_id": "someone-elses"}, "not held by this session", "mcp-build")
		agent.refused("claim_task", map[string]any{"wait_seconds": 61}, "wait_seconds")
	})

	t.Run("report spend", func(t *testing.T) {
		var got struct {
			EventID    string `json:"event_id"`
			CostMicros int64  `json:"cost_micros"`
			Duplicate  bool   `json:"duplicate"`
		}
		args := map[string]any{"model": "claude-sonnet-4", "provider": "anthropic", "tier": "frontier",
			"input_tokens": 18650, "output_tokens": 1204, "cost_usd": 0.0353, "task_id": "mcp-build", "event_id": "call-1"}
		agent.ok("report_spend", args, &got)
		if got.EventID != "call-1" || got.CostMicros != 35300 || got.Duplicate {
			t.Fatalf("report_spend: %+v", got)
		}
		agent.ok("report_spend", args, &got)
		if !got.Duplicate {
			t.Fatalf("the same event again: %+v", got)
		}
		agent.refused("report_spend", map[string]any{"model": "m", "tier": "frontier", "cost_usd": 1, "cost_micros": 1}, "cost_usd", "cost_micros")
		spend, err := factoryv1.NewBudgetServiceClient(conn).GetSpend(ctx, &factoryv1.GetSpendRequest{
			Agent: "forge", GroupBy: factoryv1.SpendGroupBy_SPEND_GROUP_BY_TASK})
		if err != nil {
			t.Fatal(err)
		}
		if g := spend.GetGroups(); len(g) != 1 || g[0].GetKey() != "mcp-build" || g[0].GetTotals().GetCostMicros() != 35300 || g[0].GetTotals().GetEvents() != 1 {
			t.Fatalf("forge's spend by task: %v", g)
		}
	})

	t.Run("approval decided by an operator while the tool waits", func(t *testing.T) {
		approvals := factoryv1.NewApprovalServiceClient(conn)
		decided := make(chan error, 1)
		go func() {
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				resp, err := approvals.ListApprovals(ctx, &factoryv1.ListApprovalsRequest{
					Agent: "forge", States: []factoryv1.ApprovalState{factoryv1.ApprovalState_APPROVAL_STATE_PENDING}})
				if err != nil {
					decided <- err
					return
				}
				if aps := resp.GetApprovals(); len(aps) > 0 {
					_, err := approvals.Decide(ctx, &factoryv1.DecideRequest{ApprovalId: aps[0].GetId(),
						Decision: factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE, Reason: "ship it"})
					decided <- err
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			decided <- context.DeadlineExceeded
		}()
		var got struct {
			ApprovalID string `json:"approval_id"`
			State      string `json:"state"`
			GoAhead    bool   `json:"go_ahead"`
			Tier       int32  `json:"tier"`
			DecidedBy  string `json:"decided_by"`
			Reason     string `json:"reason"`
		}
		agent.ok("request_approval", map[string]any{"what": "Deploy the build to production", "why": "the tests pass",
			"risk": "high", "tier": 2, "kind": "production_deploy", "payload": map[string]any{"version": "1.4.2"}, "task_id": "mcp-build"}, &got)
		if err := <-decided; err != nil {
			t.Fatalf("operator's decision: %v", err)
		}
		if got.State != "APPROVED" || !got.GoAhead || got.Tier != 2 || got.DecidedBy == "" || got.Reason != "ship it" {
			t.Fatalf("request_approval: %+v", got)
		}
		select {
		case msg := <-agent.progress:
			if !strings.Contains(msg, "PENDING") {
				t.Fatalf("progress while waiting: %q", msg)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no progress notification while the approval was pending")
		}

		// A bounded wait returns PENDING; wait_approval picks it up again.
		agent.ok("request_approval", map[string]any{"what": "Post the release notes", "risk": "medium", "kind": "public_post", "wait_seconds": 1}, &got)
		if got.State != "PENDING" || got.GoAhead || got.ApprovalID == "" {
			t.Fatalf("request_approval with wait_seconds: %+v", got)
		}
		if _, err := approvals.Decide(ctx, &factoryv1.DecideRequest{ApprovalId: got.ApprovalID,
			Decision: factoryv1.ApprovalDecision_APPROVAL_DECISION_REJECT, Reason: "not before the launch"}); err != nil {
			t.Fatal(err)
		}
		agent.ok("wait_approval", map[string]any{"approval_id": got.ApprovalID}, &got)
		if got.State != "REJECTED" || got.GoAhead || got.Reason != "not before the launch" {
			t.Fatalf("wait_approval: %+v", got)
		}
	})

	t.Run("complete", func(t *testing.T) {
		var got struct {
			State string `json:"state"`
		}
		agent.ok("report_progress", map[string]any{"task_id": "mcp-build", "note": "deployed 1.4.2"}, nil)
		if p := task("mcp-build").GetProgress(); p != "deployed 1.4.2" {
			t.Fatalf("progress %q", p)
		}
		agent.ok("complete_task", map[string]any{"task_id": "mcp-build", "note": "shipped", "result": map[string]any{"version": "1.4.2"}}, &got)
		if got.State != "DONE" {
			t.Fatalf("complete_task: %+v", got)
		}
		if tk := task("mcp-build"); tk.GetState() != factoryv1.TaskState_TASK_STATE_DONE || tk.GetAttempt() != 1 || tk.GetNote() != "shipped" ||
			tk.GetResultJson() != `{"version":"1.4.2"}` {
			t.Fatalf("after complete_task: %v", tk)
		}
		agent.refused("complete_task", map[string]any{"task_id": "mcp-build"}, "not held by this session")
	})

	t.Run("lease renewed in the background", func(t *testing.T) {
		sh.ok("task", "create", "--id", "mcp-slow", "--title", "Think hard", "--role", "builder")
		var got mcpClaimResult
		agent.ok("claim_task", map[string]any{"lease_seconds": 3}, &got)
		if got.Task.ID != "mcp-slow" {
			t.Fatalf("claim_task: %+v", got)
		}
		claimed := task("mcp-slow").GetLease().GetExpiresAt().AsTime()
		time.Sleep(4 * time.Second) // past the 3s lease: only renewals keep it
		tk := task("mcp-slow")
		if tk.GetState() != factoryv1.TaskState_TASK_STATE_IN_PROGRESS || !tk.GetLease().GetExpiresAt().AsTime().After(claimed) ||
			!tk.GetLease().GetExpiresAt().AsTime().After(time.Now()) {
			t.Fatalf("after 4s of a 3s lease: %v (lease first ran to %s)", tk, claimed)
		}
		time.Sleep(time.Second)
		agent.ok("complete_task", map[string]any{"task_id": "mcp-slow"}, nil)
		if tk := task("mcp-slow"); tk.GetState() != factoryv1.TaskState_TASK_STATE_DONE || tk.GetAttempt() != 1 {
			t.Fatalf("rescued or not done: %v", tk)
		}
	})

	t.Run("a lost lease is reported on the next call", func(t *testing.T) {
		sh.ok("task", "create", "--id", "mcp-killed", "--title", "Doomed", "--role", "builder")
		agent.ok("claim_task", nil, nil)
		if _, err := queue.MoveTask(ctx, &factoryv1.MoveTaskRequest{TaskId: "mcp-killed", To: factoryv1.TaskState_TASK_STATE_FAILED, Reason: "wrong repo"}); err != nil {
			t.Fatal(err)
		}
		agent.refused("report_progress", map[string]any{"task_id": "mcp-killed", "note": "still going"}, "lease on task mcp-killed was lost", "FAILED_PRECONDITION")
		agent.refused("complete_task", map[string]any{"task_id": "mcp-killed"}, "not held by this session")
	})

	t.Run("status tools", func(t *testing.T) {
		var q struct {
			Counts map[string]int64 `json:"counts"`
		}
		agent.ok("queue_status", nil, &q)
		if q.Counts["DONE"] != 2 || q.Counts["FAILED"] != 1 {
			t.Fatalf("queue_status: %+v", q)
		}
		var b struct {
			You struct {
				SpentMicros int64 `json:"spent_micros"`
				CapMicros   int64 `json:"cap_micros"`
			} `json:"you"`
			Total struct {
				SpentMicros int64 `json:"spent_micros"`
			} `json:"total"`
		}
		agent.ok("budget_status", nil, &b)
		if b.You.SpentMicros != 35300 || b.You.CapMicros == 0 || b.Total.SpentMicros != 35300 {
			t.Fatalf("budget_status: %+v", b)
		}
	})

	t.Run("fail", func(t *testing.T) {
		sh.ok("task", "create", "--id", "mcp-broken", "--title", "Build a repo that is gone", "--role", "builder")
		var claimed mcpClaimResult
		agent.ok("claim_task", nil, &claimed)
		if claimed.Task.ID != "mcp-broken" {
			t.Fatalf("claim_task: %+v", claimed)
		}
		var got struct {
			State   string `json:"state"`
			Message string `json:"message"`
		}
		agent.ok("fail_task", map[string]any{"task_id": "mcp-broken", "error": "no such repo", "permanent": true}, &got)
		if got.State != "FAILED" || !strings.Contains(got.Message, "failed for good") {
			t.Fatalf("fail_task: %+v", got)
		}
		if tk := task("mcp-broken"); tk.GetState() != factoryv1.TaskState_TASK_STATE_FAILED || tk.GetLastError() != "no such repo" {
			t.Fatalf("after fail_task: %v", tk)
		}
		agent.refused("fail_task", map[string]any{"task_id": "mcp-broken", "error": "again"}, "not held by this session")
	})

	t.Run("unfinished work is handed back at disconnect", func(t *testing.T) {
		sh.ok("task", "create", "--id", "mcp-left", "--title", "Abandoned", "--role", "builder")
		agent.ok("claim_task", nil, nil)
		if err := agent.session.Close(); err != nil {
			t.Fatalf("close: %v\nstderr:\n%s", err, agent.stderr.String())
		}
		tk := task("mcp-left")
		if tk.GetState() != factoryv1.TaskState_TASK_STATE_READY || !strings.Contains(tk.GetLastError(), "disconnected") {
			t.Fatalf("after the client left: %v\nstderr:\n%s", tk, agent.stderr.String())
		}
	})
}
