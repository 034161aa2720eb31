package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// progressTasks is how many tasks the store under transfer holds: enough
// for a dump of a few hundred records, little enough for a quick test.
const progressTasks = 300

// TestProgressThroughTheBinary moves a store of a few hundred tasks with
// every long command, through the built binary with stderr on a pipe, as
// cron would run it. With FACTORY_PROGRESS_INTERVAL=0 a progress line is
// written on every update, so each command shows at least one, and its
// counts reach the total the command reports; the command ends with one
// summary line on stderr, and stdout stays the JSON a script reads.
func TestProgressThroughTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the factory binary; skipped under -short")
	}
	bin := factoryBinary(t)
	src := newShell(t)
	reqs := make([]*factoryv1.CreateTaskRequest, progressTasks)
	for i := range reqs {
		reqs[i] = &factoryv1.CreateTaskRequest{TaskId: fmt.Sprintf("task-%03d", i), Title: fmt.Sprintf("Task %d", i),
			Role: "builder", PayloadJson: fmt.Sprintf(`{"n":%d,"repo":"api"}`, i)}
	}
	if _, err := queueClient(t, src).CreateTasks(context.Background(), &factoryv1.CreateTasksRequest{Tasks: reqs}); err != nil {
		t.Fatal(err)
	}
	factory := func(t *testing.T, s *shell, env ...string) *e2e {
		return &e2e{t: t, bin: bin, addr: s.addr, stateFile: s.stateFile,
			env: append([]string{"FACTORY_TOKEN=" + s.token}, env...)}
	}
	everyUpdate := "FACTORY_PROGRESS_INTERVAL=0"

	t.Run("export and import", func(t *testing.T) {
		dump := filepath.Join(t.TempDir(), "factory.dump")
		r := factory(t, src, everyUpdate).run("export", dump, "-o", "json")
		var exported struct {
			Counts map[string]int64 `json:"counts"`
		}
		decodeStdout(t, r, &exported)
		if exported.Counts["tasks"] != progressTasks {
			t.Fatalf("export -o json: %d tasks, want %d", exported.Counts["tasks"], progressTasks)
		}
		checkProgress(t, r.stderr, "exporting", "record", sumCounts(exported.Counts), "exported 1 queue record, 300 tasks, ")

		r = factory(t, newShell(t), everyUpdate).run("import", dump, "-o", "json")
		var imported struct {
			Loaded map[string]int64 `json:"loaded"`
		}
		decodeStdout(t, r, &imported)
		if imported.Loaded["tasks"] != progressTasks {
			t.Fatalf("import -o json: %d tasks loaded, want %d", imported.Loaded["tasks"], progressTasks)
		}
		checkProgress(t, r.stderr, "importing", "record", sumCounts(imported.Loaded), fmt.Sprintf("imported %d records (", sumCounts(imported.Loaded)))
	})

	t.Run("backup and restore", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "backup")
		r := factory(t, src, everyUpdate).run("backup", dir, "-o", "json")
		var backup struct {
			Manifest struct {
				Counts map[string]int64 `json:"counts"`
			} `json:"manifest"`
		}
		decodeStdout(t, r, &backup)
		checkProgress(t, r.stderr, "backing up", "record", sumCounts(backup.Manifest.Counts), fmt.Sprintf("backed up %d records (", sumCounts(backup.Manifest.Counts)))

		r = factory(t, newShell(t), everyUpdate).run("restore", dir, "-o", "json")
		var restored struct {
			Loaded map[string]int64 `json:"loaded"`
		}
		decodeStdout(t, r, &restored)
		if restored.Loaded["tasks"] != progressTasks {
			t.Fatalf("restore -o json: %d tasks loaded, want %d", restored.Loaded["tasks"], progressTasks)
		}
		checkProgress(t, r.stderr, "restoring", "record", sumCounts(restored.Loaded), fmt.Sprintf("restored %d records (", sumCounts(restored.Loaded)))
		if !strings.Contains(r.stderr, fmt.Sprintf(" of %d records", sumCounts(restored.Loaded))) {
			t.Errorf("restore knows the total from the manifest; progress should show it:\n%s", r.stderr)
		}
	})

	t.Run("queue export and import", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "queue")
		r := factory(t, src, everyUpdate).run("queue", "export", dir, "-o", "json")
		var exported struct {
			Exported int64 `json:"exported"`
		}
		decodeStdout(t, r, &exported)
		checkProgress(t, r.stderr, "exporting", "task", progressTasks, "exported 300 tasks to ")

		r = factory(t, newShell(t), everyUpdate).run("queue", "import", dir, "--batch", "100", "-o", "json")
		var imported struct {
			Imported int64 `json:"imported"`
		}
		decodeStdout(t, r, &imported)
		checkProgress(t, r.stderr, "importing", "task", progressTasks, "imported 300 tasks from ")
		for _, want := range []string{"importing: 100 of 300 tasks", "importing: 300 of 300 tasks"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("queue import --batch 100: stderr lacks %q:\n%s", want, r.stderr)
			}
		}
	})

	// At the default interval (a line every 5 s at most) a command as
	// short as this one leaves only its summary in a log.
	t.Run("default interval", func(t *testing.T) {
		r := factory(t, src).run("export", filepath.Join(t.TempDir(), "factory.dump"), "-o", "json")
		decodeStdout(t, r, &map[string]any{})
		if lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "exported ") {
			t.Errorf("export at the default interval: stderr should be the summary alone:\n%s", r.stderr)
		}
	})
}

