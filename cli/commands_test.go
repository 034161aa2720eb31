package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/cli"
	"github.com/factory/factory/controlplane/server"
)

// These tests run the command tree in-process against a real control plane
// (SQLite in a temp dir) listening on loopback, as an operator's shell would.

// startControlPlane serves a fresh control plane until the test ends and
// returns its address and the operator token it made at start.
func startControlPlane(t *testing.T) (addr, token string) {
	t.Helper()
	dataDir := t.TempDir()
	return startControlPlaneWith(t, server.Config{DataDir: dataDir}), operatorToken(t, dataDir)
}

// startControlPlaneWith serves a control plane configured by cfg on a free
// loopback port, quiet, until the test ends, and returns its address.
// cfg.DataDir must be set.
func startControlPlaneWith(t *testing.T, cfg server.Config) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrCh := make(chan string, 1)
	done := make(chan error, 1)
	cfg.Listen = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.OnListening = func(a net.Addr) { addrCh <- a.String() }
	go func() { done <- server.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case addr := <-addrCh:
		return addr
	case err := <-done:
		t.Fatalf("control plane did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("control plane did not start in 30s")
	}
	return ""
}

// handClock is a control plane's clock that a test moves by hand.
type handClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *handClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *handClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// shell runs factory commands against one control plane, with one agent
// state file.
type shell struct {
	t         *testing.T
	addr      string
	token     string // sent with --token: the operator's
	stateFile string
}

func newShell(t *testing.T) *shell {
	addr, token := startControlPlane(t)
	return &shell{t: t, addr: addr, token: token, stateFile: filepath.Join(t.TempDir(), "leases.json")}
}

type result struct {
	stdout, stderr string
	code           int
}

func (s *shell) runCtx(ctx context.Context, stdout io.Writer, args ...string) result {
	s.t.Helper()
	var out, errOut bytes.Buffer
	if stdout == nil {
		stdout = &out
	}
	cmd := cli.NewRootCommand(cli.Options{Stdout: stdout, Stderr: &errOut})
	cmd.SetArgs(append([]string{"--addr", s.addr, "--token", s.token}, args...))
	code := cli.Execute(ctx, cmd)
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}

func (s *shell) run(args ...string) result {
	s.t.Helper()
	return s.runCtx(context.Background(), nil, args...)
}

