package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func TestParseState(t *testing.T) {
	for in, want := range map[string]factoryv1.TaskState{
		"ready":                  factoryv1.TaskState_TASK_STATE_READY,
		"READY":                  factoryv1.TaskState_TASK_STATE_READY,
		" Ready ":                factoryv1.TaskState_TASK_STATE_READY,
		"in-progress":            factoryv1.TaskState_TASK_STATE_IN_PROGRESS,
		"in_progress":            factoryv1.TaskState_TASK_STATE_IN_PROGRESS,
		"IN_PROGRESS":            factoryv1.TaskState_TASK_STATE_IN_PROGRESS,
		"TASK_STATE_IN_PROGRESS": factoryv1.TaskState_TASK_STATE_IN_PROGRESS,
		"task_state_failed":      factoryv1.TaskState_TASK_STATE_FAILED,
		"backlog":                factoryv1.TaskState_TASK_STATE_BACKLOG,
		"review":                 factoryv1.TaskState_TASK_STATE_REVIEW,
		"done":                   factoryv1.TaskState_TASK_STATE_DONE,
		"paused":                 factoryv1.TaskState_TASK_STATE_PAUSED,
	} {
		got, err := parseState(in)
		if err != nil || got != want {
			t.Errorf("parseState(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "unspecified", "TASK_STATE_UNSPECIFIED", "inprogress", "3", "readyy"} {
		if _, err := parseState(bad); err == nil {
			t.Errorf("parseState(%q) accepted", bad)
		} else if !strings.Contains(err.Error(), "in-progress") {
			t.Errorf("parseState(%q) error %q should list the valid names", bad, err)
		}
	}
	got, err := parseStates([]string{"ready,failed", "in-progress", ""})
	if err != nil || len(got) != 3 || got[1] != factoryv1.TaskState_TASK_STATE_FAILED {
		t.Errorf("parseStates = %v, %v", got, err)
	}
	// Every state's short name parses back to it: the folder names of the
	// file queue depend on this.
	for _, st := range allStates {
		if back, err := parseState(stateName(st)); err != nil || back != st {
			t.Errorf("stateName(%v) = %q does not parse back", st, stateName(st))
		}
	}
}

func TestHumanDurations(t *testing.T) {
	for d, want := range map[time.Duration]string{
		250 * time.Millisecond:           "250ms",
		45 * time.Second:                 "45s",
		3*time.Minute + 12*time.Second:   "3m12s",
		2*time.Hour + 5*time.Minute:      "2h05m",
		76 * time.Hour:                   "3d4h",
		-(3*time.Minute + 5*time.Second): "3m05s",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		ts   *timestamppb.Timestamp
		want string
	}{
		{nil, "-"},
		{&timestamppb.Timestamp{}, "-"},
		{timestamppb.New(now.Add(-(3*time.Minute + 12*time.Second))), "3m12s ago"},
		{timestamppb.New(now.Add(4*time.Minute + 30*time.Second)), "in 4m30s"},
		{timestamppb.New(now.Add(-100 * time.Millisecond)), "just now"},
	} {
		if got := humanAge(c.ts, now); got != c.want {
			t.Errorf("humanAge(%v) = %q, want %q", c.ts, got, c.want)
		}
	}
}

func TestTaskTable(t *testing.T) {
	now := time.Now()
	tasks := []*factoryv1.Task{
		{Id: "t-1", Title: "Build the thing", State: factoryv1.TaskState_TASK_STATE_IN_PROGRESS, Priority: 5, Role: "builder",
			Attempt: 1, MaxAttempts: 3, Lease: &factoryv1.Lease{Holder: "builder-1"}, StateChangedAt: timestamppb.New(now.Add(-90 * time.Second))},
		{Id: "t-2", Title: strings.Repeat("long title ", 20), State: factoryv1.TaskState_TASK_STATE_READY, Assignee: "rev-1", MaxAttempts: 3},
	}
	var buf bytes.Buffer
	if err := writeTaskTable(&buf, tasks, now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and 2 rows, got:\n%s", buf.String())
	}
	if !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "STATE") || !strings.Contains(lines[0], "TITLE") {
		t.Errorf("header %q", lines[0])
	}
	for _, want := range []string{"IN_PROGRESS", "builder-1", "1/3", "1m30s ago", "Build the thing"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row 1 %q lacks %q", lines[1], want)
		}
	}
	if !strings.Contains(lines[2], "→rev-1") || !strings.Contains(lines[2], "…") {
		t.Errorf("row 2 %q: want the assignee marked and the title cut", lines[2])
	}
	// Columns line up: STATE starts at the same offset in every line.
	col := strings.Index(lines[0], "STATE")
	for _, l := range lines[1:] {
		if l[col-2:col] != "  " || l[col] == ' ' {
			t.Errorf("misaligned row %q", l)
		}
	}
}

