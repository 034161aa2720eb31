package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func newPipelineCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pipeline",
		Short: "Run a chain of stages (research → plan → build → test → deploy) from a template",
		Long: `A pipeline is a chain of tasks made from a template: one task per stage,
each for the role of the agent that works it, each depending on earlier
stages. A stage's agent claims it once the stages it depends on are DONE
and reads their results (factory work hands them to CMD); it completes
with a result of its own for the next stage. The runbook's build
pipeline (§9.1) ships as "build": Scout researches, Atlas plans, Rex
builds, Hawk tests and Forge deploys, once an operator approves the
production deploy.

Templates are YAML: the built-in ones (factory pipeline ls), or a file.
  name: build
  stages:
    - name: research            # a-z, 0-9, _ and -
      title: "Research: {{.Summary}}"   # Go template: .Input .Summary .Pipeline .Stage
      role: researcher          # required: who claims it
      kind: research
      priority: 10
      instructions: what the agent should do (goes into the payload)
    - name: deploy
      role: deployer
      kind: production_deploy
      depends_on: [research]    # stage names
      requires_approval: true   # wait for an operator (factory approve)
Every task gets the labels pipeline=ID, stage=NAME and template=NAME, and
the payload {"pipeline", "template", "stage", "input", "instructions"}.`,
		Example: `  factory pipeline ls
  factory pipeline run build --input "a URL shortener SaaS"
  factory pipeline run ./pipelines/docs.yaml --input @brief.md --id docs-7
  factory pipeline show build-3f9a2c1d`,
	}
	cmd.AddCommand(newPipelineRunCommand(a), newPipelineShowCommand(a), newPipelineListCommand(a))
	return cmd
}

func newPipelineRunCommand(a *app) *cobra.Command {
	var input, id string
	cmd := &cobra.Command{
		Use:   "run TEMPLATE --input TEXT|@FILE [--id ID]",
		Short: "Create every stage of a pipeline, all or none",
		Long: `Run creates the tasks of every stage of TEMPLATE (a built-in name or a
YAML file's path) in one call: all of them or, on any error, none. The
first stages are READY at once; the others wait in BACKLOG until the
stages they depend on are DONE (and, when requires_approval is set or the
kind needs it, until an operator approves). It prints the pipeline's id
and its stages.

ID defaults to the template's name and 8 random hex digits; a stage's task
id is ID-STAGE. Running an ID that exists is refused (ALREADY_EXISTS).`,
		Example: `  factory pipeline run build --input "a URL shortener SaaS"
  factory pipeline run build --input @brief.md --id shortener -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := loadPipelineTemplate(args[0])
			if err != nil {
				return err
			}
			text, err := pipelineInputText(input)
			if err != nil {
				return err
			}
			if id == "" {
				var b [4]byte
				if _, err := rand.Read(b[:]); err != nil {
					return err
				}
				id = t.Name + "-" + hex.EncodeToString(b[:])
			} else if !pipelineIDRE.MatchString(id) {
				return usageErrorf("--id: %q must be 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit", id)
			}
			req, err := t.requests(id, text)
			if err != nil {
				return err
			}
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				resp, err := q.CreateTasks(ctx, req)
				if err != nil {
					return err
				}
				return a.printPipeline(id, t.Name, resp.GetTasks(), true)
			})
		},
	}
	cmd.Flags().StringVar(&input, "input", "", "the pipeline's input: text, or @FILE to read it from a file (required)")
	cmd.Flags().StringVar(&id, "id", "", "the pipeline's id (default TEMPLATE-<8 hex digits>)")
	_ = cmd.MarkFlagRequired("input")
	return cmd
}

// pipelineInputText reads --input: the text, or a file's for @FILE.
func pipelineInputText(v string) (string, error) {
	if name, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return "", usageErrorf("--input: %v", err)
		}
		v = string(b)
	}
	switch {
	case strings.TrimSpace(v) == "":
		return "", usageErrorf("--input: empty; say what the pipeline is to do")
	case len(v) > pipelineMaxInput:
		return "", usageErrorf("--input: %d bytes; at most %d", len(v), pipelineMaxInput)
	}
	return v, nil
}

func newPipelineShowCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a pipeline's stages: state, attempt, holder, age and whether each has a result",
		Long: `Show lists the stages of pipeline ID in the order they were created
(dependencies first): each stage's role, state (with "approval pending"
while an operator's approval is awaited), attempt, lease holder, how long
it has been in its state, and the size of its result. With -o json each
stage carries its result as JSON where the caller may read it (operators).`,
		Example: `  factory pipeline show shortener
  factory pipeline show shortener -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				tasks, err := listAll(ctx, q, &factoryv1.ListTasksRequest{Labels: []string{"pipeline=" + args[0]}, View: factoryv1.TaskView_TASK_VIEW_FULL}, pipelineMaxStages)
				if err != nil {
					return err
				}
				if len(tasks) == 0 {
					return status.Errorf(codes.NotFound, "no pipeline %q: no task has the label pipeline=%s", args[0], args[0])
				}
				return a.printPipeline(args[0], tasks[0].GetLabels()["template"], tasks, false)
			})
		},
	}
}

