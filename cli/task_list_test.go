package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Listing works whatever the payloads weigh: summaries by default, and
// with --full the server's pages end early at its byte bound while ls
// still fills --limit from the pages after.
func TestListLargePayloads(t *testing.T) {
	sh := newShell(t)
	payload := `{"blob":"` + strings.Repeat("x", 1<<20-11) + `"}`
	file := filepath.Join(t.TempDir(), "payload.json")
	if err := os.WriteFile(file, []byte(payload), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		sh.ok("task", "create", "--title", "heavy", "--payload-file", file, "--quiet")
	}

	var summaries []map[string]any
	if err := json.Unmarshal([]byte(sh.ok("task", "ls", "-o", "json")), &summaries); err != nil {
		t.Fatal(err)
	}
	if len(summaries) != 5 || summaries[0]["payload_json"] != "" || summaries[0]["payload_bytes"] != "1048576" {
		t.Fatalf("ls: %d tasks, the first with payload_bytes %v; want 5 summaries of a 1048576-byte payload", len(summaries), summaries[0]["payload_bytes"])
	}

	r := sh.run("task", "ls", "--full", "--limit", "4", "-o", "json")
	var full []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &full); err != nil {
		t.Fatalf("ls --full: %v (stderr %s)", err, r.stderr)
	}
	if len(full) != 4 || full[3]["payload_json"] != payload {
		t.Fatalf("ls --full --limit 4 listed %d tasks, want 4 with their payloads", len(full))
	}
	if !strings.Contains(r.stderr, "more tasks match") {
		t.Fatalf("ls --full --limit 4 of 5 tasks gave no hint: stderr %q", r.stderr)
	}
}

// --newest-first lists the latest work first, paging included.
func TestListNewestFirst(t *testing.T) {
	sh := newShell(t)
	for _, id := range []string{"c", "a", "b"} {
		sh.ok("task", "create", "--id", id, "--title", "task "+id, "--quiet")
	}
	ids := func(args ...string) string {
		t.Helper()
		var tasks []map[string]any
		if err := json.Unmarshal([]byte(sh.ok(append([]string{"task", "ls", "-o", "json"}, args...)...)), &tasks); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, task := range tasks {
			out = append(out, task["id"].(string))
		}
		return strings.Join(out, ",")
	}
	if got := ids(); got != "c,a,b" {
		t.Fatalf("ls: %s, want c,a,b", got)
	}
	if got := ids("--newest-first"); got != "b,a,c" {
		t.Fatalf("ls --newest-first: %s, want b,a,c", got)
	}
	if got := ids("--newest-first", "--limit", "1", "--all"); got != "b,a,c" {
		t.Fatalf("ls --newest-first --limit 1 --all: %s, want b,a,c", got)
	}
}
