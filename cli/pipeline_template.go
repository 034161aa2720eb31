package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/template"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/factory/factory/deploy"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// A pipeline template names the stages of a chain of tasks, each a task
// for one role that depends on earlier stages: the runbook's build
// pipeline is research → plan → build → test → deploy.
type pipelineTemplate struct {
	Name        string          `yaml:"name"`
	Description string          `yaml:"description"`
	Stages      []pipelineStage `yaml:"stages"`

	// source says where the template came from, for errors.
	source string
}

// pipelineStage is one stage: one task of the chain.
type pipelineStage struct {
	Name string `yaml:"name"`
	// Title is a Go text/template over pipelineInput; default
	// "NAME: {{.Summary}}".
	Title            string            `yaml:"title"`
	Role             string            `yaml:"role"`
	Kind             string            `yaml:"kind"`
	DependsOn        []string          `yaml:"depends_on"`
	Priority         int32             `yaml:"priority"`
	MaxAttempts      int32             `yaml:"max_attempts"`
	RequiresApproval bool              `yaml:"requires_approval"`
	Labels           map[string]string `yaml:"labels"`
	// Instructions go into the stage's payload for its agent.
	Instructions string `yaml:"instructions"`

	title *template.Template
}

// pipelineInput is what a stage's title template sees.
type pipelineInput struct {
	Input    string // the whole input
	Summary  string // its first line, at most 80 characters
	Pipeline string // the pipeline's id
	Template string // the template's name
	Stage    string // the stage's name
}

// Limits of a template and a run, within the API's: a task id is at most
// 128 characters, a title 500, a label value 256.
const (
	pipelineMaxStages   = 100
	pipelineMaxIDLen    = 64
	pipelineMaxInput    = 512 << 10
	pipelineTitleMax    = 500
	pipelineSummaryMax  = 80
	pipelineLabelPrefix = "pipeline"
)

var (
	pipelineNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	pipelineIDRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	// Reserved labels: the run sets them on every stage's task.
	pipelineLabels = []string{"pipeline", "stage", "template"}
)

// builtinPipelines is the templates the CLI ships, by name.
func builtinPipelines() fs.FS { return deploy.Pipelines() }

