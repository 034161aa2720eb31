package cli_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/factory/factory/cli"
	"github.com/factory/factory/controlplane/server"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

// startControlPlaneOn serves a control plane on the given store until the
// test ends, and returns its address and the operator token its first
// start made.
func startControlPlaneOn(t *testing.T, storeURL, schema string) (addr, token string) {
	t.Helper()
	dataDir := t.TempDir()
	addr = startControlPlaneWith(t, server.Config{DataDir: dataDir, Store: storeURL, PostgresSchema: schema})
	return addr, operatorToken(t, dataDir)
}

// freshSchema names a schema no test uses and drops it when the test ends.
func freshSchema(t *testing.T, url string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "factory_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// dumpLines drops the lines of a dump for which drop is true.
func dumpLines(t *testing.T, path string, drop func(line string) bool) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l != "" && !drop(l) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

// The move the commands exist for, as an operator runs it: a factory on
// SQLite with every kind of row is exported, a fresh control plane on
// PostgreSQL imports it, and its export is the same dump, but for what
// the new control plane and the import itself added (its own first-start
// operator token, and the import's audit entry). The old tokens work on
// the new control plane, and an agent finishes its claimed task there
// under the same fencing token.
func TestMoveFromSQLiteToPostgres(t *testing.T) {
	url := os.Getenv("FACTORY_TEST_POSTGRES_URL")
	if url == "" {
		t.Skip("FACTORY_TEST_POSTGRES_URL is not set; to run the SQLite-to-PostgreSQL move, point it at a database the test may " +
			"create schemas in, e.g. FACTORY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	// The SQLite file is named so that fleet events, which sidecars
	// report over a stream no command drives, can be written to it
	// directly.
	oldDB := filepath.Join(t.TempDir(), "factory.db")
	oldAddr, oldToken := startControlPlaneOn(t, "sqlite:"+oldDB, "")
	old := &shell{t: t, addr: oldAddr, token: oldToken, stateFile: filepath.Join(t.TempDir(), "leases.json")}
	old.ok("task", "create", "--id", "spec", "--title", "Write the spec", "--role", "researcher", "--priority", "2",
		"--payload", `{"topic": "leases",  "refs": [1, 2.50]}`, "--label", "proj=factory", "--label", "a=1")
	old.ok("task", "create", "--id", "impl", "--title", "Implement", "--role", "builder", "--depends-on", "spec")
	old.ok("task", "create", "--id", "check", "--title", "Check", "--role", "tester")
	old.ok("task", "create", "--id", "flaky", "--title", "Flaky", "--role", "deployer", "--max-attempts", "3")
	old.ok("task", "create", "--id", "doomed", "--title", "Doomed", "--role", "deployer")
	old.ok("task", "create", "--id", "parked", "--title", "Parked")
	old.ok("task", "create", "--id", "plain", "--title", "Plain")
	mustAgent := func(verb, agent string, args ...string) {
		t.Helper()
		if r := old.agent(verb, agent, args...); r.code != 0 {
			t.Fatalf("task %s --agent %s %v: %+v", verb, agent, args, r)
		}
	}
	mustAgent("claim", "r1", "--role", "researcher")
	mustAgent("done", "r1", "--note", "spec written")
	mustAgent("claim", "t1", "--role", "tester")
	mustAgent("done", "t1", "--review")
	mustAgent("claim", "d1", "--role", "deployer")
	mustAgent("fail", "d1", "--error", "timeout")
	mustAgent("claim", "d1", "--role", "deployer")
	mustAgent("fail", "d1", "--error", "bad config", "--permanent")
	mustAgent("claim", "forge", "--role", "builder") // impl: a lease held across the move
	mustAgent("renew", "forge", "--progress", "half way")
	old.ok("task", "move", "parked", "--to", "paused", "--reason", "wait for Monday")
	old.ok("queue", "pause", "--reason", "moving to PostgreSQL")
	agentSecret := strings.TrimSpace(old.ok("token", "create", "--role", "agent", "--subject", "forge", "--quiet"))
	var gone struct {
		Token struct {
			ID string `json:"id"`
		} `json:"token"`
	}
	if err := json.Unmarshal([]byte(old.ok("token", "create", "--role", "sidecar", "--subject", "gpu-1", "-o", "json")), &gone); err != nil {
		t.Fatal(err)
	}
	old.ok("token", "revoke", gone.Token.ID)
	appendFleetEvents(t, oldDB)

	dir := t.TempDir()
	a := filepath.Join(dir, "sqlite.dump")
	var exported struct {
		File   string           `json:"file"`
		Counts map[string]int64 `json:"counts"`
	}
	r := old.run("export", a, "-o", "json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &exported) != nil || exported.Counts["tasks"] != 7 || exported.Counts["tokens"] != 3 {
		t.Fatalf("export: %+v", r)
	}
	if !strings.Contains(r.stderr, "exported 1 queue record, 7 tasks, 3 tokens") || !strings.Contains(r.stderr, " at 20") {
		t.Fatalf("export's summary on stderr: %q", r.stderr)
	}
	if r := old.run("export", a); r.code != cli.ExitFailure || !strings.Contains(r.stderr, "--force") || strings.Contains(r.stderr, "Usage:") {
		t.Fatalf("export over an existing file: %+v", r)
	}

	pgAddr, pgToken := startControlPlaneOn(t, url, freshSchema(t, url))
	pg := &shell{t: t, addr: pgAddr, token: pgToken, stateFile: old.stateFile}
	var imported struct {
		Merge  bool             `json:"merge"`
		Loaded map[string]int64 `json:"loaded"`
	}
	if err := json.Unmarshal([]byte(pg.ok("import", a, "-o", "json")), &imported); err != nil {
		t.Fatal(err)
	}
	for kind, n := range exported.Counts {
		if imported.Loaded[kind] != n {
			t.Fatalf("imported %v, exported %v", imported.Loaded, exported.Counts)
		}
	}
	if r := pg.run("import", a); r.code != cli.ExitFailure || !strings.Contains(r.stderr, "not empty") || !strings.Contains(r.stderr, "FAILED_PRECONDITION") {
		t.Fatalf("a second import: %+v", r)
	}
	if r := pg.run("import", a, "--merge"); r.code != cli.ExitFailure || !strings.Contains(r.stderr, "ALREADY_EXISTS") {
		t.Fatalf("merging the same dump: %+v", r)
	}
	if r := pg.run("import", "state_test.go"); r.code != cli.ExitFailure || !strings.Contains(r.stderr, "not a factory dump") {
		t.Fatalf("importing a file that is not a dump: %+v", r)
	}

	b := filepath.Join(dir, "postgres.dump")
	pg.ok("export", b)
	pgBoot := strings.TrimSpace(pg.ok("whoami", "-o", "json"))
	var who struct {
		TokenID string `json:"token_id"`
	}
	if err := json.Unmarshal([]byte(pgBoot), &who); err != nil || who.TokenID == "" {
		t.Fatalf("whoami: %s", pgBoot)
	}
	added := func(l string) bool {
		return strings.Contains(l, `"token":{"id":"`+who.TokenID+`"`) || strings.Contains(l, "/factory.v1.OpsService/ImportState") ||
			strings.HasPrefix(l, `{"kind":"end"`)
	}
	if got, want := dumpLines(t, b, added), dumpLines(t, a, added); got != want {
		gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("PostgreSQL's dump differs at record %d:\n got  %s\n want %s", i, gl[i], wl[i])
			}
		}
		t.Fatalf("PostgreSQL's dump has %d lines, SQLite's %d", len(gl), len(wl))
	}
	if n := strings.Count(dumpLines(t, b, func(l string) bool { return !strings.HasPrefix(l, `{"kind":"fleet_event"`) }), "\n"); n != 3 {
		t.Fatalf("PostgreSQL's dump holds %d fleet events, want 3", n)
	}
	// Exactly those additions: the new control plane's own token and one
	// audit entry for the import.
	extra := dumpLines(t, b, func(l string) bool { return !added(l) || strings.HasPrefix(l, `{"kind":"end"`) })
	if n := strings.Count(extra, "\n"); n != 2 || !strings.Contains(extra, `"rpc":"/factory.v1.OpsService/ImportState"`) {
		t.Fatalf("PostgreSQL's dump adds:\n%s", extra)
	}

	// The hashes moved: the SQLite control plane's tokens work here.
	oldOnPG := &shell{t: t, addr: pgAddr, token: old.token, stateFile: old.stateFile}
	if out := oldOnPG.ok("whoami"); !strings.Contains(out, "operator") {
		t.Fatalf("the old operator token on PostgreSQL: %s", out)
	}
	asAgent := &shell{t: t, addr: pgAddr, token: agentSecret, stateFile: old.stateFile}
	if out := asAgent.ok("whoami"); !strings.Contains(out, "forge") {
		t.Fatalf("the old agent token on PostgreSQL: %s", out)
	}
	// The lease moved: forge finishes impl under the fencing token it got
	// from SQLite, after the operator resumes the queue.
	pg.ok("queue", "resume")
	if r := asAgent.agent("done", "forge", "--note", "finished on PostgreSQL"); r.code != 0 || !strings.Contains(r.stdout, "DONE") {
		t.Fatalf("finishing the moved lease: %+v", r)
	}
}

func TestExportAndImportOnOneFile(t *testing.T) {
	src := newShell(t)
	src.ok("task", "create", "--id", "a", "--title", "A")
	src.ok("task", "create", "--id", "b", "--title", "B", "--depends-on", "a")
	dir := t.TempDir()
	f := filepath.Join(dir, "state.dump")
	out := src.ok("export", f)
	if !strings.Contains(out, "tasks") || !strings.Contains(out, "2") {
		t.Fatalf("export's table:\n%s", out)
	}
	if r := src.run("export", f, "--force"); r.code != 0 {
		t.Fatalf("export --force: %+v", r)
	}
	// Nothing but the dump is left beside it.
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("the export left %d files", len(entries))
	}

	// A cut-short dump is refused, naming why, and writes nothing.
	whole, _ := os.ReadFile(f)
	short := filepath.Join(dir, "short.dump")
	if err := os.WriteFile(short, whole[:strings.LastIndex(strings.TrimSuffix(string(whole), "\n"), "\n")+1], 0o600); err != nil {
		t.Fatal(err)
	}
	dst := newShell(t)
	if r := dst.run("import", short); r.code != cli.ExitFailure || !strings.Contains(r.stderr, "cut short") || !strings.Contains(r.stderr, "INVALID_ARGUMENT") {
		t.Fatalf("importing a cut-short dump: %+v", r)
	}
	out = dst.ok("import", f)
	if !strings.Contains(out, "imported 1 queue record, 2 tasks") {
		t.Fatalf("import's summary:\n%s", out)
	}
	if st := dst.task("b")["state"]; st != "TASK_STATE_BACKLOG" {
		t.Fatalf("b after the import: %v", st)
	}
}

// appendFleetEvents writes fleet events into the SQLite store at path,
// beside the control plane serving it (WAL lets both write): out of time
// order, with attributes in no order, a time with nanoseconds the dump
// must cut to microseconds alike on both drivers, and one event with no
// attributes.
func appendFleetEvents(t *testing.T, path string) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Config{Path: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	at := time.Date(2031, 3, 14, 9, 26, 53, 589793238, time.UTC)
	n, err := st.FleetEventsAppend(ctx, &store.FleetEventsAppendParams{Events: []*store.FleetEvent{
		{ID: "0195-b", Host: "gpu-1", Kind: "model_swap", Time: at,
			Attributes: map[string]string{"to": "qwen-32b", "from": "llama-70b", "reason": "<mix> & load"}},
		{ID: "0195-a", Host: "gpu-2", Kind: "log_count", Time: at.Add(-time.Hour),
			Attributes: map[string]string{"pattern": "CUDA error", "count": "3"}},
		{ID: "0195-c", Host: "gpu-1", Kind: "model_swap", Time: at.Add(time.Millisecond)},
	}})
	if err != nil || n != 3 {
		t.Fatalf("FleetEventsAppend: %d, %v", n, err)
	}
}
