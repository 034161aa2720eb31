package cli_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// ids lists the ids of a JSON array of tasks, sorted.
func taskIDsOf(t *testing.T, out string) []string {
	t.Helper()
	var tasks []map[string]any
	if err := json.Unmarshal([]byte(out), &tasks); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	ids := make([]string, len(tasks))
	for i, task := range tasks {
		ids[i] = task["id"].(string)
	}
	slices.Sort(ids)
	return ids
}

// bulkOf runs a bulk verb with -o json and returns its response.
func (s *shell) bulkOf(args ...string) (resp struct {
	Matched int               `json:"matched"`
	Changed int               `json:"changed"`
	Skipped []json.RawMessage `json:"skipped"`
	Tasks   []map[string]any  `json:"tasks"`
	DryRun  bool              `json:"dry_run"`
}, ids []string) {
	s.t.Helper()
	if err := json.Unmarshal([]byte(s.ok(append(args, "-o", "json")...)), &resp); err != nil {
		s.t.Fatal(err)
	}
	for _, task := range resp.Tasks {
		ids = append(ids, task["id"].(string))
	}
	slices.Sort(ids)
	return resp, ids
}

func (s *shell) stateOf(id string) string { return s.task(id)["state"].(string) }

// A bulk kill by filter: ls with the same filter lists what it changes,
// the dry run changes nothing, the kill changes all of them in one call
// (an illegal move left alone and counted), and the audit log has one
// entry with the count and the filter.
func TestBulkKillByFilter(t *testing.T) {
	sh := newShell(t)
	for _, id := range []string{"b1", "b2", "b3"} {
		sh.ok("task", "create", "--id", id, "--title", id, "--role", "builder", "--label", "team=web", "--quiet")
	}
	sh.ok("task", "create", "--id", "b-done", "--title", "done", "--role", "builder", "--label", "team=web", "--state", "done", "--quiet")
	sh.ok("task", "create", "--id", "b-api", "--title", "api", "--role", "builder", "--label", "team=api", "--quiet")
	sh.ok("task", "create", "--id", "other", "--title", "other", "--role", "tester", "--label", "team=web", "--quiet")
	if r := sh.agent("claim", "forge", "--role", "builder"); r.code != 0 {
		t.Fatalf("claim: %+v", r)
	}
	if got := sh.stateOf("b1"); got != "TASK_STATE_IN_PROGRESS" {
		t.Fatalf("b1 is %s after the claim", got)
	}

	const filter = "role=builder,label:team=web"
	listed := taskIDsOf(t, sh.ok("task", "ls", "--filter", filter, "-o", "json"))
	if want := []string{"b-done", "b1", "b2", "b3"}; !slices.Equal(listed, want) {
		t.Fatalf("ls --filter %s: %v, want %v", filter, listed, want)
	}
	dry, wouldKill := sh.bulkOf("task", "kill", "--filter", filter, "--reason", "retry loop", "--dry-run")
	if dry.Matched != len(listed) || !dry.DryRun || !slices.Equal(wouldKill, []string{"b1", "b2", "b3"}) || len(dry.Skipped) != 1 {
		t.Fatalf("dry run: %+v, would kill %v; want the %d listed tasks matched, b1-b3 killed, DONE skipped", dry, wouldKill, len(listed))
	}
	for id, want := range map[string]string{"b1": "IN_PROGRESS", "b2": "READY", "b3": "READY", "b-done": "DONE"} {
		if got := sh.stateOf(id); got != "TASK_STATE_"+want {
			t.Fatalf("after the dry run %s is %s, want %s", id, got, want)
		}
	}

	r := sh.run("task", "kill", "--filter", filter, "--reason", "retry loop")
	if r.code != 0 || !strings.Contains(r.stderr, "killed 3 task(s) of 4 matching role=builder,label:team=web") || !strings.Contains(r.stderr, "DONE 1") {
		t.Fatalf("kill --filter: %+v", r)
	}
	for id, want := range map[string]string{"b1": "FAILED", "b2": "FAILED", "b3": "FAILED", "b-done": "DONE", "b-api": "READY", "other": "READY"} {
		if got := sh.stateOf(id); got != "TASK_STATE_"+want {
			t.Fatalf("after the kill %s is %s, want %s", id, got, want)
		}
	}
	// The holder's lease ended with the kill.
	if r := sh.agent("renew", "forge", "b1"); r.code == 0 {
		t.Fatalf("renewal of a killed task succeeded: %+v", r)
	}

	var entries []map[string]any
	if err := json.Unmarshal([]byte(sh.ok("audit", "ls", "--target", "tasks", "-o", "json")), &entries); err != nil {
		t.Fatal(err)
	}
	var bulk []map[string]any
	for _, e := range entries {
		if e["rpc"] == "/factory.v1.QueueService/BulkUpdateTasks" {
			bulk = append(bulk, e)
		}
	}
	if len(bulk) != 2 {
		t.Fatalf("BulkUpdateTasks audit entries: %v; want one for the dry run and one for the kill", bulk)
	}
	after := bulk[0]["after_json"].(string)
	for _, want := range []string{`"count":3`, `"matched":4`, `"to":"FAILED"`, `"dry_run":false`, `\"role\":\"builder\"`, `team=web`, `"DONE":1`} {
		if !strings.Contains(after, want) {
			t.Fatalf("audit entry of the kill lacks %s: %s", want, after)
		}
	}
}

