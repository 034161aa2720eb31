// Package alert turns the factory's measurements into alerts an operator
// hears about, with Prometheus's semantics: a rule's condition that holds
// makes an alert PENDING; once it has held for the rule's `for` duration
// the alert is FIRING and notified; when it no longer holds the alert is
// RESOLVED and that is notified too. Notifications are grouped per rule and
// evaluation, repeated no more often than the repeat interval, stopped by
// an ack (until the alert resolves) and muted by silences.
//
// The rules are the runbook's (§5.1, §8.1), built in and overridable from
// a YAML file (deploy/alerts.yaml documents each default). The evaluator's
// state lives in the store, so it survives restarts, and with replicas
// sharing PostgreSQL it runs on the elected replica only.
package alert

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"text/template"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/factory/factory/controlplane/ops"
)

// Expr names a built-in measurement. Each yields series: a value and the
// labels that say which instance (an agent, a host's GPU).
type Expr string

// The measurements. Money is micro-dollars; ratios are 0..1; ages seconds.
const (
	// ExprSpendDaily is today's total spend, micro-dollars.
	ExprSpendDaily Expr = "spend_daily_micros"
	// ExprSpendTierDaily is today's spend per tier (label tier).
	ExprSpendTierDaily Expr = "spend_tier_daily_micros"
	// ExprSpendAgentDaily is today's spend per agent (label agent).
	ExprSpendAgentDaily Expr = "spend_agent_daily_micros"
	// ExprGPUMemoryUsed is each GPU's memory used as a fraction of its
	// total (labels host, gpu).
	ExprGPUMemoryUsed Expr = "gpu_memory_used_ratio"
	// ExprDiskUsed is each disk's used fraction (labels host, path).
	ExprDiskUsed Expr = "disk_used_ratio"
	// ExprAgentOffline is, for each OFFLINE agent, the seconds since its
	// last sign of life (label agent); agents not OFFLINE have no series.
	ExprAgentOffline Expr = "agent_offline_seconds"
	// ExprModelSwaps is each host's model swaps in the last hour (label
	// host).
	ExprModelSwaps Expr = "model_swaps_per_hour"
	// ExprReadyDepth is the number of READY tasks.
	ExprReadyDepth Expr = "queue_ready_depth"
	// ExprFailed24h is the tasks that went FAILED in the last 24 hours.
	ExprFailed24h Expr = "tasks_failed_24h"
	// ExprDeadLettered is the tasks in FAILED, the dead letter.
	ExprDeadLettered Expr = "tasks_dead_lettered"
	// ExprReadyOldestWait is how long the oldest READY task has waited.
	ExprReadyOldestWait Expr = "ready_oldest_wait_seconds"
	// ExprInProgressOldest is how long the oldest claim has been running.
	ExprInProgressOldest Expr = "in_progress_oldest_seconds"
	// ExprLLMErrorRate is, per provider and model (labels provider,
	// model), the fraction of LLM calls that failed in the last 15
	// minutes, from the spend reports (LiteLLM's spend-log status);
	// a pair with fewer than LLMErrorRateMinRequests calls has no series.
	ExprLLMErrorRate Expr = "llm_error_ratio"
	// ExprServiceDown is 1 for each service probe failing on an ONLINE
	// host (labels host, service); a passing probe has no series, nor
	// has a host not ONLINE (its readings are unknown, not failing).
	ExprServiceDown Expr = "service_down"
	// ExprGPUUnavailable is 1 for each ONLINE host whose NVML fails, or
	// that has fewer working GPUs than it reported (label host); the
	// alert's text says which.
	ExprGPUUnavailable Expr = "gpu_unavailable"
	// ExprBackupAge is the last good backup's age in backup intervals
	// (with none, the time since the first attempt); no series when no
	// backups are scheduled or none was attempted yet.
	ExprBackupAge Expr = "backup_age_intervals"
)

// Exprs is every measurement.
var Exprs = []Expr{ExprSpendDaily, ExprSpendTierDaily, ExprSpendAgentDaily, ExprGPUMemoryUsed, ExprDiskUsed,
	ExprAgentOffline, ExprModelSwaps, ExprReadyDepth, ExprFailed24h, ExprDeadLettered, ExprReadyOldestWait,
	ExprInProgressOldest, ExprLLMErrorRate, ExprServiceDown, ExprGPUUnavailable, ExprBackupAge}

// Severities.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Rule is one alerting rule: the alert holds while Expr's value is above
// Threshold for a series whose labels carry every pair in Match.
type Rule struct {
	Name      string            `yaml:"name"`
	Expr      Expr              `yaml:"expr"`
	Threshold float64           `yaml:"threshold"`
	Match     map[string]string `yaml:"match,omitempty"`
	// For is how long the condition must hold before the alert fires.
	For      time.Duration `yaml:"for,omitempty"`
	Severity string        `yaml:"severity"`
	// Summary is a text/template over .Value, .Threshold, .Labels and
	// the helpers dollars, percent and duration.
	Summary  string `yaml:"summary"`
	Disabled bool   `yaml:"disabled,omitempty"`

	summary *template.Template
}

