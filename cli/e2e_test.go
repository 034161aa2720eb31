package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestEndToEnd builds the real binaries, starts factory-controlplane as a
// process and drives it with the factory binary the way an operator and an
// agent would, including a crash (SIGKILL) and restart of the control plane.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds both binaries and runs the control plane as a process; skipped under -short")
	}
	bin := t.TempDir()
	controlPlane := filepath.Join(bin, "factory-controlplane")
	factory := factoryBinary(t)
	goBuild(t, controlPlane, "github.com/factory/factory/controlplane/cmd/factory-controlplane")

	// The layout `make run` leaves: the CLI, run from the same directory
	// with no token given, finds the operator token in ./data.
	work := t.TempDir()
	dataDir := filepath.Join(work, "data")
	cp := startProcess(t, controlPlane, dataDir)
	e := &e2e{t: t, bin: factory, addr: cp.addr, stateFile: filepath.Join(t.TempDir(), "state", "leases.json"), dir: work}
	tokenFile := filepath.Join(dataDir, "operator.token")
	info, err := os.Stat(tokenFile)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("operator token file: %v, %v", info, err)
	}
	operatorSecret, _ := os.ReadFile(tokenFile)
	if out := e.ok("whoami"); !strings.Contains(out, "operator") || !strings.Contains(out, filepath.Join("data", "operator.token")) {
		t.Fatalf("whoami with no token given:\n%s", out)
	}

	// Create, with a dependency.
	e.ok("task", "create", "--id", "spec", "--title", "Write the spec", "--role", "researcher", "--payload", `{"topic":"leases"}`, "--label", "proj=e2e")
	e.ok("task", "create", "--id", "impl", "--title", "Implement", "--role", "builder", "--depends-on", "spec", "--max-attempts", "3")
	e.wantState("spec", "TASK_STATE_READY")
	e.wantState("impl", "TASK_STATE_BACKLOG")
	if out := e.ok("task", "ls"); !strings.Contains(out, "spec") || !strings.Contains(out, "impl") || !strings.Contains(out, "BACKLOG") {
		t.Fatalf("ls:\n%s", out)
	}
	var list []map[string]any
	e.jsonOf(&list, "task", "ls", "--label", "proj=e2e", "-o", "json")
	if len(list) != 1 || list[0]["id"] != "spec" {
		t.Fatalf("ls --label -o json: %v", list)
	}

	// An agent claims, renews and finishes; the dependent is promoted.
	if out := e.ok("task", "claim", "--agent", "r1", "--role", "researcher", "--wait", "2s"); !strings.Contains(out, "spec") {
		t.Fatalf("claim:\n%s", out)
	}
	if e.leases()["r1"]["spec"] <= 0 {
		t.Fatalf("claim did not record the lease: %v", e.leases())
	}
	e.ok("task", "renew", "--agent", "r1", "--progress", "drafted")
	if p := e.task("spec")["progress"]; p != "drafted" {
		t.Fatalf("progress after renew: %v", p)
	}
	e.ok("task", "done", "--agent", "r1", "--note", "spec merged")
	e.wantState("spec", "TASK_STATE_DONE")
	e.wantState("impl", "TASK_STATE_READY")
	if out := e.ok("task", "show", "spec"); !strings.Contains(out, "DONE") || !strings.Contains(out, "spec merged") {
		t.Fatalf("show:\n%s", out)
	}
	if len(e.leases()["r1"]) != 0 {
		t.Fatalf("done left the lease in the state file: %v", e.leases())
	}

	// The failure path: a retryable failure, then operator moves.
	var claimed []map[string]any
	e.jsonOf(&claimed, "task", "claim", "--agent", "b1", "--role", "builder", "-o", "json")
	if len(claimed) != 1 || claimed[0]["id"] != "impl" {
		t.Fatalf("claim -o json: %v", claimed)
	}
	e.ok("task", "fail", "--agent", "b1", "--error", "compiler crashed")
	impl := e.task("impl")
	if impl["state"] != "TASK_STATE_READY" || impl["last_error"] != "compiler crashed" || impl["attempt"] != float64(1) {
		t.Fatalf("after a retryable failure: state %v, last_error %v, attempt %v", impl["state"], impl["last_error"], impl["attempt"])
	}
	e.ok("task", "kill", "impl", "--reason", "wrong approach")
	e.wantState("impl", "TASK_STATE_FAILED")
	e.ok("task", "requeue", "impl", "--reason", "try again")
	e.wantState("impl", "TASK_STATE_READY")
	e.ok("task", "move", "impl", "--to", "backlog", "--reason", "waiting on design")
	e.wantState("impl", "TASK_STATE_BACKLOG")
	if r := e.run("task", "move", "impl", "--to", "review", "--reason", "no"); r.code != 1 || !strings.Contains(r.stderr, "FAILED_PRECONDITION") {
		t.Fatalf("illegal move: exit %d, stderr %q", r.code, r.stderr)
	}

	// Queue controls.
	e.ok("task", "create", "--id", "extra", "--title", "Extra", "--role", "builder")
	e.ok("queue", "pause", "--reason", "e2e")
	var stats map[string]any
	e.jsonOf(&stats, "queue", "stats", "-o", "json")
	if stats["paused"] != true || stats["pause_reason"] != "e2e" {
		t.Fatalf("stats while paused: %v", stats)
	}
	e.wantState("extra", "TASK_STATE_PAUSED")
	e.ok("queue", "resume")
	e.wantState("extra", "TASK_STATE_READY")
	if out := e.ok("status"); !strings.Contains(out, "running") {
		t.Fatalf("status:\n%s", out)
	}

	// A lease that must survive a crash of the control plane.
	e.ok("task", "create", "--id", "long", "--title", "Long job", "--role", "worker")
	e.ok("task", "claim", "--agent", "w1", "--role", "worker", "--lease", "10m")
	token := e.leases()["w1"]["long"]
	if token <= 0 {
		t.Fatalf("no lease for w1: %v", e.leases())
	}

	// Export, then import into a fresh control plane: the same tasks.
	exportDir := filepath.Join(t.TempDir(), "queue")
	var exported map[string]any
	e.jsonOf(&exported, "queue", "export", exportDir, "-o", "json")
	if exported["exported"] != float64(4) {
		t.Fatalf("export summary: %v", exported)
	}
	if _, err := os.Stat(filepath.Join(exportDir, "in-progress", "long.json")); err != nil {
		t.Fatalf("held task not exported to in-progress/: %v", err)
	}
	otherDir := t.TempDir()
	other := startProcess(t, controlPlane, otherDir)
	otherToken, err := os.ReadFile(filepath.Join(otherDir, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	e2 := &e2e{t: t, bin: factory, addr: other.addr, stateFile: filepath.Join(t.TempDir(), "leases.json"),
		env: []string{"FACTORY_TOKEN=" + strings.TrimSpace(string(otherToken))}}
	var imported map[string]any
	e2.jsonOf(&imported, "queue", "import", exportDir, "-o", "json")
	if imported["imported"] != float64(4) || imported["in_progress_requeued"] != float64(1) {
		t.Fatalf("import summary: %v", imported)
	}
	e2.wantState("spec", "TASK_STATE_DONE")
	e2.wantState("impl", "TASK_STATE_BACKLOG")
	e2.wantState("long", "TASK_STATE_READY")
	if p := e2.task("spec")["payload_json"]; p != `{"topic":"leases"}` {
		t.Fatalf("payload after import: %v", p)
	}
	other.stop(t)

	// Crash and restart on the same data: tasks and the held lease survive,
	// and the agent finishes with the token from its state file.
	cp.kill(t)
	cp = startProcess(t, controlPlane, dataDir)
	e.addr = cp.addr
	if again, _ := os.ReadFile(tokenFile); !bytes.Equal(again, operatorSecret) {
		t.Fatal("a restart replaced the operator token file")
	}
	e.wantState("spec", "TASK_STATE_DONE")
	e.wantState("impl", "TASK_STATE_BACKLOG")
	long := e.task("long")
	if long["state"] != "TASK_STATE_IN_PROGRESS" || long["lease"].(map[string]any)["token"] != fmt.Sprint(token) {
		t.Fatalf("held task after restart: state %v, lease %v (token in state file %d)", long["state"], long["lease"], token)
	}
	e.ok("task", "done", "--agent", "w1")
	e.wantState("long", "TASK_STATE_DONE")
	if len(e.leases()) != 0 {
		t.Fatalf("leases left: %v", e.leases())
	}

	// An agent's own token: it works as itself only, and the operator's
	// moves are in the audit log.
	agent := strings.TrimSpace(e.ok("token", "create", "--role", "agent", "--subject", "w2", "--roles", "worker", "--quiet"))
	e.ok("task", "create", "--id", "scoped", "--title", "Scoped", "--role", "worker")
	asAgent := &e2e{t: t, bin: factory, addr: e.addr, stateFile: e.stateFile, env: []string{"FACTORY_TOKEN=" + agent}}
	if r := asAgent.run("task", "claim", "--agent", "w1", "--role", "worker"); r.code != 1 || !strings.Contains(r.stderr, "PERMISSION_DENIED") {
		t.Fatalf("claim as another agent: exit %d, stderr %q", r.code, r.stderr)
	}
	asAgent.ok("task", "claim", "--agent", "w2", "--role", "worker")
	asAgent.ok("task", "done", "--agent", "w2")
	var audit []map[string]any
	e.jsonOf(&audit, "audit", "ls", "--since", "24h", "--who", "operator", "-o", "json")
	moves := 0
	for _, entry := range audit {
		if entry["rpc"] == "/factory.v1.QueueService/MoveTask" {
			moves++
		}
	}
	if moves != 3 {
		t.Fatalf("audit ls --who operator: %d moves (kill, requeue, move), want 3: %v", moves, audit)
	}
	cp.stop(t)
}

func goBuild(t *testing.T, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// process is a running control plane.
type process struct {
	cmd    *exec.Cmd
	addr   string
	done   chan struct{}
	mu     sync.Mutex
	stderr bytes.Buffer
}

// startProcess runs the control plane on a free port and waits for its
// "listening" log line.
func startProcess(t *testing.T, bin, dataDir string) *process {
	t.Helper()
	p := &process{done: make(chan struct{})}
	p.cmd = exec.Command(bin, "--listen", "127.0.0.1:0", "--data-dir", dataDir)
	p.cmd.Env = cleanEnv()
	pipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.stderr.WriteString(line + "\n")
			p.mu.Unlock()
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" && rec.Addr != "" {
				select {
				case addrCh <- rec.Addr:
				default:
				}
			}
		}
	}()
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			p.mu.Lock()
			t.Logf("control plane log (%s):\n%s", dataDir, p.stderr.String())
			p.mu.Unlock()
		}
	})
	select {
	case p.addr = <-addrCh:
		return p
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		t.Fatalf("control plane exited before listening:\n%s", p.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("control plane did not log \"listening\" within 30s")
	}
	return nil
}

