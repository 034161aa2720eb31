package cli

import (
	"strings"
	"testing"
)

// TestPipelineTemplateErrorsNameStageAndField proves a bad template is
// refused with an error naming the stage and the field at fault.
func TestPipelineTemplateErrorsNameStageAndField(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown dependency", `
name: x
stages:
  - {name: research, role: researcher}
  - {name: plan, role: architect, depends_on: [reserch]}
`, `stage "plan": depends_on: unknown stage "reserch"`},
		{"cycle", `
name: x
stages:
  - {name: a, role: r, depends_on: [c]}
  - {name: b, role: r, depends_on: [a]}
  - {name: c, role: r, depends_on: [b]}
`, `depends_on: cycle a → c → b → a`},
		{"self", `
name: x
stages:
  - {name: a, role: r, depends_on: [a]}
`, `stage "a": depends_on: a stage cannot depend on itself`},
		{"duplicate stage", `
name: x
stages:
  - {name: build, role: builder}
  - {name: build, role: tester}
`, `stage "build": name: duplicate: stage 1 is also named "build"`},
		{"missing role", `
name: x
stages:
  - {name: build}
`, `stage "build": role: required`},
		{"missing name", `
name: x
stages:
  - {role: builder}
`, `stage 1: name: required`},
		{"bad title", `
name: x
stages:
  - {name: a, role: r, title: "{{.Nope}}"}
`, `stage "a": title:`},
		{"reserved label", `
name: x
stages:
  - {name: a, role: r, labels: {pipeline: other}}
`, `stage "a": labels: "pipeline" is set by the pipeline itself`},
		{"priority", `
name: x
stages:
  - {name: a, role: r, priority: 5000}
`, `stage "a": priority: 5000 is outside -1000 to 1000`},
		{"unknown field", `
name: x
stages:
  - {name: a, role: r, dependson: [b]}
`, `field dependson not found`},
		{"no stages", `name: x`, `stages: at least one stage is required`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parsePipelineTemplate("test.yaml", []byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
			if !strings.Contains(err.Error(), "test.yaml") {
				t.Fatalf("error %v does not name the template", err)
			}
		})
	}
}

// TestBuiltinBuildPipeline checks the shipped build template: the
// runbook's five stages for their roles, in a chain, the deploy gated,
// and the tasks of a run ordered dependencies first with the pipeline's
// labels and the input in each payload.
func TestBuiltinBuildPipeline(t *testing.T) {
	tmpl, err := loadPipelineTemplate("build")
	if err != nil {
		t.Fatal(err)
	}
	req, err := tmpl.requests("p1", "A URL shortener SaaS\nwith analytics")
	if err != nil {
		t.Fatal(err)
	}
	roles := []string{"researcher", "architect", "builder", "tester", "deployer"}
	stages := []string{"research", "plan", "build", "test", "deploy"}
	if len(req.GetTasks()) != len(stages) {
		t.Fatalf("%d tasks", len(req.GetTasks()))
	}
	for i, task := range req.GetTasks() {
		if task.GetTaskId() != "p1-"+stages[i] || task.GetRole() != roles[i] {
			t.Errorf("task %d: %s for %s", i, task.GetTaskId(), task.GetRole())
		}
		if l := task.GetLabels(); l["pipeline"] != "p1" || l["stage"] != stages[i] || l["template"] != "build" {
			t.Errorf("task %d: labels %v", i, l)
		}
		if !strings.Contains(task.GetPayloadJson(), `"input":"A URL shortener SaaS\nwith analytics"`) {
			t.Errorf("task %d: payload %s", i, task.GetPayloadJson())
		}
		if i > 0 && (len(task.GetDependsOn()) != 1 || task.GetDependsOn()[0] != "p1-"+stages[i-1]) {
			t.Errorf("task %d depends on %v", i, task.GetDependsOn())
		}
		if strings.Contains(task.GetTitle(), "analytics") || !strings.Contains(task.GetTitle(), "A URL shortener SaaS") {
			t.Errorf("task %d: title %q, want the input's first line", i, task.GetTitle())
		}
	}
	deploy := req.GetTasks()[4]
	if !deploy.GetRequiresApproval() || deploy.GetKind() != "production_deploy" {
		t.Errorf("deploy stage: requires_approval %v, kind %q", deploy.GetRequiresApproval(), deploy.GetKind())
	}
}

// TestPipelineOrderPutsDependenciesFirst: stages listed before the ones
// they depend on are created after them.
func TestPipelineOrderPutsDependenciesFirst(t *testing.T) {
	tmpl, err := parsePipelineTemplate("t", []byte(`
name: x
stages:
  - {name: deploy, role: r, depends_on: [test, build]}
  - {name: test, role: r, depends_on: [build]}
  - {name: build, role: r}
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range tmpl.order() {
		got = append(got, s.Name)
	}
	if strings.Join(got, ",") != "build,test,deploy" {
		t.Fatalf("order %v", got)
	}
}