// File is the alert configuration file's shape.
type File struct {
	// Interval is how often the rules are evaluated.
	Interval time.Duration `yaml:"interval,omitempty"`
	// RepeatInterval is how often a firing alert nobody acked is notified
	// again.
	RepeatInterval time.Duration `yaml:"repeat_interval,omitempty"`
	// GroupWait holds a new alert's first notification this long, so
	// alerts of one rule that fire together go out as one event.
	// 0s sends at once; unset keeps the default.
	GroupWait *time.Duration `yaml:"group_wait,omitempty"`
	// Rules replace the default rule of the same name or add one; a
	// default not named stays.
	Rules []Rule `yaml:"rules"`
}

var ruleName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// DefaultRules are the runbook's alerts (§5.1 health, §8.1 spend).
func DefaultRules() []Rule {
	return []Rule{
		{Name: "spend_daily_total", Expr: ExprSpendDaily, Threshold: 50e6, Severity: SeverityCritical,
			Summary: "today's spend is {{dollars .Value}}, above the {{dollars .Threshold}} alert line"},
		{Name: "spend_tier_frontier", Expr: ExprSpendTierDaily, Match: map[string]string{"tier": "frontier"}, Threshold: 25e6, Severity: SeverityWarning,
			Summary: "frontier-model spend today is {{dollars .Value}}, above {{dollars .Threshold}}"},
		{Name: "spend_tier_mid", Expr: ExprSpendTierDaily, Match: map[string]string{"tier": "mid"}, Threshold: 15e6, Severity: SeverityWarning,
			Summary: "mid-tier spend today is {{dollars .Value}}, above {{dollars .Threshold}}"},
		{Name: "spend_tier_infra", Expr: ExprSpendTierDaily, Match: map[string]string{"tier": "infra"}, Threshold: 10e6, Severity: SeverityWarning,
			Summary: "infrastructure spend today is {{dollars .Value}}, above {{dollars .Threshold}}"},
		{Name: "spend_agent_runaway", Expr: ExprSpendAgentDaily, Threshold: 10e6, Severity: SeverityCritical,
			Summary: "agent {{.Labels.agent}} spent {{dollars .Value}} today, above {{dollars .Threshold}}: a runaway?"},
		{Name: "gpu_memory_high", Expr: ExprGPUMemoryUsed, Threshold: 23.0 / 24, For: 5 * time.Minute, Severity: SeverityWarning,
			Summary: "GPU {{.Labels.gpu}} on {{.Labels.host}} has {{percent .Value}} of its memory in use for 5 minutes"},
		{Name: "queue_ready_backlog", Expr: ExprReadyDepth, Threshold: 50, Severity: SeverityWarning,
			Summary: "{{.Value}} tasks are READY, above {{.Threshold}}: the fleet is not keeping up"},
		{Name: "tasks_failed_24h", Expr: ExprFailed24h, Threshold: 10, Severity: SeverityWarning,
			Summary: "{{.Value}} tasks failed in the last 24 hours, above {{.Threshold}}"},
		{Name: "task_dead_lettered", Expr: ExprDeadLettered, Threshold: 0, Severity: SeverityWarning,
			Summary: deadLetterSummary},
		{Name: "disk_usage_high", Expr: ExprDiskUsed, Threshold: 0.85, Severity: SeverityWarning,
			Summary: "disk {{.Labels.path}} on {{.Labels.host}} is {{percent .Value}} full"},
		{Name: "agent_offline", Expr: ExprAgentOffline, Threshold: 300, Severity: SeverityCritical,
			Summary: "agent {{.Labels.agent}} has been silent for {{duration .Value}}"},
		{Name: "model_swaps_high", Expr: ExprModelSwaps, Threshold: 20, Severity: SeverityWarning,
			Summary: "{{.Labels.host}} swapped models {{.Value}} times in the last hour: VRAM thrashing"},
		{Name: "task_ready_waiting", Expr: ExprReadyOldestWait, Threshold: 3600, Severity: SeverityWarning,
			Summary: "the oldest READY task has waited {{duration .Value}}"},
		{Name: "task_in_progress_long", Expr: ExprInProgressOldest, Threshold: 7200, Severity: SeverityWarning,
			Summary: "a task has been IN_PROGRESS for {{duration .Value}}"},
		{Name: "litellm_error_rate", Expr: ExprLLMErrorRate, Threshold: 0.05, Severity: SeverityWarning,
			Summary: "{{percent .Value}} of LiteLLM calls to {{.Labels.provider}} {{.Labels.model}} failed in the last 15 minutes, above {{percent .Threshold}}"},
		{Name: "service_down", Expr: ExprServiceDown, Threshold: 0, For: 2 * time.Minute, Severity: SeverityCritical,
			Summary: "service {{.Labels.service}} on {{.Labels.host}} has failed its probe for 2 minutes"},
		{Name: "gpu_unavailable", Expr: ExprGPUUnavailable, Threshold: 0, Severity: SeverityCritical,
			Summary: "GPU unavailable on {{.Labels.host}}{{with .Examples}}: {{.}}{{end}}"},
		{Name: "backup_stale", Expr: ExprBackupAge, Threshold: ops.StaleAfter, Severity: SeverityCritical,
			Summary: "no good backup for {{printf \"%.1f\" .Value}} backup intervals (runbook §7.1): check the control plane's log and factory status"},
	}
}

