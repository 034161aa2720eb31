//go:build faults

package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// floodRow04LargePayloads replays row 4: 70 tasks with payloads of about
// 1 MiB (each allowed), then `factory task ls`, `factory status` and a
// ClaimTask of 100 by another agent. Once, the list and the status answered
// 72.8 MB and failed for everyone, and the claim committed 70 tasks whose
// response was never sent. Now lists carry summaries, pages and claims stop
// at a byte budget under gRPC's default 4 MiB receive limit (the clients
// here keep that default), and a claim commits only what it delivers.
func floodRow04LargePayloads(t *testing.T) {
	const tasks = 70
	f := newFlood(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	q := factoryv1.NewQueueServiceClient(f.op)
	payload := `{"blob":"` + strings.Repeat("x", 1<<20-11) + `"}` // 1 MiB, the most a task may carry
	// Three to a call: the most a 4 MiB request carries.
	for created := 0; created < tasks; {
		var batch []*factoryv1.CreateTaskRequest
		for ; len(batch) < 3 && created < tasks; created++ {
			batch = append(batch, &factoryv1.CreateTaskRequest{Title: "heavy", PayloadJson: payload})
		}
		if _, err := q.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: batch}); err != nil {
			t.Fatalf("create 1 MiB tasks: %v", err)
		}
	}

	// The operator's views work whatever the payloads weigh.
	ls := runCLI(t, f, "task", "ls")
	if n := strings.Count(ls, "heavy"); n != tasks {
		t.Fatalf("factory task ls listed %d tasks, want %d:\n%s", n, tasks, ls)
	}
	var listed []struct {
		PayloadJSON  string `json:"payload_json"`
		PayloadBytes string `json:"payload_bytes"` // int64 is a string in proto JSON
	}
	if err := json.Unmarshal([]byte(runCLI(t, f, "task", "ls", "-o", "json")), &listed); err != nil {
		t.Fatalf("factory task ls -o json: %v", err)
	}
	if len(listed) != tasks || listed[0].PayloadJSON != "" || listed[0].PayloadBytes != strconv.Itoa(len(payload)) {
		t.Fatalf("task ls -o json: %d tasks, the first with a %d-byte payload and payload_bytes %q; want %d summaries of %d",
			len(listed), len(listed[0].PayloadJSON), listed[0].PayloadBytes, tasks, len(payload))
	}
	runCLI(t, f, "status")

	// The full view pages through every payload, each page under the limit.
	full, token, pages := 0, "", 0
	for {
		resp, err := q.ListTasks(ctx, &factoryv1.ListTasksRequest{View: factoryv1.TaskView_TASK_VIEW_FULL, PageSize: 1000, PageToken: token})
		if err != nil {
			t.Fatalf("list in full, page %d: %v", pages, err)
		}
		for _, task := range resp.GetTasks() {
			if len(task.GetPayloadJson()) != len(payload) {
				t.Fatalf("full view of %s carries a %d-byte payload, want %d", task.GetId(), len(task.GetPayloadJson()), len(payload))
			}
		}
		full += len(resp.GetTasks())
		pages++
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if full != tasks {
		t.Fatalf("full view listed %d tasks over %d pages, want %d", full, pages, tasks)
	}

	// Another agent claims 100: it gets what one response can carry, and
	// exactly that is IN_PROGRESS; the rest stays READY, no attempt used.
	agent := factoryv1.NewQueueServiceClient(dial(t, f.cp.addr, mintToken(t, f.op, factoryv1.Role_ROLE_AGENT, "hoarder")))
	claim := func() []*factoryv1.Task {
		t.Helper()
		resp, err := agent.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "hoarder", MaxTasks: 100})
		if err != nil {
			t.Fatalf("ClaimTask of 100: %v", err)
		}
		return resp.GetTasks()
	}
	first := claim()
	if len(first) == 0 {
		t.Fatal("ClaimTask of 100 got nothing")
	}
	stats, err := q.GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	inProgress, ready := stateCount(stats, factoryv1.TaskState_TASK_STATE_IN_PROGRESS), stateCount(stats, factoryv1.TaskState_TASK_STATE_READY)
	if inProgress != int64(len(first)) || ready != int64(tasks-len(first)) {
		t.Fatalf("after a claim that delivered %d tasks: %d IN_PROGRESS, %d READY; want %d and %d", len(first), inProgress, ready, len(first), tasks-len(first))
	}
	for _, task := range listAll(t, ctx, q, factoryv1.TaskState_TASK_STATE_READY) {
		if task.GetAttempt() != 0 {
			t.Fatalf("READY task %s has attempt %d: a claim used it without delivering it", task.GetId(), task.GetAttempt())
		}
	}
	t.Logf("a ClaimTask of 100 delivered %d tasks of 1 MiB", len(first))

	// With tasks IN_PROGRESS (what `status` lists) both views still work.
	runCLI(t, f, "status")
	runCLI(t, f, "task", "ls", "--state", "in-progress")

	// Claiming on takes every task exactly once, each delivered.
	seen := map[string]bool{}
	for _, task := range first {
		seen[task.GetId()] = true
	}
	for len(seen) < tasks {
		got := claim()
		if len(got) == 0 {
			t.Fatalf("claims stopped after %d of %d tasks", len(seen), tasks)
		}
		for _, task := range got {
			if seen[task.GetId()] {
				t.Fatalf("task %s claimed twice", task.GetId())
			}
			seen[task.GetId()] = true
		}
	}
}

// runCLI runs the built `factory` CLI as the operator against the flood's
// control plane and returns its standard output; it fails the test unless
// the command succeeds.
func runCLI(t *testing.T, f *flood, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary(t, "factory"), append([]string{"--addr", f.cp.addr, "--token", f.cp.operatorToken(t)}, args...)...)
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("factory %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}
