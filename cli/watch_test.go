//go:build unix

package cli_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// The views that take --watch, as their command lines.
var watchViews = [][]string{{"status"}, {"nodes"}, {"agents"}, {"gpu"}, {"queue", "stats"}, {"alerts"}, {"health"}}

// watchFleet is a control plane with a READY task and one host (gpu-1,
// agent forge) whose GPU is nearly full and one of whose probes fails, so
// every view has a state to colour, and the built factory binary to run
// against it.
func watchFleet(t *testing.T) (s *shell, bin string) {
	t.Helper()
	bin = factoryBinary(t)
	s = newShell(t)
	s.ok("task", "create", "--title", "Build", "--role", "builder")
	connectSidecar(t, s, &factoryv1.Telemetry{
		Gpus: []*factoryv1.GpuDevice{{Index: 0, Name: "NVIDIA H100 PCIe", MemoryTotalBytes: 80 << 30, MemoryUsedBytes: 79 << 30}},
		Probes: []*factoryv1.ProbeResult{{Name: "litellm", Kind: "http", Ok: true, Detail: "200"},
			{Name: "qdrant", Kind: "tcp", Detail: "connection refused"}},
	})
	return s, bin
}

// binaryShell runs the binary against s with extra environment; its
// standard output is a pipe, as in a script.
func binaryShell(t *testing.T, s *shell, bin string, env ...string) *e2e {
	return &e2e{t: t, bin: bin, addr: s.addr, stateFile: s.stateFile,
		env: append([]string{"FACTORY_TOKEN=" + s.token, "NO_COLOR=", "TERM=xterm-256color"}, env...)}
}

// One control plane and one build of the binary serve every check.
func TestWatchAndColour(t *testing.T) {
	s, bin := watchFleet(t)
	t.Run("ColourAndSymbolsOnlyOnATerminal", func(t *testing.T) { colourAndSymbolsOnlyOnATerminal(t, s, bin) })
	t.Run("IntervalMinimum", func(t *testing.T) { watchIntervalMinimum(t, s, bin) })
	t.Run("IntoAPipeUntilCtrlC", func(t *testing.T) { watchIntoAPipeUntilCtrlC(t, s, bin) })
	t.Run("RedrawsOnATerminal", func(t *testing.T) { watchRedrawsOnATerminal(t, s, bin) })
}

