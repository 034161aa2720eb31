package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// deployDir is the deploy kit: the Grafana dashboards and any Prometheus
// rule files in it are checked against a scrape.
const deployDir = "../../deploy"

// pendingMetrics are metrics the dashboards already query that this
// branch's control plane does not export yet: they land from another
// branch. Each is listed with the labels it will carry, so the queries'
// label names are still checked; a listed metric that IS on the scrape is
// checked against the scrape instead. Empty this list once those metrics
// are exported (the test then requires them on the scrape like every
// other metric).
var pendingMetrics = map[string][]string{}

// TestKitQueriesMatchTheScrape parses every PromQL expression of the deploy
// kit (each dashboard target, each template variable's label_values, each
// Prometheus rule) and checks it against a scrape of a running control
// plane with tasks claimed, completed, failed and rescued, spend reported
// and a sidecar reporting GPUs, disks and probes: every metric it selects
// is exported, and every label it matches, groups by (by, without, on,
// ignoring, group_left/right) or reads (histogram_quantile's le) is on
// that metric. A renamed instrument or label, or a typo, fails here
// instead of drawing an empty panel.
func TestKitQueriesMatchTheScrape(t *testing.T) {
	queries := kitQueries(t)
	if len(queries) < 60 {
		t.Fatalf("only %d queries found in the deploy kit; is the walker broken?", len(queries))
	}
	wanted := map[string][]string{}
	for _, q := range queries {
		n, err := pqParse(q.expr)
		if err != nil {
			t.Errorf("%s: does not parse: %v\n\t%s", q.where, err, q.expr)
			continue
		}
		for _, m := range pqMetrics(n) {
			wanted[m] = append(wanted[m], q.where)
		}
	}
	addr := startWithData(t)
	// Counters appear once the sweeper has rescued the expired lease; the
	// sweeper runs on its own tick, so scrape until everything is there.
	var scrape map[string]map[string]bool
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		scrape = scrapeLabels(t, addr)
		missing := 0
		for m := range wanted {
			if _, pending := pendingMetrics[m]; scrape[m] == nil && !pending {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
	}
	schema := kitSchema(t, scrape)
	for m := range pendingMetrics {
		if scrape[m] != nil {
			t.Logf("pending metric %s is exported now: remove it from pendingMetrics", m)
		}
	}
	for _, q := range queries {
		for _, p := range pqCheck(q.expr, schema) {
			hint := ""
			for prefix, h := range unwiredHint {
				if strings.Contains(p, `"`+prefix) && strings.Contains(p, "not exported") {
					hint = "\n\tits source may not be wired into the running control plane: " + h
				}
			}
			t.Errorf("%s: %s%s\n\t%s", q.where, p, hint, q.expr)
		}
	}

	// The check catches a renamed label or metric in every query: each
	// label a query names, renamed, and each metric, renamed, fails it.
	t.Run("renamed", func(t *testing.T) {
		labels, metrics := 0, 0
		for _, q := range queries {
			n, err := pqParse(q.expr)
			if err != nil {
				continue
			}
			for _, l := range pqLabelNames(n) {
				mutated := pqRenameIdent(t, q.expr, l, l+"_renamed")
				if problems := pqCheck(mutated, schema); !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, l+"_renamed") }) {
					t.Errorf("%s: label %s renamed to %s_renamed passes the check (%v)\n\t%s", q.where, l, l, problems, mutated)
				}
				labels++
			}
			for _, m := range pqMetrics(n) {
				mutated := pqRenameIdent(t, q.expr, m, m+"_renamed")
				if problems := pqCheck(mutated, schema); !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, m+"_renamed") }) {
					t.Errorf("%s: metric %s renamed passes the check (%v)", q.where, m, problems)
				}
				metrics++
			}
		}
		t.Logf("%d queries: %d label names and %d metric names renamed, each caught", len(queries), labels, metrics)
		if labels < 50 || metrics < 60 {
			t.Errorf("only %d labels and %d metrics renamed", labels, metrics)
		}
		// The label the Factory Overview's error ratio once filtered on:
		// otelgrpc names the status rpc_response_status_code.
		broken := `sum(rate(rpc_server_call_duration_seconds_count{error_type!=""}[$__rate_interval])) / sum(rate(rpc_server_call_duration_seconds_count[$__rate_interval]))`
		if problems := pqCheck(broken, schema); len(problems) != 1 || !strings.Contains(problems[0], `"error_type"`) {
			t.Errorf("the error_type filter: %v", problems)
		}
	})
}

