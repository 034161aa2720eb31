package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func TestParseTaskFileKnownFields(t *testing.T) {
	data := `{
		"id": "deploy-api", "title": "Deploy the API", "kind": "deploy", "role": "deployer",
		"assignee": "deployer-1", "priority": 7, "max_attempts": 5, "approval_tier": 2,
		"depends_on": ["build-api"], "labels": {"env": "prod"},
		"attempt": 2, "last_error": "timeout", "progress": "half", "note": "n", "created_at": "2026-01-01T00:00:00Z",
		"payload": {"service": "api", "version": "1.4.2"}
	}`
	it, err := parseTaskFile("backlog", "q/backlog/other-name.json", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	r := it.Req
	if r.GetTaskId() != "deploy-api" {
		t.Errorf("id %q: the file's id wins over its name", r.GetTaskId())
	}
	if r.GetTitle() != "Deploy the API" || r.GetKind() != "deploy" || r.GetRole() != "deployer" || r.GetAssignee() != "deployer-1" {
		t.Errorf("strings not mapped: %v", r)
	}
	if r.GetPriority() != 7 || r.GetMaxAttempts() != 5 || r.GetApprovalTier() != 2 {
		t.Errorf("numbers not mapped: %v", r)
	}
	if !slices.Equal(r.GetDependsOn(), []string{"build-api"}) || r.GetLabels()["env"] != "prod" {
		t.Errorf("lists not mapped: %v", r)
	}
	if r.GetInitialState() != factoryv1.TaskState_TASK_STATE_BACKLOG {
		t.Errorf("initial state %v, want BACKLOG from the folder", r.GetInitialState())
	}
	// History fields are known: read past, not pushed into the payload.
	assertJSONEqual(t, r.GetPayloadJson(), `{"service":"api","version":"1.4.2"}`)
	if len(it.MergedFields) != 0 {
		t.Errorf("merged %v, want nothing", it.MergedFields)
	}
}

func TestParseTaskFileIDFromFileName(t *testing.T) {
	it, err := parseTaskFile("ready", "q/ready/T-42.json", []byte(`{"title": "x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if it.Req.GetTaskId() != "T-42" {
		t.Fatalf("id %q, want T-42 from the file name", it.Req.GetTaskId())
	}
	if it.Req.GetInitialState() != factoryv1.TaskState_TASK_STATE_UNSPECIFIED {
		t.Fatalf("ready: initial state %v, want unset (the server decides READY or BACKLOG)", it.Req.GetInitialState())
	}
	it, err = parseTaskFile("ready", "q/ready/T-43.json", []byte(`{"title": "x", "id": ""}`))
	if err != nil || it.Req.GetTaskId() != "T-43" {
		t.Fatalf("empty id: got %q, %v", it.Req.GetTaskId(), err)
	}
}

func TestParseTaskFileInProgressBecomesReady(t *testing.T) {
	it, err := parseTaskFile("in-progress", "q/in-progress/t.json", []byte(`{"title": "x", "attempt": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	if it.Req.GetInitialState() != factoryv1.TaskState_TASK_STATE_UNSPECIFIED {
		t.Fatalf("in-progress: initial state %v, want unset (READY)", it.Req.GetInitialState())
	}
	for folder, want := range map[string]factoryv1.TaskState{
		"review": factoryv1.TaskState_TASK_STATE_REVIEW,
		"done":   factoryv1.TaskState_TASK_STATE_DONE,
		"failed": factoryv1.TaskState_TASK_STATE_FAILED,
		"paused": factoryv1.TaskState_TASK_STATE_PAUSED,
	} {
		it, err := parseTaskFile(folder, "q/"+folder+"/t.json", []byte(`{"title": "x"}`))
		if err != nil {
			t.Fatal(err)
		}
		if it.Req.GetInitialState() != want {
			t.Errorf("%s: initial state %v, want %v", folder, it.Req.GetInitialState(), want)
		}
	}
}

func TestParseTaskFileUnknownFieldsKeptInPayload(t *testing.T) {
	cases := []struct {
		name, data, payload string
		merged              []string
	}{
		{
			name:    "no payload: unknown fields become it",
			data:    `{"title": "x", "repo": "git@example:api.git", "steps": [1, 2], "owner": {"team": "ml"}}`,
			payload: `{"repo": "git@example:api.git", "steps": [1, 2], "owner": {"team": "ml"}}`,
			merged:  []string{"owner", "repo", "steps"},
		},
		{
			name:    "object payload: merged in",
			data:    `{"title": "x", "payload": {"a": 1}, "b": true}`,
			payload: `{"a": 1, "b": true}`,
			merged:  []string{"b"},
		},
		{
			name:    "payload_json text",
			data:    `{"title": "x", "payload_json": "{\"a\": 1}"}`,
			payload: `{"a": 1}`,
		},
		{
			name:    "array payload without unknown fields is kept as is",
			data:    `{"title": "x", "payload": [1, "two"]}`,
			payload: `[1, "two"]`,
		},
		{
			name:    "null fields count as absent",
			data:    `{"title": "x", "labels": null, "payload": null, "extra": null}`,
			payload: ``,
		},
		{
			name:    "big numbers keep their digits",
			data:    `{"title": "x", "budget_micros": 12345678901234567890}`,
			payload: `{"budget_micros": 12345678901234567890}`,
			merged:  []string{"budget_micros"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			it, err := parseTaskFile("ready", "q/ready/t.json", []byte(c.data))
			if err != nil {
				t.Fatal(err)
			}
			if c.payload == "" {
				if it.Req.GetPayloadJson() != "" {
					t.Fatalf("payload %q, want none", it.Req.GetPayloadJson())
				}
			} else {
				assertJSONEqual(t, it.Req.GetPayloadJson(), c.payload)
			}
			if !slices.Equal(it.MergedFields, c.merged) {
				t.Errorf("merged %v, want %v", it.MergedFields, c.merged)
			}
		})
	}
}

func TestParseTaskFileErrorsNameTheFile(t *testing.T) {
	cases := map[string]string{
		"not json":                   `{"title": `,
		"not an object":              `["title"]`,
		"no title":                   `{"kind": "x"}`,
		"priority not a number":      `{"title": "x", "priority": "high"}`,
		"priority not whole":         `{"title": "x", "priority": 1.5}`,
		"labels not strings":         `{"title": "x", "labels": {"n": 1}}`,
		"depends_on not a list":      `{"title": "x", "depends_on": "a"}`,
		"unknown field and scalar":   `{"title": "x", "payload": "text", "extra": 1}`,
		"unknown field clashes":      `{"title": "x", "payload": {"extra": 1}, "extra": 2}`,
		"payload and payload_json":   `{"title": "x", "payload": {}, "payload_json": "{}"}`,
		"payload_json not json text": `{"title": "x", "payload_json": "{nope"}`,
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := parseTaskFile("ready", "q/ready/bad.json", []byte(data))
			if err == nil {
				t.Fatal("want an error")
			}
			if !strings.Contains(err.Error(), "q/ready/bad.json") {
				t.Fatalf("error %q does not name the file", err)
			}
		})
	}
}

func TestReadFileQueue(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "ready/a.json", `{"title": "A"}`)
	write(t, dir, "in-progress/b.json", `{"title": "B", "depends_on": ["a"]}`)
	write(t, dir, "done/c.json", `{"title": "C"}`)
	write(t, dir, "done/README.txt", `notes`)
	items, skipped, problems, err := readFileQueue(dir)
	if err != nil || len(problems) > 0 {
		t.Fatal(err, problems)
	}
	var ids []string
	for _, it := range items {
		ids = append(ids, it.Folder+"/"+it.Req.GetTaskId())
	}
	if !slices.Equal(ids, []string{"ready/a", "in-progress/b", "done/c"}) {
		t.Errorf("items %v", ids)
	}
	if len(skipped) != 1 || !strings.HasSuffix(skipped[0], "README.txt") {
		t.Errorf("skipped %v, want README.txt", skipped)
	}

	write(t, dir, "failed/dup.json", `{"title": "D", "id": "a"}`)
	if _, _, problems, err := readFileQueue(dir); err != nil || len(problems) != 1 || !strings.Contains(problems.Error(), "dup.json") || !strings.Contains(problems.Error(), "a.json") {
		t.Fatalf("duplicate id: want both files named, got %v %v", err, problems)
	}

	if _, _, _, err := readFileQueue(t.TempDir()); err == nil || !strings.Contains(err.Error(), "none of the queue folders") {
		t.Fatalf("empty dir: got %v", err)
	}
}

func TestOrderForImport(t *testing.T) {
	item := func(id string, deps ...string) *importItem {
		return &importItem{File: "q/ready/" + id + ".json", Folder: "ready", Req: &factoryv1.CreateTaskRequest{TaskId: id, DependsOn: deps}}
	}
	onServer := map[string]bool{"old": true}
	exists := func(id string) (bool, error) { return onServer[id], nil }

	// d depends on b and c, which depend on a; e depends on a task already
	// on the server. Given in the worst order.
	items := []*importItem{item("d", "b", "c"), item("c", "a"), item("e", "old"), item("b", "a", "a"), item("a")}
	waves, problems, err := orderForImport(items, exists)
	if err != nil || len(problems) > 0 {
		t.Fatal(err, problems)
	}
	var got [][]string
	for _, w := range waves {
		var ids []string
		for _, it := range w {
			ids = append(ids, it.Req.GetTaskId())
		}
		got = append(got, ids)
	}
	want := [][]string{{"a", "e"}, {"b", "c"}, {"d"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("waves %v, want %v", got, want)
	}

	_, problems, _ = orderForImport([]*importItem{item("x", "ghost"), item("y", "ghost2")}, exists)
	if len(problems) != 2 || !strings.Contains(problems[0], "q/ready/x.json") || !strings.Contains(problems[0], "ghost") ||
		!strings.Contains(problems[1], "q/ready/y.json") || !strings.Contains(problems[1], "ghost2") {
		t.Fatalf("missing dependencies: want each file and id named, got %v", problems)
	}

	_, problems, _ = orderForImport([]*importItem{item("p", "q"), item("q", "p"), item("r")}, exists)
	if err := problems.Error(); len(problems) != 1 || !strings.Contains(err, "cycle") || !strings.Contains(err, "p.json") || strings.Contains(err, "r.json") {
		t.Fatalf("cycle: want p and q named, not r; got %v", problems)
	}
	_, problems, _ = orderForImport([]*importItem{item("self", "self")}, exists)
	if len(problems) != 1 || !strings.Contains(problems[0], "cycle") {
		t.Fatalf("self-dependency: got %v", problems)
	}
}

// What export writes, import reads back to the same request fields, and
// the payload comes back as the same JSON.
func TestExportFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for _, f := range stateNames {
		if err := os.MkdirAll(filepath.Join(dir, f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	task := &factoryv1.Task{
		Id: "t-1", Title: "Review PR", Kind: "review", Role: "reviewer", Assignee: "rev-1", Priority: -3,
		MaxAttempts: 4, Attempt: 2, DependsOn: []string{"t-0"}, Labels: map[string]string{"team": "ml"},
		LastError: "flaky", Progress: "p", Note: "n", CreatedAt: timestamppb.New(created),
		PayloadJson: `{"pr": 412, "nested": {"x": [1, 2]}}`, State: factoryv1.TaskState_TASK_STATE_REVIEW,
	}
	folder, err := writeExportFile(dir, task)
	if err != nil {
		t.Fatal(err)
	}
	if folder != "review" {
		t.Fatalf("folder %q, want review", folder)
	}
	path := filepath.Join(dir, "review", "t-1.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "title", "kind", "role", "assignee", "priority", "max_attempts", "attempt", "depends_on", "labels", "last_error", "progress", "note", "created_at", "payload"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("exported file lacks %q", k)
		}
	}
	if string(fields["created_at"]) != `"2026-03-01T12:00:00Z"` {
		t.Errorf("created_at %s", fields["created_at"])
	}
	if !strings.HasPrefix(strings.TrimSpace(string(fields["payload"])), "{") {
		t.Errorf("payload must be nested JSON, got %s", fields["payload"])
	}

	it, err := parseTaskFile("review", path, raw)
	if err != nil {
		t.Fatal(err)
	}
	r := it.Req
	if r.GetTaskId() != task.GetId() || r.GetTitle() != task.GetTitle() || r.GetKind() != task.GetKind() ||
		r.GetRole() != task.GetRole() || r.GetAssignee() != task.GetAssignee() || r.GetPriority() != task.GetPriority() ||
		r.GetMaxAttempts() != task.GetMaxAttempts() || !slices.Equal(r.GetDependsOn(), task.GetDependsOn()) ||
		!reflect.DeepEqual(r.GetLabels(), task.GetLabels()) || r.GetInitialState() != task.GetState() {
		t.Errorf("round trip changed the task:\n%v\n%v", task, r)
	}
	assertJSONEqual(t, r.GetPayloadJson(), task.GetPayloadJson())
	if len(it.MergedFields) != 0 {
		t.Errorf("exported fields were treated as unknown: %v", it.MergedFields)
	}

	if err := checkExportDir(dir); err == nil {
		t.Error("export into a directory with task files must be refused")
	}
	if _, err := writeExportFile(dir, &factoryv1.Task{Id: "../escape", Title: "x"}); err == nil {
		t.Error("an id with a slash must not become a path")
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func assertJSONEqual(t *testing.T, got, want string) {
	t.Helper()
	var g, w any
	dec := json.NewDecoder(strings.NewReader(got))
	dec.UseNumber()
	if err := dec.Decode(&g); err != nil {
		t.Fatalf("got invalid JSON %q: %v", got, err)
	}
	dec = json.NewDecoder(strings.NewReader(want))
	dec.UseNumber()
	if err := dec.Decode(&w); err != nil {
		t.Fatalf("want invalid JSON %q: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("JSON differs:\n got %s\nwant %s", got, want)
	}
}