// ok runs a command that must succeed and returns its stdout.
func (s *shell) ok(args ...string) string {
	s.t.Helper()
	r := s.run(args...)
	if r.code != 0 {
		s.t.Fatalf("factory %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// agent runs an agent verb with the shell's state file.
func (s *shell) agent(verb, agent string, args ...string) result {
	s.t.Helper()
	return s.run(append([]string{"task", verb, "--agent", agent, "--state-file", s.stateFile}, args...)...)
}

// task fetches a task as JSON.
func (s *shell) task(id string) map[string]any {
	s.t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s.ok("task", "show", id, "-o", "json")), &m); err != nil {
		s.t.Fatal(err)
	}
	return m
}

func (s *shell) leases() map[string]map[string]int64 {
	s.t.Helper()
	b, err := os.ReadFile(s.stateFile)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		s.t.Fatal(err)
	}
	var f struct {
		Agents map[string]map[string]int64 `json:"agents"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		s.t.Fatal(err)
	}
	return f.Agents
}

func TestAgentLifecycle(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--id", "build", "--title", "Build", "--role", "builder", "--payload", `{"repo":"api"}`, "--label", "env=dev")
	sh.ok("task", "create", "--id", "ship", "--title", "Ship", "--role", "builder", "--depends-on", "build")
	if st := sh.task("ship")["state"]; st != "TASK_STATE_BACKLOG" {
		t.Fatalf("dependent is %v, want BACKLOG", st)
	}

	r := sh.agent("claim", "b1", "--role", "builder")
	if r.code != 0 || !strings.Contains(r.stdout, "build") {
		t.Fatalf("claim: %+v", r)
	}
	tok := sh.leases()["b1"]["build"]
	if tok <= 0 {
		t.Fatalf("no lease recorded: %v", sh.leases())
	}
	// int64 fields are JSON strings in protojson.
	if got := sh.task("build")["lease"].(map[string]any)["token"]; got != strconv.FormatInt(tok, 10) {
		t.Fatalf("recorded token %d, server has %d", tok, got)
	}

	r = sh.agent("claim", "b1", "--role", "builder")
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "no task claimed") {
		t.Fatalf("empty claim: %+v", r)
	}
	r = sh.agent("claim", "b1", "--role", "builder", "-o", "json")
	if strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("empty claim -o json: %q", r.stdout)
	}

	if r := sh.agent("renew", "b1", "--progress", "compiling"); r.code != 0 {
		t.Fatalf("renew: %+v", r)
	}
	if p := sh.task("build")["progress"]; p != "compiling" {
		t.Fatalf("progress %v", p)
	}
	if r := sh.agent("done", "b1", "--note", "green"); r.code != 0 || !strings.Contains(r.stdout, "DONE") {
		t.Fatalf("done: %+v", r)
	}
	if len(sh.leases()["b1"]) != 0 {
		t.Fatalf("done did not forget the lease: %v", sh.leases())
	}
	if st := sh.task("ship")["state"]; st != "TASK_STATE_READY" {
		t.Fatalf("dependent is %v after its dependency is DONE, want READY", st)
	}
	show := sh.ok("task", "show", "build")
	for _, want := range []string{"DONE", "green", "env=dev", `{"repo":"api"}`} {
		if !strings.Contains(show, want) {
			t.Errorf("show lacks %q:\n%s", want, show)
		}
	}
}

func TestStaleLeaseIsForgotten(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--id", "t", "--title", "T")
	sh.agent("claim", "a1")
	sh.ok("task", "kill", "t", "--reason", "operator says stop")
	r := sh.agent("done", "a1")
	if r.code != cli.ExitFailure || !strings.Contains(r.stderr, "FAILED_PRECONDITION") {
		t.Fatalf("done on a killed task: %+v", r)
	}
	if len(sh.leases()["a1"]) != 0 {
		t.Fatalf("a refused lease must be dropped from the state file: %v", sh.leases())
	}
}

func TestSeveralLeasesNeedAnID(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--id", "x1", "--title", "X1")
	sh.ok("task", "create", "--id", "x2", "--title", "X2")
	sh.agent("claim", "a1", "--max", "2")
	r := sh.agent("done", "a1")
	if r.code == 0 || !strings.Contains(r.stderr, "x1, x2") {
		t.Fatalf("want an error listing x1, x2: %+v", r)
	}
	if r := sh.agent("done", "a1", "x2"); r.code != 0 {
		t.Fatalf("done x2: %+v", r)
	}
	// Now one lease is left, so the id may be dropped again.
	if r := sh.agent("fail", "a1", "--error", "disk full", "--permanent"); r.code != 0 || !strings.Contains(r.stdout, "FAILED") {
		t.Fatalf("fail: %+v", r)
	}
	if got := sh.task("x1")["last_error"]; got != "disk full" {
		t.Fatalf("last_error %v", got)
	}
	if len(sh.leases()) != 0 {
		t.Fatalf("leases left: %v", sh.leases())
	}
}

func TestOperatorMoves(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--id", "m", "--title", "M")
	sh.ok("task", "kill", "m", "--reason", "wrong")
	if st := sh.task("m")["state"]; st != "TASK_STATE_FAILED" {
		t.Fatalf("kill: %v", st)
	}
	sh.ok("task", "requeue", "m")
	if st := sh.task("m")["state"]; st != "TASK_STATE_READY" {
		t.Fatalf("requeue: %v", st)
	}
	sh.ok("task", "move", "m", "--to", "backlog", "--reason", "later")
	if st := sh.task("m")["state"]; st != "TASK_STATE_BACKLOG" {
		t.Fatalf("move: %v", st)
	}
	sh.ok("task", "prioritize", "m", "-40")
	if p := sh.task("m")["priority"]; p != float64(-40) {
		t.Fatalf("priority %v, want -40", p)
	}
	r := sh.run("task", "move", "m", "--to", "done", "--reason", "skip")
	if r.code != cli.ExitFailure || !strings.Contains(r.stderr, "FAILED_PRECONDITION") {
		t.Fatalf("illegal move: %+v", r)
	}
}

func TestErrorsAndUsage(t *testing.T) {
	sh := newShell(t)
	r := sh.run("task", "show", "nope")
	if r.code != cli.ExitFailure || !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, "(NOT_FOUND)") {
		t.Errorf("missing task: %+v", r)
	}
	for _, args := range [][]string{
		{"task", "ls", "--bogus"},
		{"task", "show"},
		{"task", "create"},
		{"task", "create", "--title", "x", "--payload", "{}", "--payload-file", "f"},
		{"task", "create", "--title", "x", "--payload", "{not json"},
		{"task", "ls", "--state", "sideways"},
		{"task", "ls", "--min-attempt", "-1"},
		{"task", "ls", "--min-attempt", "many"},
		{"-o", "xml", "queue", "stats"},
		{"task", "claim"}, // no --agent
		{"queue", "requeue-stuck"},
		{"no-such-command"},
	} {
		r := sh.run(args...)
		if r.code != cli.ExitUsage || !strings.Contains(r.stderr, "Usage:") {
			t.Errorf("factory %s: exit %d, want %d with usage\n%s", strings.Join(args, " "), r.code, cli.ExitUsage, r.stderr)
		}
	}
	r = sh.run("--addr", "127.0.0.1:1", "--timeout", "2s", "queue", "stats")
	if r.code != cli.ExitFailure || !strings.Contains(r.stderr, "UNAVAILABLE") {
		t.Errorf("no server: %+v", r)
	}
}

func TestListPagingAndJSON(t *testing.T) {
	sh := newShell(t)
	for i := range 12 {
		sh.ok("task", "create", "--title", "task", "--role", "r", "--priority", string(rune('0'+i%10)))
	}
	sh.ok("task", "create", "--title", "other role", "--role", "q")
	r := sh.run("task", "ls", "--limit", "5")
	if lines := strings.Count(r.stdout, "\n"); lines != 6 || !strings.Contains(r.stderr, "--all") {
		t.Fatalf("one page: %d lines, stderr %q", lines, r.stderr)
	}
	var all []map[string]any
	if err := json.Unmarshal([]byte(sh.ok("task", "ls", "--limit", "5", "--all", "--role", "r", "-o", "json")), &all); err != nil {
		t.Fatal(err)
	}
	if len(all) != 12 {
		t.Fatalf("--all returned %d tasks, want 12", len(all))
	}
	// --kind and --min-attempt combine with the other filters and page.
	for _, id := range []string{"k1", "k2", "k3"} {
		sh.ok("task", "create", "--id", id, "--title", "kinded", "--kind", "build", "--role", "k")
	}
	sh.ok("task", "create", "--id", "k4", "--title", "other kind", "--kind", "research", "--role", "k")
	if r := sh.agent("claim", "k-agent", "--role", "k"); r.code != 0 || !strings.Contains(r.stdout, "k1") {
		t.Fatalf("claim: %+v", r)
	}
	listIDs := func(args ...string) string {
		t.Helper()
		var tasks []map[string]any
		if err := json.Unmarshal([]byte(sh.ok(append([]string{"task", "ls", "-o", "json"}, args...)...)), &tasks); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, task := range tasks {
			ids = append(ids, task["id"].(string))
		}
		return strings.Join(ids, ",")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--kind", "build"}, "k1,k2,k3"},
		{[]string{"--kind", "build", "--limit", "1", "--all"}, "k1,k2,k3"},
		{[]string{"--kind", "build", "--state", "ready"}, "k2,k3"},
		{[]string{"--min-attempt", "1"}, "k1"},
		{[]string{"--kind", "research", "--min-attempt", "1"}, ""},
	} {
		if got := listIDs(c.args...); got != c.want {
			t.Errorf("task ls %s: %q, want %q", strings.Join(c.args, " "), got, c.want)
		}
	}
	var stats map[string]any
	if err := json.Unmarshal([]byte(sh.ok("queue", "stats", "-o", "json")), &stats); err != nil {
		t.Fatal(err)
	}
	if stats["paused"] != false {
		t.Fatalf("stats %v", stats)
	}
}

func TestPauseResumeAndStatus(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--title", "a")
	if out := sh.ok("queue", "pause", "--reason", "maintenance"); !strings.Contains(out, "1 READY") {
		t.Fatalf("pause: %q", out)
	}
	if out := sh.ok("status"); !strings.Contains(out, "PAUSED (maintenance)") || !strings.Contains(out, "paused 1") {
		t.Fatalf("status while paused:\n%s", out)
	}
	if out := sh.ok("queue", "resume"); !strings.Contains(out, "1 task") {
		t.Fatalf("resume: %q", out)
	}
	if out := sh.ok("queue", "stats"); !strings.Contains(out, "running") {
		t.Fatalf("stats:\n%s", out)
	}
	out := sh.ok("queue", "requeue-stuck", "--older-than", "1h", "--dry-run", "-o", "json")
	if strings.TrimSpace(out) != "[]" {
		t.Fatalf("requeue-stuck: %q", out)
	}
}

// syncBuffer lets a test read what a running command has written so far.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestWatchStreamsUntilCancelled(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--id", "before", "--title", "existing")
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuffer
	done := make(chan result, 1)
	go func() { done <- sh.runCtx(ctx, &out, "task", "watch", "-o", "json") }()

	waitFor := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(out.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("watch never printed %q; got:\n%s", what, out.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(`"TASK_EVENT_TYPE_SYNCED"`)
	sh.ok("task", "create", "--id", "after", "--title", "new")
	waitFor(`"after"`)
	cancel()
	select {
	case r := <-done:
		if r.code != 0 {
			t.Fatalf("watch ended with exit %d: %s", r.code, r.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop on cancel")
	}
	var types []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var ev struct {
			Type string `json:"type"`
			Task struct {
				ID string `json:"id"`
			} `json:"task"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		types = append(types, ev.Type+":"+ev.Task.ID)
	}
	want := []string{"TASK_EVENT_TYPE_SNAPSHOT:before", "TASK_EVENT_TYPE_SYNCED:", "TASK_EVENT_TYPE_CREATED:after"}
	if !reflect.DeepEqual(types, want) {
		t.Fatalf("events %v, want %v", types, want)
	}
}