// Requeue, move and prioritize take the same filter; ls and the verb
// select the same tasks, term by term.
func TestBulkVerbsSelectWhatLsLists(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--id", "lo", "--title", "lo", "--role", "r", "--priority", "-5", "--quiet")
	sh.ok("task", "create", "--id", "hi", "--title", "hi", "--role", "r", "--priority", "5", "--quiet")
	sh.ok("task", "create", "--id", "rev", "--title", "rev", "--role", "r", "--kind", "deploy", "--state", "review", "--quiet")
	sh.ok("task", "create", "--id", "f1", "--title", "f1", "--role", "r", "--state", "failed", "--quiet")

	for _, c := range []struct {
		filter string
		verb   []string
		want   []string
	}{
		{"priority<=0,state=ready", []string{"prioritize", "--priority", "50"}, []string{"lo"}},
		{"kind=deploy", []string{"move", "--to", "done", "--reason", "shipped"}, []string{"rev"}},
		{"state=failed|review,age>=0s", []string{"requeue"}, []string{"f1"}},
	} {
		listed := taskIDsOf(t, sh.ok("task", "ls", "--filter", c.filter, "-o", "json"))
		_, changed := sh.bulkOf(append(append([]string{"task"}, c.verb...), "--filter", c.filter)...)
		if !slices.Equal(listed, c.want) || !slices.Equal(changed, c.want) {
			t.Fatalf("--filter %s: ls %v, %s changed %v; want %v", c.filter, listed, c.verb[0], changed, c.want)
		}
	}
	if p := sh.task("lo")["priority"]; p != float64(50) {
		t.Fatalf("lo priority %v after prioritize", p)
	}
	if got := sh.stateOf("rev"); got != "TASK_STATE_DONE" {
		t.Fatalf("rev is %s after move --to done", got)
	}
	if got := sh.stateOf("f1"); got != "TASK_STATE_READY" {
		t.Fatalf("f1 is %s after requeue", got)
	}
}

// An empty filter, a bad term and an agent's token are refused, and
// nothing changes.
func TestBulkRefusals(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--id", "a", "--title", "a", "--role", "builder", "--quiet")
	forge := sh.mint("agent", "forge")

	for _, args := range [][]string{
		{"task", "kill", "--filter", "", "--reason", "oops"},
		{"task", "kill", "--filter", " , ", "--reason", "oops"},
		{"task", "requeue", "--filter", ""},
		{"queue", "pause", "--filter", ""},
	} {
		r := sh.run(args...)
		if r.code != 2 || !strings.Contains(r.stderr, "--filter is empty") {
			t.Fatalf("factory %s: %+v; want exit 2 saying the filter is empty", strings.Join(args, " "), r)
		}
	}
	for term, want := range map[string]string{
		"prioriti<=0":  `term "prioriti<=0": unknown key "prioriti"`,
		"attempt<3":    `term "attempt<3": attempt takes >= or >`,
		"age>soon":     `term "age>soon": "soon" is not a span`,
		"state=asleep": `term "state=asleep": unknown state "asleep"`,
	} {
		r := sh.run("task", "kill", "--filter", "role=builder,"+term, "--reason", "x")
		if r.code != 2 || !strings.Contains(r.stderr, want) {
			t.Fatalf("--filter role=builder,%s: %+v; want exit 2 with %q", term, r, want)
		}
	}
	if r := sh.run("task", "kill", "a", "--filter", "role=builder", "--reason", "x"); r.code != 2 {
		t.Fatalf("an id and --filter together: %+v", r)
	}
	r := sh.as(forge, "task", "kill", "--filter", "role=builder", "--reason", "mine now")
	if r.code != 1 || !strings.Contains(r.stderr, "may not call BulkUpdateTasks") {
		t.Fatalf("agent bulk kill: %+v", r)
	}
	if r := sh.as(forge, "queue", "pause", "--filter", "role=builder"); r.code != 1 || !strings.Contains(r.stderr, "may not call PauseQueue") {
		t.Fatalf("agent selective pause: %+v", r)
	}
	if got := sh.stateOf("a"); got != "TASK_STATE_READY" {
		t.Fatalf("a is %s after refused calls", got)
	}
}