var funcs = template.FuncMap{
	"dollars":  func(micros float64) string { return fmt.Sprintf("$%.2f", micros/1e6) },
	"percent":  func(r float64) string { return fmt.Sprintf("%.1f%%", r*100) },
	"duration": func(s float64) string { return (time.Duration(s) * time.Second).Round(time.Second).String() },
	// plural picks the word for a count: {{plural .Value "task" "tasks"}}.
	"plural": func(n float64, one, many string) string {
		if n == 1 {
			return one
		}
		return many
	},
}

// deadLetterSummary names the newest dead-lettered tasks beside their
// count (.Examples: a few ids, and "…" when there are more).
const deadLetterSummary = `{{.Value}} FAILED {{plural .Value "task needs" "tasks need"}} an operator (dead-lettered){{with .Examples}}: {{.}}{{end}}`

// compile checks a rule and parses its summary.
func (r *Rule) compile() error {
	switch {
	case !ruleName.MatchString(r.Name):
		return fmt.Errorf("rule %q: name must be lower_snake_case, at most 63 characters", r.Name)
	case !slices.Contains(Exprs, r.Expr):
		return fmt.Errorf("rule %s: unknown expr %q (one of %s)", r.Name, r.Expr, exprList())
	case r.For < 0:
		return fmt.Errorf("rule %s: for must not be negative", r.Name)
	}
	switch r.Severity {
	case "":
		r.Severity = SeverityWarning
	case SeverityInfo, SeverityWarning, SeverityCritical:
	default:
		return fmt.Errorf("rule %s: severity %q is not info, warning or critical", r.Name, r.Severity)
	}
	text := r.Summary
	if text == "" {
		text = r.Name + ": {{.Value}} > {{.Threshold}}"
	}
	t, err := template.New(r.Name).Funcs(funcs).Option("missingkey=zero").Parse(text)
	if err != nil {
		return fmt.Errorf("rule %s: summary: %w", r.Name, err)
	}
	r.summary = t
	// A template that fails on sample data would fail every evaluation.
	if _, err := r.render(1, map[string]string{}, nil); err != nil {
		return fmt.Errorf("rule %s: summary: %w", r.Name, err)
	}
	return nil
}

func (r *Rule) render(value float64, labels map[string]string, examples []string) (string, error) {
	ex := strings.Join(examples, ", ")
	if ex != "" && value > float64(len(examples)) {
		ex += ", …"
	}
	var b bytes.Buffer
	err := r.summary.Execute(&b, map[string]any{"Value": value, "Threshold": r.Threshold, "Labels": labels, "Examples": ex})
	return b.String(), err
}

func exprList() string {
	s := make([]string, len(Exprs))
	for i, e := range Exprs {
		s[i] = string(e)
	}
	return strings.Join(s, ", ")
}

// Rules merges overrides into the defaults (by name; new names are added),
// drops disabled rules and compiles the rest.
func Rules(overrides []Rule) ([]Rule, error) {
	rules := DefaultRules()
	idx := map[string]int{}
	for i, r := range rules {
		idx[r.Name] = i
	}
	seen := map[string]bool{}
	for _, o := range overrides {
		if seen[o.Name] {
			return nil, fmt.Errorf("rule %s is defined twice", o.Name)
		}
		seen[o.Name] = true
		o.Match = maps.Clone(o.Match)
		if i, ok := idx[o.Name]; ok {
			rules[i] = o
		} else {
			idx[o.Name] = len(rules)
			rules = append(rules, o)
		}
	}
	out := rules[:0]
	var errs []error
	for _, r := range rules {
		if r.Disabled {
			continue
		}
		if err := r.compile(); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// LoadFile reads an alert configuration file.
func LoadFile(path string) (File, error) {
	var f File
	b, err := os.ReadFile(path)
	if err != nil {
		return f, fmt.Errorf("alerts config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return f, fmt.Errorf("alerts config %s: %w", path, err)
	}
	if _, err := Rules(f.Rules); err != nil {
		return f, fmt.Errorf("alerts config %s: %w", path, err)
	}
	return f, nil
}