// listAll pages through a task list, stopping after max tasks.
func listAll(ctx context.Context, q factoryv1.QueueServiceClient, req *factoryv1.ListTasksRequest, max int) ([]*factoryv1.Task, error) {
	var out []*factoryv1.Task
	for {
		resp, err := q.ListTasks(ctx, req)
		if err != nil {
			return nil, err
		}
		out = append(out, resp.GetTasks()...)
		if resp.GetNextPageToken() == "" || len(out) >= max {
			return out, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// pipelineStageView is one stage as show and run print it with -o json.
type pipelineStageView struct {
	Stage           string          `json:"stage"`
	TaskID          string          `json:"task_id"`
	Title           string          `json:"title"`
	Role            string          `json:"role"`
	Kind            string          `json:"kind,omitempty"`
	State           string          `json:"state"`
	Attempt         int32           `json:"attempt"`
	MaxAttempts     int32           `json:"max_attempts"`
	Holder          string          `json:"holder,omitempty"`
	DependsOn       []string        `json:"depends_on,omitempty"`
	StateChangedAt  string          `json:"state_changed_at,omitempty"`
	ApprovalID      string          `json:"approval_id,omitempty"`
	ApprovalPending bool            `json:"approval_pending,omitempty"`
	HasResult       bool            `json:"has_result"`
	ResultBytes     int             `json:"result_bytes,omitempty"`
	Result          json.RawMessage `json:"result,omitempty"`
}

type pipelineView struct {
	Pipeline string              `json:"pipeline"`
	Template string              `json:"template,omitempty"`
	State    string              `json:"state"`
	Done     int                 `json:"done"`
	Stages   []pipelineStageView `json:"stages"`
}

// pipelineState sums up the stages: FAILED when one failed, DONE when all
// are, else RUNNING.
func pipelineState(tasks []*factoryv1.Task) (state string, done int) {
	failed := false
	for _, t := range tasks {
		switch t.GetState() {
		case factoryv1.TaskState_TASK_STATE_DONE:
			done++
		case factoryv1.TaskState_TASK_STATE_FAILED:
			failed = true
		}
	}
	switch {
	case failed:
		return "FAILED", done
	case done == len(tasks):
		return "DONE", done
	}
	return "RUNNING", done
}

func (a *app) printPipeline(id, template string, tasks []*factoryv1.Task, created bool) error {
	state, done := pipelineState(tasks)
	v := pipelineView{Pipeline: id, Template: template, State: state, Done: done}
	for _, t := range tasks {
		deps := make([]string, len(t.GetDependsOn()))
		for i, d := range t.GetDependsOn() {
			deps[i] = strings.TrimPrefix(d, id+"-")
		}
		s := pipelineStageView{
			Stage: t.GetLabels()["stage"], TaskID: t.GetId(), Title: t.GetTitle(), Role: t.GetRole(), Kind: t.GetKind(),
			State: stateLabel(t.GetState()), Attempt: t.GetAttempt(), MaxAttempts: t.GetMaxAttempts(),
			Holder: t.GetLease().GetHolder(), DependsOn: deps,
			ApprovalID: t.GetApprovalId(), ApprovalPending: t.GetApprovalPending(),
			HasResult: t.GetResultJson() != "", ResultBytes: len(t.GetResultJson()),
		}
		if ts := t.GetStateChangedAt(); ts != nil {
			s.StateChangedAt = ts.AsTime().UTC().Format(time.RFC3339)
		}
		if r := t.GetResultJson(); r != "" && json.Valid([]byte(r)) {
			s.Result = json.RawMessage(r)
		}
		v.Stages = append(v.Stages, s)
	}
	if a.jsonOutput() {
		return writeJSON(a.stdout(), v)
	}
	w := a.stdout()
	verb := "pipeline"
	if created {
		verb = "created pipeline"
	}
	fmt.Fprintf(w, "%s %s", verb, id)
	if template != "" {
		fmt.Fprintf(w, " (template %s)", template)
	}
	fmt.Fprintf(w, ": %s, %d/%d stages DONE\n", state, done, len(tasks))
	now := time.Now()
	tw := newTable(w)
	fmt.Fprintln(tw, "STAGE\tROLE\tSTATE\tATTEMPT\tHOLDER\tAGE\tRESULT\tTASK")
	for i, t := range tasks {
		s := v.Stages[i]
		st := s.State
		if s.ApprovalPending {
			st += " (approval pending)"
		}
		result := "-"
		if s.HasResult {
			result = fmt.Sprintf("yes, %d B", s.ResultBytes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", orDash(s.Stage), orDash(s.Role), st, attemptText(t),
			holderText(t), humanAge(t.GetStateChangedAt(), now), result, t.GetId())
	}
	return tw.Flush()
}

func newPipelineListCommand(a *app) *cobra.Command {
	var (
		runs      bool
		templates []string
	)
	cmd := &cobra.Command{
		Use:   "ls [--runs [--template NAME]...]",
		Short: "List the pipeline templates, or with --runs the pipelines run from them",
		Long: `Ls lists the built-in pipeline templates with their stages. With --runs it
lists the pipelines run from them (newest first, by the template=NAME
label their tasks carry), each with its state and how many stages are
DONE; --template names templates run from files too.`,
		Example: `  factory pipeline ls
  factory pipeline ls --runs
  factory pipeline ls --runs --template docs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !runs {
				return a.printPipelineTemplates()
			}
			if len(templates) == 0 {
				templates = builtinPipelineNames()
			}
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				return a.printPipelineRuns(ctx, q, templates)
			})
		},
	}
	cmd.Flags().BoolVar(&runs, "runs", false, "list the pipelines run, not the templates")
	cmd.Flags().StringArrayVar(&templates, "template", nil, "with --runs: only pipelines of this template (repeatable; default the built-in ones)")
	return cmd
}

func (a *app) printPipelineTemplates() error {
	type row struct {
		Name        string   `json:"name"`
		Description string   `json:"description,omitempty"`
		Stages      []string `json:"stages"`
	}
	var rows []row
	for _, name := range builtinPipelineNames() {
		t, err := loadPipelineTemplate(name)
		if err != nil {
			return err
		}
		rows = append(rows, row{Name: t.Name, Description: t.Description, Stages: t.stageNames()})
	}
	if a.jsonOutput() {
		return writeJSON(a.stdout(), rows)
	}
	tw := newTable(a.stdout())
	fmt.Fprintln(tw, "TEMPLATE\tSTAGES\tDESCRIPTION")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, strings.Join(r.Stages, " → "), truncate(r.Description, 80))
	}
	return tw.Flush()
}

// pipelineRunsMax bounds the tasks --runs reads per template.
const pipelineRunsMax = 5000

func (a *app) printPipelineRuns(ctx context.Context, q factoryv1.QueueServiceClient, templates []string) error {
	type run struct {
		Pipeline string `json:"pipeline"`
		Template string `json:"template"`
		State    string `json:"state"`
		Done     int    `json:"done"`
		Stages   int    `json:"stages"`
		Created  string `json:"created_at"`

		tasks   []*factoryv1.Task
		created time.Time
	}
	byID := map[string]*run{}
	for _, tmpl := range templates {
		tasks, err := listAll(ctx, q, &factoryv1.ListTasksRequest{Labels: []string{"template=" + tmpl}, NewestFirst: true, PageSize: 1000}, pipelineRunsMax)
		if err != nil {
			return err
		}
		for _, t := range tasks {
			id := t.GetLabels()["pipeline"]
			if id == "" {
				continue
			}
			r := byID[id]
			if r == nil {
				r = &run{Pipeline: id, Template: tmpl}
				byID[id] = r
			}
			r.tasks = append(r.tasks, t)
			if c := t.GetCreatedAt().AsTime(); r.created.IsZero() || c.Before(r.created) {
				r.created = c
			}
		}
	}
	runs := make([]*run, 0, len(byID))
	for _, r := range byID {
		r.State, r.Done = pipelineState(r.tasks)
		r.Stages = len(r.tasks)
		r.Created = r.created.UTC().Format(time.RFC3339)
		runs = append(runs, r)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].created.After(runs[j].created) })
	if a.jsonOutput() {
		return writeJSON(a.stdout(), runs)
	}
	now := time.Now()
	tw := newTable(a.stdout())
	fmt.Fprintln(tw, "PIPELINE\tTEMPLATE\tSTATE\tDONE\tAGE")
	for _, r := range runs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\n", r.Pipeline, r.Template, r.State, r.Done, r.Stages, humanDuration(now.Sub(r.created)))
	}
	return tw.Flush()
}
