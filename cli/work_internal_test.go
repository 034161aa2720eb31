package cli

import (
	"strings"
	"testing"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func TestWorkParseSpendLine(t *testing.T) {
	ev, err := parseSpendLine("model=claude-sonnet-4 provider=anthropic tier=frontier input_tokens=18650 output_tokens=1204 cost_usd=0.0353 host=gpu-1")
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetModel() != "claude-sonnet-4" || ev.GetProvider() != "anthropic" || ev.GetTier() != factoryv1.SpendTier_SPEND_TIER_FRONTIER ||
		ev.GetInputTokens() != 18650 || ev.GetOutputTokens() != 1204 || ev.GetCostMicros() != 35300 || ev.GetHost() != "gpu-1" {
		t.Fatalf("parsed: %v", ev)
	}
	if ev, err := parseSpendLine("model=qwen2.5:7b tier=local cost_micros=0"); err != nil || ev.CostMicros == nil || *ev.CostMicros != 0 {
		t.Fatalf("a zero cost is a cost: %v, %v", ev, err)
	}
	if ev, err := parseSpendLine("model=m tier=mid input_tokens=5"); err != nil || ev.CostMicros != nil {
		t.Fatalf("no cost leaves pricing to the control plane: %v, %v", ev, err)
	}
	for line, want := range map[string]string{
		"tier=local":                                  "model= is required",
		"model=m":                                     "tier= is required",
		"model=m tier=cheap":                          `tier "cheap"`,
		"model=m tier=local input_tokens=-1":          "want a whole number",
		"model=m tier=local cost_usd=0.0000001":       "at most 6 decimal places",
		"model=m tier=local cost_usd=1 cost_micros=1": "not both",
		"model=m tier=local model=n":                  "model given twice",
		"model=m tier=local colour=red":               `unknown key "colour"`,
		"model=m tier=local just-a-word":              "not KEY=VALUE",
	} {
		if _, err := parseSpendLine(line); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v; want %q", line, err, want)
		}
	}
}

func TestWorkSpendEventIDFitsTheAPI(t *testing.T) {
	if id := spendEventID("01a24d5e-8574-7330-af9c-eb48cb6ee2b5", 17, 3); id != "01a24d5e-8574-7330-af9c-eb48cb6ee2b5:17:3" {
		t.Fatalf("id %q", id)
	}
	long := strings.Repeat("x", 128)
	a, b := spendEventID(long, 9223372036854775807, 1000000), spendEventID(long+"y", 9223372036854775807, 1000000)
	if len(a) > 128 || a == b || !strings.HasSuffix(a, ":9223372036854775807:1000000") {
		t.Fatalf("long ids %q, %q", a, b)
	}
}

func TestWorkShortTaskID(t *testing.T) {
	for id, want := range map[string]string{
		"01a24d5e-8574-7330-af9c-eb48cb6ee2b5": "cb6ee2b5",
		"spec":                                 "spec",
		strings.Repeat("a", 30):                strings.Repeat("a", 23) + "…",
	} {
		if got := shortTaskID(id); got != want {
			t.Errorf("shortTaskID(%q) = %q; want %q", id, got, want)
		}
	}
}

func TestWorkEmergencyReasonAndBriefError(t *testing.T) {
	if got := emergencyReason("the fleet is under an emergency stop (spend (runaway) loop); an operator must rearm it (factory emergency-stop --rearm)"); got != "spend (runaway) loop" {
		t.Errorf("reason %q", got)
	}
	if got := emergencyReason("something else"); got != "something else" {
		t.Errorf("reason %q", got)
	}
	if got := briefError("CMD exited with code 2; stderr ends:\nfirst\nlast words"); got != "CMD exited with code 2; stderr ends: last words" {
		t.Errorf("brief %q", got)
	}
}