// kill crashes the control plane: no graceful stop, no final writes.
func (p *process) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	<-p.done
}

// stop asks the control plane to shut down gracefully.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Error("control plane did not stop within 20s of SIGTERM")
	}
}

// cleanEnv is the test's environment without FACTORY_* settings, which
// would change what the binaries do.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FACTORY_") {
			env = append(env, kv)
		}
	}
	return env
}

// e2e runs the factory binary against one control plane.
type e2e struct {
	t         *testing.T
	bin       string
	addr      string
	stateFile string
	dir       string   // working directory of the CLI; empty: the test's
	env       []string // extra environment
}

func (e *e2e) run(args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	// A config directory of its own keeps the user's CLI config out.
	cmd.Env = append(cleanEnv(), "FACTORY_ADDR="+e.addr, "FACTORY_STATE_FILE="+e.stateFile, "XDG_CONFIG_HOME="+e.t.TempDir())
	cmd.Env = append(cmd.Env, e.env...)
	cmd.Dir = e.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("factory %s: %v", strings.Join(args, " "), err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

func (e *e2e) ok(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("factory %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// jsonOf runs a command with -o json and decodes its output into v.
func (e *e2e) jsonOf(v any, args ...string) {
	e.t.Helper()
	out := e.ok(args...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		e.t.Fatalf("factory %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (e *e2e) task(id string) map[string]any {
	e.t.Helper()
	var m map[string]any
	e.jsonOf(&m, "task", "show", id, "-o", "json")
	return m
}

func (e *e2e) wantState(id, state string) {
	e.t.Helper()
	if got := e.task(id)["state"]; got != state {
		e.t.Fatalf("task %s is %v, want %s", id, got, state)
	}
}

func (e *e2e) leases() map[string]map[string]int64 {
	e.t.Helper()
	b, err := os.ReadFile(e.stateFile)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var f struct {
		Agents map[string]map[string]int64 `json:"agents"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		e.t.Fatalf("state file is not valid JSON: %v\n%s", err, b)
	}
	return f.Agents
}
