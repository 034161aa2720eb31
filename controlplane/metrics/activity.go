package metrics

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// TaskDurationBuckets are factory_task_duration_seconds's bucket bounds:
// agent work takes from a second (a lookup) to hours (a build and its
// tests), so the buckets run from 1 s to 4 h, about doubling.
var TaskDurationBuckets = []float64{1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 10800, 14400}

// activity holds the counters and the histogram fed by the queue's
// attempts and the budget's newly recorded calls. Their label values come
// from callers (agents, roles, models, providers, hosts), so each label
// is bounded per instrument (labelValues).
type activity struct {
	taskDuration metric.Float64Histogram
	agentTasks   metric.Int64Counter
	spend        metric.Int64Counter
	tokens       metric.Int64Counter
	requests     metric.Int64Counter

	agents, roles, models, providers, tiers, hosts *labelValues
}

var (
	_ queue.AttemptObserver = (*Metrics)(nil)
	_ budget.SpendObserver  = (*Metrics)(nil)
)

func (m *Metrics) registerActivity() error {
	meter := m.provider.Meter(meterName)
	a := &m.activity
	var err error
	if a.taskDuration, err = meter.Float64Histogram("factory.task.duration", metric.WithUnit("s"),
		metric.WithDescription("How long each attempt at a task took, from its claim to its completion or failure, per role, agent and outcome (done, review, failed; failed includes a failed attempt that will be retried)."),
		metric.WithExplicitBucketBoundaries(TaskDurationBuckets...)); err != nil {
		return err
	}
	if a.agentTasks, err = meter.Int64Counter("factory.agent.tasks", metric.WithUnit("{task}"),
		metric.WithDescription("Attempts each agent ended, per role and outcome (done, review, failed).")); err != nil {
		return err
	}
	if a.spend, err = meter.Int64Counter("factory.spend.micros",
		metric.WithDescription("LLM spend recorded, in micro-dollars, per agent, model, tier and provider: each newly recorded event once. A void subtracts nothing (the day's gauges show the net).")); err != nil {
		return err
	}
	if a.tokens, err = meter.Int64Counter("factory.llm.tokens", metric.WithUnit("{token}"),
		metric.WithDescription("LLM tokens recorded, per agent, model, tier, provider and type (input, output, cache_read, cache_write). Input includes cache reads, so rate(cache_read)/rate(input) is the prompt-cache hit ratio.")); err != nil {
		return err
	}
	if a.requests, err = meter.Int64Counter("factory.llm.requests", metric.WithUnit("{request}"),
		metric.WithDescription("LLM calls recorded, per host, provider, model and status (success, failure).")); err != nil {
		return err
	}
	a.agents, a.roles, a.models = newLabelValues(MaxLabelValues), newLabelValues(MaxLabelValues), newLabelValues(MaxLabelValues)
	a.providers, a.tiers, a.hosts = newLabelValues(MaxLabelValues), newLabelValues(MaxLabelValues), newLabelValues(MaxLabelValues)
	return nil
}

// outcomeLabel is an attempt's outcome: "done", "review" or "failed" (a
// failure, retried or not).
func outcomeLabel(to store.TaskState) string {
	switch to {
	case store.StateDone:
		return "done"
	case store.StateReview:
		return "review"
	default:
		return "failed"
	}
}

// orUnknown is v, or "unknown" for an empty label value.
func orUnknown(v string) string {
	if v == "" {
		return "unknown"
	}
	return v
}

// AttemptEnded implements queue.AttemptObserver.
func (m *Metrics) AttemptEnded(at queue.Attempt) {
	a := &m.activity
	role := at.Role
	if role == "" {
		role = "any"
	}
	attrs := metric.WithAttributes(attribute.String("agent", a.agents.value(at.Agent)),
		attribute.String("role", a.roles.value(role)), attribute.String("outcome", outcomeLabel(at.To)))
	ctx := context.Background()
	a.agentTasks.Add(ctx, 1, attrs)
	if at.Timed {
		a.taskDuration.Record(ctx, at.Took.Seconds(), attrs)
	}
}

// Spent implements budget.SpendObserver.
func (m *Metrics) Spent(c budget.Call) {
	a := &m.activity
	ctx := context.Background()
	agent := attribute.String("agent", a.agents.value(c.Agent))
	model := attribute.String("model", a.models.value(orUnknown(c.Model)))
	tier := attribute.String("tier", a.tiers.value(c.Tier))
	provider := attribute.String("provider", a.providers.value(orUnknown(strings.ToLower(c.Provider))))
	a.spend.Add(ctx, c.CostMicros, metric.WithAttributes(agent, model, tier, provider))
	for _, t := range []struct {
		kind string
		n    int64
	}{{"input", c.InputTokens}, {"output", c.OutputTokens}, {"cache_read", c.CacheReadTokens}, {"cache_write", c.CacheWriteTokens}} {
		a.tokens.Add(ctx, t.n, metric.WithAttributes(agent, model, tier, provider, attribute.String("type", t.kind)))
	}
	status, other := "success", "failure"
	if c.Failed {
		status, other = other, status
	}
	host := attribute.String("host", a.hosts.value(orUnknown(c.Host)))
	a.requests.Add(ctx, 1, metric.WithAttributes(host, provider, model, attribute.String("status", status)))
	// The other status's series exists too, at 0 until it counts: an
	// error rate is then 0, not "no data".
	a.requests.Add(ctx, 0, metric.WithAttributes(host, provider, model, attribute.String("status", other)))
}

// observeHost exports one host's CPU, memory, load and network readings;
// a reading without memory (the sidecar could not read /proc) exports
// none of it.
func observeHost(o metric.Observer, in *fleetInstruments, host attribute.KeyValue, h *factoryv1.HostReading, devices *labelValues) {
	if h == nil || h.GetMemoryTotalBytes() == 0 {
		return
	}
	attrs := metric.WithAttributes(host)
	if h.CpuUsageRatio != nil {
		o.ObserveFloat64(in.hostCPU, h.GetCpuUsageRatio(), attrs)
	}
	o.ObserveFloat64(in.hostLoad1, h.GetLoad1(), attrs)
	o.ObserveInt64(in.hostMemUsed, clampInt64(h.GetMemoryUsedBytes()), attrs)
	o.ObserveInt64(in.hostMemTotal, clampInt64(h.GetMemoryTotalBytes()), attrs)
	for i, n := range h.GetNetworks() {
		// A counter's device past the limit is not exported: byte counts
		// of different devices summed into "other" would go backwards
		// whenever one of them left.
		if i >= MaxLabelValues || n.GetDevice() == "" || n.GetDevice() == "lo" || devices.value(n.GetDevice()) == Other {
			continue
		}
		dev := metric.WithAttributes(host, attribute.String("device", n.GetDevice()))
		o.ObserveInt64(in.hostRx, clampInt64(n.GetReceiveBytes()), dev)
		o.ObserveInt64(in.hostTx, clampInt64(n.GetTransmitBytes()), dev)
	}
}
