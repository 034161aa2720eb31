package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// unwiredHint says, per metric-name prefix, which source feeds those
// gauges, so a missing name points at the wiring to check (newMetrics in
// metrics.go, the adapters in metrics_sources.go).
var unwiredHint = map[string]string{
	"factory_spend_":     "metrics.Sources.Spend (spendSource over the budget service)",
	"factory_budget_":    "metrics.Sources.Spend (spendSource over the budget service)",
	"factory_approvals_": "metrics.Sources.Approvals (approvalSource over the store)",
	"factory_alerts_":    "metrics.Sources.Alerts (alertSource over the alert service)",
	"factory_queue_":     "metrics.Sources.Queue and the queue's Observer",
	"factory_fleet_":     "metrics.Sources.Fleet (the fleet registry)",
	"factory_gpu_":       "metrics.Sources.Fleet (the fleet registry; needs a sidecar's telemetry)",
	"rpc_server_":        "WithMeterProvider on NewGRPCServer (otelgrpc)",
	"factory_host_":      "metrics.Sources.Fleet (the fleet registry; needs a sidecar's telemetry with a host reading)",
	"factory_task_":      "the queue's Observer (metrics.Metrics is an AttemptObserver)",
	"factory_agent_":     "the queue's Observer (metrics.Metrics is an AttemptObserver)",
	"factory_llm_":       "the budget's SpendObserver (svc.Budget.SetObserver in newMetrics)",
}

// metricsPlane is a running control plane with metrics on, for tests
// that scrape it.
type metricsPlane struct {
	ctx         context.Context
	conn        *grpc.ClientConn
	clock       *fakeClock
	metricsAddr string
}

