// Package metrics exports the control plane's OpenTelemetry metrics for
// Prometheus on /metrics: the queue's depth per state and its claims and
// lease rescues, the fleet's agents and hosts (GPU memory and utilisation
// per device, disk usage, service probes), the day's spend and the budgets
// left, pending approvals, firing alerts and, through otelgrpc, the latency
// of every RPC.
//
// Gauges are read at scrape time from small source interfaces, so the
// numbers are as fresh as the store and nothing is cached here; counters
// are fed by the queue's Observer hook (claims, finished tasks, each
// attempt's duration) and the budget's SpendObserver (spend, tokens and
// LLM calls as counters, so Prometheus shows any trend; activity.go). A source that is not wired simply
// exports nothing, and a source that fails is logged and skipped for that
// scrape, so one broken source never hides the others.
//
// Names follow OpenTelemetry (factory.queue.depth) and are exported with
// Prometheus's conventions: dots become underscores, units become suffixes
// (_bytes, _seconds, _percent, _ratio) and counters end in _total. The
// exported names are listed in Names; the Grafana dashboards in deploy/
// query exactly those, and a test scrapes a running control plane to prove
// every name a dashboard uses exists.
//
// Cardinality: labels carry task states, tiers, hosts, GPU indexes, probe
// names, disk paths, agents, models, alert rules and budget scopes; never
// task ids, trace ids or free text. Values that callers send or register
// (models, agents, hosts, roles, tiers, budget names, GPU names, disk paths,
// probe names) are bounded by design, not by trusting the fleet: each such
// label takes at most MaxLabelValues values per instrument, and the rest
// share one series labelled Other (labels.go). A factory of tens of agents
// on a handful of hosts exports a few hundred series and never meets the
// limit.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/factory/factory/controlplane/telemetry"

	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
)

// QueueSource reads the queue's shape; *queue.Service is one.
type QueueSource interface {
	Stats(ctx context.Context) (*store.QueueStats, time.Time, error)
}

// FleetSource reads the fleet's liveness and latest readings;
// *fleet.Registry is one. A node's Telemetry is read when it is a
// *factoryv1.Telemetry.
type FleetSource interface {
	Nodes() []fleet.Node
	Agents() []fleet.Agent
}

// SpendSource reads today's spend and what the budgets have left.
type SpendSource func(ctx context.Context) (*SpendSnapshot, error)

// SpendSnapshot is the spend domain's numbers at one moment: today (in the
// budget's time zone) from the day's rollups. Money is integer
// micro-dollars, as everywhere in the factory.
type SpendSnapshot struct {
	TotalMicros int64
	// Today's spend per tier, per agent and per model. The rollups keep
	// each dimension on its own, so there is no tier×agent×model series.
	ByTier, ByAgent, ByModel map[string]int64
	// Budgets is every budget in force with where today stands.
	Budgets []BudgetLine
	// Halted is whether the emergency stop holds the fleet.
	Halted bool
}

// BudgetLine is one budget and today's spend against it. Scope is
// "total", "tier" or "agent"; Name is the tier or the agent (empty for
// the total; "default" for the budget of agents without their own).
type BudgetLine struct {
	Scope, Name    string
	SpentMicros    int64
	ReservedMicros int64
	// Limits are the budget's thresholds that are set, by kind: "target",
	// "alert", "cap", "emergency".
	Limits map[string]int64
}

// ApprovalSource counts the approval requests waiting for an operator.
type ApprovalSource func(ctx context.Context) (int64, error)

// AlertSource lists how many alerts are firing per rule. Rules that are
// not firing should be listed with zero, so a dashboard shows 0, not "no
// data".
type AlertSource func(ctx context.Context) ([]AlertCount, error)

// AlertCount is how many alerts one rule has firing.
type AlertCount struct {
	Rule, Severity string
	Firing         int64
}

// Sources are what the gauges read at scrape time. Every one is optional:
// a source that is not set exports nothing.
type Sources struct {
	Queue     QueueSource
	Fleet     FleetSource
	Spend     SpendSource
	Approvals ApprovalSource
	Alerts    AlertSource
	Backups   BackupSource
}

// Config configures New.
type Config struct {
	Logger *slog.Logger
	// Sources are registered by New; Register adds more later.
	Sources
	// SourceTimeout bounds each source's read during a scrape (5s), so a
	// slow database cannot hang Prometheus's scrape.
	SourceTimeout time.Duration
	// ServiceName names the process in target_info (factory-controlplane).
	ServiceName string
}

// WithDefaults returns a copy with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.SourceTimeout <= 0 {
		c.SourceTimeout = 5 * time.Second
	}
	if c.ServiceName == "" {
		c.ServiceName = "factory-controlplane"
	}
	return c
}

// Metrics owns the meter provider, its Prometheus registry and the
// counters the queue feeds. It implements queue.Observer.
type Metrics struct {
	cfg      Config
	log      *slog.Logger
	provider *sdkmetric.MeterProvider
	registry *prometheus.Registry

	claims   metric.Int64Counter
	finished metric.Int64Counter
	rescues  metric.Int64Counter
	// attrs caches the attribute options of the claim and finish
	// counters (attrKey -> metric.MeasurementOption), so the request path
	// builds no attribute set. It is bounded because agents is: past
	// MaxLabelValues agents, the rest count as Other.
	attrs  sync.Map
	agents *labelValues

	activity activity // activity.go
}