// kitSchema answers which labels a metric has: the scrape's, else the
// pending metric's declared ones; Prometheus adds job, instance and the
// scrape config's target labels to every series.
func kitSchema(t *testing.T, scrape map[string]map[string]bool) pqSchema {
	extra := []string{"job", "instance"}
	raw, err := os.ReadFile(filepath.Join(deployDir, "prometheus/prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var prom struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(raw, &prom); err != nil {
		t.Fatal(err)
	}
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for l := range st.Labels {
				extra = append(extra, l)
			}
		}
	}
	return func(metric string) (map[string]bool, bool) {
		have, ok := scrape[metric]
		if !ok {
			var pending []string
			if pending, ok = pendingMetrics[metric]; !ok {
				return nil, false
			}
			have = map[string]bool{}
			for _, l := range pending {
				have[l] = true
			}
		}
		out := map[string]bool{}
		for l := range have {
			out[l] = true
		}
		for _, l := range extra {
			out[l] = true
		}
		return out, true
	}
}

type kitQuery struct{ where, expr string }

// kitQueries returns every PromQL expression of the deploy kit: the
// dashboards' targets and label_values variables (as `group by (label)
// (metric)`, which checks both names), and the expr of every rule in a
// Prometheus rule file (a YAML file with groups of rules).
func kitQueries(t *testing.T) []kitQuery {
	t.Helper()
	var out []kitQuery
	dashboards, err := filepath.Glob(filepath.Join(deployDir, "grafana/dashboards/*.json"))
	if err != nil || len(dashboards) == 0 {
		t.Fatalf("no dashboards under %s: %v", deployDir, err)
	}
	for _, f := range dashboards {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d map[string]any
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, dashboardExprs(t, filepath.Base(f), d, "")...)
	}
	return append(out, ruleQueries(t, deployDir)...)
}

