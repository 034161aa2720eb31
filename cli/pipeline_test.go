package cli_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pipelineView is `factory pipeline show -o json`.
type pipelineView struct {
	Pipeline string `json:"pipeline"`
	Template string `json:"template"`
	State    string `json:"state"`
	Done     int    `json:"done"`
	Stages   []struct {
		Stage           string          `json:"stage"`
		TaskID          string          `json:"task_id"`
		Role            string          `json:"role"`
		State           string          `json:"state"`
		Attempt         int             `json:"attempt"`
		Holder          string          `json:"holder"`
		ApprovalID      string          `json:"approval_id"`
		ApprovalPending bool            `json:"approval_pending"`
		HasResult       bool            `json:"has_result"`
		Result          json.RawMessage `json:"result"`
	} `json:"stages"`
}

func (s *shell) pipeline(id string) pipelineView {
	s.t.Helper()
	var v pipelineView
	if err := json.Unmarshal([]byte(s.ok("pipeline", "show", id, "-o", "json")), &v); err != nil {
		s.t.Fatal(err)
	}
	return v
}

// work runs `factory work` as an agent for one task and waits for it.
func (s *shell) work(token, agent, role, script string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	saved := s.token
	s.token = token
	r := s.runCtx(ctx, nil, "work", "--agent", agent, "--role", role, "--max-tasks", "1", "--claim-wait", "2s", "--", "sh", "-c", script)
	s.token = saved
	if r.code != 0 || ctx.Err() != nil {
		s.t.Fatalf("%s's work: exit %d (%v)\nstdout: %s\nstderr: %s", agent, r.code, ctx.Err(), r.stdout, r.stderr)
	}
}

// claimsNothing checks that an agent's claim for its role finds nothing.
func (s *shell) claimsNothing(token, agent, role, why string) {
	s.t.Helper()
	r := s.as(token, "task", "claim", "--agent", agent, "--role", role, "--state-file", s.stateFile, "-o", "json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		s.t.Fatalf("%s claimed %s: exit %d\n%s%s", agent, why, r.code, r.stdout, r.stderr)
	}
}

