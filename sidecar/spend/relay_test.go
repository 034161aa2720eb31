package spend

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// fakeLedger is a BudgetService that stores events by id, can be made to
// fail, and refuses agents it is told to.
type fakeLedger struct {
	factoryv1.UnimplementedBudgetServiceServer
	mu      sync.Mutex
	stored  map[string]*factoryv1.SpendEvent
	calls   int
	fail    error
	refused map[string]codes.Code // agent -> code
}

func (f *fakeLedger) ReportSpendBatch(_ context.Context, req *factoryv1.ReportSpendBatchRequest) (*factoryv1.ReportSpendBatchResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		return nil, f.fail
	}
	for _, e := range req.GetEvents() {
		if c, ok := f.refused[e.GetAgent()]; ok {
			return nil, status.Error(c, "refused "+e.GetAgent())
		}
	}
	res := &factoryv1.ReportSpendBatchResponse{}
	for _, e := range req.GetEvents() {
		if _, dup := f.stored[e.GetId()]; dup {
			res.Duplicates++
			continue
		}
		f.stored[e.GetId()] = e
		res.Recorded++
	}
	return res, nil
}

func (f *fakeLedger) ReportSpend(_ context.Context, req *factoryv1.ReportSpendRequest) (*factoryv1.ReportSpendResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := req.GetEvent()
	if c, ok := f.refused[e.GetAgent()]; ok {
		return nil, status.Error(c, "refused "+e.GetAgent())
	}
	_, dup := f.stored[e.GetId()]
	if !dup {
		f.stored[e.GetId()] = e
	}
	return &factoryv1.ReportSpendResponse{Duplicate: dup}, nil
}

func (f *fakeLedger) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.stored)
}

func serveLedger(t *testing.T, f *fakeLedger) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	factoryv1.RegisterBudgetServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///ledger", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func cost(c int64) *int64 { return &c }

// TestRelayAcksOnlyAfterTheLedgerStored: while the control plane fails,
// events stay spooled (on disk, across a reopen); once it answers they
// are delivered in one batch and dropped from the spool, and a replay of
// the same spool counts once.
func TestRelayAcksOnlyAfterTheLedgerStored(t *testing.T) {
	f := &fakeLedger{stored: map[string]*factoryv1.SpendEvent{}, fail: status.Error(codes.Unavailable, "down")}
	conn := serveLedger(t, f)
	path := filepath.Join(t.TempDir(), "spend.jsonl")
	sp := openSpool(t, path)
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	for i, id := range []string{"a", "b", "c"} {
		ev := &Event{ID: id, Agent: "planner-01", Host: "edge-1", Model: "m", Tier: "mid", CostMicros: cost(int64(i)), OccurredAt: at}
		if _, err := sp.Append(ev.toSpool()); err != nil {
			t.Fatal(err)
		}
	}
	r, err := NewRelay(RelayConfig{Conn: conn, Spool: sp, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Flush(ctx); status.Code(err) != codes.Unavailable {
		t.Fatalf("Flush with the ledger down: %v", err)
	}
	if sp.Len() != 3 {
		t.Fatalf("spool holds %d after a failed delivery, want 3", sp.Len())
	}
	// A restart: the spool is reopened from disk.
	sp.Close()
	sp = openSpool(t, path)
	f.mu.Lock()
	f.fail = nil
	f.mu.Unlock()
	r, _ = NewRelay(RelayConfig{Conn: conn, Spool: sp, Logger: quiet()})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if sp.Len() != 0 || f.count() != 3 {
		t.Fatalf("after delivery: spool %d, stored %d", sp.Len(), f.count())
	}
	got := f.stored["c"]
	if got.GetCostMicros() != 2 || got.GetHost() != "edge-1" || got.GetTier() != factoryv1.SpendTier_SPEND_TIER_MID || !got.GetOccurredAt().AsTime().Equal(at) {
		t.Errorf("stored %v", got)
	}
	// The same event again (a replay after a lost ack) is stored once.
	ev := &Event{ID: "a", Agent: "planner-01", Model: "m", Tier: "mid", OccurredAt: at}
	_, _ = sp.Append(ev.toSpool())
	if err := r.Flush(ctx); err != nil || f.count() != 3 || sp.Len() != 0 {
		t.Fatalf("replay: %v, stored %d, spool %d", err, f.count(), sp.Len())
	}
}

// TestRelayIsolatesARefusedEvent: a batch refused for one event's sake is
// split: the good events are stored, an invalid one is dropped, one whose
// agent the host does not run stays spooled.
func TestRelayIsolatesARefusedEvent(t *testing.T) {
	f := &fakeLedger{stored: map[string]*factoryv1.SpendEvent{}, refused: map[string]codes.Code{
		"bad": codes.InvalidArgument, "stranger": codes.PermissionDenied, "rewriter": codes.AlreadyExists,
	}}
	conn := serveLedger(t, f)
	sp := openSpool(t, filepath.Join(t.TempDir(), "spend.jsonl"))
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	// A rewrite of a recorded id can never be stored: dropped like an
	// invalid event, not retried forever ahead of the rest.
	for _, a := range []string{"planner-01", "bad", "rewriter", "stranger", "coder-03"} {
		ev := &Event{ID: "id-" + a, Agent: a, Model: "m", Tier: "mid", OccurredAt: at}
		if _, err := sp.Append(ev.toSpool()); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := NewRelay(RelayConfig{Conn: conn, Spool: sp, Logger: quiet()})
	if err := r.Flush(context.Background()); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Flush: %v, want the stranger's refusal", err)
	}
	if f.count() != 2 || f.stored["id-planner-01"] == nil || f.stored["id-coder-03"] == nil {
		t.Errorf("stored %v", f.stored)
	}
	if p := sp.Pending(); len(p) != 1 || p[0].ID != "id-stranger" {
		t.Errorf("still spooled: %v", p)
	}
}

// TestRelayRunDeliversAsEventsArrive: Run delivers what is appended while
// it runs, woken by the spool.
func TestRelayRunDeliversAsEventsArrive(t *testing.T) {
	f := &fakeLedger{stored: map[string]*factoryv1.SpendEvent{}}
	conn := serveLedger(t, f)
	sp := openSpool(t, filepath.Join(t.TempDir(), "spend.jsonl"))
	r, _ := NewRelay(RelayConfig{Conn: conn, Spool: sp, Logger: quiet()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	ev := &Event{ID: "x", Agent: "planner-01", Model: "m", Tier: "mid", OccurredAt: time.Now()}
	if _, err := sp.Append(ev.toSpool()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for f.count() == 0 || sp.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not delivered: stored %d, spool %d", f.count(), sp.Len())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
