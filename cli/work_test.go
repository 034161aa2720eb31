package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/factory/factory/cli"
	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/server"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// workPlane is a real control plane (SQLite) for the `factory work`
// tests, with quick retries and lease rescue, so that a lease that ran
// out makes its task claimable again within a second, not ten.
type workPlane struct {
	t      testing.TB
	addr   string
	token  string
	q      factoryv1.QueueServiceClient
	budget factoryv1.BudgetServiceClient
	sh     *shell
}

func newWorkPlane(t testing.TB) *workPlane {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrCh := make(chan string, 1)
	done := make(chan error, 1)
	dataDir := t.TempDir()
	go func() {
		done <- server.Run(ctx, server.Config{
			Listen:      "127.0.0.1:0",
			DataDir:     dataDir,
			Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
			OnListening: func(a net.Addr) { addrCh <- a.String() },
			Queue:       queue.Config{RetryBase: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond, RescueInterval: 100 * time.Millisecond},
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	p := &workPlane{t: t}
	select {
	case p.addr = <-addrCh:
	case err := <-done:
		t.Fatalf("control plane did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("control plane did not start in 30s")
	}
	b, err := os.ReadFile(filepath.Join(dataDir, access.OperatorTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	p.token = strings.TrimSpace(string(b))
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(access.Bearer{Secret: p.token, Plaintext: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.q = factoryv1.NewQueueServiceClient(conn)
	p.budget = factoryv1.NewBudgetServiceClient(conn)
	if tt, ok := t.(*testing.T); ok {
		p.sh = &shell{t: tt, addr: p.addr, token: p.token, stateFile: filepath.Join(t.TempDir(), "leases.json")}
	}
	return p
}

func (p *workPlane) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	p.t.Cleanup(cancel)
	return ctx
}

// create makes tasks, 1000 to a call; edit shapes each request.
func (p *workPlane) create(n int, role string, edit func(i int, r *factoryv1.CreateTaskRequest)) []string {
	p.t.Helper()
	var ids []string
	for start := 0; start < n; start += 1000 {
		req := &factoryv1.CreateTasksRequest{}
		for i := start; i < min(n, start+1000); i++ {
			r := &factoryv1.CreateTaskRequest{Title: fmt.Sprintf("task %d", i), Role: role, PayloadJson: fmt.Sprintf(`{"i": %d}`, i)}
			if edit != nil {
				edit(i, r)
			}
			req.Tasks = append(req.Tasks, r)
		}
		resp, err := p.q.CreateTasks(p.ctx(), req)
		if err != nil {
			p.t.Fatalf("create tasks: %v", err)
		}
		for _, t := range resp.GetTasks() {
			ids = append(ids, t.GetId())
		}
	}
	return ids
}

func (p *workPlane) task(id string) *factoryv1.Task {
	p.t.Helper()
	resp, err := p.q.GetTask(p.ctx(), &factoryv1.GetTaskRequest{TaskId: id})
	if err != nil {
		p.t.Fatalf("get task %s: %v", id, err)
	}
	return resp.GetTask()
}

// inState counts the tasks in state.
func (p *workPlane) inState(state factoryv1.TaskState) int64 {
	p.t.Helper()
	resp, err := p.q.GetQueueStats(p.ctx(), &factoryv1.GetQueueStatsRequest{})
	if err != nil {
		p.t.Fatalf("queue stats: %v", err)
	}
	for _, c := range resp.GetCounts() {
		if c.GetState() == state {
			return c.GetCount()
		}
	}
	return 0
}

// spendEvents is the number of spend events recorded today per task.
func (p *workPlane) spendEvents() map[string]int64 {
	p.t.Helper()
	resp, err := p.budget.GetSpend(p.ctx(), &factoryv1.GetSpendRequest{GroupBy: factoryv1.SpendGroupBy_SPEND_GROUP_BY_TASK, Limit: 10000})
	if err != nil {
		p.t.Fatalf("get spend: %v", err)
	}
	out := map[string]int64{}
	for _, g := range resp.GetGroups() {
		out[g.GetKey()] = g.GetTotals().GetEvents()
	}
	return out
}

// eventually waits up to d for cond, failing the test with what.
func workEventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// workerRun is `factory work` run in-process, as a shell would run it.
type workerRun struct {
	t              testing.TB
	stdout, stderr *syncBuffer
	cancel         context.CancelFunc
	done           chan int
}

func (p *workPlane) startWorker(token string, args ...string) *workerRun {
	ctx, cancel := context.WithCancel(context.Background())
	w := &workerRun{t: p.t, stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, done: make(chan int, 1)}
	cmd := cli.NewRootCommand(cli.Options{Stdout: w.stdout, Stderr: w.stderr})
	cmd.SetArgs(append([]string{"--addr", p.addr, "--token", token, "work"}, args...))
	go func() { w.done <- cli.Execute(ctx, cmd) }()
	p.t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
			p.t.Error("a worker did not stop within 30s of the test's end")
		}
	})
	return w
}

// stop drains the worker (as SIGTERM does) and returns its exit code.
func (w *workerRun) stop() int {
	w.t.Helper()
	w.cancel()
	return w.wait(20 * time.Second)
}

// wait waits for the worker to exit by itself and returns its exit code.
func (w *workerRun) wait(d time.Duration) int {
	w.t.Helper()
	select {
	case code := <-w.done:
		w.done <- code
		return code
	case <-time.After(d):
		w.t.Fatalf("the worker did not exit within %s\nstderr:\n%s", d, w.stderr.String())
	}
	return -1
}

// workResult is a -o json line of `factory work`.
type workResult struct {
	TaskID       string  `json:"task_id"`
	Attempt      int32   `json:"attempt"`
	Outcome      string  `json:"outcome"`
	State        string  `json:"state"`
	ExitCode     int     `json:"exit_code"`
	DurationMS   float64 `json:"duration_ms"`
	Renewals     int     `json:"renewals"`
	SpendReports int     `json:"spend_reports"`
	Error        string  `json:"error"`
}

// workStats is the --stats line of -o json.
type workStats struct {
	Tasks           int            `json:"tasks"`
	Outcomes        map[string]int `json:"outcomes"`
	WallSeconds     float64        `json:"wall_seconds"`
	TasksPerSecond  float64        `json:"tasks_per_second"`
	ClaimToStart    workLatency    `json:"claim_to_start"`
	ExitToAck       workLatency    `json:"exit_to_ack"`
	ExitToNextStart workLatency    `json:"exit_to_next_start"`
	WorkerCPU       *float64       `json:"worker_cpu_us_per_task"`
	CMDCPU          *float64       `json:"cmd_cpu_us_per_task"`
}

type workLatency struct {
	Count int     `json:"count"`
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	Maxms float64 `json:"max_ms"`
}

// parseWorkOutput reads the JSON lines of `factory work -o json`.
func parseWorkOutput(t testing.TB, out string) (results []workResult, stats *workStats) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, `{"stats":`) {
			var s struct {
				Stats workStats `json:"stats"`
			}
			if err := json.Unmarshal([]byte(line), &s); err != nil {
				t.Fatalf("stats line %q: %v", line, err)
			}
			stats = &s.Stats
			continue
		}
		var r workResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("stdout line %q is not a result: %v", line, err)
		}
		results = append(results, r)
	}
	return results, stats
}