// attrKey names a cached attribute set: an agent, and for the finished
// counter the state its task went to (unspecified for claims).
type attrKey struct {
	agent string
	state store.TaskState
}

var _ queue.Observer = (*Metrics)(nil)

// The scope every factory instrument is created under.
const meterName = "github.com/factory/factory/controlplane/metrics"

// New returns the metrics with every configured source registered. Its
// registry is its own, so two control planes in one test process do not
// collide, and it also carries Go's runtime and process collectors.
func New(cfg Config) (*Metrics, error) {
	cfg = cfg.WithDefaults()
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, err
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, err
	}
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		// Spelled out: the exporter's default depends on a global in
		// prometheus/common, and the dashboards depend on these names.
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
	)
	if err != nil {
		return nil, fmt.Errorf("metrics: prometheus exporter: %w", err)
	}
	res, err := telemetry.Resource(context.Background(), cfg.ServiceName)
	if err != nil {
		return nil, fmt.Errorf("metrics: resource: %w", err)
	}
	m := &Metrics{cfg: cfg, log: cfg.Logger, registry: reg, agents: newLabelValues(MaxLabelValues),
		provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))}
	err = m.registerCounters()
	if err == nil {
		err = m.registerActivity()
	}
	if err == nil {
		err = m.Register(cfg.Sources)
	}
	if err != nil {
		_ = m.provider.Shutdown(context.Background())
		return nil, err
	}
	return m, nil
}

// Register adds sources for services built after New (each once: a source
// registered twice is exported twice).
func (m *Metrics) Register(src Sources) error {
	meter := m.provider.Meter(meterName)
	if src.Queue != nil {
		if err := m.registerQueue(meter, src.Queue); err != nil {
			return err
		}
	}
	if src.Fleet != nil {
		if err := m.registerFleet(meter, src.Fleet); err != nil {
			return err
		}
	}
	if src.Spend != nil {
		if err := m.registerSpend(meter, src.Spend); err != nil {
			return err
		}
	}
	if src.Approvals != nil {
		if err := m.registerApprovals(meter, src.Approvals); err != nil {
			return err
		}
	}
	if src.Alerts != nil {
		if err := m.registerAlerts(meter, src.Alerts); err != nil {
			return err
		}
	}
	if src.Backups != nil {
		if err := m.registerBackups(meter, src.Backups); err != nil {
			return err
		}
	}
	return nil
}

// MeterProvider is the provider to hand to otelgrpc and to any other
// instrumentation whose metrics belong on /metrics; nil for nil metrics
// (metrics off), which otelgrpc takes as "use the global provider".
func (m *Metrics) MeterProvider() metric.MeterProvider {
	if m == nil {
		return nil
	}
	return m.provider
}

// Handler serves the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{ErrorLog: slogPrinter{m.log}})
}

// Shutdown stops the meter provider; on nil metrics (off) it does nothing.
func (m *Metrics) Shutdown(ctx context.Context) error {
	if m == nil {
		return nil
	}
	return m.provider.Shutdown(ctx)
}

// Claimed implements queue.Observer. It is on the claim path, as
// Finished is on the completion path: both reuse a cached attribute set.
func (m *Metrics) Claimed(agent string, n int) {
	m.claims.Add(context.Background(), int64(n), m.option(attrKey{agent: m.agents.value(agent)}))
}

// Finished implements queue.Observer.
func (m *Metrics) Finished(agent string, to store.TaskState) {
	m.finished.Add(context.Background(), 1, m.option(attrKey{agent: m.agents.value(agent), state: to}))
}

func (m *Metrics) option(k attrKey) metric.MeasurementOption {
	if o, ok := m.attrs.Load(k); ok {
		return o.(metric.MeasurementOption)
	}
	kv := []attribute.KeyValue{attribute.String("agent", k.agent)}
	if k.state != store.StateUnspecified {
		kv = append(kv, attribute.String("state", stateLabel(k.state)))
	}
	o, _ := m.attrs.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(kv...)))
	return o.(metric.MeasurementOption)
}

// Rescued implements queue.Observer.
func (m *Metrics) Rescued(to store.TaskState, n int) {
	m.rescues.Add(context.Background(), int64(n), metric.WithAttributes(attribute.String("state", stateLabel(to))))
}

// stateLabel is a task state as a label value: "in_progress".
func stateLabel(s store.TaskState) string { return strings.ToLower(s.String()) }

// Serve serves h on /metrics, and a liveness probe on /healthz, at addr
// until ctx ends. onListening, when set, is told the bound address.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger, onListening func(net.Addr)) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("metrics listener", "addr", lis.Addr().String(), "path", "/metrics")
	if onListening != nil {
		onListening(lis.Addr())
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		// A scrape in flight gets a moment to finish; Prometheus retries.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	<-stopped
	return nil
}

// slogPrinter lets promhttp report encoding errors through slog.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics: " + fmt.Sprint(v...)) }
