package alert

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// deploy/alerts.yaml documents every default rule with its default values;
// this keeps the two from drifting apart.
func TestExampleFileIsTheDefaults(t *testing.T) {
	f, err := LoadFile(filepath.Join("..", "..", "deploy", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Interval != 15*time.Second || f.RepeatInterval != 4*time.Hour || f.GroupWait == nil || *f.GroupWait != 30*time.Second {
		t.Errorf("timings %v %v %v", f.Interval, f.RepeatInterval, f.GroupWait)
	}
	defaults := DefaultRules()
	if len(f.Rules) != len(defaults) {
		t.Fatalf("the file has %d rules, the defaults %d", len(f.Rules), len(defaults))
	}
	for i, d := range defaults {
		r := f.Rules[i]
		if r.Name != d.Name || r.Expr != d.Expr || r.Threshold != d.Threshold || r.For != d.For ||
			r.Severity != d.Severity || r.Summary != d.Summary || !maps.Equal(r.Match, d.Match) {
			t.Errorf("rule %d: file %+v\ndefault %+v", i, r, d)
		}
	}
}

func TestRulesOverrideDisableAndAdd(t *testing.T) {
	rules, err := Rules([]Rule{
		{Name: "queue_ready_backlog", Expr: ExprReadyDepth, Threshold: 200},
		{Name: "agent_offline", Disabled: true},
		{Name: "gpu_memory_critical", Expr: ExprGPUMemoryUsed, Threshold: 0.99, Severity: SeverityCritical},
	})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Rule{}
	for _, r := range rules {
		byName[r.Name] = r
	}
	if byName["queue_ready_backlog"].Threshold != 200 || byName["queue_ready_backlog"].Severity != SeverityWarning {
		t.Errorf("override: %+v", byName["queue_ready_backlog"])
	}
	if _, ok := byName["agent_offline"]; ok {
		t.Error("disabled rule kept")
	}
	if _, ok := byName["gpu_memory_critical"]; !ok || len(rules) != len(DefaultRules()) {
		t.Errorf("added rule missing or count off: %d rules", len(rules))
	}
}

func TestRulesRejectBadConfig(t *testing.T) {
	for _, c := range []struct {
		rule Rule
		want string
	}{
		{Rule{Name: "Bad-Name", Expr: ExprReadyDepth}, "lower_snake_case"},
		{Rule{Name: "x", Expr: "cpu_load"}, "unknown expr"},
		{Rule{Name: "x", Expr: ExprReadyDepth, For: -time.Second}, "negative"},
		{Rule{Name: "x", Expr: ExprReadyDepth, Severity: "page"}, "severity"},
		{Rule{Name: "x", Expr: ExprReadyDepth, Summary: "{{.Value"}, "summary"},
		{Rule{Name: "x", Expr: ExprReadyDepth, Summary: "{{nosuchfunc .Value}}"}, "summary"},
	} {
		if _, err := Rules([]Rule{c.rule}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error about %s", c.rule, err, c.want)
		}
	}
	if _, err := Rules([]Rule{{Name: "x", Expr: ExprReadyDepth}, {Name: "x", Expr: ExprReadyDepth}}); err == nil {
		t.Error("a rule defined twice was accepted")
	}
	path := filepath.Join(t.TempDir(), "alerts.yaml")
	if err := os.WriteFile(path, []byte("rules:\n  - name: x\n    expr: queue_ready_depth\n    treshold: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(path); err == nil || !strings.Contains(err.Error(), "treshold") {
		t.Errorf("a misspelt key: %v", err)
	}
}

func TestFingerprintIgnoresOrder(t *testing.T) {
	a := Fingerprint(map[string]string{"host": "gpu-1", "gpu": "0"})
	b := Fingerprint(map[string]string{"gpu": "0", "host": "gpu-1"})
	c := Fingerprint(map[string]string{"gpu": "1", "host": "gpu-1"})
	if a != b || a == c {
		t.Errorf("fingerprints %s %s %s", a, b, c)
	}
}

// TestDeadLetterSummaryCountsInWords: one task is "a task", not "1 tasks",
// and the ids come after the count.
func TestDeadLetterSummaryCountsInWords(t *testing.T) {
	r := Rule{Name: "task_dead_lettered", Expr: ExprDeadLettered, Summary: deadLetterSummary}
	if err := r.compile(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		value    float64
		examples []string
		want     string
	}{
		{1, []string{"t-1"}, "1 FAILED task needs an operator (dead-lettered): t-1"},
		{2, []string{"t-2", "t-1"}, "2 FAILED tasks need an operator (dead-lettered): t-2, t-1"},
		{5, []string{"t-5", "t-4", "t-3"}, "5 FAILED tasks need an operator (dead-lettered): t-5, t-4, t-3, …"},
	} {
		got, err := r.render(c.value, nil, c.examples)
		if err != nil || got != c.want {
			t.Errorf("render(%v, %v) = %q, %v; want %q", c.value, c.examples, got, err, c.want)
		}
	}
}
