package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestSpendReportAndViews: agents report spend from the shell, a retry
// with the same id counts once, and `factory spend` shows today against
// the budgets, breakdowns by agent and a range of days, in tables with
// dollars and in JSON with exact micro-dollars.
func TestSpendReportAndViews(t *testing.T) {
	s := newShell(t)
	out := s.ok("spend", "report", "--agent", "planner-01", "--model", "claude-sonnet-4", "--tier", "frontier",
		"--input-tokens", "18650", "--output-tokens", "1204", "--cost", "12.34", "--id", "run-1:call-1", "--task", "T-1")
	if !strings.Contains(out, "run-1:call-1 $12.34") {
		t.Errorf("report output: %q", out)
	}
	if out := s.ok("spend", "report", "--agent", "planner-01", "--model", "claude-sonnet-4", "--tier", "frontier",
		"--input-tokens", "18650", "--output-tokens", "1204", "--cost", "12.34", "--id", "run-1:call-1", "--task", "T-1"); !strings.Contains(out, "already recorded") {
		t.Errorf("retry output: %q", out)
	}
	// The same id with another cost is a rewrite, refused naming it.
	if r := s.run("spend", "report", "--agent", "planner-01", "--model", "claude-sonnet-4", "--tier", "frontier",
		"--input-tokens", "18650", "--output-tokens", "1204", "--cost", "1.00", "--id", "run-1:call-1", "--task", "T-1"); r.code == 0 || !strings.Contains(r.stderr, "cost_micros") {
		t.Errorf("rewrite: exit %d, stderr %q", r.code, r.stderr)
	}
	s.ok("spend", "report", "--agent", "reviewer-02", "--model", "gpt-4o-mini", "--tier", "mid", "--cost", "$0.000715", "--id", "run-1:call-2")
	s.ok("spend", "report", "--agent", "coder-03", "--model", "qwen2.5:7b", "--tier", "local", "--cost", "0", "--id", "run-1:call-3")
	// Without --cost the control plane prices the tokens.
	var priced struct {
		Record struct {
			PricedByServer bool `json:"priced_by_server"`
			Event          struct {
				CostMicros string `json:"cost_micros"`
			} `json:"event"`
		} `json:"record"`
	}
	raw := s.ok("spend", "report", "--agent", "reviewer-02", "--model", "gpt-4o-mini", "--tier", "mid",
		"--input-tokens", "1000", "--output-tokens", "100", "-o", "json")
	if err := json.Unmarshal([]byte(raw), &priced); err != nil || !priced.Record.PricedByServer {
		t.Errorf("priced report: %v\n%s", err, raw)
	}

	var today struct {
		Day  string `json:"day"`
		Rows []struct {
			Scope       string `json:"scope"`
			SpentMicros int64  `json:"spent_micros"`
			Events      int64  `json:"events"`
			AlertMicros int64  `json:"alert_micros"`
		} `json:"rows"`
	}
	raw = s.ok("spend", "-o", "json")
	if err := json.Unmarshal([]byte(raw), &today); err != nil {
		t.Fatalf("spend -o json: %v\n%s", err, raw)
	}
	rows := map[string]int64{}
	for _, r := range today.Rows {
		rows[r.Scope] = r.SpentMicros
	}
	if rows["frontier"] != 12_340_000 || rows["local"] != 0 || rows["mid"] < 715 || rows["total"] != rows["frontier"]+rows["mid"] {
		t.Errorf("today: %+v", today.Rows)
	}
	table := s.ok("spend")
	for _, want := range []string{"SCOPE", "frontier", "$12.34", "$25.00", "7-day average"} {
		if !strings.Contains(table, want) {
			t.Errorf("spend table lacks %q:\n%s", want, table)
		}
	}

	var byAgent struct {
		Groups []struct {
			Key    string `json:"key"`
			Totals struct {
				CostMicros string `json:"cost_micros"`
				Events     string `json:"events"`
			} `json:"totals"`
		} `json:"groups"`
	}
	raw = s.ok("spend", "--by", "agent", "-o", "json")
	if err := json.Unmarshal([]byte(raw), &byAgent); err != nil {
		t.Fatal(err)
	}
	if len(byAgent.Groups) != 3 || byAgent.Groups[0].Key != "planner-01" || byAgent.Groups[0].Totals.CostMicros != "12340000" {
		t.Errorf("by agent: %s", raw)
	}
	week := s.ok("spend", "--days", "7")
	if !strings.Contains(week, "DAY") || !strings.Contains(week, today.Day) || !strings.Contains(week, "TOTAL") {
		t.Errorf("spend --days 7:\n%s", week)
	}
	if out := s.ok("spend", "--by", "model", "--from", today.Day, "--to", today.Day); !strings.Contains(out, "claude-sonnet-4") {
		t.Errorf("by model:\n%s", out)
	}

	for _, bad := range [][]string{
		{"spend", "--by", "colour"},
		{"spend", "--days", "7", "--from", "2026-11-01"},
		{"spend", "--from", "yesterday"},
		{"spend", "report", "--agent", "a", "--model", "m", "--tier", "gold"},
		{"spend", "report", "--agent", "a", "--model", "m", "--tier", "mid", "--cost", "1.0000001"},
		{"spend", "report", "--model", "m", "--tier", "mid"},
	} {
		if r := s.run(bad...); r.code != 2 {
			t.Errorf("factory %s: exit %d, want 2 (usage)\n%s", strings.Join(bad, " "), r.code, r.stderr)
		}
	}
}