func TestImportRunbookFolder(t *testing.T) {
	sh := newShell(t)
	dir := t.TempDir()
	writeFile(t, dir, "done/spec.json", `{"title": "Write the spec", "role": "researcher"}`)
	writeFile(t, dir, "in-progress/impl.json", `{"title": "Implement", "role": "builder", "depends_on": ["spec"], "repo": "api", "branch": "feat/x"}`)
	writeFile(t, dir, "backlog/deploy.json", `{"title": "Deploy", "depends_on": ["impl"], "payload": {"env": "prod"}, "owner": "ops"}`)

	var sum map[string]any
	if err := json.Unmarshal([]byte(sh.ok("queue", "import", dir, "-o", "json")), &sum); err != nil {
		t.Fatal(err)
	}
	if sum["imported"] != float64(3) || sum["in_progress_requeued"] != float64(1) || sum["payload_merged"] != float64(2) {
		t.Fatalf("summary %v", sum)
	}
	impl := sh.task("impl")
	if impl["state"] != "TASK_STATE_READY" {
		t.Fatalf("in-progress task imported as %v, want READY", impl["state"])
	}
	var payload map[string]any
	if err := json.Unmarshal([]byte(impl["payload_json"].(string)), &payload); err != nil {
		t.Fatal(err)
	}
	if payload["repo"] != "api" || payload["branch"] != "feat/x" {
		t.Fatalf("unknown fields not kept in the payload: %v", payload)
	}
	if err := json.Unmarshal([]byte(sh.task("deploy")["payload_json"].(string)), &payload); err != nil {
		t.Fatal(err)
	}
	if payload["env"] != "prod" || payload["owner"] != "ops" {
		t.Fatalf("unknown field not merged into the payload: %v", payload)
	}

	bad := t.TempDir()
	writeFile(t, bad, "ready/orphan.json", `{"title": "Orphan", "depends_on": ["ghost"]}`)
	r := sh.run("queue", "import", bad)
	if r.code != cli.ExitFailure || !strings.Contains(r.stderr, "orphan.json") || !strings.Contains(r.stderr, "ghost") {
		t.Fatalf("missing dependency: %+v", r)
	}
	// A dependency that is on the server already is fine.
	writeFile(t, bad, "ready/orphan.json", `{"title": "Orphan", "depends_on": ["spec"]}`)
	sh.ok("queue", "import", bad)
}

