package metrics

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Names maps every factory instrument (its OpenTelemetry name) to the name
// Prometheus sees. Histograms add _bucket, _sum and _count to theirs.
var Names = map[string]string{
	"factory.queue.depth":                 "factory_queue_depth",
	"factory.queue.oldest_ready.age":      "factory_queue_oldest_ready_age_seconds",
	"factory.queue.oldest_claim.age":      "factory_queue_oldest_claim_age_seconds",
	"factory.queue.retrying":              "factory_queue_retrying",
	"factory.queue.paused":                "factory_queue_paused",
	"factory.queue.claims":                "factory_queue_claims_total",
	"factory.queue.finished":              "factory_queue_finished_total",
	"factory.queue.lease_rescues":         "factory_queue_lease_rescues_total",
	"factory.fleet.agents":                "factory_fleet_agents",
	"factory.fleet.nodes":                 "factory_fleet_nodes",
	"factory.fleet.agent.up":              "factory_fleet_agent_up",
	"factory.fleet.agent.busy":            "factory_fleet_agent_busy",
	"factory.fleet.node.up":               "factory_fleet_node_up",
	"factory.gpu.memory.used":             "factory_gpu_memory_used_bytes",
	"factory.gpu.memory.total":            "factory_gpu_memory_total_bytes",
	"factory.gpu.utilization":             "factory_gpu_utilization_percent",
	"factory.gpu.memory.utilization":      "factory_gpu_memory_utilization_percent",
	"factory.gpu.temperature":             "factory_gpu_temperature_celsius",
	"factory.gpu.power":                   "factory_gpu_power_watts",
	"factory.disk.usage":                  "factory_disk_usage_ratio",
	"factory.probe.up":                    "factory_probe_up",
	"factory.probe.latency":               "factory_probe_latency_seconds",
	"factory.spend.today_micros":          "factory_spend_today_micros",
	"factory.spend.tier.today_micros":     "factory_spend_tier_today_micros",
	"factory.spend.agent.today_micros":    "factory_spend_agent_today_micros",
	"factory.spend.model.today_micros":    "factory_spend_model_today_micros",
	"factory.budget.spent_micros":         "factory_budget_spent_micros",
	"factory.budget.limit_micros":         "factory_budget_limit_micros",
	"factory.budget.remaining_micros":     "factory_budget_remaining_micros",
	"factory.budget.halted":               "factory_budget_halted",
	"factory.approvals.pending":           "factory_approvals_pending",
	"factory.alerts.firing":               "factory_alerts_firing",
	"factory.task.duration":               "factory_task_duration_seconds",
	"factory.agent.tasks":                 "factory_agent_tasks_total",
	"factory.spend.micros":                "factory_spend_micros_total",
	"factory.llm.tokens":                  "factory_llm_tokens_total",
	"factory.llm.requests":                "factory_llm_requests_total",
	"factory.host.cpu.usage":              "factory_host_cpu_usage_ratio",
	"factory.host.memory.used":            "factory_host_memory_used_bytes",
	"factory.host.memory.total":           "factory_host_memory_total_bytes",
	"factory.host.load1":                  "factory_host_load1",
	"factory.host.network.receive":        "factory_host_network_receive_bytes_total",
	"factory.host.network.transmit":       "factory_host_network_transmit_bytes_total",
	"rpc.server.call.duration (otelgrpc)": "rpc_server_call_duration_seconds",

	// Scheduled backups (backup.go).
	"factory.backup.last_success_timestamp": "factory_backup_last_success_timestamp_seconds",
	"factory.backup.failures":               "factory_backup_failures_total",
	"factory.backup.interval":               "factory_backup_interval_seconds",
}

// fleetStates are the liveness states exported, every one each scrape, so
// "agents online" is 0 rather than missing when none is.
var fleetStates = []fleet.State{fleet.StateOnline, fleet.StateStale, fleet.StateOffline}

func fleetLabel(s fleet.State) string { return strings.ToLower(s.String()) }

// ageSeconds is how long before now since was; 0 for a zero time (none).
func ageSeconds(since, now time.Time) float64 {
	if since.IsZero() || now.Before(since) {
		return 0
	}
	return now.Sub(since).Seconds()
}

