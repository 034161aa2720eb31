package server

import (
	"context"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/factory/factory/controlplane/metrics"
	"github.com/factory/factory/controlplane/store"
)

// WithMeterProvider records the RPC metrics (otelgrpc's
// rpc.server.call.duration histogram, per method and status) with mp; nil
// keeps OpenTelemetry's global provider.
func WithMeterProvider(mp metric.MeterProvider) GRPCOption {
	return func(o *grpcOptions) { o.meter = mp }
}

// newMetrics builds the /metrics exporter over the services Run assembled,
// or returns nil when cfg.MetricsListen is empty (metrics off). A service
// that is missing exports nothing: its gauges are absent from the scrape.
// Pending approvals are counted from st.
func newMetrics(cfg Config, svc Services, st store.Store) (*metrics.Metrics, error) {
	if cfg.MetricsListen == "" {
		return nil, nil
	}
	src := metrics.Sources{Approvals: approvalSource(st)}
	if svc.Queue != nil {
		src.Queue = svc.Queue
	}
	if svc.Fleet != nil {
		src.Fleet = svc.Fleet
	}
	if svc.Budget != nil {
		src.Spend = spendSource(svc.Budget)
	}
	if svc.Alerts != nil {
		src.Alerts = alertSource(svc.Alerts)
	}
	m, err := metrics.New(metrics.Config{Logger: cfg.Logger, Sources: src})
	if err != nil {
		return nil, err
	}
	if svc.Queue != nil {
		svc.Queue.SetObserver(m)
	}
	if svc.Budget != nil {
		svc.Budget.SetObserver(m)
	}
	return m, nil
}

// serveMetrics serves /metrics until ctx ends. A listener that cannot be
// bound (the port is taken, say by a second replica on the same host) is
// logged as an error and the control plane serves on without it: losing
// the queue to a monitoring port is the worse failure, and Prometheus
// shows the target down.
func serveMetrics(ctx context.Context, cfg Config, m *metrics.Metrics) error {
	if err := metrics.Serve(ctx, cfg.MetricsListen, m.Handler(), cfg.Logger, cfg.OnMetricsListening); err != nil && ctx.Err() == nil {
		cfg.Logger.ErrorContext(ctx, "metrics listener failed; serving on without /metrics", "addr", cfg.MetricsListen, "err", err)
	}
	return nil
}

// meterOption is otelgrpc's meter option for mp; nil keeps the global
// provider, as otelgrpc does by default.
func meterOption(mp metric.MeterProvider) otelgrpc.Option {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return otelgrpc.WithMeterProvider(mp)
}

// knownMethodsOnly keeps calls to methods the API does not have out of
// otelgrpc's metrics and traces: the method name is a label
// (rpc_method), and a caller inventing names would otherwise add a series
// per name. Such calls are answered UNIMPLEMENTED all the same.
func knownMethodsOnly() otelgrpc.Option {
	return otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool { return knownMethod(info.FullMethodName) })
}

// knownMethod reports whether "/pkg.Service/Method" names a method of a
// service linked into this binary (the factory API, health, reflection).
func knownMethod(full string) bool {
	svc, method, ok := strings.Cut(strings.TrimPrefix(full, "/"), "/")
	if !ok || method == "" {
		return false
	}
	name := protoreflect.FullName(svc + "." + method)
	if !name.IsValid() {
		return false
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
	if err != nil {
		return false
	}
	_, isMethod := d.(protoreflect.MethodDescriptor)
	return isMethod
}