func colourAndSymbolsOnlyOnATerminal(t *testing.T, s *shell, bin string) {

	// Into a pipe, and on a terminal with NO_COLOR: no escape code, no
	// emoji; health's checks read ok and FAIL.
	for _, e := range []*e2e{binaryShell(t, s, bin), binaryShell(t, s, bin, "NO_COLOR=1"), binaryShell(t, s, bin, "FACTORY_COLOR=never")} {
		for _, view := range watchViews {
			r := e.run(view...)
			if r.code != 0 && view[0] != "health" {
				t.Fatalf("%v %s: exit %d\n%s", e.env, view, r.code, r.stderr)
			}
			if strings.Contains(r.stdout, "\x1b") || strings.ContainsAny(r.stdout, "✅❌") {
				t.Errorf("%v %s: escape codes or symbols in plain output:\n%q", e.env, view, r.stdout)
			}
		}
		// Failing: the probe qdrant and the GPU (79/80 > 23/24).
		if r := e.run("health"); r.code != 2 || !strings.Contains(r.stdout, "FAIL probe gpu-1:qdrant") || !strings.Contains(r.stdout, "FAIL gpu gpu-1:0") ||
			!strings.Contains(r.stdout, "ok   queue") {
			t.Errorf("%v health: exit %d, want 2 failed checks marked FAIL:\n%s", e.env, r.code, r.stdout)
		}
	}

	// FACTORY_COLOR=always styles even a pipe, NO_COLOR or not: the
	// feature is there, and tables keep their columns.
	for _, e := range []*e2e{binaryShell(t, s, bin, "FACTORY_COLOR=always"), binaryShell(t, s, bin, "FACTORY_COLOR=always", "NO_COLOR=1")} {
		nodes := e.run("nodes").stdout
		if !strings.Contains(nodes, "\x1b[32mONLINE\x1b[0m") {
			t.Errorf("%v nodes: ONLINE not green:\n%q", e.env, nodes)
		}
		// The two runs are a moment apart: LAST SEEN may read "just now"
		// in one and "1s ago" in the other.
		if plain := binaryShell(t, s, bin).run("nodes").stdout; sameAges(stripSGR(nodes)) != sameAges(plain) {
			t.Errorf("%v nodes: the coloured table is not the plain one painted:\n%q\n%q", e.env, nodes, plain)
		}
		if out := e.run("agents").stdout; !strings.Contains(out, "\x1b[32mONLINE\x1b[0m") {
			t.Errorf("%v agents: ONLINE not green:\n%q", e.env, out)
		}
		if out := e.run("gpu").stdout; !strings.Contains(out, "\x1b[31m80896/81920\x1b[0m MiB") {
			t.Errorf("%v gpu: a GPU over 23/24 of its memory not red:\n%q", e.env, out)
		}
		if out := e.run("status").stdout; !strings.Contains(out, "\x1b[32mrunning\x1b[0m") || !strings.Contains(out, "\x1b[32m1 online\x1b[0m") {
			t.Errorf("%v status: queue running and agents online not green:\n%q", e.env, out)
		}
		if out := e.run("queue", "stats").stdout; !strings.Contains(out, "\x1b[32mREADY\x1b[0m") {
			t.Errorf("%v queue stats: READY not green:\n%q", e.env, out)
		}
		if out := e.run("health").stdout; !strings.Contains(out, "❌ probe gpu-1:qdrant") || !strings.Contains(out, "✅ queue") ||
			!strings.Contains(out, "\x1b[31m2 of 6 checks failed\x1b[0m") {
			t.Errorf("%v health: want ✅/❌ and a red summary:\n%q", e.env, out)
		}
		// Data for scripts is never painted.
		for _, view := range watchViews {
			if out := e.run(append(view, "-o", "json")...).stdout; strings.Contains(out, "\x1b") || !json.Valid([]byte(out)) {
				t.Errorf("%v %s -o json: escape codes or invalid JSON:\n%q", e.env, view, out)
			}
		}
	}

	// On a real terminal (a pseudo-terminal from script(1)) colour comes
	// by itself, and NO_COLOR takes it away.
	if _, err := exec.LookPath("script"); err != nil {
		t.Log("script(1) not installed: the pseudo-terminal checks are skipped")
		return
	}
	tty := ptyRun(t, s, bin, nil, "nodes")
	if !strings.Contains(tty, "\x1b[32mONLINE\x1b[0m") {
		t.Errorf("nodes on a terminal: ONLINE not green:\n%q", tty)
	}
	if tty := ptyRun(t, s, bin, nil, "health"); !strings.Contains(tty, "❌ probe gpu-1:qdrant") {
		t.Errorf("health on a terminal: no ❌:\n%q", tty)
	}
	if tty := ptyRun(t, s, bin, []string{"NO_COLOR=1"}, "nodes"); strings.Contains(tty, "\x1b") || !strings.Contains(tty, "ONLINE") {
		t.Errorf("nodes on a terminal with NO_COLOR: escape codes:\n%q", tty)
	}
}

func watchIntervalMinimum(t *testing.T, s *shell, bin string) {
	e := binaryShell(t, s, bin)
	for _, view := range watchViews {
		r := e.run(append(view, "--watch", "--interval", "0s")...)
		if r.code != 2 || !strings.Contains(r.stderr, "--interval 0s: must be at least 1s") {
			t.Errorf("%s --watch --interval 0s: exit %d, want 2 naming the minimum\n%s", view, r.code, r.stderr)
		}
	}
	if r := e.run("health", "--watch", "--interval", "500ms"); r.code != 2 {
		t.Errorf("health --interval 500ms: exit %d, want 2", r.code)
	}
}