// Export, import into a fresh server, export again: same folders (but
// in-progress, which comes back ready), same ids, same fields.
func TestExportImportRoundTrip(t *testing.T) {
	src := newShell(t)
	src.ok("task", "create", "--id", "a", "--title", "A", "--role", "r", "--kind", "k", "--priority", "9",
		"--label", "team=ml", "--payload", `{"n":[1,2,{"x":null}]}`, "--max-attempts", "5")
	src.ok("task", "create", "--id", "b", "--title", "B", "--depends-on", "a", "--assignee", "ag")
	src.ok("task", "create", "--id", "c", "--title", "C", "--state", "review")
	src.ok("task", "create", "--id", "d", "--title", "D", "--state", "failed")
	src.ok("task", "create", "--id", "e", "--title", "E", "--state", "paused")
	src.ok("task", "create", "--id", "f", "--title", "F", "--role", "w")
	src.ok("task", "create", "--id", "g", "--title", "G", "--state", "done")
	src.agent("claim", "w1", "--role", "w")

	first := filepath.Join(t.TempDir(), "export")
	src.ok("queue", "export", first)
	if r := src.run("queue", "export", first); r.code == 0 {
		t.Fatal("export into a used directory must be refused")
	}

	dst := newShell(t)
	out := dst.ok("queue", "import", first)
	if !strings.Contains(out, "holders hold no lease") {
		t.Errorf("import output should say in-progress tasks were requeued:\n%s", out)
	}
	second := filepath.Join(t.TempDir(), "export")
	dst.ok("queue", "export", second)

	before, after := readExport(t, first), readExport(t, second)
	if before["in-progress/f"] == nil {
		t.Fatalf("f was not exported as in-progress: %v", keys(before))
	}
	before["ready/f"] = before["in-progress/f"]
	delete(before, "in-progress/f")
	if !reflect.DeepEqual(keys(before), keys(after)) {
		t.Fatalf("folders/ids differ:\n%v\n%v", keys(before), keys(after))
	}
	for k, b := range before {
		a := after[k]
		if !reflect.DeepEqual(keys(b), keys(a)) {
			t.Errorf("%s: fields differ: %v vs %v", k, keys(b), keys(a))
		}
		for _, f := range []string{"id", "title", "kind", "role", "assignee", "priority", "max_attempts", "depends_on", "labels", "payload"} {
			if !reflect.DeepEqual(b[f], a[f]) {
				t.Errorf("%s: %s %v → %v", k, f, b[f], a[f])
			}
		}
	}
}

func readExport(t *testing.T, dir string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	files, err := filepath.Glob(filepath.Join(dir, "*", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(filepath.Dir(f))+"/"+strings.TrimSuffix(filepath.Base(f), ".json")] = m
	}
	return out
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