// TestBuildPipelineEndToEnd runs the runbook's build pipeline (§9.1)
// through the CLI against a real control plane: Kev creates the chain
// with one command, and five agents, each with a token granting only its
// role, work their stages with `factory work`, each claiming only once
// the stage before is DONE and reading that stage's result. Forge's
// production deploy waits for an operator's approval.
func TestBuildPipelineEndToEnd(t *testing.T) {
	sh := newShell(t)
	kev := sh.mint("agent", "kev", "orchestrator")
	scout := sh.mint("agent", "scout", "researcher")
	atlas := sh.mint("agent", "atlas", "architect")
	rex := sh.mint("agent", "rex", "builder")
	hawk := sh.mint("agent", "hawk", "tester")
	forge := sh.mint("agent", "forge", "deployer")

	r := sh.as(kev, "pipeline", "run", "build", "--input", "A URL shortener SaaS\nwith click analytics", "--id", "short")
	if r.code != 0 || !strings.Contains(r.stdout, "created pipeline short (template build)") || !strings.Contains(r.stdout, "short-deploy") {
		t.Fatalf("pipeline run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	v := sh.pipeline("short")
	wantStates := map[string]string{"research": "READY", "plan": "BACKLOG", "build": "BACKLOG", "test": "BACKLOG", "deploy": "BACKLOG"}
	if len(v.Stages) != 5 || v.State != "RUNNING" {
		t.Fatalf("pipeline show: %+v", v)
	}
	for _, s := range v.Stages {
		if s.State != wantStates[s.Stage] {
			t.Fatalf("stage %s is %s, want %s", s.Stage, s.State, wantStates[s.Stage])
		}
	}
	deploy := v.Stages[4]
	if deploy.Stage != "deploy" || !deploy.ApprovalPending || deploy.ApprovalID == "" {
		t.Fatalf("the deploy stage is not gated: %+v", deploy)
	}
	if out := sh.ok("pipeline", "show", "short"); !strings.Contains(out, "approval pending") || !strings.Contains(out, "0/5 stages DONE") {
		t.Fatalf("pipeline show:\n%s", out)
	}

	// Atlas has nothing to claim until research is DONE.
	sh.claimsNothing(atlas, "atlas", "architect", "the plan before research was DONE")
	sh.work(scout, "scout", "researcher", `
case "$FACTORY_TASK_PAYLOAD" in *'A URL shortener SaaS'*) ;; *) echo "payload: $FACTORY_TASK_PAYLOAD" >&2; exit 3;; esac
[ "$FACTORY_DEPENDENCY_RESULTS" = "[]" ] || { echo "deps: $FACTORY_DEPENDENCY_RESULTS" >&2; exit 4; }
echo '::result {"competitors": ["bit.ly", "tinyurl"], "scope": "links and analytics"}'`)

	// Atlas reads research's result from the environment.
	sh.claimsNothing(rex, "rex", "builder", "the build before the plan was DONE")
	sh.work(atlas, "atlas", "architect", `
case "$FACTORY_DEPENDENCY_RESULTS" in *'"stage":"research"'*'"competitors":["bit.ly","tinyurl"]'*) ;; *) echo "deps: $FACTORY_DEPENDENCY_RESULTS" >&2; exit 5;; esac
echo '::result {"architecture": "go api + postgres", "steps": 3}'`)

	// An agent reads a result only as a dependency's, in its claim: not
	// by showing the task, not even its own completed one.
	for _, tok := range []string{atlas, scout, rex} {
		var task map[string]any
		r := sh.as(tok, "task", "show", "short-research", "-o", "json")
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &task) != nil || task["result_json"] != "" {
			t.Fatalf("an agent's task show of short-research: exit %d, result %v\n%s", r.code, task["result_json"], r.stderr)
		}
	}
	if got := sh.task("short-research")["result_json"]; !strings.Contains(got.(string), "tinyurl") {
		t.Fatalf("the operator's task show: result %v", got)
	}

	// Rex reads the plan's result on stdin, and nothing of research's.
	sh.work(rex, "rex", "builder", `
in=$(cat)
case "$in" in *'go api + postgres'*) ;; *) echo "stdin: $in" >&2; exit 6;; esac
case "$in" in *tinyurl*) echo "a result of a task this one does not depend on" >&2; exit 7;; esac
echo '::result {"repo": "git.example/short", "commit": "4f2a9c1"}'`)
	// Hawk works by hand: claim, read, done. The claim carries build's
	// result; so does task show while Hawk holds the task, and only for
	// Hawk.
	r = sh.as(hawk, "task", "claim", "--agent", "hawk", "--role", "tester", "--state-file", sh.stateFile, "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"dependency_results"`) || !strings.Contains(r.stdout, `4f2a9c1`) {
		t.Fatalf("hawk's claim: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if out := sh.as(hawk, "task", "show", "short-test").stdout; !strings.Contains(out, "Dependency result:") || !strings.Contains(out, "4f2a9c1") {
		t.Fatalf("hawk's task show of the task it holds:\n%s", out)
	}
	if out := sh.as(rex, "task", "show", "short-test").stdout; strings.Contains(out, "4f2a9c1") {
		t.Fatalf("rex's task show of hawk's task shows build's result:\n%s", out)
	}
	if r := sh.as(hawk, "task", "done", "--agent", "hawk", "--state-file", sh.stateFile, "--result", `{"verdict": "pass", "checked": ["redirects", "analytics"]}`); r.code != 0 {
		t.Fatalf("hawk's done: exit %d %s", r.code, r.stderr)
	}

	// Testing is DONE, but the production deploy waits for an operator.
	if got := sh.task("short-test")["state"]; got != "TASK_STATE_DONE" {
		t.Fatalf("test stage is %v", got)
	}
	if got := sh.task("short-deploy"); got["state"] != "TASK_STATE_BACKLOG" || got["approval_pending"] != true {
		t.Fatalf("deploy before approval: %v %v", got["state"], got["approval_pending"])
	}
	sh.claimsNothing(forge, "forge", "deployer", "the production deploy before an operator approved it")
	if r := sh.as(forge, "approve", deploy.ApprovalID); r.code == 0 {
		t.Fatal("forge approved its own deploy")
	}
	sh.ok("approve", deploy.ApprovalID, "--note", "ship it")
	sh.work(forge, "forge", "deployer", `
case "$FACTORY_DEPENDENCY_RESULTS" in *'"verdict":"pass"'*) ;; *) echo "deps: $FACTORY_DEPENDENCY_RESULTS" >&2; exit 9;; esac
echo '::result {"url": "https://sho.rt", "version": "1.0.0"}'`)

	v = sh.pipeline("short")
	if v.State != "DONE" || v.Done != 5 {
		t.Fatalf("pipeline after the deploy: %s, %d done", v.State, v.Done)
	}
	for _, s := range v.Stages {
		if s.State != "DONE" || s.Attempt != 1 || !s.HasResult || len(s.Result) == 0 {
			t.Fatalf("stage %s: %+v", s.Stage, s)
		}
	}
	var deployed struct{ URL, Version string }
	if json.Unmarshal(v.Stages[4].Result, &deployed) != nil || deployed.URL != "https://sho.rt" || deployed.Version != "1.0.0" {
		t.Fatalf("deploy result %s", v.Stages[4].Result)
	}
	out := sh.ok("pipeline", "show", "short")
	if strings.Count(out, "DONE") < 6 || !strings.Contains(out, "5/5 stages DONE") {
		t.Fatalf("pipeline show:\n%s", out)
	}
	if out := sh.ok("pipeline", "ls", "--runs"); !strings.Contains(out, "short") || !strings.Contains(out, "5/5") {
		t.Fatalf("pipeline ls --runs:\n%s", out)
	}
}

// TestPipelineRunIsAllOrNone: when one stage's task cannot be created
// (its id is taken), no stage's task is.
func TestPipelineRunIsAllOrNone(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--id", "p2-test", "--title", "squatter")
	r := sh.run("pipeline", "run", "build", "--input", "anything", "--id", "p2")
	if r.code == 0 || !strings.Contains(r.stderr, "ALREADY_EXISTS") {
		t.Fatalf("run over a taken id: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if out := strings.TrimSpace(sh.ok("task", "ls", "--label", "pipeline=p2", "-o", "json")); out != "[]" {
		t.Fatalf("tasks of the refused pipeline:\n%s", out)
	}
	if r := sh.run("pipeline", "show", "p2"); r.code == 0 || !strings.Contains(r.stderr, "no pipeline") {
		t.Fatalf("show of the refused pipeline: exit %d %s", r.code, r.stderr)
	}
}

// TestPipelineBadTemplateRefused: a template file with an unknown
// dependency is refused naming the stage and the field, and creates
// nothing.
func TestPipelineBadTemplateRefused(t *testing.T) {
	sh := newShell(t)
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(path, []byte(`
name: bad
stages:
  - {name: research, role: researcher}
  - {name: plan, role: architect, depends_on: [reserch]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := sh.run("pipeline", "run", path, "--input", "x", "--id", "bad")
	if r.code == 0 || !strings.Contains(r.stderr, `stage "plan": depends_on: unknown stage "reserch"`) {
		t.Fatalf("bad template: exit %d\n%s", r.code, r.stderr)
	}
	if out := strings.TrimSpace(sh.ok("task", "ls", "-o", "json")); out != "[]" {
		t.Fatalf("tasks after a refused template:\n%s", out)
	}
	if r := sh.run("pipeline", "run", "nosuch", "--input", "x"); r.code == 0 || !strings.Contains(r.stderr, "built in: build") {
		t.Fatalf("unknown template: exit %d %s", r.code, r.stderr)
	}
}
