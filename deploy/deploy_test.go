package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// kitFiles returns every file under deploy/ with one of exts.
func kitFiles(t *testing.T, exts ...string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && slices.Contains(exts, filepath.Ext(path)) {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("no %v files under deploy/", exts)
	}
	return out
}

func decodeYAML(t *testing.T, path string) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return nil
		}
		docs = append(docs, doc)
	}
	return docs
}

func decodeJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Errorf("%s: %v", path, err)
	}
	return v
}

func TestEveryYAMLAndJSONFileParses(t *testing.T) {
	for _, f := range kitFiles(t, ".yaml", ".yml") {
		if docs := decodeYAML(t, f); len(docs) == 0 {
			t.Errorf("%s: empty", f)
		}
	}
	for _, f := range kitFiles(t, ".json") {
		decodeJSON(t, f)
	}
}

// The four dashboards the runbook names, by file.
var runbookDashboards = map[string]string{
	"factory-overview.json":  "Factory Overview",
	"llm-costs.json":         "LLM Costs",
	"agent-performance.json": "Agent Performance",
	"infrastructure.json":    "Infrastructure",
}

func TestDashboardsAreTheRunbooksAndUseTheProvisionedDatasource(t *testing.T) {
	var dsUID string
	for _, doc := range decodeYAML(t, "grafana/provisioning/datasources/prometheus.yaml") {
		for _, ds := range doc["datasources"].([]any) {
			dsUID = ds.(map[string]any)["uid"].(string)
		}
	}
	if dsUID == "" {
		t.Fatal("the datasource provisioning names no uid")
	}
	files, _ := filepath.Glob("grafana/dashboards/*.json")
	var names []string
	uids := map[string]string{}
	for _, f := range files {
		names = append(names, filepath.Base(f))
		d := decodeJSON(t, f)
		if want := runbookDashboards[filepath.Base(f)]; d["title"] != want {
			t.Errorf("%s: title %q, want %q", f, d["title"], want)
		}
		uid, _ := d["uid"].(string)
		if uid == "" || uids[uid] != "" {
			t.Errorf("%s: uid %q missing or also used by %s", f, uid, uids[uid])
		}
		uids[uid] = f
		panels, _ := d["panels"].([]any)
		targets := 0
		for _, p := range panels {
			p := p.(map[string]any)
			if p["type"] == "row" {
				continue
			}
			if ds, _ := p["datasource"].(map[string]any); ds["uid"] != dsUID {
				t.Errorf("%s: panel %q uses datasource %v, not the provisioned %q", f, p["title"], p["datasource"], dsUID)
			}
			ts, _ := p["targets"].([]any)
			if len(ts) == 0 {
				t.Errorf("%s: panel %q has no query", f, p["title"])
			}
			for _, tg := range ts {
				if expr, _ := tg.(map[string]any)["expr"].(string); strings.TrimSpace(expr) == "" {
					t.Errorf("%s: panel %q has an empty query", f, p["title"])
				}
				targets++
			}
		}
		if targets < 5 {
			t.Errorf("%s: only %d queries", f, targets)
		}
	}
	slices.Sort(names)
	var want []string
	for n := range runbookDashboards {
		want = append(want, n)
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("dashboards %v, want exactly %v", names, want)
	}
}

func TestComposeMountsFilesThatExistAndPrometheusScrapesTheMetricsPort(t *testing.T) {
	docs := decodeYAML(t, "compose.yaml")
	if len(docs) != 1 {
		t.Fatalf("compose.yaml: %d documents", len(docs))
	}
	services, _ := docs[0]["services"].(map[string]any)
	for _, want := range []string{"postgres", "redis", "jaeger", "prometheus", "grafana", "controlplane"} {
		if services[want] == nil {
			t.Errorf("compose.yaml has no %s service", want)
		}
	}
	for name, s := range services {
		vols, _ := s.(map[string]any)["volumes"].([]any)
		for _, v := range vols {
			src, _, _ := strings.Cut(v.(string), ":")
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(src); err != nil {
					t.Errorf("compose.yaml: %s mounts %s: %v", name, src, err)
				}
			}
		}
	}
	cp, _ := services["controlplane"].(map[string]any)
	build, _ := cp["build"].(map[string]any)
	if df, _ := build["dockerfile"].(string); df == "" {
		t.Error("the control plane is not built from a Dockerfile")
	} else if _, err := os.Stat(filepath.Join("..", df)); err != nil {
		t.Errorf("compose.yaml builds from %s: %v", df, err)
	}
	env, _ := cp["environment"].(map[string]any)
	listen, _ := env["FACTORY_METRICS_LISTEN"].(string)
	_, port, ok := strings.Cut(listen, ":")
	if !ok {
		t.Fatalf("the control plane's FACTORY_METRICS_LISTEN is %q", listen)
	}
	var targets []string
	for _, doc := range decodeYAML(t, "prometheus/prometheus.yml") {
		for _, sc := range doc["scrape_configs"].([]any) {
			for _, st := range sc.(map[string]any)["static_configs"].([]any) {
				for _, tg := range st.(map[string]any)["targets"].([]any) {
					targets = append(targets, tg.(string))
				}
			}
		}
	}
	if !slices.Contains(targets, "controlplane:"+port) {
		t.Errorf("Prometheus scrapes %v, not the control plane's metrics at controlplane:%s", targets, port)
	}
}

// unit reads a systemd unit as section -> key -> values.
func unit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Errorf("%s:%d: not key=value in a section: %q", path, n, line)
				continue
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func TestSystemdUnitsAreHardenedAndRestart(t *testing.T) {
	for _, f := range kitFiles(t, ".service") {
		u := unit(t, f)
		for _, s := range []string{"Unit", "Service", "Install"} {
			if u[s] == nil {
				t.Errorf("%s: no [%s]", f, s)
			}
		}
		svc := u["Service"]
		checks := map[string]func([]string) bool{
			"ExecStart":       func(v []string) bool { return len(v) == 1 && strings.HasPrefix(v[0], "/usr/local/bin/factory-") },
			"Restart":         func(v []string) bool { return slices.Equal(v, []string{"on-failure"}) },
			"EnvironmentFile": func(v []string) bool { return len(v) == 1 && strings.Contains(v[0], "/etc/factory/") },
			"StateDirectory":  func(v []string) bool { return len(v) == 1 && v[0] != "" },
			"NoNewPrivileges": func(v []string) bool { return slices.Equal(v, []string{"yes"}) },
			"ProtectSystem":   func(v []string) bool { return slices.Equal(v, []string{"strict"}) },
		}
		for k, ok := range checks {
			if !ok(svc[k]) {
				t.Errorf("%s: %s=%v", f, k, svc[k])
			}
		}
		if !slices.Equal(svc["DynamicUser"], []string{"yes"}) && len(svc["User"]) != 1 {
			t.Errorf("%s: runs as root (neither DynamicUser=yes nor User=)", f)
		}
	}
}