// Must hold: three workers share 100 tasks; every task is DONE once, at
// its first attempt. Every tenth task sleeps 3s under a 2s lease, so only
// renewals keep it; the others are quick, to keep the test short. The
// script also checks what the worker hands it (stdin, environment) and
// reports spend and a result, which must land on the right task.
func TestWorkThreeWorkersShareHundredTasks(t *testing.T) {
	p := newWorkPlane(t)
	ids := p.create(100, "builder", func(i int, r *factoryv1.CreateTaskRequest) {
		r.Kind = "quick"
		if i%10 == 0 {
			r.Kind = "slow"
		}
	})
	const script = `
set -e
grep -q "\"id\":\"$FACTORY_TASK_ID\"" # the task on stdin
case "$FACTORY_TASK_PAYLOAD" in *'"i"'*) ;; *) echo "payload: $FACTORY_TASK_PAYLOAD" >&2; exit 3;; esac
case "$FACTORY_AGENT" in forge-*) ;; *) exit 4;; esac
[ "$FACTORY_TASK_ATTEMPT" = 1 ] && [ -n "$FACTORY_FENCING_TOKEN" ]
if [ "$FACTORY_TASK_KIND" = slow ]; then echo "::progress sleeping past the lease"; sleep 3; fi
echo "::spend model=test-model provider=test tier=local input_tokens=10 output_tokens=5 cost_micros=7"
echo "::result {\"task\": \"$FACTORY_TASK_ID\", \"attempt\": $FACTORY_TASK_ATTEMPT}"
echo "finished $FACTORY_TASK_TITLE"
`
	var workers []*workerRun
	for i := 1; i <= 3; i++ {
		agent := fmt.Sprintf("forge-%d", i)
		token := p.sh.mint("agent", agent, "builder")
		workers = append(workers, p.startWorker(token, "--agent", agent, "--role", "builder", "--concurrency", "4",
			"--lease", "2s", "-o", "json", "--", "sh", "-c", script))
	}
	workEventually(t, 40*time.Second, "all 100 tasks DONE", func() bool { return p.inState(factoryv1.TaskState_TASK_STATE_DONE) == 100 })

	seen := map[string]int{}
	var renewedSlow int
	for i, w := range workers {
		if code := w.stop(); code != 0 {
			t.Fatalf("worker %d exited %d\nstderr:\n%s", i+1, code, w.stderr.String())
		}
		if !strings.Contains(w.stderr.String(), "] finished task ") {
			t.Errorf("worker %d did not pass CMD's stdout through:\n%s", i+1, w.stderr.String())
		}
		results, _ := parseWorkOutput(t, w.stdout.String())
		for _, r := range results {
			seen[r.TaskID]++
			if r.Outcome != "done" || r.State != "TASK_STATE_DONE" || r.Attempt != 1 || r.ExitCode != 0 || r.SpendReports != 1 {
				t.Errorf("worker %d: result %+v", i+1, r)
			}
			if r.DurationMS > 2500 && r.Renewals >= 3 {
				renewedSlow++
			}
		}
	}
	if renewedSlow != 10 {
		t.Errorf("%d of the 10 slow tasks show 3 or more renewals; want all 10", renewedSlow)
	}
	spend := p.spendEvents()
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("task %s finished %d times by the workers; want once", id, seen[id])
		}
		task := p.task(id)
		if task.GetState() != factoryv1.TaskState_TASK_STATE_DONE || task.GetAttempt() != 1 {
			t.Errorf("task %s: %s at attempt %d; want DONE at attempt 1 (no rescue)", id, task.GetState(), task.GetAttempt())
		}
		if want := fmt.Sprintf(`{"task":"%s","attempt":1}`, id); task.GetNote() != want {
			t.Errorf("task %s: note %q; want the ::result %s", id, task.GetNote(), want)
		}
		if spend[id] != 1 {
			t.Errorf("task %s: %d spend events; want 1", id, spend[id])
		}
		if task.GetKind() == "slow" && task.GetProgress() != "sleeping past the lease" {
			t.Errorf("slow task %s: progress %q", id, task.GetProgress())
		}
	}
}

