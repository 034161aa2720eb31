package metrics

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func hostReading() *factoryv1.HostReading {
	return &factoryv1.HostReading{CpuUsageRatio: proto.Float64(0.25), MemoryTotalBytes: 24683772 * 1024, MemoryUsedBytes: 2552812 * 1024,
		Load1: 17.04, Load5: 18.58, Load15: 12.85,
		Networks: []*factoryv1.HostNetworkDevice{{Device: "lo", ReceiveBytes: 1, TransmitBytes: 1}, {Device: "eth0", ReceiveBytes: 288608845, TransmitBytes: 905866}}}
}

// labelSets returns, per series of name, its label names sorted and
// joined ("agent,outcome,role"), without the resource's otel_scope_*.
func labelSets(samples map[string]string, name string) map[string]bool {
	out := map[string]bool{}
	for series := range samples {
		n, labels, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		var keys []string
		for _, kv := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
			k, _, _ := strings.Cut(kv, "=")
			if k != "" && !strings.HasPrefix(k, "otel_scope_") && k != "le" {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		out[strings.Join(keys, ",")] = true
	}
	return out
}

// The new instruments are exported under exactly the names and labels the
// dashboards are written against.
func TestActivityAndHostMetricsHaveTheirNamesAndLabels(t *testing.T) {
	m, err := New(Config{Logger: quiet(), Sources: Sources{Fleet: fakeFleet{nodes: []fleet.Node{
		{Host: "gpu-01", State: fleet.StateOnline, Telemetry: &factoryv1.Telemetry{Host: hostReading()}},
		{Host: "cpu-02", State: fleet.StateOnline, Telemetry: &factoryv1.Telemetry{}}, // an older sidecar: no host reading
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	m.AttemptEnded(queue.Attempt{Agent: "forge", Role: "builder", To: store.StateDone, Took: 90 * time.Second, Timed: true})
	m.AttemptEnded(queue.Attempt{Agent: "forge", Role: "builder", To: store.StateReview, Took: 3 * time.Hour, Timed: true})
	m.AttemptEnded(queue.Attempt{Agent: "forge", Role: "builder", To: store.StateFailed, Took: 2 * time.Second, Timed: true})
	m.AttemptEnded(queue.Attempt{Agent: "forge", Role: "builder", To: store.StateReady, Took: 3 * time.Second, Timed: true}) // a retried failure
	m.AttemptEnded(queue.Attempt{Agent: "anvil", To: store.StateDone})                                                       // untimed: counted only
	m.Spent(budget.Call{Agent: "forge", Host: "gpu-01", Model: "claude-sonnet-4-5", Provider: "anthropic", Tier: "frontier",
		InputTokens: 18650, OutputTokens: 1204, CacheReadTokens: 14336, CacheWriteTokens: 10, CostMicros: 35303})
	m.Spent(budget.Call{Agent: "forge", Host: "gpu-01", Model: "claude-sonnet-4-5", Provider: "anthropic", Tier: "frontier", Failed: true})

	got := scrape(t, m.Handler())
	labels := map[string]string{
		"factory_task_duration_seconds_bucket":      "agent,outcome,role",
		"factory_task_duration_seconds_count":       "agent,outcome,role",
		"factory_task_duration_seconds_sum":         "agent,outcome,role",
		"factory_agent_tasks_total":                 "agent,outcome,role",
		"factory_spend_micros_total":                "agent,model,provider,tier",
		"factory_llm_tokens_total":                  "agent,model,provider,tier,type",
		"factory_llm_requests_total":                "host,model,provider,status",
		"factory_host_cpu_usage_ratio":              "host",
		"factory_host_memory_used_bytes":            "host",
		"factory_host_memory_total_bytes":           "host",
		"factory_host_load1":                        "host",
		"factory_host_network_receive_bytes_total":  "device,host",
		"factory_host_network_transmit_bytes_total": "device,host",
	}
	for name, want := range labels {
		if sets := labelSets(got, name); len(sets) != 1 || !sets[want] {
			t.Errorf("%s has label sets %v, want only {%s}", name, slices.Collect(maps.Keys(sets)), want)
		}
	}
	checks := []struct {
		name string
		want []string
		val  string
	}{
		{"factory_task_duration_seconds_count", []string{"agent=forge", "outcome=done", "role=builder"}, "1"},
		{"factory_task_duration_seconds_sum", []string{"agent=forge", "outcome=done", "role=builder"}, "90"},
		{"factory_task_duration_seconds_bucket", []string{"outcome=done", "le=60"}, "0"},
		{"factory_task_duration_seconds_bucket", []string{"outcome=done", "le=120"}, "1"},
		{"factory_task_duration_seconds_bucket", []string{"outcome=review", "le=14400"}, "1"},
		{"factory_task_duration_seconds_bucket", []string{"outcome=review", "le=7200"}, "0"},
		{"factory_task_duration_seconds_count", []string{"outcome=failed"}, "2"},
		{"factory_agent_tasks_total", []string{"agent=forge", "outcome=failed"}, "2"},
		{"factory_agent_tasks_total", []string{"agent=anvil", "role=any", "outcome=done"}, "1"},
		{"factory_spend_micros_total", []string{"agent=forge", "model=claude-sonnet-4-5", "tier=frontier", "provider=anthropic"}, "35303"},
		{"factory_llm_tokens_total", []string{"agent=forge", "type=input"}, "18650"},
		{"factory_llm_tokens_total", []string{"agent=forge", "type=output"}, "1204"},
		{"factory_llm_tokens_total", []string{"agent=forge", "type=cache_read"}, "14336"},
		{"factory_llm_tokens_total", []string{"agent=forge", "type=cache_write"}, "10"},
		{"factory_llm_requests_total", []string{"host=gpu-01", "provider=anthropic", "model=claude-sonnet-4-5", "status=success"}, "1"},
		{"factory_llm_requests_total", []string{"host=gpu-01", "provider=anthropic", "model=claude-sonnet-4-5", "status=failure"}, "1"},
		{"factory_host_cpu_usage_ratio", []string{"host=gpu-01"}, "0.25"},
		{"factory_host_memory_total_bytes", []string{"host=gpu-01"}, "2.5276182528e+10"},
		{"factory_host_memory_used_bytes", []string{"host=gpu-01"}, "2.614079488e+09"},
		{"factory_host_load1", []string{"host=gpu-01"}, "17.04"},
		{"factory_host_network_receive_bytes_total", []string{"host=gpu-01", "device=eth0"}, "2.88608845e+08"},
		{"factory_host_network_transmit_bytes_total", []string{"host=gpu-01", "device=eth0"}, "905866"},
	}
	for _, c := range checks {
		if v := value(t, got, c.name, c.want...); v != c.val {
			t.Errorf("%s%v = %s, want %s", c.name, c.want, v, c.val)
		}
	}
	for series := range got {
		if strings.HasPrefix(series, "factory_host_") && (strings.Contains(series, `device="lo"`) || strings.Contains(series, `host="cpu-02"`)) {
			t.Errorf("exported: %s", series)
		}
	}
}
