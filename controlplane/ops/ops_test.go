package ops_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/factory/factory/controlplane/ops"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/postgres"
	"github.com/factory/factory/controlplane/store/sqlite"
)

var quiet = slog.New(slog.DiscardHandler)

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "factory.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openPostgres opens a store in a fresh schema of FACTORY_TEST_POSTGRES_URL,
// dropped when the test ends, or skips the test.
func openPostgres(t *testing.T) store.Store {
	t.Helper()
	url := os.Getenv("FACTORY_TEST_POSTGRES_URL")
	if url == "" {
		t.Skip("FACTORY_TEST_POSTGRES_URL is not set; to run the SQLite-to-PostgreSQL move, point it at a database the test may " +
			"create schemas in, e.g. FACTORY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
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
	s, err := postgres.Open(t.Context(), postgres.Config{URL: url, Schema: schema, Logger: quiet, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newService(t *testing.T, st store.Store) *ops.Service {
	t.Helper()
	svc, err := ops.New(ops.Config{Store: st, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// fill gives st a task in every state, a held lease, a retry in backoff,
// a paused queue, live, expiring, revoked and used tokens and audit
// entries, at times with nanoseconds (which SQLite keeps and PostgreSQL
// does not).
func fill(t *testing.T, st store.Store) {
	t.Helper()
	ctx := t.Context()
	now := time.Date(2031, 3, 14, 9, 26, 53, 123456789, time.UTC)
	tick := func(d time.Duration) time.Time { now = now.Add(d); return now }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	claim := func(agent, role string) *store.Task {
		t.Helper()
		c, err := st.TaskClaim(ctx, &store.TaskClaimParams{Agent: agent, Roles: []string{role}, Max: 1, LeaseDuration: 10 * time.Minute, Now: tick(time.Second)})
		must(err)
		if len(c) != 1 {
			t.Fatalf("%s claimed %d tasks", agent, len(c))
		}
		return c[0].Task
	}
	lease := func(task *store.Task) store.LeaseRef {
		return store.LeaseRef{TaskID: task.ID, Agent: task.LeaseHolder, FencingToken: task.FencingToken}
	}
	_, err := st.TaskCreate(ctx, &store.TaskCreateParams{Now: now, Tasks: []*store.TaskCreate{
		{ID: "spec", Title: "Write the spec", Kind: "research", Role: "researcher", Priority: 3,
			PayloadJSON: `{ "topic" : "leases",  "refs": [3, 1.50, {"b":null,"a":"<&>"}], "é": "\u00e9" }`,
			Labels:      map[string]string{"proj": "factory", "a": "1", "z": "26"}, Note: "from the runbook §4"},
		{ID: "review", Title: "Check it", Role: "tester", MaxAttempts: 5, ApprovalTier: 2},
		{ID: "build", Title: "Implement", Role: "builder", Assignee: "forge", Priority: 1},
		{ID: "flaky", Title: "Flaky deploy", Role: "deployer", MaxAttempts: 4},
		{ID: "dead", Title: "Broken", Role: "deployer", MaxAttempts: 1},
		{ID: "after", Title: "After build and spec", DependsOn: []string{"build", "spec"}},
		{ID: "next", Title: "After spec", DependsOn: []string{"spec"}},
		{ID: "parked", Title: "Operator's pause"},
		{ID: "later", Title: "Not before", RunAfter: now.Add(2 * time.Hour)},
		{ID: "plain", Title: "Plain"},
	}})
	must(err)
	spec := claim("agent-r", "researcher")
	_, err = st.TaskComplete(ctx, &store.TaskCompleteParams{Items: []store.TaskCompleteItem{{Lease: lease(spec), Note: "done well"}}, Now: tick(time.Second)})
	must(err)
	rev := claim("agent-t", "tester")
	_, err = st.TaskComplete(ctx, &store.TaskCompleteParams{Items: []store.TaskCompleteItem{{Lease: lease(rev), Review: true}}, Now: tick(time.Second)})
	must(err)
	build := claim("forge", "builder")
	_, err = st.TaskRenew(ctx, &store.TaskRenewParams{Lease: lease(build), LeaseDuration: 15 * time.Minute, Progress: "half way", Now: tick(7 * time.Millisecond)})
	must(err)
	flaky := claim("agent-d", "deployer")
	_, err = st.TaskFail(ctx, &store.TaskFailParams{Lease: lease(flaky), Error: "timeout", Backoff: func(int32) time.Duration { return 30 * time.Second }, Now: tick(time.Second)})
	must(err)
	dead := claim("agent-d", "deployer")
	_, err = st.TaskFail(ctx, &store.TaskFailParams{Lease: lease(dead), Error: "bad input", Permanent: true, Now: tick(time.Second)})
	must(err)
	_, err = st.TaskMove(ctx, &store.TaskMoveParams{TaskID: "parked", To: store.StatePaused, Reason: "wait for Monday", Now: tick(time.Second)})
	must(err)
	_, err = st.QueuePause(ctx, &store.QueuePauseParams{Reason: "spend over budget", Now: tick(333 * time.Microsecond)})
	must(err)

	for _, tok := range []*store.Token{
		{ID: "op", Hash: "h-op", Role: store.RoleOperator, Subject: "ops", CreatedBy: "bootstrap", Description: "first start"},
		{ID: "forge", Hash: "h-forge", Role: store.RoleAgent, Subject: "forge", CreatedBy: "ops (op)", ExpiresAt: now.Add(48 * time.Hour)},
		{ID: "gpu", Hash: "h-gpu", Role: store.RoleSidecar, Subject: "gpu-1", CreatedBy: "ops (op)"},
	} {
		_, err := st.TokenCreate(ctx, &store.TokenCreateParams{Token: tok, Now: tick(time.Second)})
		must(err)
	}
	_, err = st.TokenRevoke(ctx, &store.TokenRevokeParams{ID: "gpu", Now: tick(time.Second)})
	must(err)
	must(st.TokenTouch(ctx, &store.TokenTouchParams{ID: "op", Now: tick(time.Second)}))
	must(st.AuditAppend(ctx, &store.AuditAppendParams{Entries: []*store.AuditEntry{
		{Time: tick(time.Millisecond), Who: "ops", Role: store.RoleOperator, TokenID: "op", RPC: "/factory.v1.QueueService/MoveTask",
			Target: "parked", BeforeJSON: `{"state":"READY"}`, AfterJSON: `{"state":"PAUSED"}`, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Outcome: "OK"},
		{Time: tick(time.Millisecond), Who: "forge", Role: store.RoleAgent, TokenID: "forge", RPC: "/factory.v1.QueueService/PauseQueue",
			Outcome: "PERMISSION_DENIED", Detail: "agent forge may not call PauseQueue: it is for operator only"},
	}}))
	// Fleet events out of time order and with ids out of order, so the
	// dump shows it keeps the order the store took them in; nanoseconds,
	// which only SQLite keeps, so the dump must cut them alike.
	at := tick(time.Second)
	_, err = st.FleetEventsAppend(ctx, &store.FleetEventsAppendParams{Events: []*store.FleetEvent{
		{ID: "0195-b", Host: "gpu-1", Kind: "model_swap", Time: at,
			Attributes: map[string]string{"to": "qwen-32b", "from": "llama-70b", "reason": "<mix> & \"load\""}},
		{ID: "0195-a", Host: "gpu-2", Kind: "log_count", Time: at.Add(-time.Hour)},
	}})
	must(err)
	_, err = st.FleetEventsAppend(ctx, &store.FleetEventsAppendParams{Events: []*store.FleetEvent{
		{ID: "0195-c", Host: "gpu-1", Kind: "log_count", Time: at.Add(time.Nanosecond), Attributes: map[string]string{"count": "3"}},
	}})
	must(err)

	// The spend ledger and a budget travel as table rows; the nanosecond
	// is cut alike here too.
	_, err = st.SpendRecord(ctx, &store.SpendRecordParams{Now: at, Events: []*store.SpendEvent{{
		ID: "call-1", Agent: "forge", Host: "gpu-1", Model: "claude-sonnet-4", Provider: "anthropic", Tier: "mid",
		InputTokens: 1200, OutputTokens: 340, CostMicros: 8700, TaskID: "spec", OccurredAt: at.Add(time.Nanosecond),
		Day: "2031-03-14", RecordedAt: at}}})
	must(err)
	_, err = st.BudgetSet(ctx, &store.Budget{Scope: "agent", Key: "forge", AlertMicros: 10_000_000, CapMicros: 12_000_000, UpdatedAt: at})
	must(err)
}

// rowLines counts a dump's table rows.
func rowLines(dump []byte) int64 { return int64(strings.Count(string(dump), `{"kind":"row",`)) }

func export(t *testing.T, st store.Store) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := newService(t, st).Export(t.Context(), &b); err != nil {
		t.Fatalf("Export: %v", err)
	}
	return b.Bytes()
}

func importInto(t *testing.T, st store.Store, dump []byte, merge bool) (*store.DumpCounts, error) {
	t.Helper()
	return newService(t, st).Import(t.Context(), bytes.NewReader(dump), merge)
}

// requireSameDump fails with the first line that differs.
func requireSameDump(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			t.Fatalf("%s: line %d differs:\n got  %s\n want %s", what, i+1, gl, wl)
		}
	}
	t.Fatalf("%s: dumps differ", what)
}

// The move this package exists for: SQLite → dump → PostgreSQL → dump
// gives the same bytes, and so does the way back.
func TestSQLiteToPostgresAndBackGiveIdenticalDumps(t *testing.T) {
	src := openSQLite(t)
	fill(t, src)
	a := export(t, src)

	pg := openPostgres(t)
	n, err := importInto(t, pg, a, false)
	if err != nil {
		t.Fatalf("import into PostgreSQL: %v", err)
	}
	if *n != (store.DumpCounts{Queue: 1, Tasks: 10, Tokens: 3, Audit: 2, FleetEvents: 3, Rows: rowLines(a)}) || n.Rows < 3 {
		t.Fatalf("imported %+v", *n)
	}
	b := export(t, pg)
	requireSameDump(t, "PostgreSQL's dump of the imported state", b, a)

	back := openSQLite(t)
	if _, err := importInto(t, back, b, false); err != nil {
		t.Fatalf("import back into SQLite: %v", err)
	}
	requireSameDump(t, "SQLite's dump after the way back", export(t, back), a)
}

func TestSQLiteToSQLiteGivesIdenticalDumps(t *testing.T) {
	src := openSQLite(t)
	fill(t, src)
	a := export(t, src)
	dst := openSQLite(t)
	if _, err := importInto(t, dst, a, false); err != nil {
		t.Fatal(err)
	}
	requireSameDump(t, "the copy's dump", export(t, dst), a)
	// Exporting twice gives the same bytes: nothing in a dump says when.
	requireSameDump(t, "a second export", export(t, src), a)
}

func TestDumpIsCanonical(t *testing.T) {
	src := openSQLite(t)
	fill(t, src)
	lines := strings.Split(strings.TrimSuffix(string(export(t, src)), "\n"), "\n")
	if lines[0] != `{"format":"factory-dump","version":1}` {
		t.Fatalf("header: %s", lines[0])
	}
	if want := `{"kind":"queue","queue":{"paused":true,"reason":"spend over budget","paused_at":"2031-03-14T09:27:03.130789Z"}}`; lines[1] != want {
		t.Fatalf("queue line:\n got  %s\n want %s", lines[1], want)
	}
	spec := lines[2]
	for _, want := range []string{
		`"payload_json":"{ \"topic\" : \"leases\",  \"refs\": [3, 1.50, {\"b\":null,\"a\":\"<&>\"}], \"é\": \"\\u00e9\" }"`, // as given, byte for byte
		`"labels":{"a":"1","proj":"factory","z":"26"}`,
		`"state":"DONE"`,
		`"created_at":"2031-03-14T09:26:53.123456Z"`, // microseconds, always six digits
		`"lease_expires_at":null`,
		`"depends_on":[]`,
	} {
		if !strings.Contains(spec, want) {
			t.Errorf("spec's line lacks %s:\n%s", want, spec)
		}
	}
	if after := lines[7]; !strings.Contains(after, `"depends_on":["build","spec"]`) || !strings.Contains(after, `"state":"BACKLOG"`) {
		t.Errorf("after's line: %s", after)
	}
	for i, want := range []string{
		`{"kind":"fleet_event","fleet_event":{"id":"0195-b","host":"gpu-1","kind":"model_swap","time":"2031-03-14T09:27:09.132789Z","attributes":{"from":"llama-70b","reason":"<mix> & \"load\"","to":"qwen-32b"}}}`,
		`{"kind":"fleet_event","fleet_event":{"id":"0195-a","host":"gpu-2","kind":"log_count","time":"2031-03-14T08:27:09.132789Z","attributes":{}}}`,
		`{"kind":"fleet_event","fleet_event":{"id":"0195-c","host":"gpu-1","kind":"log_count","time":"2031-03-14T09:27:09.132789Z","attributes":{"count":"3"}}}`,
	} {
		if got := linesOfKind(lines, "fleet_event")[i]; got != want {
			t.Errorf("fleet event line %d:\n got  %s\n want %s", i, got, want)
		}
	}
	for _, want := range []string{
		`{"kind":"row","row":{"table":"spend_events","values":{"agent":"forge","cost_micros":8700,"day":"2031-03-14","host":"gpu-1","id":"call-1","input_tokens":1200,"model":"claude-sonnet-4","occurred_at":"2031-03-14T09:27:09.132789Z","output_tokens":340,"priced_by_server":false,"provider":"anthropic","recorded_at":"2031-03-14T09:27:09.132789Z","task_id":"spec","tier":"mid"}}}`,
		`{"kind":"row","row":{"table":"budgets","values":{"alert_micros":10000000,"cap_micros":12000000,"emergency_micros":0,"key":"forge","off":false,"scope":"agent","target_micros":0,"updated_at":"2031-03-14T09:27:09.132789Z"}}}`,
		`{"kind":"row","row":{"table":"emergency_stop","values":{"id":1,"paused_queue":false,"paused_tasks":0,"reason":"","stopped":false,"stopped_at":null,"stopped_by":""}}}`,
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("no line %s", want)
		}
	}
	wantEnd := fmt.Sprintf(`{"kind":"end","counts":{"queue":1,"tasks":10,"tokens":3,"audit":2,"fleet_events":3,"rows":%d}}`, len(linesOfKind(lines, "row")))
	if end := lines[len(lines)-1]; end != wantEnd {
		t.Fatalf("end line: %s, want %s", end, wantEnd)
	}
}

func TestImportRefusesBadDumps(t *testing.T) {
	src := openSQLite(t)
	fill(t, src)
	good := string(export(t, src))
	lines := strings.SplitAfter(good, "\n")
	cut := func(i int) string { return strings.Join(lines[:i], "") }
	for name, c := range map[string]struct {
		dump, want string
	}{
		"empty":         {"", "empty"},
		"not a dump":    {`{"hello":"world"}` + "\n", "not a factory dump"},
		"newer version": {`{"format":"factory-dump","version":2}` + "\n", "dump version 2"},
		"cut short":     {cut(len(lines) - 2), "cut short"},
		"counts disagree": {cut(len(lines)-2) + `{"kind":"end","counts":{"queue":1,"tasks":10,"tokens":3,"audit":1}}` + "\n",
			"end line counts"},
		"an unknown field": {cut(2) + `{"kind":"task","task":{"id":"x","colour":"red"}}` + "\n", `unknown field "colour"`},
		"a bad state": {cut(2) + strings.Replace(lines[2], `"state":"DONE"`, `"state":"SHIPPED"`, 1),
			`unknown state "SHIPPED"`},
		"a bad time": {cut(2) + strings.Replace(lines[2], `"created_at":"2031-03-14T09:26:53.123456Z"`, `"created_at":"yesterday"`, 1),
			`time "yesterday"`},
		"a lease on a DONE task": {cut(2) + strings.Replace(lines[2], `"lease_holder":""`, `"lease_holder":"forge"`, 1),
			"dump line 3: task spec: lease fields on a DONE task"},
		"more after the end": {good + `{"kind":"task"}` + "\n", "more after the end line"},
	} {
		t.Run(name, func(t *testing.T) {
			dst := openSQLite(t)
			_, err := importInto(t, dst, []byte(c.dump), false)
			var fe *store.FieldError
			if !errors.As(err, &fe) || fe.Field != "lines" || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a FieldError on lines saying %q", err, c.want)
			}
			if got := export(t, dst); !bytes.Equal(got, export(t, openSQLite(t))) {
				t.Fatalf("a refused import wrote something:\n%s", got)
			}
		})
	}
}

func TestImportNeedsAnEmptyStoreOrMerge(t *testing.T) {
	src := openSQLite(t)
	fill(t, src)
	dump := export(t, src)

	// The operator token a fresh control plane makes does not count: the
	// import is called with it, and it stays.
	dst := openSQLite(t)
	boot := &store.Token{ID: "boot", Hash: "h-boot", Role: store.RoleOperator, Subject: "operator", CreatedBy: "bootstrap"}
	if _, err := dst.TokenCreate(t.Context(), &store.TokenCreateParams{Token: boot, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := importInto(t, dst, dump, false); err != nil {
		t.Fatalf("import beside the bootstrap token: %v", err)
	}
	if tok, err := dst.TokenGetByHash(t.Context(), &store.TokenGetByHashParams{Hash: "h-boot"}); err != nil || tok.ID != "boot" {
		t.Fatalf("the bootstrap token after the import: %v, %v", tok, err)
	}

	// Now it is not empty.
	before := export(t, dst)
	_, err := importInto(t, dst, dump, false)
	if !errors.Is(err, store.ErrLoadRefused) || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("a second import: %v", err)
	}
	_, err = importInto(t, dst, dump, true)
	if !errors.Is(err, store.ErrAlreadyExists) || !strings.Contains(err.Error(), `"spec"`) {
		t.Fatalf("merging the same dump again: %v", err)
	}
	requireSameDump(t, "after the refused imports", export(t, dst), before)
}

// Import reads its source from the start each time, so a reader that was
// partly consumed still loads whole.
func TestImportRereadsItsSource(t *testing.T) {
	src := openSQLite(t)
	fill(t, src)
	dump := export(t, src)
	r := bytes.NewReader(dump)
	if _, err := io.CopyN(io.Discard, r, 100); err != nil {
		t.Fatal(err)
	}
	dst := openSQLite(t)
	if _, err := newService(t, dst).Import(t.Context(), r, false); err != nil {
		t.Fatal(err)
	}
	requireSameDump(t, "the copy", export(t, dst), dump)
}

// linesOfKind picks a dump's lines of one kind, in order.
func linesOfKind(lines []string, kind string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, `{"kind":"`+kind+`",`) {
			out = append(out, l)
		}
	}
	return out
}