// A selective pause and its resume restore exactly: tasks an operator
// paused by hand and tasks the whole queue's pause holds stay as they are.
func TestSelectivePauseRestoresExactly(t *testing.T) {
	sh := newShell(t)
	for _, id := range []string{"w1", "w2", "wop"} {
		sh.ok("task", "create", "--id", id, "--title", id, "--role", "web", "--quiet")
	}
	sh.ok("task", "create", "--id", "api", "--title", "api", "--role", "api", "--quiet")
	sh.ok("task", "move", "wop", "--to", "paused", "--reason", "by hand")

	if got := taskIDsOf(t, sh.ok("task", "ls", "--filter", "state=ready,role=web", "-o", "json")); !slices.Equal(got, []string{"w1", "w2"}) {
		t.Fatalf("ls of what the pause will take: %v", got)
	}
	var paused struct {
		Paused  int    `json:"paused"`
		PauseID string `json:"pause_id"`
	}
	if err := json.Unmarshal([]byte(sh.ok("queue", "pause", "--filter", "role=web", "--reason", "web freeze", "-o", "json")), &paused); err != nil {
		t.Fatal(err)
	}
	if paused.Paused != 2 || paused.PauseID == "" {
		t.Fatalf("selective pause: %+v", paused)
	}
	if got := sh.stateOf("api"); got != "TASK_STATE_READY" {
		t.Fatalf("api is %s: a selective pause paused it", got)
	}
	stats := sh.ok("queue", "stats")
	if !strings.Contains(stats, "Pause "+paused.PauseID+":") || !strings.Contains(stats, "holds 2, role=web (web freeze)") || !strings.Contains(stats, "running") {
		t.Fatalf("queue stats does not show the pause:\n%s", stats)
	}
	// w2 leaves the pause by hand and is paused by hand again: it is the
	// operator's now. Then the whole queue pauses: api goes with it.
	sh.ok("task", "move", "w2", "--to", "ready", "--reason", "out")
	sh.ok("task", "move", "w2", "--to", "paused", "--reason", "mine")
	sh.ok("queue", "pause", "--reason", "outage")

	out := sh.ok("queue", "resume", "--pause", paused.PauseID)
	if !strings.Contains(out, "pause "+paused.PauseID+" ended: 1 task(s)") {
		t.Fatalf("resume --pause: %s", out)
	}
	// The queue is still paused: w1 waits with api under its pause.
	for id, want := range map[string]string{"w1": "PAUSED", "w2": "PAUSED", "wop": "PAUSED", "api": "PAUSED"} {
		if got := sh.stateOf(id); got != "TASK_STATE_"+want {
			t.Fatalf("after resume --pause %s is %s, want %s", id, got, want)
		}
	}
	sh.ok("queue", "resume")
	for id, want := range map[string]string{"w1": "READY", "w2": "PAUSED", "wop": "PAUSED", "api": "READY"} {
		if got := sh.stateOf(id); got != "TASK_STATE_"+want {
			t.Fatalf("after queue resume %s is %s, want %s", id, got, want)
		}
	}

	// A plain resume ends every selective pause too.
	sh.ok("queue", "pause", "--filter", "role=api")
	if got := sh.stateOf("api"); got != "TASK_STATE_PAUSED" {
		t.Fatalf("api is %s after its pause", got)
	}
	if out := sh.ok("queue", "resume"); !strings.Contains(out, "1 selective pause(s) ended: 1 task(s) back to READY") {
		t.Fatalf("queue resume: %s", out)
	}
	if got := sh.stateOf("api"); got != "TASK_STATE_READY" {
		t.Fatalf("api is %s after queue resume", got)
	}
	if strings.Contains(sh.ok("queue", "stats"), "Pause ") {
		t.Fatal("queue stats still lists a pause")
	}
}