// TestSpendVoid: an operator voids a bogus event; spend shows the net, a
// second void is refused, and the flags are required.
func TestSpendVoid(t *testing.T) {
	s := newShell(t)
	s.ok("spend", "report", "--agent", "forge", "--model", "m", "--tier", "mid", "--cost", "2", "--id", "ok-1")
	s.ok("spend", "report", "--agent", "forge", "--model", "m", "--tier", "mid", "--cost", "50000", "--id", "bogus-1")
	if out := s.ok("spend", "void", "bogus-1", "--agent", "forge", "--reason", "test event"); !strings.Contains(out, "voided bogus-1 of forge: $50,000.00 off") {
		t.Errorf("void output: %q", out)
	}
	if r := s.run("spend", "void", "bogus-1", "--agent", "forge", "--reason", "again"); r.code == 0 || !strings.Contains(r.stderr, "voided") {
		t.Errorf("second void: exit %d, stderr %q", r.code, r.stderr)
	}
	var rep struct {
		Totals struct {
			CostMicros string `json:"cost_micros"`
		} `json:"totals"`
	}
	raw := s.ok("spend", "--by", "agent", "-o", "json")
	if err := json.Unmarshal([]byte(raw), &rep); err != nil || rep.Totals.CostMicros != "2000000" {
		t.Errorf("spend after the void: %v %s", err, raw)
	}
	for _, bad := range [][]string{
		{"spend", "void", "bogus-1", "--reason", "x"},
		{"spend", "void", "bogus-1", "--agent", "forge"},
		{"spend", "void", "--agent", "forge", "--reason", "x"},
	} {
		if r := s.run(bad...); r.code != 2 {
			t.Errorf("factory %s: exit %d, want 2 (usage)\n%s", strings.Join(bad, " "), r.code, r.stderr)
		}
	}
}

// TestBudgetSetAndShow: budget set converts dollars exactly, keeps the
// limits not given, and budget shows where today stands.
func TestBudgetSetAndShow(t *testing.T) {
	s := newShell(t)
	if out := s.ok("budget", "set", "--scope", "tier", "--key", "frontier", "--alert", "25", "--cap", "40.5"); !strings.Contains(out, "cap $40.50") {
		t.Errorf("set output: %q", out)
	}
	s.ok("budget", "set", "--scope", "tier", "--key", "frontier", "--target", "12.345678")
	s.ok("spend", "report", "--agent", "planner-01", "--model", "claude-sonnet-4", "--tier", "frontier", "--cost", "30", "--id", "b-1")

	var resp struct {
		Budgets []struct {
			Budget struct {
				Scope        string `json:"scope"`
				Key          string `json:"key"`
				TargetMicros string `json:"target_micros"`
				AlertMicros  string `json:"alert_micros"`
				CapMicros    string `json:"cap_micros"`
			} `json:"budget"`
			SpentMicros string `json:"spent_micros"`
			Alerting    bool   `json:"alerting"`
		} `json:"budgets"`
	}
	raw := s.ok("budget", "-o", "json")
	if err := json.Unmarshal([]byte(raw), &resp); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, b := range resp.Budgets {
		if b.Budget.Scope == "BUDGET_SCOPE_TIER" && b.Budget.Key == "frontier" {
			found = true
			if b.Budget.TargetMicros != "12345678" || b.Budget.AlertMicros != "25000000" || b.Budget.CapMicros != "40500000" ||
				b.SpentMicros != "30000000" || !b.Alerting {
				t.Errorf("frontier budget: %+v", b)
			}
		}
	}
	if !found {
		t.Fatalf("no frontier budget in %s", raw)
	}
	// A first budget for one agent starts from every agent's default: a
	// cap alone keeps the default alert.
	s.ok("budget", "set", "--scope", "agent", "--key", "planner-01", "--cap", "15")
	if err := json.Unmarshal([]byte(s.ok("budget", "-o", "json")), &resp); err != nil {
		t.Fatal(err)
	}
	found = false
	for _, b := range resp.Budgets {
		if b.Budget.Scope == "BUDGET_SCOPE_AGENT" && b.Budget.Key == "planner-01" {
			found = true
			if b.Budget.CapMicros != "15000000" || b.Budget.AlertMicros != "10000000" {
				t.Errorf("planner-01 budget: %+v", b)
			}
		}
	}
	if !found {
		t.Error("no planner-01 budget")
	}
	table := s.ok("budget")
	for _, want := range []string{"SCOPE", "frontier", "$30.00", "$40.50", "$10.50", "ALERT"} {
		if !strings.Contains(table, want) {
			t.Errorf("budget table lacks %q:\n%s", want, table)
		}
	}
	for _, bad := range [][]string{
		{"budget", "set", "--scope", "planet", "--alert", "1"},
		{"budget", "set", "--scope", "tier", "--key", "gold", "--alert", "1"},
		{"budget", "set", "--scope", "tier", "--key", "mid", "--emergency", "100"},
		{"budget", "set", "--scope", "total", "--alert", "12.5.0"},
		{"budget", "set", "--scope", "total", "--alert", "-3"},
		{"budget", "set", "--scope", "total"},
	} {
		if r := s.run(bad...); r.code != 2 {
			t.Errorf("factory %s: exit %d, want 2 (usage)\n%s", strings.Join(bad, " "), r.code, r.stderr)
		}
	}
}