func boolValue(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// registerCounters creates the counters the queue's Observer hook feeds.
// Each source's gauges come with one callback that reads the source once
// per scrape (the register* functions below).
func (m *Metrics) registerCounters() error {
	meter := m.provider.Meter(meterName)
	var err error
	if m.claims, err = meter.Int64Counter("factory.queue.claims", metric.WithUnit("{task}"),
		metric.WithDescription("Tasks handed out by claims, per claiming agent.")); err != nil {
		return err
	}
	if m.finished, err = meter.Int64Counter("factory.queue.finished", metric.WithUnit("{task}"),
		metric.WithDescription("Tasks their holder completed or failed, per agent and the state the task went to (done, review, ready for a retry, failed).")); err != nil {
		return err
	}
	if m.rescues, err = meter.Int64Counter("factory.queue.lease_rescues", metric.WithUnit("{task}"),
		metric.WithDescription("Expired leases rescued, per state the task went to (ready for a retry, failed once its attempts were used).")); err != nil {
		return err
	}
	return nil
}

// read runs one source read with the configured timeout, logging a failure
// instead of failing the whole scrape.
func (m *Metrics) read(what string, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.SourceTimeout)
	defer cancel()
	if err := f(ctx); err != nil {
		m.log.Warn("metrics: reading a source failed; its gauges are missing from this scrape", "source", what, "err", err)
	}
	return nil
}

func (m *Metrics) registerQueue(meter metric.Meter, src QueueSource) error {
	depth, err := meter.Int64ObservableGauge("factory.queue.depth", metric.WithUnit("{task}"),
		metric.WithDescription("Tasks in each queue state."))
	if err != nil {
		return err
	}
	oldestReady, err := meter.Float64ObservableGauge("factory.queue.oldest_ready.age", metric.WithUnit("s"),
		metric.WithDescription("How long the oldest READY task has waited (0 when none waits)."))
	if err != nil {
		return err
	}
	oldestClaim, err := meter.Float64ObservableGauge("factory.queue.oldest_claim.age", metric.WithUnit("s"),
		metric.WithDescription("How long ago the oldest IN_PROGRESS task was claimed (0 when none is)."))
	if err != nil {
		return err
	}
	retrying, err := meter.Int64ObservableGauge("factory.queue.retrying", metric.WithUnit("{task}"),
		metric.WithDescription("READY tasks waiting out a backoff after a failed attempt."))
	if err != nil {
		return err
	}
	paused, err := meter.Int64ObservableGauge("factory.queue.paused",
		metric.WithDescription("1 while the queue is paused."))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		return m.read("queue", func(ctx context.Context) error {
			st, now, err := src.Stats(ctx)
			if err != nil {
				return err
			}
			for _, s := range store.AllStates {
				o.ObserveInt64(depth, st.Counts[s], metric.WithAttributes(attribute.String("state", stateLabel(s))))
			}
			o.ObserveFloat64(oldestReady, ageSeconds(st.OldestReadySince, now))
			o.ObserveFloat64(oldestClaim, ageSeconds(st.OldestClaimedAt, now))
			o.ObserveInt64(retrying, st.Retrying)
			o.ObserveInt64(paused, boolValue(st.Paused))
			return nil
		})
	}, depth, oldestReady, oldestClaim, retrying, paused)
	return err
}

type fleetInstruments struct {
	agents, nodes, agentUp, agentBusy, nodeUp    metric.Int64ObservableGauge
	gpuMemUsed, gpuMemTotal, gpuUtil, gpuMemUtil metric.Int64ObservableGauge
	gpuTemp                                      metric.Int64ObservableGauge
	gpuPower, diskUsage, probeLatency            metric.Float64ObservableGauge
	probeUp                                      metric.Int64ObservableGauge
	hostCPU, hostLoad1                           metric.Float64ObservableGauge
	hostMemUsed, hostMemTotal                    metric.Int64ObservableGauge
	hostRx, hostTx                               metric.Int64ObservableCounter
}