// Must hold: a script that exits 1 fails the task, with the exit code and
// the tail of its stderr (not all of it) as the task's last error. A
// ::spend line that does not parse is named and skipped.
func TestWorkFailureCarriesStderrTail(t *testing.T) {
	p := newWorkPlane(t)
	id := p.create(1, "builder", func(_ int, r *factoryv1.CreateTaskRequest) { r.MaxAttempts = 1 })[0]
	w := p.startWorker(p.token, "--agent", "forge", "--role", "builder", "--max-tasks", "1", "-o", "json", "--", "sh", "-c", `
echo "::spend model=m"
i=0
while [ $i -lt 500 ]; do echo "noise line $i" >&2; i=$((i+1)); done
echo "the build broke" >&2
exit 1`)
	if code := w.wait(20 * time.Second); code != 0 {
		t.Fatalf("worker exited %d\n%s", code, w.stderr.String())
	}
	results, _ := parseWorkOutput(t, w.stdout.String())
	if len(results) != 1 || results[0].Outcome != "failed" || results[0].ExitCode != 1 || results[0].State != "TASK_STATE_FAILED" {
		t.Fatalf("results: %+v", results)
	}
	task := p.task(id)
	last := task.GetLastError()
	if task.GetState() != factoryv1.TaskState_TASK_STATE_FAILED || !strings.HasPrefix(last, "CMD exited with code 1") ||
		!strings.HasSuffix(last, "noise line 499\nthe build broke") {
		t.Fatalf("task: %s, last error %q", task.GetState(), last)
	}
	if strings.Contains(last, "noise line 0\n") || len(last) > 4200 {
		t.Errorf("last error holds more than the tail (%d bytes)", len(last))
	}
	if errs := w.stderr.String(); !strings.Contains(errs, "::spend skipped: tier= is required") || !strings.Contains(errs, "] the build broke") {
		t.Errorf("stderr:\n%s", errs)
	}
}

