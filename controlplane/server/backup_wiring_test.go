package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"

	"github.com/factory/factory/controlplane/ops"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/postgres"
)

// Two replicas on one PostgreSQL database, each wired as Run wires it:
// only the elected one runs the backup schedule, so one backup is taken at
// start, not two; when the leader goes, the other takes the schedule over
// and, the last backup being recent, waits instead of backing up again.
func TestOneReplicaRunsTheBackupSchedule(t *testing.T) {
	a := postgresStore(t)
	b, err := postgres.Open(context.Background(), postgres.Config{URL: os.Getenv("FACTORY_TEST_POSTGRES_URL"),
		Schema: a.(*postgres.Store).Schema(), ReplicaID: "replica-b", MaxConns: 4, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	clock := &fakeClock{now: time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)}

	type event struct {
		replica string
		run     *store.BackupRun // a backup was taken
		wait    time.Duration    // or the schedule waits this long
	}
	events := make(chan event, 16)
	type replica struct {
		cancel context.CancelFunc
		g      *errgroup.Group
	}
	start := func(name string, st store.Store) *replica {
		svc, err := ops.New(ops.Config{Store: st, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		cfg := BackupConfig{Dir: t.TempDir(), Every: 6 * time.Hour,
			After: func(d time.Duration) <-chan time.Time { events <- event{replica: name, wait: d}; return nil },
			OnRun: func(r *store.BackupRun) { events <- event{replica: name, run: r} }}
		sched, err := newBackupScheduler(cfg, svc, clock, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		g, gctx := errgroup.WithContext(ctx)
		runBackups(gctx, g, cfg, st, sched, svc)
		r := &replica{cancel: cancel, g: g}
		t.Cleanup(func() { cancel(); _ = g.Wait() })
		return r
	}
	replicas := map[string]*replica{"a": start("a", a), "b": start("b", b)}
	next := func() event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(30 * time.Second):
			t.Fatal("the schedule did nothing for 30s")
		}
		return event{}
	}
	first := next()
	if first.run == nil || !first.run.Verified {
		t.Fatalf("first event %+v, want a verified backup", first)
	}
	leader := first.replica
	if e := next(); e.replica != leader || e.wait != 6*time.Hour {
		t.Fatalf("after the backup: %+v, want the leader %s waiting 6h", e, leader)
	}
	other := map[string]string{"a": "b", "b": "a"}[leader]

	// The leader goes; the other replica takes the duty over. Its first
	// move is to wait: the backup taken at start is recent.
	replicas[leader].cancel()
	_ = replicas[leader].g.Wait()
	if e := next(); e.replica != other || e.run != nil || e.wait != 6*time.Hour {
		t.Fatalf("after the leader left: %+v, want %s waiting 6h without a backup", e, other)
	}
	runs, err := a.BackupList(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 {
		t.Fatalf("%d backups recorded, want 1: both replicas ran the schedule", len(runs))
	}
}

// A control plane with a backup schedule exports when the last good
// backup was, the failures and the interval on /metrics.
func TestBackupMetrics(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)}
	ran := make(chan *store.BackupRun, 2)
	cfg := Config{Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0", DataDir: t.TempDir(),
		Logger: slog.New(slog.DiscardHandler), TracerProvider: noop.NewTracerProvider(),
		Backup: BackupConfig{Dir: t.TempDir(), Every: 6 * time.Hour,
			After: func(time.Duration) <-chan time.Time { return nil },
			OnRun: func(r *store.BackupRun) { ran <- r }}}
	cfg.Queue.Clock = clock
	metricsCh := make(chan net.Addr, 1)
	cfg.OnMetricsListening = func(a net.Addr) { metricsCh <- a }
	ctx, cancel := context.WithCancel(context.Background())
	errCh := make(chan error, 1)
	go func() { errCh <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		<-errCh
	})
	var addr net.Addr
	var run *store.BackupRun
	for addr == nil || run == nil {
		select {
		case addr = <-metricsCh:
		case run = <-ran:
		case err := <-errCh:
			t.Fatalf("Run: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("no backup and metrics within 30s")
		}
	}
	resp, err := http.Get("http://" + addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string) string {
		for l := range strings.SplitSeq(string(body), "\n") {
			if strings.HasPrefix(l, name+"{") || strings.HasPrefix(l, name+" ") {
				f := strings.Fields(l)
				return f[len(f)-1]
			}
		}
		return "missing"
	}
	want := map[string]string{
		"factory_backup_last_success_timestamp_seconds": strconv.FormatFloat(float64(run.StartedAt.Unix()), 'e', -1, 64),
		"factory_backup_failures_total":                 "0",
		"factory_backup_interval_seconds":               "21600",
	}
	for name, v := range want {
		got := value(name)
		gf, err1 := strconv.ParseFloat(got, 64)
		wf, _ := strconv.ParseFloat(v, 64)
		if err1 != nil || gf != wf {
			t.Errorf("%s = %s, want %s", name, got, v)
		}
	}
}