func TestJSONOutput(t *testing.T) {
	var buf bytes.Buffer
	tasks := []*factoryv1.Task{{Id: "a", State: factoryv1.TaskState_TASK_STATE_READY}, {Id: "b"}}
	if err := writeProtoList(&buf, tasks); err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &list); err != nil {
		t.Fatalf("list is not a JSON array: %v\n%s", err, buf.String())
	}
	if len(list) != 2 || list[0]["id"] != "a" || list[0]["state"] != "TASK_STATE_READY" {
		t.Errorf("list %v", list)
	}
	if _, ok := list[1]["last_error"]; !ok {
		t.Error("unset fields must be present for scripts (proto names, emit unpopulated)")
	}

	buf.Reset()
	if err := writeProtoList[*factoryv1.Task](&buf, nil); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(buf.String()) != "[]" {
		t.Errorf("empty list printed %q, want []", buf.String())
	}

	buf.Reset()
	for range 2 {
		if err := writeProtoLine(&buf, &factoryv1.WatchTasksResponse{Type: factoryv1.TaskEventType_TASK_EVENT_TYPE_CREATED, Task: tasks[0]}); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one event per line, got %q", buf.String())
	}
	for _, l := range lines {
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %q is not JSON: %v", l, err)
		}
	}
}

func TestLabels(t *testing.T) {
	m, err := parseLabels([]string{"env=prod", "note=a=b", "empty="})
	if err != nil || m["env"] != "prod" || m["note"] != "a=b" || m["empty"] != "" {
		t.Fatalf("parseLabels = %v, %v", m, err)
	}
	for _, bad := range []string{"noequals", "=v"} {
		if _, err := parseLabels([]string{bad}); err == nil {
			t.Errorf("parseLabels(%q) accepted", bad)
		}
	}
	if got := formatLabels(map[string]string{"b": "2", "a": "1"}); got != "a=1,b=2" {
		t.Errorf("formatLabels = %q", got)
	}
}