func (m *Metrics) registerFleet(meter metric.Meter, src FleetSource) error {
	var in fleetInstruments
	var err error
	ig := func(dst *metric.Int64ObservableGauge, name, unit, desc string) {
		if err == nil {
			*dst, err = meter.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		}
	}
	fg := func(dst *metric.Float64ObservableGauge, name, unit, desc string) {
		if err == nil {
			*dst, err = meter.Float64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		}
	}
	ig(&in.agents, "factory.fleet.agents", "{agent}", "Agents per liveness state (online, stale, offline).")
	ig(&in.nodes, "factory.fleet.nodes", "{node}", "Hosts per liveness state (online, stale, offline).")
	ig(&in.agentUp, "factory.fleet.agent.up", "", "1 while the agent is ONLINE, per agent.")
	ig(&in.agentBusy, "factory.fleet.agent.busy", "", "1 while the agent holds a task, per agent.")
	ig(&in.nodeUp, "factory.fleet.node.up", "", "1 while the host's sidecar is ONLINE, per host.")
	ig(&in.gpuMemUsed, "factory.gpu.memory.used", "By", "GPU memory in use, per device.")
	ig(&in.gpuMemTotal, "factory.gpu.memory.total", "By", "GPU memory in all, per device.")
	ig(&in.gpuUtil, "factory.gpu.utilization", "%", "GPU utilisation, per device.")
	ig(&in.gpuMemUtil, "factory.gpu.memory.utilization", "%", "GPU memory bandwidth utilisation, per device.")
	ig(&in.gpuTemp, "factory.gpu.temperature", "Cel", "GPU temperature, per device.")
	fg(&in.gpuPower, "factory.gpu.power", "W", "GPU power draw, per device.")
	fg(&in.diskUsage, "factory.disk.usage", "1", "Fraction of each configured filesystem in use, as df says: used / (used + available).")
	ig(&in.probeUp, "factory.probe.up", "", "1 while the service probe succeeds, per host and probe.")
	fg(&in.probeLatency, "factory.probe.latency", "s", "How long the service probe took.")
	fg(&in.hostCPU, "factory.host.cpu.usage", "1", "Fraction of the host's CPU time busy between its sidecar's last two readings, per host.")
	fg(&in.hostLoad1, "factory.host.load1", "", "The host's 1-minute load average, per host.")
	ig(&in.hostMemUsed, "factory.host.memory.used", "By", "Host memory in use (MemTotal - MemAvailable), per host.")
	ig(&in.hostMemTotal, "factory.host.memory.total", "By", "Host memory in all, per host.")
	if err == nil {
		in.hostRx, err = meter.Int64ObservableCounter("factory.host.network.receive", metric.WithUnit("By"),
			metric.WithDescription("Bytes each network device received since the host booted (loopback excluded), per host and device."))
	}
	if err == nil {
		in.hostTx, err = meter.Int64ObservableCounter("factory.host.network.transmit", metric.WithUnit("By"),
			metric.WithDescription("Bytes each network device transmitted since the host booted (loopback excluded), per host and device."))
	}
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		return m.read("fleet", func(context.Context) error {
			observeFleet(o, &in, src.Nodes(), src.Agents())
			return nil
		})
	}, in.agents, in.nodes, in.agentUp, in.agentBusy, in.nodeUp, in.gpuMemUsed, in.gpuMemTotal, in.gpuUtil,
		in.gpuMemUtil, in.gpuTemp, in.gpuPower, in.diskUsage, in.probeUp, in.probeLatency,
		in.hostCPU, in.hostLoad1, in.hostMemUsed, in.hostMemTotal, in.hostRx, in.hostTx)
	return err
}

