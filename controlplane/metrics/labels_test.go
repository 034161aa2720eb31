package metrics

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/store"
)

// seriesOf returns the series of name in one scrape.
func seriesOf(samples map[string]string, name string) map[string]string {
	out := map[string]string{}
	for series, v := range samples {
		if n, _, _ := strings.Cut(series, "{"); n == name {
			out[series] = v
		}
	}
	return out
}

func TestLabelsFromTrafficAreBounded(t *testing.T) {
	const n = 20000
	byModel, byAgent := map[string]int64{}, map[string]int64{}
	var total, small int64
	var agents []fleet.Agent
	var nodes []fleet.Node
	var budgets []BudgetLine
	for i := range n {
		// model-00000 spends most: the limit keeps the biggest spenders.
		v := int64(n - i)
		byModel[fmt.Sprintf("model-%05d", i)] = v
		byAgent[fmt.Sprintf("agent-%05d", i)] = v
		total += v
		if i >= MaxLabelValues {
			small += v
		}
		agents = append(agents, fleet.Agent{Name: fmt.Sprintf("agent-%05d", i), Host: fmt.Sprintf("host-%05d", i), Role: fmt.Sprintf("role-%05d", i), State: fleet.StateOnline})
		nodes = append(nodes, fleet.Node{Host: fmt.Sprintf("host-%05d", i), State: fleet.StateOnline})
		budgets = append(budgets, BudgetLine{Scope: "agent", Name: fmt.Sprintf("agent-%05d", i), SpentMicros: v, Limits: map[string]int64{"cap": 1_000_000}})
	}
	m, err := New(Config{Logger: quiet(), Sources: Sources{
		Fleet: fakeFleet{nodes: nodes, agents: agents},
		Spend: func(context.Context) (*SpendSnapshot, error) {
			return &SpendSnapshot{TotalMicros: total, ByModel: byModel, ByAgent: byAgent, ByTier: map[string]int64{"frontier": total}, Budgets: budgets}, nil
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	for i := range n {
		m.Claimed(fmt.Sprintf("claimer-%05d", i), 1)
		m.Finished(fmt.Sprintf("claimer-%05d", i), store.StateDone)
	}
	got := scrape(t, m.Handler())

	for _, name := range []string{"factory_spend_model_today_micros", "factory_spend_agent_today_micros", "factory_fleet_agent_up",
		"factory_fleet_agent_busy", "factory_fleet_node_up", "factory_queue_claims_total", "factory_queue_finished_total", "factory_budget_spent_micros"} {
		series := seriesOf(got, name)
		if len(series) == 0 || len(series) > MaxLabelValues+1 {
			t.Errorf("%s: %d series from %d distinct values, want 1..%d", name, len(series), n, MaxLabelValues+1)
		}
		for s := range series {
			if strings.Contains(s, "otel_metric_overflow") {
				t.Errorf("%s reached the SDK's overflow series: %s", name, s)
			}
		}
	}
	// Nothing is lost: the biggest spenders keep their series, the rest sum
	// into "other".
	if v := value(t, got, "factory_spend_model_today_micros", "model=model-00000"); v != strconv.Itoa(n) && v != fmt.Sprintf("%g", float64(n)) {
		t.Errorf("biggest model = %s, want %d", v, n)
	}
	other, err := strconv.ParseFloat(value(t, got, "factory_spend_model_today_micros", "model=other"), 64)
	if err != nil || int64(other) != small {
		t.Errorf("model=other = %v (%v), want the sum of the rest, %d", other, err, small)
	}
	if v := value(t, got, "factory_fleet_agent_up", "agent=other"); v != strconv.Itoa(n-MaxLabelValues) {
		t.Errorf("agent_up{agent=other} = %s, want the %d agents past the limit that are up", v, n-MaxLabelValues)
	}
	if v := value(t, got, "factory_queue_claims_total", "agent=other"); v != strconv.Itoa(n-MaxLabelValues) {
		t.Errorf("claims{agent=other} = %s, want %d", v, n-MaxLabelValues)
	}
	if limits := seriesOf(got, "factory_budget_limit_micros"); len(limits) > MaxLabelValues {
		t.Errorf("budget limits: %d series, want at most %d", len(limits), MaxLabelValues)
	}
}

func TestTopValuesKeepsSmallMapsAsTheyAre(t *testing.T) {
	in := map[string]int64{"a": 1, "b": 2}
	if got := topValues(in, 2); len(got) != 2 || got["a"] != 1 || got["b"] != 2 {
		t.Fatalf("topValues = %v", got)
	}
	got := topValues(map[string]int64{"a": 1, "b": 2, "c": 3, Other: 10}, 2)
	if len(got) != 3 || got[Other] != 11 || got["c"] != 3 || got["b"] != 2 {
		t.Fatalf("topValues = %v, want c, b and other=1+10", got)
	}
}
