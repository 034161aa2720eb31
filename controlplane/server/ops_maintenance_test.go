package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/fleet"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func TestMaintenanceOverGRPC(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	ops := factoryv1.NewOpsServiceClient(b.conn)
	create(t, b, &factoryv1.CreateTaskRequest{Title: "waits"})

	start, err := ops.StartMaintenance(ctx, &factoryv1.StartMaintenanceRequest{Reason: "db upgrade"})
	if err != nil {
		t.Fatal(err)
	}
	if m := start.GetMaintenance(); !m.GetActive() || !m.GetPausedQueue() || start.GetPausedTasks() != 1 || m.GetStartedBy() == "" {
		t.Errorf("start: %v", start)
	}
	_, err = b.client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge"})
	st := wantCode(t, err, codes.FailedPrecondition)
	if !strings.Contains(st.Message(), "maintenance since") || !strings.Contains(st.Message(), "db upgrade") {
		t.Errorf("claim refusal: %q", st.Message())
	}
	got, err := ops.GetMaintenance(ctx, &factoryv1.GetMaintenanceRequest{})
	if err != nil || !got.GetMaintenance().GetActive() || got.GetInProgressCount() != 0 {
		t.Errorf("get: %v %v", got, err)
	}
	end, err := ops.EndMaintenance(ctx, &factoryv1.EndMaintenanceRequest{})
	if err != nil || !end.GetResumedQueue() || end.GetResumedTasks() != 1 || end.GetEnded().GetReason() != "db upgrade" {
		t.Errorf("end: %v %v", end, err)
	}
	if res, err := b.client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge"}); err != nil || len(res.GetTasks()) != 1 {
		t.Errorf("claim after the end: %v %v", res, err)
	}
	// Both are in the audit log.
	var rpcs []string
	for _, e := range auditOf(t, b, &factoryv1.ListAuditRequest{}) {
		if e.GetTarget() == "maintenance" {
			rpcs = append(rpcs, e.GetRpc())
		}
	}
	if len(rpcs) != 2 {
		t.Errorf("audited maintenance calls: %v", rpcs)
	}
	// A wait beyond the bound is bad input naming the field.
	_, err = ops.StartMaintenance(ctx, &factoryv1.StartMaintenanceRequest{Reason: "x", Wait: durationpb.New(time.Hour)})
	if st := wantCode(t, err, codes.InvalidArgument); fieldOf(st) != "wait" {
		t.Errorf("field %q, want wait", fieldOf(st))
	}
}

func TestBackupStreamsHeaderDatabaseDumpAndCounts(t *testing.T) {
	b := setup(t, nil)
	create(t, b, &factoryv1.CreateTaskRequest{Title: "one"})
	create(t, b, &factoryv1.CreateTaskRequest{Title: "two"})
	stream, err := factoryv1.NewOpsServiceClient(b.conn).Backup(context.Background(), &factoryv1.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var (
		msgs      int
		header    *factoryv1.BackupHeader
		db        []byte
		dump      strings.Builder
		counts    *factoryv1.DumpCounts
		afterDump bool
	)
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		msgs++
		if m.GetHeader() != nil {
			if msgs != 1 {
				t.Error("the header is not the first message")
			}
			header = m.GetHeader()
		}
		if len(m.GetDatabase()) > 0 && afterDump {
			t.Error("database bytes after the dump began")
		}
		db = append(db, m.GetDatabase()...)
		if m.GetDumpLines() != "" {
			afterDump = true
			dump.WriteString(m.GetDumpLines())
		}
		if m.GetCounts() != nil {
			counts = m.GetCounts()
		}
	}
	if header.GetDriver() != "sqlite" || !header.GetHasDatabase() || header.GetMigrationVersion() < 8 {
		t.Errorf("header: %v", header)
	}
	if !strings.HasPrefix(string(db), "SQLite format 3\x00") {
		t.Errorf("the database bytes are not an SQLite file (%d bytes)", len(db))
	}
	if !strings.HasPrefix(dump.String(), `{"format":"factory-dump"`) || counts.GetTasks() != 2 {
		t.Errorf("dump %d bytes, counts %v", dump.Len(), counts)
	}
}