// A watch into a pipe prints a snapshot every interval, a blank line
// apart (-o json: a document per line), and Ctrl-C ends it with exit 0.
func watchIntoAPipeUntilCtrlC(t *testing.T, s *shell, bin string) {
	start := func(args ...string) (*exec.Cmd, *syncBuffer, chan error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(cleanEnv(), "FACTORY_ADDR="+s.addr, "FACTORY_TOKEN="+s.token, "XDG_CONFIG_HOME="+t.TempDir())
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-done
		})
		return cmd, out, done
	}
	interrupt := func(cmd *exec.Cmd, done chan error, out *syncBuffer) {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			done <- err
			if err != nil {
				t.Fatalf("%s after Ctrl-C: %v, want exit 0\n%s", cmd.Args, err, out.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still running 10s after Ctrl-C", cmd.Args)
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s in 15s", what)
			}
		}
	}

	// The default interval is 2s: two snapshots in about 2.5s.
	status, statusOut, statusDone := start("status", "--watch")
	began := time.Now()
	waitFor("second status snapshot", func() bool { return strings.Count(statusOut.String(), "Queue:") >= 2 })
	took := time.Since(began)
	interrupt(status, statusDone, statusOut)
	out := statusOut.String()
	if n := strings.Count(out, "Queue:"); n > 3 || took < 1500*time.Millisecond {
		t.Errorf("status --watch: %d snapshots in %s, want one every 2s", n, took)
	}
	snaps := strings.Split(strings.TrimSuffix(out, "\n"), "\n\n")
	if len(snaps) < 2 || !strings.HasPrefix(snaps[0], "Queue:") || !strings.HasPrefix(snaps[1], "Queue:") || strings.Contains(out, "\x1b") {
		t.Errorf("status --watch into a pipe: want plain snapshots a blank line apart:\n%q", out)
	}

	nodes, nodesOut, nodesDone := start("nodes", "--watch", "--interval", "1s", "-o", "json")
	waitFor("second nodes document", func() bool { return strings.Count(nodesOut.String(), "\n") >= 2 })
	interrupt(nodes, nodesDone, nodesOut)
	for i, line := range strings.Split(strings.TrimSuffix(nodesOut.String(), "\n"), "\n") {
		var doc []map[string]any
		if err := json.Unmarshal([]byte(line), &doc); err != nil || len(doc) != 1 || doc[0]["host"] != "gpu-1" {
			t.Errorf("nodes --watch -o json line %d: %v\n%q", i, err, line)
		}
	}
}

// On a terminal the watch redraws in place under its header.
func watchRedrawsOnATerminal(t *testing.T, s *shell, bin string) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("script(1) not installed: no pseudo-terminal to watch on")
	}
	// timeout(1) stands in for the person pressing Ctrl-C; --foreground
	// sends the one SIGINT a terminal would, to the command alone.
	out := ptyRun(t, s, bin, nil, "timeout", "--foreground", "--preserve-status", "-s", "INT", "2.5", bin, "status", "--watch", "--interval", "1s")
	if n := strings.Count(out, "\x1b[HEvery 1s: factory status   (Ctrl-C to stop)   "); n < 2 {
		t.Errorf("status --watch on a terminal: %d redraws under the header, want 2 or more:\n%q", n, out)
	}
	if !strings.Contains(out, "\x1b[J") || !strings.Contains(out, "\x1b[32mrunning\x1b[0m") {
		t.Errorf("status --watch on a terminal: want the rest of the screen cleared and colour:\n%q", out)
	}
}

// ptyRun runs the factory binary (or, when args[0] is not a factory
// command, the command args name) on a pseudo-terminal and returns what
// the terminal showed. script(1) exits with the command's status.
func ptyRun(t *testing.T, s *shell, bin string, env []string, args ...string) string {
	t.Helper()
	if args[0] != "timeout" {
		args = append([]string{bin}, args...)
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	cmd := exec.Command("script", "-qefc", strings.Join(quoted, " "), os.DevNull)
	cmd.Env = append(cleanEnv(), "FACTORY_ADDR="+s.addr, "FACTORY_TOKEN="+s.token, "XDG_CONFIG_HOME="+t.TempDir(), "TERM=xterm-256color", "NO_COLOR=")
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() != 0 && args[1] != "health" {
			t.Fatalf("%s on a terminal: %v\n%q", args, err, out.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s on a terminal: still running after 30s\n%q", args, out.String())
	}
	return out.String()
}

// stripSGR removes colour codes.
func stripSGR(s string) string {
	for _, code := range []string{"\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[36m", "\x1b[0m"} {
		s = strings.ReplaceAll(s, code, "")
	}
	return s
}

// ages matches the relative times a table shows ("just now", "1s ago",
// "2m 05s ago").
var ages = regexp.MustCompile(`just now|[0-9]+[smhd]( [0-9]+[smh])? ago`)

func sameAges(s string) string { return ages.ReplaceAllString(s, "AGE") }