// ruleQueries returns the expr of every rule in the Prometheus rule files
// (YAML files with groups of rules) under dir.
func ruleQueries(t *testing.T, dir string) []kitQuery {
	t.Helper()
	var out []kitQuery
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var rules struct {
			Groups []struct {
				Rules []struct {
					Alert  string `yaml:"alert"`
					Record string `yaml:"record"`
					Expr   string `yaml:"expr"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		if yaml.Unmarshal(raw, &rules) != nil {
			return nil // not a rule file (deploy's tests check every file parses)
		}
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				out = append(out, kitQuery{fmt.Sprintf("%s: rule %s%s", path, r.Alert, r.Record), r.Expr})
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A Prometheus rule file anywhere under the kit is found, and its
// expressions checked like the dashboards'.
func TestRuleFilesAreChecked(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"prometheus/rules/factory.yml": "groups:\n- name: factory\n  rules:\n  - alert: DeadLetter\n    expr: factory_queue_depth{state=\"failed\"} > 0\n" +
			"  - record: factory:claims:rate5m\n    expr: sum by (agent) (rate(factory_queue_claims_total[5m]))\n",
		"compose.yaml": "services:\n  x:\n    image: y\n",
		"alerts.yaml":  "rules:\n  - name: x\n    expr: spend_daily_micros\n",
	}
	for name, body := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	qs := ruleQueries(t, dir)
	if len(qs) != 2 || !strings.HasSuffix(qs[0].where, "rule DeadLetter") || qs[1].expr != "sum by (agent) (rate(factory_queue_claims_total[5m]))" {
		t.Fatalf("rule queries: %+v", qs)
	}
	schema := func(m string) (map[string]bool, bool) {
		return map[string]bool{"state": true}, m == "factory_queue_depth" || m == "factory_queue_claims_total"
	}
	if p := pqCheck(qs[0].expr, schema); len(p) != 0 {
		t.Errorf("%s: %v", qs[0].where, p)
	}
	if p := pqCheck(qs[1].expr, schema); len(p) != 1 || !strings.Contains(p[0], `"agent"`) {
		t.Errorf("%s: %v, want agent missing", qs[1].where, p)
	}
}

// dashboardExprs walks a dashboard's JSON for each target's "expr" (named
// by its panel's title) and each variable's label_values(metric, label).
func dashboardExprs(t *testing.T, file string, v any, panel string) []kitQuery {
	var out []kitQuery
	switch v := v.(type) {
	case map[string]any:
		if title, ok := v["title"].(string); ok {
			panel = title
		}
		if expr, ok := v["expr"].(string); ok {
			out = append(out, kitQuery{fmt.Sprintf("%s: panel %q", file, panel), expr})
		}
		if def, ok := v["definition"].(string); ok && strings.HasPrefix(strings.TrimSpace(def), "label_values(") {
			args := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(def), "label_values("), ")")
			metric, label, ok := strings.Cut(args, ",")
			where := fmt.Sprintf("%s: variable %q", file, v["name"])
			if !ok {
				t.Errorf("%s: label_values without a metric: %s", where, def)
			} else {
				out = append(out, kitQuery{where, fmt.Sprintf("group by (%s) (%s)", strings.TrimSpace(label), strings.TrimSpace(metric))})
			}
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if k != "expr" {
				out = append(out, dashboardExprs(t, file, v[k], panel)...)
			}
		}
	case []any:
		for _, child := range v {
			out = append(out, dashboardExprs(t, file, child, panel)...)
		}
	}
	return out
}

// scrapeLabels GETs /metrics and returns each sample name with the label
// names its series carry.
func scrapeLabels(t *testing.T, addr string) map[string]map[string]bool {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	out := map[string]map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, labels, err := parseSampleLine(sc.Text())
		if err != nil {
			t.Fatalf("/metrics: %v", err)
		}
		if name == "" {
			continue
		}
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for _, l := range labels {
			out[name][l] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// parseSampleLine reads one line of the Prometheus text format: a sample's
// name and label names ("" for comments and blank lines).
func parseSampleLine(line string) (name string, labels []string, err error) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", nil, nil
	}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return "", nil, fmt.Errorf("not a sample: %q", line)
	}
	name = line[:i]
	if line[i] != '{' {
		return name, nil, nil
	}
	rest := line[i+1:]
	for {
		rest = strings.TrimLeft(rest, " ,")
		if strings.HasPrefix(rest, "}") {
			return name, labels, nil
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
			return "", nil, fmt.Errorf("bad label in %q", line)
		}
		labels = append(labels, strings.TrimSpace(rest[:eq]))
		j := eq + 2
		for ; j < len(rest) && rest[j] != '"'; j++ {
			if rest[j] == '\\' {
				j++
			}
		}
		if j >= len(rest) {
			return "", nil, fmt.Errorf("unterminated label value in %q", line)
		}
		rest = rest[j+1:]
	}
}

// pqMetrics returns the metric names n selects, in order, once each.
func pqMetrics(n pqNode) []string {
	var out []string
	pqWalk(n, func(n pqNode) {
		if s, ok := n.(*pqSelector); ok && !slices.Contains(out, s.name) {
			out = append(out, s.name)
		}
	})
	return out
}

// pqLabelNames returns the label names n names (matchers, groupings,
// on/ignoring, group_left/right), once each.
func pqLabelNames(n pqNode) []string {
	var out []string
	add := func(ls ...string) {
		for _, l := range ls {
			if l != "__name__" && !slices.Contains(out, l) {
				out = append(out, l)
			}
		}
	}
	pqWalk(n, func(n pqNode) {
		switch n := n.(type) {
		case *pqSelector:
			for _, m := range n.matchers {
				add(m.label)
			}
		case *pqAgg:
			add(n.grouping...)
		case *pqBinary:
			add(n.labels...)
			add(n.include...)
		}
	})
	return out
}

func pqWalk(n pqNode, f func(pqNode)) {
	f(n)
	switch n := n.(type) {
	case *pqRange:
		pqWalk(n.expr, f)
	case *pqModifier:
		pqWalk(n.expr, f)
	case *pqUnary:
		pqWalk(n.expr, f)
	case *pqAgg:
		if n.param != nil {
			pqWalk(n.param, f)
		}
		pqWalk(n.expr, f)
	case *pqCall:
		for _, a := range n.args {
			pqWalk(a, f)
		}
	case *pqBinary:
		pqWalk(n.lhs, f)
		pqWalk(n.rhs, f)
	}
}

// pqRenameIdent renames every identifier token from to to in expr
// (strings and variables are left alone).
func pqRenameIdent(t *testing.T, expr, from, to string) string {
	t.Helper()
	toks, err := pqLex(expr)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	last := 0
	for _, tok := range toks {
		if tok.kind == pqIdent && tok.text == from {
			b.WriteString(expr[last:tok.pos])
			b.WriteString(to)
			last = tok.pos + len(from)
		}
	}
	b.WriteString(expr[last:])
	return b.String()
}
