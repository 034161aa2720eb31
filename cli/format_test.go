package cli_test

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestOutputFormats drives -o through the built binary: yaml is the JSON's
// data, a template prints what it says, wide has its columns, and a bad
// value is a usage error naming the good ones.
func TestOutputFormats(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the factory binary; skipped under -short")
	}
	bin := factoryBinary(t)
	sh := newShell(t)
	e := &e2e{t: t, bin: bin, addr: sh.addr, stateFile: sh.stateFile, env: []string{"FACTORY_TOKEN=" + sh.token}}

	// Values YAML could get wrong: a title a YAML 1.1 reader takes for a
	// boolean, a number-like label, and an agent's title with an ESC, a
	// bidi override and a newline, which must stay exact in YAML and
	// escaped on the terminal.
	sh.ok("task", "create", "--id", "plain", "--title", "yes", "--kind", "deploy", "--role", "tester",
		"--priority", "7", "--max-attempts", "4", "--label", "env=prod", "--label", "build=0123", "--payload", `{"n":1.5,"big":12345678901234567890}`)
	sh.ok("task", "create", "--id", "nasty", "--title", "evil\x1b[2J\u202etitle\nsecond line", "--role", "researcher", "--label", "note=1:20")
	sh.ok("task", "create", "--id", "claimed", "--title", "Being built", "--role", "builder", "--assignee", "b1")
	if r := sh.agent("claim", "b1", "--role", "builder"); r.code != 0 || !strings.Contains(r.stdout, "claimed") {
		t.Fatalf("claim: %+v", r)
	}

	t.Run("yaml round-trips to the json data", func(t *testing.T) {
		for _, args := range [][]string{{"task", "ls"}, {"status"}, {"task", "show", "nasty"}} {
			var fromJSON any
			e.jsonOf(&fromJSON, append(args, "-o", "json")...)
			out := e.ok(append(args, "-o", "yaml")...)
			if strings.ContainsAny(out, "\x1b\u202e") {
				t.Fatalf("%v -o yaml printed a raw escape or bidi override:\n%s", args, out)
			}
			var fromYAML any
			if err := yaml.Unmarshal([]byte(out), &fromYAML); err != nil {
				t.Fatalf("%v -o yaml is not YAML: %v\n%s", args, err, out)
			}
			// yaml decodes 7 as int and JSON as float64: compare the data
			// as JSON would hold it.
			b, err := json.Marshal(fromYAML)
			if err != nil {
				t.Fatal(err)
			}
			var normalised any
			if err := json.Unmarshal(b, &normalised); err != nil {
				t.Fatal(err)
			}
			// status reports the age of the oldest task, which moves
			// between the two calls.
			dropAges(normalised)
			dropAges(fromJSON)
			if !reflect.DeepEqual(normalised, fromJSON) {
				t.Fatalf("%v: -o yaml is not the -o json data\nyaml:\n%s\njson:\n%v", args, out, fromJSON)
			}
		}
		// The same key order as the JSON, and a YAML 1.1 boolean word quoted.
		out := e.ok("task", "show", "plain", "-o", "yaml")
		if !strings.HasPrefix(out, "id: plain\ntitle: \"yes\"\n") {
			t.Fatalf("task show -o yaml:\n%s", out)
		}
	})

	t.Run("template prints the fields it names", func(t *testing.T) {
		var list []map[string]any
		e.jsonOf(&list, "task", "ls", "-o", "json")
		var want []string
		for _, task := range list {
			want = append(want, task["id"].(string)+" "+task["state"].(string))
		}
		out := e.ok("task", "ls", "-o", `template={{range .}}{{.id}} {{.state}}{{"\n"}}{{end}}`)
		got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		sort.Strings(got)
		sort.Strings(want)
		if !reflect.DeepEqual(got, want) || len(got) != 3 {
			t.Fatalf("template output %q, want lines %q", out, want)
		}
		// kubectl's spelling, numbers as the JSON wrote them, json for
		// nested values.
		out = e.ok("task", "show", "plain", "-o", `go-template={{.priority}} {{.max_attempts}} {{json .labels}}`)
		if out != `7 4 {"build":"0123","env":"prod"}` {
			t.Fatalf("go-template output %q", out)
		}
		// An agent's title cannot break the line or reach the terminal raw.
		out = e.ok("task", "show", "nasty", "-o", `template={{.title}}`)
		if out != `evil\x1b[2J\u202etitle\nsecond line` {
			t.Fatalf("template printed the title as %q", out)
		}
		// A misspelt key fails instead of printing "<no value>".
		r := e.run("task", "show", "plain", "-o", "template={{.titel}}")
		if r.code != 1 || !strings.Contains(r.stderr, "titel") {
			t.Fatalf("missing key: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("wide adds columns", func(t *testing.T) {
		narrow := e.ok("task", "ls")
		wide := e.ok("task", "ls", "-o", "wide")
		header := strings.SplitN(wide, "\n", 2)[0]
		for _, col := range []string{"KIND", "ASSIGNEE", "HOLDER", "ATTEMPT", "LEASE EXPIRES", "RUN AFTER", "LABELS", "PRI"} {
			if !strings.Contains(header, col) {
				t.Fatalf("task ls -o wide has no %s column:\n%s", col, wide)
			}
		}
		if strings.Contains(narrow, "KIND") || strings.Contains(narrow, "LABELS") {
			t.Fatalf("task ls grew the wide columns:\n%s", narrow)
		}
		for _, cell := range []string{"deploy", "build=0123,env=prod", "0/4", "b1", "in "} {
			if !strings.Contains(wide, cell) {
				t.Fatalf("task ls -o wide lacks %q:\n%s", cell, wide)
			}
		}
		if strings.ContainsAny(wide, "\x1b\u202e") {
			t.Fatalf("task ls -o wide printed a raw escape:\n%s", wide)
		}
		tokens := e.ok("token", "ls", "-o", "wide")
		if !strings.Contains(tokens, "CREATED BY") || !strings.Contains(tokens, "REVOKED") || !strings.Contains(tokens, "bootstrap") {
			t.Fatalf("token ls -o wide:\n%s", tokens)
		}
		// A command without a wide form prints its table.
		if got, want := e.ok("whoami", "-o", "wide"), e.ok("whoami"); got != want {
			t.Fatalf("whoami -o wide:\n%s\nwant the table:\n%s", got, want)
		}
	})

	t.Run("a bad value is a usage error naming the good ones", func(t *testing.T) {
		for _, value := range []string{"xml", "template=", "template={{.id", "json=x"} {
			r := e.run("task", "ls", "-o", value)
			if r.code != 2 || r.stdout != "" {
				t.Fatalf("-o %q: exit %d, stdout %q, want exit 2 and nothing printed", value, r.code, r.stdout)
			}
			if value == "xml" {
				for _, name := range []string{"table", "wide", "json", "yaml", "template="} {
					if !strings.Contains(r.stderr, name) {
						t.Fatalf("-o xml: error does not name %s: %s", name, r.stderr)
					}
				}
			}
		}
	})
}

// dropAges removes every "*_age" key: a span measured at the moment of the
// call.
func dropAges(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, val := range v {
			if strings.HasSuffix(k, "_age") {
				delete(v, k)
				continue
			}
			dropAges(val)
		}
	case []any:
		for _, val := range v {
			dropAges(val)
		}
	}
}
