package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/ops"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// TestExitCodesThroughTheBinary runs the built factory binary, as a script
// would, against an in-process control plane: a command that did not do
// what it says must not exit 0, a typo exits 2 with a suggestion, and a
// problem with a file is one line and exit 1, not the usage text.
func TestExitCodesThroughTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the factory binary; skipped under -short")
	}
	bin := factoryBinary(t)
	sh := newShell(t)
	factory := func(t *testing.T) *e2e {
		return &e2e{t: t, bin: bin, addr: sh.addr, stateFile: sh.stateFile, env: []string{"FACTORY_TOKEN=" + sh.token}}
	}

	t.Run("unknown subcommand", func(t *testing.T) {
		e := factory(t)
		for _, c := range []struct {
			args    []string
			message string
			suggest string
		}{
			{[]string{"task", "lss"}, `unknown command "lss" for "factory task"`, "\tls\n"},
			{[]string{"queue", "stat"}, `unknown command "stat" for "factory queue"`, "\tstats\n"},
			{[]string{"maintenance", "strat"}, `unknown command "strat" for "factory maintenance"`, "\tstart\n"},
			{[]string{"taks", "ls"}, `unknown command "taks" for "factory"`, "\ttask\n"},
		} {
			r := e.run(c.args...)
			if r.code != 2 || !strings.Contains(r.stderr, "error: "+c.message) ||
				!strings.Contains(r.stderr, "Did you mean this?\n"+c.suggest) || r.stdout != "" {
				t.Errorf("factory %s: exit %d, want 2 with %q and the suggestion %q\nstdout: %s\nstderr: %s",
					strings.Join(c.args, " "), r.code, c.message, c.suggest, r.stdout, r.stderr)
			}
		}
		// Nothing near: no suggestion, still exit 2.
		if r := e.run("task", "zzzzzz"); r.code != 2 || strings.Contains(r.stderr, "Did you mean") {
			t.Errorf("factory task zzzzzz: exit %d\n%s", r.code, r.stderr)
		}
	})

	t.Run("group alone prints help", func(t *testing.T) {
		e := factory(t)
		for _, args := range [][]string{{"task"}, {"queue"}, {}} {
			r := e.run(args...)
			if r.code != 0 || !strings.Contains(r.stdout, "Available Commands:") || r.stderr != "" {
				t.Errorf("factory %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
			}
		}
	})

	t.Run("drain that times out", func(t *testing.T) {
		e := factory(t)
		sh.ok("task", "create", "--id", "held", "--title", "Held")
		if r := sh.agent("claim", "forge"); r.code != 0 {
			t.Fatalf("claim: %s", r.stderr)
		}
		r := e.run("maintenance", "start", "--reason", "disk swap", "--wait", "2s")
		if r.code != 1 || !strings.Contains(r.stderr, "drain timed out after 2s: 1 task(s) still running: held") ||
			!strings.Contains(r.stderr, "maintenance stays on") {
			t.Errorf("start --wait 2s with a task running: exit %d, want 1 naming the task\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		// The wait showed how many were left, and the table still lists them.
		if !strings.Contains(r.stderr, "draining: 1 task(s) still running (") || !strings.Contains(r.stdout, "held") {
			t.Errorf("drain progress and table:\nstdout: %s\nstderr: %s", r.stdout, r.stderr)
		}
		if out := sh.ok("maintenance", "status"); !strings.Contains(out, "ON since") {
			t.Errorf("maintenance after a timed-out drain:\n%s", out)
		}
		// Scripts get the JSON and the exit code.
		r = e.run("maintenance", "start", "--reason", "disk swap", "--wait", "1s", "-o", "json")
		var js struct {
			StillRunning []map[string]any `json:"still_running"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &js); r.code != 1 || err != nil || len(js.StillRunning) != 1 {
			t.Errorf("start -o json with a task running: exit %d, %v\nstdout: %s\nstderr: %s", r.code, err, r.stdout, r.stderr)
		}
		// --wait 0 only starts maintenance: it did what it says.
		if r := e.run("maintenance", "start", "--reason", "disk swap", "--wait", "0s"); r.code != 0 {
			t.Errorf("start --wait 0s: exit %d\n%s", r.code, r.stderr)
		}
		// A drain that finishes exits 0.
		sh.ok("task", "kill", "held", "--reason", "stuck")
		if r := e.run("maintenance", "start", "--reason", "disk swap", "--wait", "10s"); r.code != 0 || !strings.Contains(r.stdout, "the factory is quiet") {
			t.Errorf("start with nothing running: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		sh.ok("maintenance", "end")
	})

	t.Run("nodes history of an unknown host", func(t *testing.T) {
		e := factory(t)
		r := e.run("nodes", "history", "nohost")
		if r.code != 1 || !strings.Contains(r.stderr, "no host named nohost") || strings.Contains(r.stderr, "Usage:") {
			t.Errorf("history of a host in an empty fleet: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		connectSidecar(t, sh, &factoryv1.Telemetry{CollectedAt: timestamppb.Now(),
			Gpus: []*factoryv1.GpuDevice{{Index: 0, MemoryTotalBytes: 80 << 30, MemoryUsedBytes: 40 << 30, UtilizationPercent: 50, TemperatureCelsius: 60}}})
		r = e.run("nodes", "history", "nohost")
		if r.code != 1 || !strings.Contains(r.stderr, "no host named nohost (known: gpu-1)") {
			t.Errorf("history of an unknown host: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		if r := e.run("nodes", "history", "nohost", "-o", "json"); r.code != 1 || r.stdout != "" {
			t.Errorf("history -o json of an unknown host: exit %d\nstdout: %s", r.code, r.stdout)
		}
		// A known host with nothing in the window is not an error.
		if r := e.run("nodes", "history", "gpu-1", "--since", "1ns"); r.code != 0 || !strings.Contains(r.stdout, "no history yet for gpu-1") {
			t.Errorf("history of a known host with an empty window: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		// Its reading draws half a bar (50% of 100%, 20 cells): ten full blocks.
		var out string
		for range 500 {
			if out = e.ok("nodes", "history", "gpu-1"); strings.Contains(out, "50%") {
				break
			}
		}
		if !strings.Contains(out, "MEAN GPU UTIL") || !strings.Contains(out, " "+strings.Repeat("█", 10)+"\n") {
			t.Errorf("history table lacks the utilisation bar:\n%s", out)
		}
		if js := e.ok("nodes", "history", "gpu-1", "-o", "json"); strings.Contains(js, "█") {
			t.Errorf("history -o json has bars:\n%s", js)
		}
	})

	t.Run("existing file or used directory", func(t *testing.T) {
		e := factory(t)
		dir := t.TempDir()
		file := filepath.Join(dir, "factory.dump")
		if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := e.run("export", file)
		if r.code != 1 || !strings.Contains(r.stderr, file) || !strings.Contains(r.stderr, "--force") ||
			strings.Contains(r.stderr, "Usage:") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("export onto an existing file: exit %d, want 1 and one line naming it and --force\n%s", r.code, r.stderr)
		}
		if b, _ := os.ReadFile(file); string(b) != "keep me" {
			t.Errorf("the existing file was changed: %q", b)
		}

		used := filepath.Join(dir, "backup")
		if err := os.MkdirAll(used, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{ops.DumpFile, ops.ManifestName} {
			if err := os.WriteFile(filepath.Join(used, name), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
			r := e.run("backup", used)
			if r.code != 1 || !strings.Contains(r.stderr, used) || !strings.Contains(r.stderr, name) ||
				strings.Contains(r.stderr, "Usage:") || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("backup into a directory holding %s: exit %d, want 1 and one line\n%s", name, r.code, r.stderr)
			}
		}
	})

	t.Run("spend bars", func(t *testing.T) {
		e := factory(t)
		e.ok("spend", "report", "--agent", "planner-01", "--model", "claude-sonnet-4", "--tier", "frontier", "--cost", "12.00", "--id", "bars-1")
		out := e.ok("spend", "--days", "7")
		// Every day of the week is a row, the days without spend too, and
		// today's, the largest, fills the bar.
		days := regexp.MustCompile(`(?m)^\d{4}-\d{2}-\d{2} `).FindAllString(out, -1)
		if !strings.Contains(out, "COST BAR") || len(days) != 7 || !strings.Contains(out, strings.Repeat("█", 24)+"\n") {
			t.Errorf("spend --days 7 (%d day rows):\n%s", len(days), out)
		}
		if js := e.ok("spend", "--days", "7", "-o", "json"); strings.Contains(js, "█") || strings.Contains(js, "COST BAR") {
			t.Errorf("spend --days 7 -o json has bars:\n%s", js)
		}
		// Half the largest row draws half the bar.
		e.ok("spend", "report", "--agent", "coder-03", "--model", "qwen", "--tier", "local", "--cost", "6.00", "--id", "bars-2")
		out = e.ok("spend", "--by", "agent")
		if !strings.Contains(out, " "+strings.Repeat("█", 12)+"\n") {
			t.Errorf("spend --by agent: no half bar:\n%s", out)
		}
	})
}