func TestDoctorReportsClockSkew(t *testing.T) {
	now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	node := func(host string, skew time.Duration) fleet.Node {
		return fleet.Node{Host: host, Connected: true, TelemetryAt: now,
			Telemetry: &factoryv1.Telemetry{CollectedAt: timestamppb.New(now.Add(-skew))}}
	}
	for _, tc := range []struct {
		nodes []fleet.Node
		want  string
	}{
		{nil, "ok"},
		{[]fleet.Node{node("gpu-1", time.Second)}, "ok"},
		{[]fleet.Node{node("gpu-1", time.Second), node("gpu-2", -10*time.Second)}, "warn"},
		{[]fleet.Node{node("gpu-1", 2*time.Minute)}, "fail"},
	} {
		c := clockSkew(tc.nodes)
		if c.Verdict.String() != tc.want {
			t.Errorf("%d nodes: %s (%s), want %s", len(tc.nodes), c.Verdict, c.Detail, tc.want)
		}
	}
	if c := clockSkew([]fleet.Node{node("gpu-1", time.Second), node("gpu-2", -10*time.Second)}); !strings.Contains(c.Detail, "gpu-2") {
		t.Errorf("the worst host is not named: %s", c.Detail)
	}
}

func TestDoctorOverGRPC(t *testing.T) {
	b := setup(t, nil)
	res, err := factoryv1.NewOpsServiceClient(b.conn).Doctor(context.Background(), &factoryv1.DoctorRequest{})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]factoryv1.DoctorStatus{}
	for _, c := range res.GetChecks() {
		names[c.GetName()] = c.GetStatus()
	}
	for _, n := range []string{"store_integrity", "migration_version", "queue_sanity", "clock_skew"} {
		if names[n] != factoryv1.DoctorStatus_DOCTOR_STATUS_OK {
			t.Errorf("check %s: %v (%v)", n, names[n], res)
		}
	}
}

// runOn serves a control plane on dataDir until stop is called.
func runOn(t *testing.T, dataDir string) (addr string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrCh := make(chan string, 1)
	errCh := make(chan error, 1)
	go func() {
		errCh <- Run(ctx, Config{Listen: "127.0.0.1:0", DataDir: dataDir, Logger: slog.New(slog.DiscardHandler),
			TracerProvider: noop.NewTracerProvider(), OnListening: func(a net.Addr) { addrCh <- a.String() }})
	}()
	select {
	case addr = <-addrCh:
	case err := <-errCh:
		cancel()
		t.Fatalf("Run: %v", err)
	}
	rememberOperator(t, addr, dataDir)
	return addr, func() {
		cancel()
		if err := <-errCh; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

func TestMaintenanceSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	dial := func(addr string) (factoryv1.QueueServiceClient, factoryv1.OpsServiceClient) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), operatorAt(addr))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return factoryv1.NewQueueServiceClient(conn), factoryv1.NewOpsServiceClient(conn)
	}
	ctx := context.Background()
	addr, stop := runOn(t, dir)
	q, o := dial(addr)
	if _, err := q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "waits"}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.StartMaintenance(ctx, &factoryv1.StartMaintenanceRequest{Reason: "kernel update"}); err != nil {
		t.Fatal(err)
	}
	stop()

	addr, stop = runOn(t, dir)
	defer stop()
	q, o = dial(addr)
	_, err := q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge"})
	if st := wantCode(t, err, codes.FailedPrecondition); !strings.Contains(st.Message(), "kernel update") {
		t.Errorf("claim after the restart: %q", st.Message())
	}
	end, err := o.EndMaintenance(ctx, &factoryv1.EndMaintenanceRequest{})
	if err != nil || !end.GetResumedQueue() || end.GetResumedTasks() != 1 {
		t.Errorf("end after the restart: %v %v", end, err)
	}
}
