package cli_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// TestIDPrefixesAndLeasesThroughTheBinary runs the built factory binary
// against a control plane with a fast lease rescue: shortened task and
// approval ids resolve when one id starts with them, are refused with the
// candidates listed when several do, and with NOT_FOUND when none does;
// and an agent's lease file forgets the leases the server rescued.
func TestIDPrefixesAndLeasesThroughTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the factory binary; skipped under -short")
	}
	bin := factoryBinary(t)
	p := newWorkPlane(t)
	operator := &e2e{t: t, bin: bin, addr: p.addr, stateFile: filepath.Join(t.TempDir(), "leases.json"), env: []string{"FACTORY_TOKEN=" + p.token}}

	t.Run("task ids", func(t *testing.T) {
		e := *operator
		e.t = t
		var ids []string
		for _, title := range []string{"index the docs", "build the api", "test the api", "ship it"} {
			ids = append(ids, strings.TrimSpace(e.ok("task", "create", "--title", title, "--quiet")))
		}
		all := p.taskIDs()

		// UUIDv7s made moments apart share their leading (time) digits.
		shared := commonPrefix(ids[0], ids[1])
		r := e.run("task", "show", shared)
		if r.code != 1 || !strings.Contains(r.stderr, "ambiguous") || !strings.Contains(r.stderr, ids[0]) ||
			!strings.Contains(r.stderr, ids[1]) || !strings.Contains(r.stderr, "index the docs") || !strings.Contains(r.stderr, "READY") {
			t.Fatalf("task show %s (the prefix of two ids): exit %d, want 1 listing both\nstderr: %s", shared, r.code, r.stderr)
		}

		move := uniquePrefix(ids[2], all, 8)
		if out := e.ok("task", "move", move, "--to", "failed", "--reason", "by prefix"); !strings.Contains(out, ids[2]) {
			t.Fatalf("task move %s: %q does not name %s", move, out, ids[2])
		}
		p.wantState(ids[2], factoryv1.TaskState_TASK_STATE_FAILED)
		e.ok("task", "requeue", move)
		p.wantState(ids[2], factoryv1.TaskState_TASK_STATE_READY)
		e.ok("task", "prioritize", uniquePrefix(ids[3], all, 1), "7")
		if got := p.task(ids[3]).GetPriority(); got != 7 {
			t.Fatalf("prioritize by prefix: priority %d, want 7", got)
		}
		e.ok("task", "kill", uniquePrefix(ids[3], all, 1), "--reason", "by prefix")
		p.wantState(ids[3], factoryv1.TaskState_TASK_STATE_FAILED)

		var dep struct {
			DependsOn []string `json:"depends_on"`
		}
		e.jsonOf(&dep, "task", "create", "--title", "after", "--depends-on", uniquePrefix(ids[0], all, 1), "-o", "json")
		if len(dep.DependsOn) != 1 || dep.DependsOn[0] != ids[0] {
			t.Fatalf("--depends-on by prefix: depends_on %v, want [%s]", dep.DependsOn, ids[0])
		}

		r = e.run("task", "move", "fffff", "--to", "failed", "--reason", "x")
		if r.code != 1 || !strings.Contains(r.stderr, "no task id starts with fffff") || !strings.Contains(r.stderr, "NOT_FOUND") {
			t.Fatalf("task move fffff: exit %d, want 1 with NOT_FOUND\nstderr: %s", r.code, r.stderr)
		}

		// An id that exists as typed wins over the longer ids it begins.
		e.ok("task", "create", "--id", "beef", "--title", "exact")
		e.ok("task", "create", "--id", "beef-2", "--title", "longer")
		for arg, want := range map[string]string{"beef": "beef", "beef-": "beef-2"} {
			var got struct {
				ID string `json:"id"`
			}
			e.jsonOf(&got, "task", "show", arg, "-o", "json")
			if got.ID != want {
				t.Fatalf("task show %s: %s, want %s", arg, got.ID, want)
			}
		}
		if r := e.run("task", "show", "bee"); r.code != 1 || !strings.Contains(r.stderr, "beef-2") {
			t.Fatalf("task show bee: exit %d, want 1 listing beef and beef-2\nstderr: %s", r.code, r.stderr)
		}
		// A whole id is used as it is.
		e.ok("task", "show", ids[1])
	})

	t.Run("approval ids", func(t *testing.T) {
		e := *operator
		e.t = t
		var approvals []string
		for _, title := range []string{"deploy api", "deploy web", "rotate keys"} {
			var task struct {
				ApprovalID string `json:"approval_id"`
			}
			e.jsonOf(&task, "task", "create", "--title", title, "--kind", "build", "--requires-approval", "-o", "json")
			approvals = append(approvals, task.ApprovalID)
		}
		shared := commonPrefix(approvals[0], approvals[1])
		r := e.run("approvals", "show", shared)
		if r.code != 1 || !strings.Contains(r.stderr, "ambiguous") || !strings.Contains(r.stderr, approvals[0]) ||
			!strings.Contains(r.stderr, approvals[1]) || !strings.Contains(r.stderr, "PENDING") {
			t.Fatalf("approvals show %s: exit %d, want 1 listing both\nstderr: %s", shared, r.code, r.stderr)
		}
		if r := e.run("approve", shared); r.code != 1 || !strings.Contains(r.stderr, "ambiguous") {
			t.Fatalf("approve %s: exit %d, want 1\nstderr: %s", shared, r.code, r.stderr)
		}
		unique := uniquePrefix(approvals[2], approvals, 8)
		if out := e.ok("approve", unique, "--note", "by prefix"); !strings.Contains(out, approvals[2]) || !strings.Contains(out, "APPROVED") {
			t.Fatalf("approve %s:\n%s", unique, out)
		}
		if out := e.ok("approvals", "show", unique); !strings.Contains(out, "by prefix") {
			t.Fatalf("approvals show %s:\n%s", unique, out)
		}
		r = e.run("reject", "fffff", "--reason", "no")
		if r.code != 1 || !strings.Contains(r.stderr, "no approval id starts with fffff") || !strings.Contains(r.stderr, "NOT_FOUND") {
			t.Fatalf("reject fffff: exit %d, want 1 with NOT_FOUND\nstderr: %s", r.code, r.stderr)
		}
	})

	t.Run("lease file forgets rescued leases", func(t *testing.T) {
		// Above the other subtests' tasks, which any role may claim.
		ids := p.create(4, "pruner", func(_ int, r *factoryv1.CreateTaskRequest) { r.Priority = 100 })
		agent := &e2e{t: t, bin: bin, addr: p.addr, stateFile: filepath.Join(t.TempDir(), "leases.json"),
			env: []string{"FACTORY_TOKEN=" + p.sh.mint("agent", "pr-1", "pruner"), "FACTORY_AGENT=pr-1"}}
		if got := strings.TrimSpace(agent.ok("task", "claim", "--role", "pruner", "--lease", "1s", "--quiet")); got != ids[0] {
			t.Fatalf("first claim got %q, want %s", got, ids[0])
		}
		agent.ok("task", "claim", "--role", "pruner", "--max", "2", "--lease", "5m")
		if held := agent.leases()["pr-1"]; len(held) != 3 {
			t.Fatalf("lease file holds %v, want 3 leases", held)
		}
		workEventually(t, 15*time.Second, "the 1s lease was not rescued", func() bool {
			return p.task(ids[0]).GetLease().GetHolder() != "pr-1"
		})

		r := agent.run("task", "done")
		if r.code != 1 || !strings.Contains(r.stderr, "holds 2 leases") || strings.Contains(r.stderr, ids[0]) {
			t.Fatalf("task done with a rescued lease in the file: exit %d, want 1 counting the 2 live leases\nstderr: %s", r.code, r.stderr)
		}
		held := agent.leases()["pr-1"]
		if _, ok := held[ids[0]]; ok || len(held) != 2 {
			t.Fatalf("lease file after the prune: %v, want only %s and %s", held, ids[1], ids[2])
		}
		// A prefix only one held id starts with names the lease.
		agent.ok("task", "done", uniquePrefix(ids[1], []string{ids[1], ids[2]}, 1))
		p.wantState(ids[1], factoryv1.TaskState_TASK_STATE_DONE)
		agent.ok("task", "done")
		p.wantState(ids[2], factoryv1.TaskState_TASK_STATE_DONE)
		if held := agent.leases()["pr-1"]; len(held) != 0 {
			t.Fatalf("lease file after both done: %v", held)
		}

		// With --fencing-token the state file is not read: the server
		// resolves the prefix.
		claimed := strings.TrimSpace(agent.ok("task", "claim", "--role", "pruner", "--lease", "5m", "--quiet"))
		token := agent.leases()["pr-1"][claimed]
		other := &e2e{t: t, bin: bin, addr: p.addr, stateFile: filepath.Join(t.TempDir(), "empty.json"), env: agent.env}
		other.ok("task", "fail", uniquePrefix(claimed, p.taskIDs(), 8), "--fencing-token", strconv.FormatInt(token, 10), "--error", "gone", "--permanent")
		p.wantState(claimed, factoryv1.TaskState_TASK_STATE_FAILED)
	})
}

// taskIDs lists every task's id.
func (p *workPlane) taskIDs() []string {
	p.t.Helper()
	resp, err := p.q.ListTasks(p.ctx(), &factoryv1.ListTasksRequest{PageSize: 1000})
	if err != nil {
		p.t.Fatalf("list tasks: %v", err)
	}
	var ids []string
	for _, t := range resp.GetTasks() {
		ids = append(ids, t.GetId())
	}
	return ids
}

func (p *workPlane) wantState(id string, want factoryv1.TaskState) {
	p.t.Helper()
	if got := p.task(id).GetState(); got != want {
		p.t.Fatalf("task %s is %s, want %s", id, got, want)
	}
}

// commonPrefix is the longest prefix a and b share.
func commonPrefix(a, b string) string {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return a[:n]
}

// uniquePrefix is the shortest prefix of id, at least minLen long, that
// no other id in all starts with.
func uniquePrefix(id string, all []string, minLen int) string {
	n := minLen
	for _, other := range all {
		if other != id {
			n = max(n, len(commonPrefix(id, other))+1)
		}
	}
	return id[:min(n, len(id))]
}
