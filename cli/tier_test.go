package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestTierCapsGateOnlyTheirTasksThroughTheBinary replays runbook 8.3 step 3
// ("force cheaper models") and 10.2 with the built factory binary against
// a control plane: a frontier cap reached leaves frontier tasks unclaimed
// while a builder's mid-tier and tier-less tasks are claimed; a tier turned
// off does the same whatever the spend, and '--cap 0' still means no cap;
// 'queue resume' during the emergency stop or maintenance is refused and
// exits non-zero; a rearm while today is over the threshold is refused
// unless the same command raises the threshold.
func TestTierCapsGateOnlyTheirTasksThroughTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the factory binary; skipped under -short")
	}
	bin := factoryBinary(t)
	newE := func(t *testing.T) (*shell, *e2e) {
		sh := newShell(t)
		return sh, &e2e{t: t, bin: bin, addr: sh.addr, stateFile: sh.stateFile, env: []string{"FACTORY_TOKEN=" + sh.token}}
	}
	claim := func(e *e2e, agent string) (string, result) {
		e.t.Helper()
		r := e.run("task", "claim", "--agent", agent, "--role", "builder", "-o", "json")
		if r.code != 0 {
			return "", r
		}
		var got []map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			var one map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &one); err != nil {
				e.t.Fatalf("claim output: %v\n%s", err, r.stdout)
			}
			got = []map[string]any{one}
		}
		if len(got) == 0 {
			return "", r
		}
		id, _ := got[0]["id"].(string)
		if id == "" {
			if task, ok := got[0]["task"].(map[string]any); ok {
				id, _ = task["id"].(string)
			}
		}
		return id, r
	}

	t.Run("frontier cap leaves other tiers claimable", func(t *testing.T) {
		_, e := newE(t)
		e.ok("task", "add", "--id", "f1", "--title", "Plan with opus", "--role", "builder", "--tier", "frontier", "--priority", "9")
		e.ok("task", "create", "--id", "m1", "--title", "Build with sonnet", "--role", "builder", "--tier", "mid", "--priority", "5")
		e.ok("task", "create", "--id", "plain", "--title", "Build", "--role", "builder")
		if out := e.ok("task", "show", "f1"); !strings.Contains(out, "Spend tier:") || !strings.Contains(out, "frontier") {
			t.Errorf("task show f1 lacks its tier:\n%s", out)
		}
		if out := e.ok("task", "ls", "-o", "wide"); !strings.Contains(out, "TIER") || !strings.Contains(out, "mid") {
			t.Errorf("task ls -o wide lacks the tier:\n%s", out)
		}
		var list []map[string]any
		e.jsonOf(&list, "task", "ls", "-o", "json")
		tiers := map[string]any{}
		for _, task := range list {
			tiers[task["id"].(string)] = task["tier"]
		}
		if tiers["f1"] != "frontier" || tiers["m1"] != "mid" || tiers["plain"] != "" {
			t.Errorf("task ls -o json tiers: %v", tiers)
		}
		if r := e.run("task", "add", "--title", "x", "--tier", "premium"); r.code == 0 || !strings.Contains(r.stderr, "tier") {
			t.Errorf("an unknown tier: exit %d\n%s", r.code, r.stderr)
		}

		e.ok("spend", "report", "--agent", "planner-01", "--model", "claude-opus-4", "--tier", "frontier", "--cost", "2.00", "--id", "opus-1")
		e.ok("budget", "set", "--scope", "tier", "--key", "frontier", "--cap", "1")
		id, r := claim(e, "forge")
		if id != "m1" {
			t.Fatalf("with the frontier tier capped, the builder claimed %q (exit %d, %s), want the mid-tier task m1", id, r.code, r.stderr)
		}
		if id, r = claim(e, "hammer"); id != "plain" {
			t.Fatalf("with the frontier tier capped, the second claim got %q (exit %d, %s), want the task without a tier", id, r.code, r.stderr)
		}
		if id, _ = claim(e, "anvil"); id != "" {
			t.Fatalf("a frontier task was claimed past the frontier cap: %s", id)
		}
		if state := e.task("f1")["state"]; state != "TASK_STATE_READY" {
			t.Errorf("f1 is %v, want READY", state)
		}
		if out := e.ok("budget"); !strings.Contains(out, "CAPPED") {
			t.Errorf("budget does not show the frontier tier CAPPED:\n%s", out)
		}
		// --cap 0 removes the cap: the frontier task is claimable again.
		e.ok("budget", "set", "--scope", "tier", "--key", "frontier", "--cap", "0")
		if id, r = claim(e, "anvil"); id != "f1" {
			t.Fatalf("after --cap 0 the claim got %q (exit %d, %s), want f1", id, r.code, r.stderr)
		}
	})

	t.Run("a tier turned off", func(t *testing.T) {
		_, e := newE(t)
		e.ok("task", "add", "--id", "f1", "--title", "Opus", "--role", "builder", "--tier", "frontier", "--priority", "9")
		e.ok("task", "add", "--id", "l1", "--title", "Local", "--role", "builder", "--tier", "local")
		out := e.ok("budget", "set", "--scope", "tier", "--key", "frontier", "--off")
		if !strings.Contains(out, "tier frontier is OFF") {
			t.Errorf("budget set --off:\n%s", out)
		}
		if out := e.ok("budget"); !strings.Contains(out, "OFF") {
			t.Errorf("budget does not show the tier OFF:\n%s", out)
		}
		if id, r := claim(e, "forge"); id != "l1" {
			t.Fatalf("with frontier off, claimed %q (exit %d, %s), want l1", id, r.code, r.stderr)
		}
		if id, _ := claim(e, "hammer"); id != "" {
			t.Fatalf("a frontier task was claimed while the tier is off: %s", id)
		}
		if r := e.run("budget", "set", "--scope", "agent", "--key", "forge", "--off"); r.code != 2 {
			t.Errorf("--off on an agent budget: exit %d\n%s", r.code, r.stderr)
		}
		e.ok("budget", "set", "--scope", "tier", "--key", "frontier", "--on")
		if id, r := claim(e, "hammer"); id != "f1" {
			t.Fatalf("with frontier on again, claimed %q (exit %d, %s), want f1", id, r.code, r.stderr)
		}
	})

	t.Run("resume is refused while a switch holds the queue", func(t *testing.T) {
		_, e := newE(t)
		e.ok("task", "add", "--id", "a", "--title", "A")
		e.ok("emergency-stop", "--reason", "runaway planner")
		r := e.run("queue", "resume")
		if r.code == 0 || !strings.Contains(r.stderr, "the emergency stop holds the queue (reason runaway planner)") ||
			!strings.Contains(r.stderr, "factory emergency-stop --rearm") || !strings.Contains(r.stderr, "FAILED_PRECONDITION") {
			t.Errorf("queue resume during the emergency stop: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		if state := e.task("a")["state"]; state != "TASK_STATE_PAUSED" {
			t.Errorf("task a is %v after the refused resume, want PAUSED", state)
		}
		if out := e.ok("emergency-stop", "--rearm"); !strings.Contains(out, "1 task(s) resumed") {
			t.Errorf("rearm: %s", out)
		}

		e.ok("maintenance", "start", "--reason", "disk swap", "--wait", "0s")
		r = e.run("queue", "resume")
		if r.code == 0 || !strings.Contains(r.stderr, "maintenance holds the queue (reason disk swap") ||
			!strings.Contains(r.stderr, "factory maintenance end") {
			t.Errorf("queue resume during maintenance: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		// The holder's own resume still works.
		if out := e.ok("maintenance", "end"); !strings.Contains(out, "1 task(s) back to READY") {
			t.Errorf("maintenance end: %s", out)
		}
		// An operator's own pause is still theirs to lift.
		e.ok("queue", "pause", "--reason", "freeze")
		if out := e.ok("queue", "resume"); !strings.Contains(out, "1 task") {
			t.Errorf("resume of an operator's pause: %s", out)
		}
	})

	t.Run("rearm while over the threshold", func(t *testing.T) {
		_, e := newE(t)
		e.ok("task", "add", "--id", "a", "--title", "A")
		e.ok("budget", "set", "--scope", "total", "--emergency", "100")
		e.ok("spend", "report", "--agent", "planner-01", "--model", "claude-opus-4", "--tier", "frontier", "--cost", "120", "--id", "big")
		if out := e.ok("emergency-stop", "status"); !strings.Contains(out, "STOPPED") {
			t.Fatalf("$120 did not pull the stop:\n%s", out)
		}
		r := e.run("emergency-stop", "--rearm")
		if r.code == 0 || !strings.Contains(r.stderr, "$120") || !strings.Contains(r.stderr, "$100") ||
			!strings.Contains(r.stderr, "--threshold") || !strings.Contains(r.stderr, "FAILED_PRECONDITION") {
			t.Errorf("rearm over the threshold: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		if out := e.ok("emergency-stop", "status"); !strings.Contains(out, "STOPPED") {
			t.Fatalf("the refused rearm lifted the stop:\n%s", out)
		}
		// A threshold still under today's total is refused too, and
		// changes nothing.
		if r := e.run("emergency-stop", "--rearm", "--threshold", "110"); r.code == 0 || !strings.Contains(r.stderr, "$110") {
			t.Errorf("rearm with a threshold under today's total: exit %d\n%s", r.code, r.stderr)
		}
		out := e.ok("emergency-stop", "--rearm", "--threshold", "150", "--note", "launch day")
		if !strings.Contains(out, "emergency stop lifted: 1 task(s) resumed") || !strings.Contains(out, "$150") {
			t.Errorf("rearm with --threshold 150:\n%s", out)
		}
		var b struct {
			Budgets []struct {
				Budget struct {
					Scope           string `json:"scope"`
					EmergencyMicros string `json:"emergency_micros"`
				} `json:"budget"`
			} `json:"budgets"`
		}
		e.jsonOf(&b, "budget", "-o", "json")
		if len(b.Budgets) == 0 || b.Budgets[0].Budget.EmergencyMicros != "150000000" {
			t.Errorf("the total's emergency threshold after the rearm: %+v", b.Budgets)
		}
		// The next report under the new threshold does not stop the fleet.
		e.ok("spend", "report", "--agent", "planner-01", "--model", "claude-opus-4", "--tier", "frontier", "--cost", "1", "--id", "small")
		if out := e.ok("emergency-stop", "status"); !strings.Contains(out, "not stopped") {
			t.Errorf("the next report stopped the fleet again:\n%s", out)
		}
		audit := e.ok("audit", "ls", "-o", "json")
		if !strings.Contains(audit, "RearmEmergencyStop") || !strings.Contains(audit, "150000000") {
			t.Errorf("the audit log lacks the rearm with its threshold:\n%s", audit)
		}
	})
}