func TestErrorReporting(t *testing.T) {
	cmd := &cobra.Command{Use: "factory"}
	var stderr bytes.Buffer
	cmd.SetErr(&stderr)

	st := status.New(codes.FailedPrecondition, "task t1: lease is held by another agent")
	code := reportError(cmd, &runError{err: fmt.Errorf("done t1: %w", st.Err())})
	if code != ExitFailure {
		t.Errorf("server error exit %d, want %d", code, ExitFailure)
	}
	if got := stderr.String(); got != "error: done t1: task t1: lease is held by another agent (FAILED_PRECONDITION)\n" {
		t.Errorf("server error printed %q", got)
	}

	stderr.Reset()
	if code := reportError(cmd, errors.New(`unknown flag: --bogus`)); code != ExitUsage {
		t.Errorf("flag error exit %d, want %d", code, ExitUsage)
	}
	if !strings.Contains(stderr.String(), "unknown flag") || !strings.Contains(stderr.String(), "Usage:") {
		t.Errorf("flag error printed %q, want the message and the usage", stderr.String())
	}

	stderr.Reset()
	if code := reportError(cmd, &runError{err: usageErrorf("--payload and --payload-file are mutually exclusive")}); code != ExitUsage {
		t.Errorf("our own usage error exit %d, want %d", code, ExitUsage)
	}

	stderr.Reset()
	if code := reportError(cmd, &runError{err: &ExitError{Code: 3, Err: errors.New("custom")}}); code != 3 {
		t.Errorf("ExitError exit %d, want 3", code)
	}

	for c, want := range map[codes.Code]string{
		codes.NotFound: "NOT_FOUND", codes.FailedPrecondition: "FAILED_PRECONDITION", codes.OK: "OK",
		codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.Unavailable: "UNAVAILABLE",
	} {
		if got := codeName(c); got != want {
			t.Errorf("codeName(%v) = %q, want %q", c, got, want)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(d, 0.5); p != 50*time.Millisecond {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(d, 0.99); p != 99*time.Millisecond {
		t.Errorf("p99 = %v", p)
	}
	if p := percentile(d[:1], 0.99); p != time.Millisecond {
		t.Errorf("p99 of one = %v", p)
	}
	s := summarize([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond})
	if s.Count != 3 || s.P50ms != 2 || s.Maxms != 3 {
		t.Errorf("summarize = %+v", s)
	}
}

// Every command teaches: a one-line Short, a Long and Examples.
func TestEveryCommandIsDocumented(t *testing.T) {
	root := NewRootCommand(Options{})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() == "help" || c.Name() == "completion" || c.HasParent() && c.Parent().Name() == "completion" {
			return
		}
		if c.Short == "" || c.Long == "" || c.Example == "" {
			t.Errorf("%q lacks a Short, Long or Example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	// cobra adds completion lazily; make sure it is there for shells.
	root.InitDefaultCompletionCmd()
	if c, _, err := root.Find([]string{"completion", "bash"}); err != nil || c.Name() != "bash" {
		t.Errorf("no bash completion: %v", err)
	}
}

// hasRawUnsafe reports the first character a terminal would act on or hide.
func hasRawUnsafe(s string) (rune, bool) {
	for _, r := range s {
		if r == '\n' || r == '\t' {
			continue
		}
		if r == utf8.RuneError || unsafeRune(r) {
			return r, true
		}
	}
	return 0, false
}

func TestEscapeTerminal(t *testing.T) {
	for in, want := range map[string]string{
		"plain title":                "plain title",
		"café 日本 👨‍👩‍👧":              "café 日本 👨‍👩‍👧",
		"\x1b[2Jcleared":             `\x1b[2Jcleared`,
		"\x1b]0;pwned\x07":           `\x1b]0;pwned\x07`,
		"nul\x00byte":                `nul\x00byte`,
		"del\x7f":                    `del\x7f`,
		"\u009b31mred":               `\x9b31mred`,
		"\u0085next line":            `\x85next line`,
		"\u202eevil\u202c":           `\u202eevil\u202c`,
		"\u2066isolate\u2069":        `\u2066isolate\u2069`,
		"zero\u200bwidth\ufeff":      `zero\u200bwidth\ufeff`,
		"\u2028separator":            `\u2028separator`,
		"tag\U000E0041":              `tag\U000e0041`,
		"two\nlines\tand\rreturn":    `two\nlines\tand\rreturn`,
		"not utf-8 \xff\x9b":         `not utf-8 \xff\x9b`,
		`already \x1b looks escaped`: `already \x1b looks escaped`,
	} {
		if got := escapeTerminal(in); got != want {
			t.Errorf("escapeTerminal(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSafeWriter: text keeps its lines, a character split across writes is
// judged whole, and JSON keeps the exact value.
func TestSafeWriter(t *testing.T) {
	var buf bytes.Buffer
	w := newSafeWriter(&buf, nil)
	for _, part := range []string{"a\tb\n", "\x1b[2J", "\xe2\x80", "\xae", "caf\xc3", "\xa9\n", "\xc2", "\x9b"} {
		if n, err := w.Write([]byte(part)); n != len(part) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", part, n, err)
		}
	}
	if got, want := buf.String(), "a\tb\n"+`\x1b[2J\u202e`+"café\n"+`\x9b`; got != want {
		t.Errorf("stream: got %q, want %q", got, want)
	}

	buf.Reset()
	jw := newSafeWriter(&buf, func() bool { return true })
	title := "\x1b]0;x\x07 \u009b2J \u202eevil \x7f \U000E0041 ok"
	if err := writeJSON(jw, map[string]string{"title": title}); err != nil {
		t.Fatal(err)
	}
	if r, bad := hasRawUnsafe(buf.String()); bad {
		t.Errorf("JSON output carries %U raw: %q", r, buf.String())
	}
	var back map[string]string
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || back["title"] != title {
		t.Errorf("JSON output %q decodes to %q (%v), want the exact title", buf.String(), back["title"], err)
	}
}

// TestTablesEscapeCells: a hostile title neither reaches the terminal nor
// breaks the columns or forges a line in `task show`.
func TestTablesEscapeCells(t *testing.T) {
	now := time.Now()
	hostile := "\x1b[2J\x1b]0;pwned\x07\u009b31m\u202eevil\nState:\tDONE"
	tasks := []*factoryv1.Task{
		{Id: "t-1", Title: hostile, State: factoryv1.TaskState_TASK_STATE_READY, MaxAttempts: 3},
		{Id: "t-2", Title: "calm", State: factoryv1.TaskState_TASK_STATE_READY, MaxAttempts: 3},
	}
	var buf bytes.Buffer
	if err := writeTaskTable(&buf, tasks, now); err != nil {
		t.Fatal(err)
	}
	if r, bad := hasRawUnsafe(buf.String()); bad {
		t.Fatalf("task table carries %U raw:\n%q", r, buf.String())
	}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	col := strings.Index(lines[0], "TITLE")
	if len(lines) != 3 || !strings.HasPrefix(lines[1][col:], `\x1b[2J`) || !strings.HasPrefix(lines[2][col:], "calm") {
		t.Errorf("table:\n%s", buf.String())
	}

	buf.Reset()
	if err := writeTaskDetail(&buf, tasks[0], now); err != nil {
		t.Fatal(err)
	}
	if r, bad := hasRawUnsafe(buf.String()); bad {
		t.Fatalf("task show carries %U raw:\n%q", r, buf.String())
	}
	if strings.Count(buf.String(), "\nState:") != 1 || !strings.Contains(buf.String(), `\u202eevil\nState:\tDONE`) {
		t.Errorf("task show:\n%s", buf.String())
	}
}