// startMetricsPlane runs a control plane with metrics on, on a fake
// clock; configure adjusts its Config before it starts.
func startMetricsPlane(t *testing.T, configure func(*Config)) *metricsPlane {
	t.Helper()
	dir := t.TempDir()
	clock := &fakeClock{now: time.Now().UTC()}
	cfg := Config{Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0", DataDir: dir,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), TracerProvider: noop.NewTracerProvider()}
	cfg.Queue.Clock = clock
	configure(&cfg)
	addrCh, metricsCh := make(chan net.Addr, 1), make(chan net.Addr, 1)
	cfg.OnListening = func(a net.Addr) { addrCh <- a }
	cfg.OnMetricsListening = func(a net.Addr) { metricsCh <- a }
	ctx, cancel := context.WithCancel(context.Background())
	errCh := make(chan error, 1)
	go func() { errCh <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errCh; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	var grpcAddr, metricsAddr net.Addr
	for grpcAddr == nil || metricsAddr == nil {
		select {
		case grpcAddr = <-addrCh:
		case metricsAddr = <-metricsCh:
		case err := <-errCh:
			t.Fatalf("Run: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("control plane did not start")
		}
	}
	conn, err := grpc.NewClient(grpcAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()), operatorFrom(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &metricsPlane{ctx: ctx, conn: conn, clock: clock, metricsAddr: metricsAddr.String()}
}

// startWithData runs a control plane with metrics on, fills it with a bit
// of everything the dashboards show, and returns the metrics address.
func startWithData(t *testing.T) string {
	t.Helper()
	p := startMetricsPlane(t, func(cfg *Config) {
		cfg.Queue.RescueInterval = 10 * time.Millisecond
		// A backup schedule, so the first backup (taken at start) gives the
		// backup metrics a value.
		cfg.Backup = BackupConfig{Dir: filepath.Join(cfg.DataDir, "backups"), Every: time.Hour}
	})
	ctx, conn, clock := p.ctx, p.conn, p.clock
	q, f := factoryv1.NewQueueServiceClient(conn), factoryv1.NewFleetServiceClient(conn)

	// A sidecar with one agent, a GPU, a disk and two probes (one down).
	sctx, scancel := context.WithCancel(ctx)
	t.Cleanup(scancel)
	stream, _, err := connect(sctx, t, f, "gpu-01", "forge")
	if err != nil {
		t.Fatal(err)
	}
	tel := &factoryv1.Telemetry{CollectedAt: timestamppb.New(clock.Now()),
		Gpus: []*factoryv1.GpuDevice{{Index: 0, Name: "NVIDIA H100 80GB HBM3", MemoryUsedBytes: 40 << 30, MemoryTotalBytes: 80 << 30,
			UtilizationPercent: 87, MemoryUtilizationPercent: 30, TemperatureCelsius: 60, PowerMilliwatts: 300_000}},
		Disks: []*factoryv1.DiskUsage{{Path: "/", TotalBytes: 100 << 30, UsedBytes: 40 << 30, AvailableBytes: 55 << 30}},
		Probes: []*factoryv1.ProbeResult{{Name: "litellm", Kind: "http", Ok: true, Latency: durationpb.New(20 * time.Millisecond)},
			{Name: "qdrant", Kind: "http", Detail: "503", Latency: durationpb.New(time.Millisecond)}},
		Host: &factoryv1.HostReading{CpuUsageRatio: proto.Float64(0.4), MemoryTotalBytes: 64 << 30, MemoryUsedBytes: 16 << 30, Load1: 2.5,
			Networks: []*factoryv1.HostNetworkDevice{{Device: "eth0", ReceiveBytes: 1 << 30, TransmitBytes: 1 << 20}}}}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: tel}}); err != nil {
		t.Fatal(err)
	}

	// Tasks: one completed, one failed, one whose lease runs out.
	for i := range 4 {
		if _, err := q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: fmt.Sprintf("task %d", i), Role: "builder"}); err != nil {
			t.Fatal(err)
		}
	}
	claim := func() *factoryv1.Task {
		t.Helper()
		res, err := q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge", Roles: []string{"builder"}, LeaseDuration: durationpb.New(time.Minute)})
		if err != nil || len(res.GetTasks()) != 1 {
			t.Fatalf("claim: %v %v", res, err)
		}
		return res.GetTasks()[0]
	}
	done := claim()
	if _, err := q.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: done.GetId(), Agent: "forge", FencingToken: done.GetLease().GetToken()}); err != nil {
		t.Fatal(err)
	}
	failed := claim()
	if _, err := q.FailTask(ctx, &factoryv1.FailTaskRequest{TaskId: failed.GetId(), Agent: "forge", FencingToken: failed.GetLease().GetToken(), Error: "tests red"}); err != nil {
		t.Fatal(err)
	}
	claim()
	clock.Advance(2 * time.Minute) // the last lease expires; the sweeper rescues it
	// Spend, so the per-tier, per-agent and per-model gauges have series.
	if _, err := factoryv1.NewBudgetServiceClient(conn).ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: &factoryv1.SpendEvent{
		Id: "metrics-test-1", Agent: "forge", Host: "gpu-01", Model: "claude-sonnet", Tier: factoryv1.SpendTier_SPEND_TIER_FRONTIER,
		CostMicros: proto.Int64(1_500_000), OccurredAt: timestamppb.New(clock.Now())}}); err != nil {
		t.Fatal(err)
	}
	// A refused call, so the RPC histogram has an error series too.
	_, _ = q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: "no-such-task"})
	// The sidecar heartbeats after the jump, so its host stays ONLINE.
	tel.CollectedAt = timestamppb.New(clock.Now())
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: tel}}); err != nil {
		t.Fatal(err)
	}
	return p.metricsAddr
}

// A metrics port that is taken (a second replica on the host) is logged,
// and the control plane serves on without /metrics.
func TestMetricsPortTakenDoesNotStopTheControlPlane(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	var logs strings.Builder
	var mu sync.Mutex
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	addrCh, errCh := make(chan net.Addr, 1), make(chan error, 1)
	go func() {
		errCh <- Run(ctx, Config{Listen: "127.0.0.1:0", MetricsListen: taken.Addr().String(), DataDir: dir,
			Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)), TracerProvider: noop.NewTracerProvider(),
			OnListening: func(a net.Addr) { addrCh <- a }})
	}()
	var addr net.Addr
	select {
	case addr = <-addrCh:
	case err := <-errCh:
		t.Fatalf("Run: %v", err)
	}
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()), operatorFrom(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := factoryv1.NewQueueServiceClient(conn).CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "still serving"}); err != nil {
		t.Fatalf("the control plane stopped serving: %v", err)
	}
	logged := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), "metrics listener failed")
	}
	// The listener fails on its own goroutine; give it a moment to say so.
	for deadline := time.Now().Add(10 * time.Second); !logged() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !logged() {
		t.Error("the taken port was not logged")
	}
	cancel()
	if err := <-errCh; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