// TestEmergencyStopCommands: stop, status, rearm, and the usage errors.
func TestEmergencyStopCommands(t *testing.T) {
	s := newShell(t)
	if out := s.ok("emergency-stop", "status"); !strings.Contains(out, "not stopped") {
		t.Errorf("status before: %q", out)
	}
	if out := s.ok("emergency-stop", "--reason", "runaway loop in planner-01"); !strings.Contains(out, "STOPPED") || !strings.Contains(out, "runaway loop") {
		t.Errorf("stop: %q", out)
	}
	var st struct {
		State struct {
			Stopped bool   `json:"stopped"`
			Reason  string `json:"reason"`
		} `json:"state"`
	}
	raw := s.ok("emergency-stop", "status", "-o", "json")
	if err := json.Unmarshal([]byte(raw), &st); err != nil || !st.State.Stopped || st.State.Reason != "runaway loop in planner-01" {
		t.Errorf("status json: %v %s", err, raw)
	}
	if out := s.ok("emergency-stop", "--rearm", "--note", "fixed"); !strings.Contains(out, "lifted") {
		t.Errorf("rearm: %q", out)
	}
	if out := s.ok("emergency-stop", "status"); !strings.Contains(out, "not stopped") {
		t.Errorf("status after: %q", out)
	}
	for _, bad := range [][]string{
		{"emergency-stop"},
		{"emergency-stop", "--reason", "x", "--rearm"},
		{"emergency-stop", "--reason", "x", "--note", "y"},
	} {
		if r := s.run(bad...); r.code != 2 {
			t.Errorf("factory %s: exit %d, want 2 (usage)\n%s", strings.Join(bad, " "), r.code, r.stderr)
		}
	}
}

// TestBenchSpend runs bench spend against an in-process control plane:
// single and batched reporting, a seed spread over days, and timed
// reports.
func TestBenchSpend(t *testing.T) {
	s := newShell(t)
	for _, batch := range []string{"1", "50"} {
		raw := s.ok("bench", "spend", "--events", "200", "--batch", batch, "--reporters", "2", "--seed", "300", "--report-days", "30",
			"--queries", "7", "--label", "sqlite", "-o", "json")
		var res struct {
			Events          int     `json:"events"`
			EventsPerSecond float64 `json:"events_per_second"`
			Seeded          int     `json:"seeded"`
			Label           string  `json:"label"`
			Report          struct {
				Count int `json:"count"`
			} `json:"report_latency"`
			ByGroup map[string]json.RawMessage `json:"report_latency_by_group"`
		}
		if err := json.Unmarshal([]byte(raw), &res); err != nil {
			t.Fatalf("bench spend -o json: %v\n%s", err, raw)
		}
		if res.Events != 200 || res.EventsPerSecond <= 0 || res.Seeded != 300 || res.Report.Count != 7 || len(res.ByGroup) != 7 || res.Label != "sqlite" {
			t.Errorf("batch %s: %s", batch, raw)
		}
	}
	// Bench events cost nothing: no budget moved.
	var today struct {
		Rows []struct {
			Scope       string `json:"scope"`
			SpentMicros int64  `json:"spent_micros"`
		} `json:"rows"`
	}
	if err := json.Unmarshal([]byte(s.ok("spend", "-o", "json")), &today); err != nil {
		t.Fatal(err)
	}
	for _, r := range today.Rows {
		if r.SpentMicros != 0 {
			t.Errorf("bench moved %s's spend to %d", r.Scope, r.SpentMicros)
		}
	}
	if r := s.run("bench", "spend", "--batch", "0"); r.code != 2 {
		t.Errorf("--batch 0: exit %d, want 2", r.code)
	}
}