func observeFleet(o metric.Observer, in *fleetInstruments, nodes []fleet.Node, agents []fleet.Agent) {
	agentsBy := map[fleet.State]int64{}
	names := make([]string, len(agents))
	for i, a := range agents {
		names[i] = a.Name
	}
	keptAgents, moreAgents := firstNames(names, MaxLabelValues)
	// Agents past the limit share one series each: how many of them are up
	// and how many busy.
	var otherUp, otherBusy int64
	for _, a := range agents {
		agentsBy[a.State]++
		if !keptAgents[a.Name] {
			otherUp += boolValue(a.State == fleet.StateOnline)
			otherBusy += boolValue(a.CurrentTask != "")
			continue
		}
		o.ObserveInt64(in.agentUp, boolValue(a.State == fleet.StateOnline), metric.WithAttributes(
			attribute.String("agent", a.Name), attribute.String("host", a.Host), attribute.String("role", a.Role)))
		o.ObserveInt64(in.agentBusy, boolValue(a.CurrentTask != ""), metric.WithAttributes(attribute.String("agent", a.Name)))
	}
	if moreAgents {
		o.ObserveInt64(in.agentUp, otherUp, metric.WithAttributes(
			attribute.String("agent", Other), attribute.String("host", Other), attribute.String("role", Other)))
		o.ObserveInt64(in.agentBusy, otherBusy, metric.WithAttributes(attribute.String("agent", Other)))
	}
	hosts := make([]string, len(nodes))
	for i, n := range nodes {
		hosts[i] = n.Host
	}
	keptHosts, moreHosts := firstNames(hosts, MaxLabelValues)
	// Per-device labels are bounded across the whole fleet; a device whose
	// label is past the limit is not exported (a temperature cannot be
	// summed into "other").
	gpuNames, paths, probes, kinds := newLabelValues(MaxLabelValues), newLabelValues(MaxLabelValues), newLabelValues(MaxLabelValues), newLabelValues(MaxLabelValues)
	devices := newLabelValues(MaxLabelValues)
	var otherNodesUp int64
	nodesBy := map[fleet.State]int64{}
	for _, n := range nodes {
		nodesBy[n.State]++
		if !keptHosts[n.Host] {
			otherNodesUp += boolValue(n.State == fleet.StateOnline)
			continue
		}
		host := attribute.String("host", n.Host)
		o.ObserveInt64(in.nodeUp, boolValue(n.State == fleet.StateOnline), metric.WithAttributes(host))
		t, ok := n.Telemetry.(*factoryv1.Telemetry)
		// An OFFLINE host's last readings are history, not the present:
		// exporting them would draw a flat line where there is no data.
		if !ok || t == nil || n.State == fleet.StateOffline {
			continue
		}
		for i, g := range t.GetGpus() {
			name := gpuNames.value(g.GetName())
			if i >= MaxLabelValues || name == Other {
				continue
			}
			attrs := metric.WithAttributes(host, attribute.String("gpu", strconv.Itoa(int(g.GetIndex()))), attribute.String("gpu_name", name))
			o.ObserveInt64(in.gpuMemUsed, clampInt64(g.GetMemoryUsedBytes()), attrs)
			o.ObserveInt64(in.gpuMemTotal, clampInt64(g.GetMemoryTotalBytes()), attrs)
			o.ObserveInt64(in.gpuUtil, int64(g.GetUtilizationPercent()), attrs)
			o.ObserveInt64(in.gpuMemUtil, int64(g.GetMemoryUtilizationPercent()), attrs)
			o.ObserveInt64(in.gpuTemp, int64(g.GetTemperatureCelsius()), attrs)
			o.ObserveFloat64(in.gpuPower, float64(g.GetPowerMilliwatts())/1000, attrs)
		}
		for _, d := range t.GetDisks() {
			if d.GetError() != "" || d.GetUsedBytes()+d.GetAvailableBytes() == 0 || paths.value(d.GetPath()) == Other {
				continue
			}
			o.ObserveFloat64(in.diskUsage, fleet.DiskUsedRatio(d.GetUsedBytes(), d.GetAvailableBytes()),
				metric.WithAttributes(host, attribute.String("path", d.GetPath())))
		}
		for _, p := range t.GetProbes() {
			if probes.value(p.GetName()) == Other || kinds.value(p.GetKind()) == Other {
				continue
			}
			attrs := metric.WithAttributes(host, attribute.String("probe", p.GetName()), attribute.String("kind", p.GetKind()))
			o.ObserveInt64(in.probeUp, boolValue(p.GetOk()), attrs)
			if p.GetLatency() != nil {
				o.ObserveFloat64(in.probeLatency, p.GetLatency().AsDuration().Seconds(), attrs)
			}
		}
		observeHost(o, in, host, t.GetHost(), devices)
	}
	if moreHosts {
		o.ObserveInt64(in.nodeUp, otherNodesUp, metric.WithAttributes(attribute.String("host", Other)))
	}
	for _, s := range fleetStates {
		attrs := metric.WithAttributes(attribute.String("state", fleetLabel(s)))
		o.ObserveInt64(in.agents, agentsBy[s], attrs)
		o.ObserveInt64(in.nodes, nodesBy[s], attrs)
	}
}