// --review sends done work to REVIEW for a human check.
func TestWorkReviewSendsToReview(t *testing.T) {
	p := newWorkPlane(t)
	id := p.create(1, "", nil)[0]
	w := p.startWorker(p.token, "--agent", "forge", "--review", "--max-tasks", "1", "-o", "json", "--", "true")
	if code := w.wait(20 * time.Second); code != 0 {
		t.Fatalf("worker exited %d\n%s", code, w.stderr.String())
	}
	results, _ := parseWorkOutput(t, w.stdout.String())
	if len(results) != 1 || results[0].Outcome != "review" || results[0].State != "TASK_STATE_REVIEW" {
		t.Fatalf("results: %+v", results)
	}
	if task := p.task(id); task.GetState() != factoryv1.TaskState_TASK_STATE_REVIEW {
		t.Fatalf("task: %s; want REVIEW", task.GetState())
	}
}

// Must hold: under an emergency stop workers make no claim and say why,
// once; after the rearm they resume and finish the work.
func TestWorkWaitsOutEmergencyStop(t *testing.T) {
	p := newWorkPlane(t)
	p.sh.ok("emergency-stop", "--reason", "runaway test loop")
	ids := p.create(3, "builder", nil)
	var workers []*workerRun
	for i := range 2 {
		workers = append(workers, p.startWorker(p.token, "--agent", fmt.Sprintf("forge-%d", i), "--role", "builder",
			"--claim-wait", "1s", "-o", "json", "--", "true"))
	}
	const why = "work: fleet stopped by the emergency stop: runaway test loop; waiting for an operator to rearm it"
	for i, w := range workers {
		workEventually(t, 10*time.Second, fmt.Sprintf("worker %d says why it waits", i), func() bool { return strings.Contains(w.stderr.String(), why) })
	}
	time.Sleep(700 * time.Millisecond) // a few refused claims more
	for _, id := range ids {
		if task := p.task(id); task.GetAttempt() != 0 {
			t.Fatalf("task %s claimed during the stop: %s, attempt %d", id, task.GetState(), task.GetAttempt())
		}
	}
	for i, w := range workers {
		if n := strings.Count(w.stderr.String(), why); n != 1 {
			t.Errorf("worker %d said why %d times; want once", i, n)
		}
	}
	p.sh.ok("emergency-stop", "--rearm", "--note", "loop fixed")
	workEventually(t, 15*time.Second, "the 3 tasks DONE after the rearm", func() bool { return p.inState(factoryv1.TaskState_TASK_STATE_DONE) == 3 })
	for i, w := range workers {
		// One worker may have done all three while the other waited out
		// its backoff; its next claim is accepted all the same.
		workEventually(t, 10*time.Second, fmt.Sprintf("worker %d says it resumed", i), func() bool {
			return strings.Contains(w.stderr.String(), "work: claims accepted again; resuming")
		})
		if code := w.stop(); code != 0 {
			t.Fatalf("worker %d exited %d", i, code)
		}
	}
}