// builtinPipelineNames lists the shipped templates' names, sorted.
func builtinPipelineNames() []string {
	entries, _ := fs.ReadDir(builtinPipelines(), ".")
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok && !e.IsDir() {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// loadPipelineTemplate reads a template by its built-in name or, when ref
// is a path to a file (it holds a slash or ends in .yaml or .yml), from
// that file.
func loadPipelineTemplate(ref string) (*pipelineTemplate, error) {
	var (
		b      []byte
		err    error
		source = ref
	)
	isPath := strings.ContainsRune(ref, '/') || strings.HasSuffix(ref, ".yaml") || strings.HasSuffix(ref, ".yml")
	if isPath {
		b, err = os.ReadFile(ref)
	} else {
		source = "built-in template " + ref
		b, err = fs.ReadFile(builtinPipelines(), ref+".yaml")
		if errors.Is(err, fs.ErrNotExist) {
			return nil, usageErrorf("no built-in pipeline template %q (built in: %s); or give a YAML file's path", ref, strings.Join(builtinPipelineNames(), ", "))
		}
	}
	if err != nil {
		return nil, err
	}
	return parsePipelineTemplate(source, b)
}

// parsePipelineTemplate decodes and checks a template. Errors name the
// stage and the field: `stage "plan": depends_on: unknown stage "reserch"`.
func parsePipelineTemplate(source string, b []byte) (*pipelineTemplate, error) {
	var t pipelineTemplate
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("pipeline template %s: %w", source, err)
	}
	t.source = source
	if err := t.check(); err != nil {
		return nil, fmt.Errorf("pipeline template %s: %w", source, err)
	}
	return &t, nil
}

func (t *pipelineTemplate) check() error {
	switch {
	case t.Name == "":
		return errors.New("name: required")
	case !pipelineNameRE.MatchString(t.Name):
		return fmt.Errorf("name: %q must be 1 to 32 of a-z, 0-9, _ and -, starting with a letter or digit", t.Name)
	case len(t.Stages) == 0:
		return errors.New("stages: at least one stage is required")
	case len(t.Stages) > pipelineMaxStages:
		return fmt.Errorf("stages: %d stages; at most %d", len(t.Stages), pipelineMaxStages)
	}
	index := make(map[string]int, len(t.Stages))
	for i := range t.Stages {
		s := &t.Stages[i]
		where := fmt.Sprintf("stage %d", i+1)
		if s.Name != "" {
			where = fmt.Sprintf("stage %q", s.Name)
		}
		bad := func(field, format string, args ...any) error {
			return fmt.Errorf("%s: %s: %s", where, field, fmt.Sprintf(format, args...))
		}
		switch {
		case s.Name == "":
			return bad("name", "required")
		case !pipelineNameRE.MatchString(s.Name):
			return bad("name", "%q must be 1 to 32 of a-z, 0-9, _ and -, starting with a letter or digit", s.Name)
		case s.Role == "":
			return bad("role", "required: the role of the agent that works the stage")
		case len(s.Role) > 128:
			return bad("role", "at most 128 characters")
		case len(s.Kind) > 100:
			return bad("kind", "at most 100 characters")
		case s.Priority < -1000 || s.Priority > 1000:
			return bad("priority", "%d is outside -1000 to 1000", s.Priority)
		case s.MaxAttempts < 0 || s.MaxAttempts > 100:
			return bad("max_attempts", "%d is outside 0 to 100", s.MaxAttempts)
		}
		if j, dup := index[s.Name]; dup {
			return bad("name", "duplicate: stage %d is also named %q", j+1, s.Name)
		}
		index[s.Name] = i
		for k := range s.Labels {
			if slices.Contains(pipelineLabels, k) {
				return bad("labels", "%q is set by the pipeline itself", k)
			}
		}
		title := s.Title
		if title == "" {
			title = s.Name + ": {{.Summary}}"
		}
		tmpl, err := template.New(s.Name).Option("missingkey=error").Parse(title)
		if err != nil {
			return bad("title", "%v", err)
		}
		if _, err := s.render(tmpl, pipelineInput{Input: "x", Summary: "x", Pipeline: "p", Template: t.Name, Stage: s.Name}); err != nil {
			return bad("title", "%v", err)
		}
		s.title = tmpl
	}
	for i := range t.Stages {
		s := &t.Stages[i]
		seen := map[string]bool{}
		for _, d := range s.DependsOn {
			switch _, ok := index[d]; {
			case !ok:
				return fmt.Errorf("stage %q: depends_on: unknown stage %q", s.Name, d)
			case d == s.Name:
				return fmt.Errorf("stage %q: depends_on: a stage cannot depend on itself", s.Name)
			case seen[d]:
				return fmt.Errorf("stage %q: depends_on: %q named twice", s.Name, d)
			}
			seen[d] = true
		}
	}
	if cycle := t.cycle(index); cycle != nil {
		return fmt.Errorf("stage %q: depends_on: cycle %s", cycle[0], strings.Join(cycle, " → "))
	}
	return nil
}

// cycle returns a dependency cycle as stage names (the first repeated at
// the end), or nil when there is none.
func (t *pipelineTemplate) cycle(index map[string]int) []string {
	const (
		unseen = iota
		open
		closed
	)
	mark := make([]int, len(t.Stages))
	var stack []string
	var visit func(i int) []string
	visit = func(i int) []string {
		mark[i] = open
		stack = append(stack, t.Stages[i].Name)
		for _, d := range t.Stages[i].DependsOn {
			j := index[d]
			switch mark[j] {
			case open:
				from := slices.Index(stack, d)
				return append(slices.Clone(stack[from:]), d)
			case unseen:
				if c := visit(j); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		mark[i] = closed
		return nil
	}
	for i := range t.Stages {
		if mark[i] == unseen {
			if c := visit(i); c != nil {
				return c
			}
		}
	}
	return nil
}

// order returns the stages with every stage after the ones it depends on,
// otherwise in the template's order: the order CreateTasks needs.
func (t *pipelineTemplate) order() []*pipelineStage {
	placed := make(map[string]bool, len(t.Stages))
	out := make([]*pipelineStage, 0, len(t.Stages))
	for len(out) < len(t.Stages) {
		for i := range t.Stages {
			s := &t.Stages[i]
			if placed[s.Name] {
				continue
			}
			ready := true
			for _, d := range s.DependsOn {
				ready = ready && placed[d]
			}
			if ready {
				placed[s.Name] = true
				out = append(out, s)
			}
		}
	}
	return out
}

func (s *pipelineStage) render(tmpl *template.Template, in pipelineInput) (string, error) {
	var b strings.Builder
	if err := tmpl.Execute(&b, in); err != nil {
		return "", err
	}
	title := strings.Join(strings.Fields(b.String()), " ")
	if title == "" {
		return "", errors.New("renders empty")
	}
	return cutRunes(title, pipelineTitleMax), nil
}

// pipelineTaskID is the id of a stage's task in a pipeline.
func pipelineTaskID(pipeline, stage string) string { return pipeline + "-" + stage }

// pipelineSummary is the input's first non-empty line, cut to 80 characters.
func pipelineSummary(input string) string {
	for _, line := range strings.Split(input, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			if utf8.RuneCountInString(line) > pipelineSummaryMax {
				return cutRunes(line, pipelineSummaryMax-1) + "…"
			}
			return line
		}
	}
	return ""
}

// requests builds the CreateTasks request of one run: a task per stage,
// dependencies before dependents, each labelled with the pipeline, the
// stage and the template, and the input in every payload.
func (t *pipelineTemplate) requests(id, input string) (*factoryv1.CreateTasksRequest, error) {
	req := &factoryv1.CreateTasksRequest{}
	for _, s := range t.order() {
		title, err := s.render(s.title, pipelineInput{Input: input, Summary: pipelineSummary(input), Pipeline: id, Template: t.Name, Stage: s.Name})
		if err != nil {
			return nil, fmt.Errorf("stage %q: title: %v", s.Name, err)
		}
		payload, err := json.Marshal(map[string]any{
			"pipeline": id, "template": t.Name, "stage": s.Name, "input": input, "instructions": s.Instructions,
		})
		if err != nil {
			return nil, err
		}
		labels := map[string]string{"pipeline": id, "stage": s.Name, "template": t.Name}
		for k, v := range s.Labels {
			labels[k] = v
		}
		deps := make([]string, len(s.DependsOn))
		for i, d := range s.DependsOn {
			deps[i] = pipelineTaskID(id, d)
		}
		req.Tasks = append(req.Tasks, &factoryv1.CreateTaskRequest{
			TaskId: pipelineTaskID(id, s.Name), Title: title, Kind: s.Kind, Role: s.Role, PayloadJson: string(payload),
			Priority: s.Priority, MaxAttempts: s.MaxAttempts, DependsOn: deps, Labels: labels,
			RequiresApproval: s.RequiresApproval,
		})
	}
	return req, nil
}

// stageNames lists the stages in the template's order.
func (t *pipelineTemplate) stageNames() []string {
	names := make([]string, len(t.Stages))
	for i, s := range t.Stages {
		names[i] = s.Name
	}
	return names
}
