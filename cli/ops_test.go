package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestMaintenanceStartEndThroughTheCLI(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--id", "held", "--title", "Held")
	sh.ok("task", "create", "--id", "waiting", "--title", "Waiting")
	if r := sh.agent("claim", "forge"); r.code != 0 {
		t.Fatalf("claim: %s", r.stderr)
	}

	r := sh.run("maintenance", "start", "--reason", "disk swap", "--wait", "0s")
	if r.code != 0 {
		t.Fatalf("start: exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "maintenance since") || !strings.Contains(r.stdout, "1 READY task(s) moved to PAUSED") ||
		!strings.Contains(r.stdout, "1 task(s) still IN_PROGRESS") || !strings.Contains(r.stdout, "held") {
		t.Errorf("start output:\n%s", r.stdout)
	}
	// Claims are refused with the reason.
	if r := sh.agent("claim", "hammer"); r.code != 1 || !strings.Contains(r.stderr, "maintenance since") || !strings.Contains(r.stderr, "disk swap") ||
		!strings.Contains(r.stderr, "FAILED_PRECONDITION") {
		t.Errorf("claim in maintenance: exit %d: %s", r.code, r.stderr)
	}
	if out := sh.ok("status"); !strings.Contains(out, "Maintenance:") || !strings.Contains(out, "ON since") || !strings.Contains(out, "disk swap") {
		t.Errorf("status in maintenance:\n%s", out)
	}
	var st struct {
		Maintenance struct {
			Active bool   `json:"active"`
			Reason string `json:"reason"`
		} `json:"maintenance"`
		InProgressCount string `json:"inProgressCount"`
	}
	if err := json.Unmarshal([]byte(sh.ok("maintenance", "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Maintenance.Active || st.Maintenance.Reason != "disk swap" {
		t.Errorf("maintenance status: %+v", st)
	}

	if out := sh.ok("maintenance", "end"); !strings.Contains(out, "queue resumed, 1 task(s) back to READY") {
		t.Errorf("end: %s", out)
	}
	if r := sh.agent("claim", "hammer"); r.code != 0 {
		t.Errorf("claim after the end: %s", r.stderr)
	}
	if out := sh.ok("maintenance", "end"); !strings.Contains(out, "not in maintenance") {
		t.Errorf("second end: %s", out)
	}
	if r := sh.run("maintenance", "start"); r.code != 2 {
		t.Errorf("start without --reason: exit %d", r.code)
	}
}

func TestStatusIsOneScreen(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--title", "a")
	out := sh.ok("status")
	for _, want := range []string{"Queue:", "running", "Tasks:", "Spend today:", "Emergency stop:", "Approvals pending:", "Agents:", "Alerts firing:", "Maintenance:\toff", "off"} {
		if !strings.Contains(out, strings.TrimPrefix(want, "Maintenance:\t")) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	var js map[string]any
	if err := json.Unmarshal([]byte(sh.ok("status", "-o", "json")), &js); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"queue", "budget", "approvals_pending", "agents", "alerts_firing", "maintenance"} {
		if _, ok := js[key]; !ok {
			t.Errorf("status -o json lacks %q: %v", key, js)
		}
	}
	if js["queue"] == nil || js["maintenance"] == nil {
		t.Errorf("status -o json: queue and maintenance must be served: %v", js)
	}
}

func TestDoctorAndDigestThroughTheCLI(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--title", "a")
	out := sh.ok("doctor")
	for _, want := range []string{"store_integrity", "PRAGMA integrity_check ok", "migration_version", "queue_sanity", "clock_skew"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor lacks %q:\n%s", want, out)
		}
	}
	out = sh.ok("digest")
	for _, want := range []string{"Morning digest", "completed", "dead letter", "Spend", "Agents:", "Infrastructure"} {
		if !strings.Contains(out, want) {
			t.Errorf("digest lacks %q:\n%s", want, out)
		}
	}
	var d struct {
		Digest struct {
			Text string `json:"text"`
		} `json:"digest"`
	}
	if err := json.Unmarshal([]byte(sh.ok("digest", "--since", "24h", "-o", "json")), &d); err != nil || !strings.Contains(d.Digest.Text, "Morning digest") {
		t.Errorf("digest -o json: %v %+v", err, d)
	}
	if r := sh.run("digest", "--since", "yesterday"); r.code != 2 {
		t.Errorf("digest --since yesterday: exit %d", r.code)
	}
}
