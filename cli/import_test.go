package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/factory/factory/cli"
)

// taskExists reports whether the shell's control plane has the task.
func (s *shell) taskExists(id string) bool {
	s.t.Helper()
	r := s.run("task", "show", id, "-o", "json")
	if r.code != 0 && !strings.Contains(r.stderr, "NOT_FOUND") {
		s.t.Fatalf("task show %s: %+v", id, r)
	}
	return r.code == 0
}

// One run names every bad file with its problem, and imports nothing, not
// even the good files.
func TestImportNamesEveryBadFileAndImportsNothing(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--id", "taken", "--title", "On the server already")
	dir := t.TempDir()
	writeFile(t, dir, "ready/good.json", `{"title": "Good"}`)
	writeFile(t, dir, "done/fine.json", `{"title": "Fine too"}`)
	bad := map[string]string{
		"ready/untitled.json": "no title",
		"backlog/broken.json": "not a JSON object",
		"ready/orphan.json":   "depends on ghost",
		"failed/dup.json":     "id good is also the id of",
		"failed/over.json":    "attempt 9 is more than max_attempts 3",
		"review/taken.json":   "task taken exists on the server already",
	}
	writeFile(t, dir, "ready/untitled.json", `{"kind": "x"}`)
	writeFile(t, dir, "backlog/broken.json", `{"title": `)
	writeFile(t, dir, "ready/orphan.json", `{"title": "Orphan", "depends_on": ["ghost"]}`)
	writeFile(t, dir, "failed/dup.json", `{"title": "Dup", "id": "good"}`)
	writeFile(t, dir, "failed/over.json", `{"title": "Over", "attempt": 9}`)
	writeFile(t, dir, "review/taken.json", `{"title": "Taken"}`)

	for _, args := range [][]string{{"queue", "import", dir, "--dry-run"}, {"queue", "import", dir}} {
		r := sh.run(args...)
		if r.code != cli.ExitFailure || !strings.Contains(r.stderr, "6 problem(s)") || !strings.Contains(r.stderr, "nothing was imported") {
			t.Fatalf("%v: %+v", args, r)
		}
		for file, problem := range bad {
			if !strings.Contains(r.stderr, file+": ") || !strings.Contains(r.stderr, problem) {
				t.Errorf("%v does not name %s (%s):\n%s", args, file, problem, r.stderr)
			}
		}
	}
	for _, id := range []string{"good", "fine", "orphan", "over"} {
		if sh.taskExists(id) {
			t.Fatalf("task %s was imported from a directory with bad files", id)
		}
	}
}

// Re-running an import after adding a file: without --skip-existing it
// names the existing tasks and creates nothing; with it, it creates just
// the new file's task and says how many it skipped.
func TestImportSkipExistingImportsOnlyTheNewFile(t *testing.T) {
	sh := newShell(t)
	dir := t.TempDir()
	writeFile(t, dir, "ready/a.json", `{"title": "A"}`)
	writeFile(t, dir, "backlog/b.json", `{"title": "B", "depends_on": ["a"]}`)
	sh.ok("queue", "import", dir)

	writeFile(t, dir, "ready/c.json", `{"title": "C", "depends_on": ["b"]}`)
	r := sh.run("queue", "import", dir)
	if r.code != cli.ExitFailure || !strings.Contains(r.stderr, "a.json: task a exists on the server already") ||
		!strings.Contains(r.stderr, "b.json: task b exists") || !strings.Contains(r.stderr, "--skip-existing") {
		t.Fatalf("re-run without --skip-existing: %+v", r)
	}
	if sh.taskExists("c") {
		t.Fatal("a failed re-run created the new task")
	}

	// A dry run checks the same way and creates nothing.
	if out := sh.ok("queue", "import", dir, "--skip-existing", "--dry-run"); !strings.Contains(out, "dry run: 3 task file(s)") || !strings.Contains(out, "skipped 2 file(s)") {
		t.Fatalf("dry run with --skip-existing:\n%s", out)
	}
	if sh.taskExists("c") {
		t.Fatal("a dry run created the new task")
	}

	var sum struct {
		Imported        int `json:"imported"`
		SkippedExisting int `json:"skipped_existing"`
	}
	if err := json.Unmarshal([]byte(sh.ok("queue", "import", dir, "--skip-existing", "-o", "json")), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Imported != 1 || sum.SkippedExisting != 2 {
		t.Fatalf("re-run with --skip-existing: %+v, want 1 imported and 2 skipped", sum)
	}
	if c := sh.task("c"); c["state"] != "TASK_STATE_BACKLOG" {
		t.Fatalf("c is %v, want BACKLOG behind b", c["state"])
	}
	if out := sh.ok("queue", "import", dir, "--skip-existing"); !strings.Contains(out, "imported 0 task(s)") || !strings.Contains(out, "skipped 3 file(s)") {
		t.Fatalf("third run:\n%s", out)
	}
}

// attempt, last_error and progress come through an import; what cannot
// (note, created_at) is counted under dropped.
func TestImportKeepsAttemptLastErrorAndProgress(t *testing.T) {
	sh := newShell(t)
	dir := t.TempDir()
	writeFile(t, dir, "ready/retry.json", `{"title": "Retry", "max_attempts": 5, "attempt": 2, "last_error": "rate limited", "progress": "half way",
		"note": "from ops", "created_at": "2026-01-02T03:04:05Z"}`)
	writeFile(t, dir, "in-progress/held.json", `{"title": "Held", "attempt": 1, "progress": "compiling", "note": ""}`)
	writeFile(t, dir, "done/plain.json", `{"title": "Plain", "attempt": 0, "last_error": ""}`)

	var sum struct {
		Imported    int            `json:"imported"`
		HistoryKept int            `json:"history_kept"`
		Dropped     map[string]int `json:"dropped"`
	}
	if err := json.Unmarshal([]byte(sh.ok("queue", "import", dir, "-o", "json")), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Imported != 3 || sum.HistoryKept != 2 || len(sum.Dropped) != 2 || sum.Dropped["note"] != 1 || sum.Dropped["created_at"] != 1 {
		t.Fatalf("summary %+v, want 3 imported, history kept from 2, note and created_at dropped from 1 each", sum)
	}
	retry := sh.task("retry")
	if retry["attempt"] != float64(2) || retry["last_error"] != "rate limited" || retry["progress"] != "half way" {
		t.Fatalf("retry imported as attempt %v, last_error %v, progress %v", retry["attempt"], retry["last_error"], retry["progress"])
	}
	if held := sh.task("held"); held["state"] != "TASK_STATE_READY" || held["attempt"] != float64(1) || held["progress"] != "compiling" {
		t.Fatalf("held imported as %v", held)
	}

	// The text summary says the same.
	other := newShell(t)
	out := other.ok("queue", "import", dir)
	if !strings.Contains(out, "attempt, last_error and progress kept from 2 file(s)") || !strings.Contains(out, "dropped, as the API cannot set them: created_at in 1 file(s), note in 1 file(s)") {
		t.Fatalf("text summary:\n%s", out)
	}

	// An agent cannot set a task's history.
	agent := other.mint("agent", "forge")
	again := t.TempDir()
	writeFile(t, again, "ready/sneaky.json", `{"title": "Sneaky", "attempt": 1}`)
	if r := other.as(agent, "queue", "import", again); r.code != cli.ExitFailure || !strings.Contains(r.stderr, "may not set tasks[0].attempt") {
		t.Fatalf("agent importing history: %+v", r)
	}
}