// decodeStdout checks that a command succeeded and that its stdout is one
// JSON document, untouched by progress.
func decodeStdout(t *testing.T, r result, v any) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
	if dec.More() {
		t.Fatalf("stdout holds more than one JSON document:\n%s", r.stdout)
	}
}

var progressLine = regexp.MustCompile(`^([a-z ]+): ([\d,]+)(?: of [\d,]+)? (\w+)(?:, [\d.]+ (?:B|[KMG]iB)(?: of [\d.]+ (?:B|[KMG]iB))?)?(?:, [a-z ]+)?, \d+\.\d s$`)

// checkProgress checks stderr off a terminal: progress lines of verb
// counting unit whose counts reach total, no terminal control codes, and
// one summary line, last, starting with summary (such as "imported 305
// records") and ending with the time it took.
func checkProgress(t *testing.T, stderr, verb, unit string, total int64, summary string) {
	t.Helper()
	if strings.ContainsAny(stderr, "\r\x1b") {
		t.Errorf("progress into a pipe must not redraw:\n%q", stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	var most int64 = -1
	for _, line := range lines[:len(lines)-1] {
		m := progressLine.FindStringSubmatch(line)
		if m == nil || m[1] != verb || strings.TrimSuffix(m[3], "s") != unit {
			t.Errorf("not a %q progress line: %q\n%s", verb, line, stderr)
			continue
		}
		n, err := strconv.ParseInt(strings.ReplaceAll(m[2], ",", ""), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, n)
	}
	if most <= 0 {
		t.Errorf("no progress line counting %ss:\n%s", unit, stderr)
	} else if most != total {
		t.Errorf("progress counted up to %d %ss; the command moved %d:\n%s", most, unit, total, stderr)
	}
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, summary) || !regexp.MustCompile(` in \d+\.\d s$`).MatchString(last) {
		t.Errorf("the last line should be the summary %q..., ending with the time it took:\n%s", summary, stderr)
	}
	if n := strings.Count(stderr, "\n"+summary) + boolInt(strings.HasPrefix(stderr, summary)); n != 1 {
		t.Errorf("%d summary lines, want 1:\n%s", n, stderr)
	}
}

func sumCounts(counts map[string]int64) int64 {
	var n int64
	for _, c := range counts {
		n += c
	}
	return n
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