func clampInt64(v uint64) int64 {
	if v > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(v)
}

func (m *Metrics) registerSpend(meter metric.Meter, src SpendSource) error {
	var err error
	gauge := func(name, desc string) metric.Int64ObservableGauge {
		if err != nil {
			return nil
		}
		var g metric.Int64ObservableGauge
		g, err = meter.Int64ObservableGauge(name, metric.WithDescription(desc))
		return g
	}
	total := gauge("factory.spend.today_micros", "Today's LLM spend in micro-dollars (the day in the budget's time zone).")
	byTier := gauge("factory.spend.tier.today_micros", "Today's LLM spend in micro-dollars, per tier.")
	byAgent := gauge("factory.spend.agent.today_micros", "Today's LLM spend in micro-dollars, per agent.")
	byModel := gauge("factory.spend.model.today_micros", "Today's LLM spend in micro-dollars, per model.")
	spent := gauge("factory.budget.spent_micros", "Today's spend against each budget, per scope (total, tier, agent) and name.")
	limit := gauge("factory.budget.limit_micros", "Each budget's daily thresholds that are set, per kind of limit (target, alert, cap, emergency).")
	remaining := gauge("factory.budget.remaining_micros", "What is left today before each of a budget's limits: limit - spent - reserved, at least 0.")
	halted := gauge("factory.budget.halted", "1 while the emergency stop holds the fleet.")
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		return m.read("spend", func(ctx context.Context) error {
			snap, err := src(ctx)
			if err != nil || snap == nil {
				return err
			}
			o.ObserveInt64(total, snap.TotalMicros)
			for _, d := range []struct {
				g     metric.Int64ObservableGauge
				label string
				by    map[string]int64
			}{{byTier, "tier", snap.ByTier}, {byAgent, "agent", snap.ByAgent}, {byModel, "model", snap.ByModel}} {
				for k, v := range topValues(d.by, MaxLabelValues) {
					o.ObserveInt64(d.g, v, metric.WithAttributes(attribute.String(d.label, k)))
				}
			}
			budgets, otherSpent := boundedBudgets(snap.Budgets, MaxLabelValues)
			if otherSpent != nil {
				o.ObserveInt64(spent, *otherSpent, metric.WithAttributes(attribute.String("scope", "agent"), attribute.String("name", Other)))
			}
			for _, b := range budgets {
				who := []attribute.KeyValue{attribute.String("scope", b.Scope), attribute.String("name", b.Name)}
				o.ObserveInt64(spent, b.SpentMicros, metric.WithAttributes(who...))
				for kind, v := range b.Limits {
					if v <= 0 {
						continue
					}
					attrs := metric.WithAttributes(append(slices.Clip(who), attribute.String("limit", kind))...)
					o.ObserveInt64(limit, v, attrs)
					o.ObserveInt64(remaining, max(0, v-b.SpentMicros-b.ReservedMicros), attrs)
				}
			}
			o.ObserveInt64(halted, boolValue(snap.Halted))
			return nil
		})
	}, total, byTier, byAgent, byModel, spent, limit, remaining, halted)
	return err
}

func (m *Metrics) registerApprovals(meter metric.Meter, src ApprovalSource) error {
	pending, err := meter.Int64ObservableGauge("factory.approvals.pending", metric.WithUnit("{request}"),
		metric.WithDescription("Approval requests waiting for an operator."))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		return m.read("approvals", func(ctx context.Context) error {
			n, err := src(ctx)
			if err != nil {
				return err
			}
			o.ObserveInt64(pending, n)
			return nil
		})
	}, pending)
	return err
}

func (m *Metrics) registerAlerts(meter metric.Meter, src AlertSource) error {
	firing, err := meter.Int64ObservableGauge("factory.alerts.firing", metric.WithUnit("{alert}"),
		metric.WithDescription("Alerts firing, per rule and severity."))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		return m.read("alerts", func(ctx context.Context) error {
			counts, err := src(ctx)
			if err != nil {
				return err
			}
			for _, c := range counts {
				o.ObserveInt64(firing, c.Firing, metric.WithAttributes(attribute.String("rule", c.Rule), attribute.String("severity", c.Severity)))
			}
			return nil
		})
	}, firing)
	return err
}
