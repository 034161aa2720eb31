package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
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

// dsVar is how every panel, target and query variable names its
// datasource: the dashboard's own ${datasource} variable, so the
// dashboards import into any Grafana, whatever its Prometheus's uid.
var dsVar = map[string]any{"type": "prometheus", "uid": "${datasource}"}

func TestDashboardsAreTheRunbooksAndUseTheDatasourceVariable(t *testing.T) {
	// The compose file's Grafana: its Prometheus is the default one, which
	// is what a datasource variable starts on.
	provisioned := 0
	for _, doc := range decodeYAML(t, "grafana/provisioning/datasources/prometheus.yaml") {
		for _, ds := range doc["datasources"].([]any) {
			ds := ds.(map[string]any)
			if ds["type"] == "prometheus" && ds["isDefault"] == true {
				provisioned++
			}
		}
	}
	if provisioned != 1 {
		t.Errorf("%d default Prometheus datasources provisioned, want 1", provisioned)
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
		templating, _ := d["templating"].(map[string]any)
		vars, _ := templating["list"].([]any)
		hasVar := false
		for _, v := range vars {
			v := v.(map[string]any)
			if v["name"] == "datasource" {
				hasVar = v["type"] == "datasource" && v["query"] == "prometheus"
				if !hasVar {
					t.Errorf("%s: variable datasource is %v, want type datasource, query prometheus", f, v)
				}
			} else if v["type"] == "query" && !reflect.DeepEqual(v["datasource"], dsVar) {
				t.Errorf("%s: variable %q uses datasource %v, not %v", f, v["name"], v["datasource"], dsVar)
			}
		}
		if !hasVar {
			t.Errorf("%s: no datasource variable", f)
		}
		// Every datasource reference anywhere in the JSON is the variable.
		for _, ref := range datasourceRefs(d, "") {
			if !reflect.DeepEqual(ref.ds, dsVar) {
				t.Errorf("%s: %s uses datasource %v, not %v", f, ref.where, ref.ds, dsVar)
			}
		}
		targets := 0
		for _, p := range allPanels(d) {
			if p["type"] == "row" {
				continue
			}
			if !reflect.DeepEqual(p["datasource"], dsVar) {
				t.Errorf("%s: panel %q uses datasource %v, not %v", f, p["title"], p["datasource"], dsVar)
			}
			ts, _ := p["targets"].([]any)
			if len(ts) == 0 {
				t.Errorf("%s: panel %q has no query", f, p["title"])
			}
			for _, tg := range ts {
				tg := tg.(map[string]any)
				if expr, _ := tg["expr"].(string); strings.TrimSpace(expr) == "" {
					t.Errorf("%s: panel %q has an empty query", f, p["title"])
				}
				if !reflect.DeepEqual(tg["datasource"], dsVar) {
					t.Errorf("%s: panel %q, query %v uses datasource %v, not %v", f, p["title"], tg["refId"], tg["datasource"], dsVar)
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

// allPanels returns a dashboard's panels, with those inside rows.
func allPanels(d map[string]any) []map[string]any {
	var out []map[string]any
	var walk func([]any)
	walk = func(ps []any) {
		for _, p := range ps {
			p := p.(map[string]any)
			out = append(out, p)
			nested, _ := p["panels"].([]any)
			walk(nested)
		}
	}
	ps, _ := d["panels"].([]any)
	walk(ps)
	return out
}

type dsRef struct {
	where string
	ds    any
}

// datasourceRefs returns every "datasource" value in v, named by the
// panel or variable around it.
func datasourceRefs(v any, where string) []dsRef {
	var out []dsRef
	switch v := v.(type) {
	case map[string]any:
		if title, ok := v["title"].(string); ok {
			where = "panel " + strconv.Quote(title)
		} else if name, ok := v["name"].(string); ok {
			where = "variable " + strconv.Quote(name)
		}
		for k, c := range v {
			if k == "datasource" {
				out = append(out, dsRef{where, c})
				continue
			}
			out = append(out, datasourceRefs(c, where)...)
		}
	case []any:
		for _, c := range v {
			out = append(out, datasourceRefs(c, where)...)
		}
	}
	return out
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

// runbookPorts are the host ports the runbook's services already hold on
// a factory host: the ones deploy/sidecar.yaml probes, TimescaleDB (5432),
// Redis (6379) and Grafana (3001) among them. The control plane's own
// probe is left out: compose.yaml's control plane is that service.
func runbookPorts(t *testing.T) map[string]string {
	t.Helper()
	ports := map[string]string{"5432": "TimescaleDB", "6379": "Redis", "3001": "Grafana"}
	docs := decodeYAML(t, "sidecar.yaml")
	probes, _ := docs[0]["probes"].([]any)
	for _, p := range probes {
		p := p.(map[string]any)
		name, _ := p["name"].(string)
		target, _ := p["target"].(string)
		if name == "controlplane" {
			continue
		}
		hostport := target
		if u, err := url.Parse(target); err == nil && u.Host != "" {
			hostport = u.Host
		}
		_, port, err := net.SplitHostPort(hostport)
		if err != nil {
			t.Errorf("sidecar.yaml: probe %s's target %q names no port", name, target)
			continue
		}
		ports[port] = name
	}
	if len(ports) < 10 {
		t.Fatalf("only %d runbook ports found: %v", len(ports), ports)
	}
	return ports
}

// publishedPorts returns each host port a compose service publishes.
func publishedPorts(t *testing.T, service map[string]any) []string {
	t.Helper()
	var out []string
	ports, _ := service["ports"].([]any)
	for _, p := range ports {
		spec, ok := p.(string)
		if !ok {
			t.Fatalf("compose.yaml: port %v is not in the short syntax", p)
		}
		spec, _, _ = strings.Cut(spec, "/")
		parts := strings.Split(spec, ":")
		if len(parts) < 2 {
			t.Errorf("compose.yaml: port %q publishes on a random host port", spec)
			continue
		}
		out = append(out, parts[len(parts)-2])
	}
	return out
}

// The compose file runs beside the runbook's services on one host: it
// publishes none of their ports, and no port twice.
func TestComposePublishesNoRunbookPort(t *testing.T) {
	runbook := runbookPorts(t)
	services, _ := decodeYAML(t, "compose.yaml")[0]["services"].(map[string]any)
	seen := map[string]string{}
	for name, s := range services {
		for _, port := range publishedPorts(t, s.(map[string]any)) {
			if owner, ok := runbook[port]; ok {
				t.Errorf("compose.yaml: %s publishes host port %s, where the runbook's %s runs", name, port, owner)
			}
			if other, ok := seen[port]; ok {
				t.Errorf("compose.yaml: %s and %s both publish host port %s", name, other, port)
			}
			seen[port] = name
		}
	}
	if seen["7420"] != "controlplane" || seen["9090"] != "prometheus" || seen["3002"] != "grafana" {
		t.Errorf("compose.yaml publishes %v; want the control plane on 7420, Prometheus on 9090 and Grafana on 3002 (as its header says)", seen)
	}
}

// The control plane's container has a health check that runs the image's
// own binary (distroless: no shell), through its healthcheck subcommand
// (tested in controlplane/cmd/factory-controlplane), and Prometheus waits
// for it.
func TestComposeControlPlaneHasAHealthcheck(t *testing.T) {
	services, _ := decodeYAML(t, "compose.yaml")[0]["services"].(map[string]any)
	cp, _ := services["controlplane"].(map[string]any)
	hc, _ := cp["healthcheck"].(map[string]any)
	test, _ := hc["test"].([]any)
	dockerfile, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if len(test) != 3 || test[0] != "CMD" || test[2] != "healthcheck" {
		t.Fatalf("the control plane's healthcheck is %v, want [CMD <binary> healthcheck]", hc["test"])
	}
	if bin := test[1].(string); !strings.Contains(string(dockerfile), `ENTRYPOINT ["`+bin+`"]`) {
		t.Errorf("the healthcheck runs %s, which is not the image's entrypoint", bin)
	}
	for _, k := range []string{"interval", "timeout", "retries"} {
		if hc[k] == nil {
			t.Errorf("the control plane's healthcheck has no %s", k)
		}
	}
	main, err := os.ReadFile("../controlplane/cmd/factory-controlplane/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(main), `args[0] == "healthcheck"`) {
		t.Error("factory-controlplane has no healthcheck subcommand")
	}
	prom, _ := services["prometheus"].(map[string]any)
	deps, _ := prom["depends_on"].(map[string]any)
	if dep, _ := deps["controlplane"].(map[string]any); dep["condition"] != "service_healthy" {
		t.Errorf("Prometheus does not wait for a healthy control plane: depends_on %v", prom["depends_on"])
	}
}

// Both sidecar configs turn on the LiteLLM poller (spend.litellm; that
// they load through the sidecar's own loader is checked in
// sidecar/cmd/factory-sidecar), pointed at the LiteLLM their probes
// check; the sidecar unit says where its key goes, and every FACTORY_*
// variable the unit names is one the sidecar reads.
func TestSidecarKitRunsTheLiteLLMPoller(t *testing.T) {
	for _, f := range []string{"sidecar.yaml", "examples/sidecar.yaml"} {
		doc := decodeYAML(t, f)[0]
		spend, _ := doc["spend"].(map[string]any)
		lite, _ := spend["litellm"].(map[string]any)
		u, _ := lite["url"].(string)
		pu, err := url.Parse(u)
		if u == "" || err != nil || pu.Scheme != "http" {
			t.Errorf("%s: spend.litellm.url is %q", f, u)
			continue
		}
		if lite["interval"] == nil {
			t.Errorf("%s: spend.litellm has no interval", f)
		}
		probed := false
		probes, _ := doc["probes"].([]any)
		for _, p := range probes {
			p := p.(map[string]any)
			if target, _ := p["target"].(string); p["name"] == "litellm" && strings.HasPrefix(target, u+"/") {
				probed = true
			}
		}
		if !probed {
			t.Errorf("%s: the poller reads %s, which no litellm probe checks", f, u)
		}
	}
	raw, err := os.ReadFile("systemd/factory-sidecar.service")
	if err != nil {
		t.Fatal(err)
	}
	named := regexp.MustCompile(`FACTORY_[A-Z_]+`).FindAllString(string(raw), -1)
	if !slices.Contains(named, "FACTORY_LITELLM_KEY") {
		t.Errorf("the sidecar unit does not say where the LiteLLM poller's key goes (FACTORY_LITELLM_KEY); it names %v", named)
	}
	var src strings.Builder
	files, _ := filepath.Glob("../sidecar/cmd/factory-sidecar/*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
	}
	for _, v := range named {
		if !strings.Contains(src.String(), `"`+v+`"`) {
			t.Errorf("the sidecar unit names %s, which factory-sidecar does not read", v)
		}
	}
}
