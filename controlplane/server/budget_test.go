package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/postgres"
	"github.com/factory/factory/controlplane/store/sqlite"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// spendBundle is a control plane on a given store behind bufconn, with the
// budget service wired as Run wires it.
type spendBundle struct {
	lis      *bufconn.Listener
	acc      *access.Service
	operator string
	q        *queue.Service
	bud      *budget.Service
	st       store.Store
}

func newSpendBundle(t *testing.T, st store.Store) *spendBundle {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	q, err := queue.New(queue.Config{Store: st, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	acc, operator := testAccess(t, st, nil)
	bud, err := newBudget(ctx, BudgetConfig{}, st, q, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	stopping := make(chan struct{})
	srv, _ := NewGRPCServer(Services{Queue: q, Access: acc, Budget: bud}, log, noop.NewTracerProvider(), stopping)
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	t.Cleanup(func() { close(stopping); srv.Stop() })
	return &spendBundle{lis: lis, acc: acc, operator: operator, q: q, bud: bud, st: st}
}

func sqliteStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: t.TempDir() + "/factory.db", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// postgresStore opens a store in a fresh schema, dropped at the end; the
// test is skipped without FACTORY_TEST_POSTGRES_URL.
func postgresStore(t *testing.T) store.Store {
	t.Helper()
	url := os.Getenv("FACTORY_TEST_POSTGRES_URL")
	if url == "" {
		t.Skip("FACTORY_TEST_POSTGRES_URL is not set; set it (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run this on PostgreSQL")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "factory_test_" + hex.EncodeToString(b[:])
	st, err := postgres.Open(context.Background(), postgres.Config{URL: url, Schema: schema, MaxConns: 16, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("drop schema: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	return st
}

// dial opens a new connection (its own HTTP/2 transport) as secret.
func (b *spendBundle) dial(t *testing.T, secret string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return b.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()), bearer(secret))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (b *spendBundle) agent(t *testing.T, name string) *grpc.ClientConn {
	t.Helper()
	_, secret, err := b.acc.Create(context.Background(), access.CreateParams{Role: store.RoleAgent, Subject: name, CreatedBy: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return b.dial(t, secret)
}

func spendEventPB(id, agent string, cost int64) *factoryv1.SpendEvent {
	return &factoryv1.SpendEvent{Id: id, Agent: agent, Model: "claude-sonnet-4", Provider: "anthropic",
		Tier: factoryv1.SpendTier_SPEND_TIER_FRONTIER, CostMicros: &cost, OccurredAt: timestamppb.Now()}
}

func quotaSubject(t *testing.T, err error) string {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("got %v, want RESOURCE_EXHAUSTED", err)
	}
	for _, d := range st.Details() {
		if qf, ok := d.(*errdetails.QuotaFailure); ok && len(qf.GetViolations()) > 0 {
			return qf.GetViolations()[0].GetSubject()
		}
	}
	t.Fatalf("RESOURCE_EXHAUSTED without a QuotaFailure detail: %v", err)
	return ""
}

// Duplicate ids sent at the same time over several connections (as a
// retrying agent and its sidecar's spool replay would) count once.
func TestSpendDuplicatesFromManyConnectionsCountOnce(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testDuplicatesFromManyConnections(t, sqliteStore(t)) })
	t.Run("postgres", func(t *testing.T) { testDuplicatesFromManyConnections(t, postgresStore(t)) })
}

func testDuplicatesFromManyConnections(t *testing.T, st store.Store) {
	b := newSpendBundle(t, st)
	const conns, events, cost = 8, 50, 1_000
	clients := make([]factoryv1.BudgetServiceClient, conns)
	for i := range clients {
		clients[i] = factoryv1.NewBudgetServiceClient(b.dial(t, b.operator))
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	var recorded, duplicates atomic.Int64
	for c := range conns {
		wg.Go(func() {
			for i := range events {
				// Half single reports, half batches overlapping them.
				id := fmt.Sprintf("dup-%d", (i+c*7)%events)
				if c%2 == 0 {
					res, err := clients[c].ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: spendEventPB(id, "forge", cost)})
					if err != nil {
						t.Error(err)
						return
					}
					if res.GetDuplicate() {
						duplicates.Add(1)
					} else {
						recorded.Add(1)
					}
					continue
				}
				res, err := clients[c].ReportSpendBatch(ctx, &factoryv1.ReportSpendBatchRequest{Events: []*factoryv1.SpendEvent{
					spendEventPB(id, "forge", cost), spendEventPB(id, "forge", cost)}})
				if err != nil {
					t.Error(err)
					return
				}
				recorded.Add(int64(res.GetRecorded()))
				duplicates.Add(int64(res.GetDuplicates()))
			}
		})
	}
	wg.Wait()
	if recorded.Load() != events {
		t.Errorf("recorded %d events in all, want %d", recorded.Load(), events)
	}
	// Every other report (half the connections send each id twice) was a
	// duplicate.
	if sent := int64(conns/2*events + conns/2*events*2); duplicates.Load() != sent-events {
		t.Errorf("%d duplicates of %d reports, want %d", duplicates.Load(), sent, sent-events)
	}
	rep, err := clients[0].GetSpend(ctx, &factoryv1.GetSpendRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.GetTotals(); got.GetEvents() != events || got.GetCostMicros() != events*cost {
		t.Errorf("today's totals %v, want %d events costing %d", got, events, events*cost)
	}
}

// 32 agents reserving before each call and settling after never push the
// day's spend past the total cap, however their calls interleave.
func TestReservationsNeverOvershootTheCap(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(*testing.T) store.Store
	}{{"sqlite", sqliteStore}, {"postgres", postgresStore}} {
		t.Run(tc.name, func(t *testing.T) {
			b := newSpendBundle(t, tc.open(t))
			ctx := context.Background()
			const capMicros = 20_000_000
			op := factoryv1.NewBudgetServiceClient(b.dial(t, b.operator))
			if _, err := op.SetBudget(ctx, &factoryv1.SetBudgetRequest{Budget: &factoryv1.Budget{
				Scope: factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL, CapMicros: capMicros}}); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var settled atomic.Int64
			for w := range 32 {
				name := fmt.Sprintf("agent-%02d", w)
				c := factoryv1.NewBudgetServiceClient(b.agent(t, name))
				wg.Go(func() {
					for i := 0; ; i++ {
						// Estimates of $0.10 to $0.70; the actual is at most the estimate.
						est := int64(100_000 * (1 + (w+i)%7))
						r, err := c.ReserveSpend(ctx, &factoryv1.ReserveSpendRequest{Agent: name, Tier: factoryv1.SpendTier_SPEND_TIER_FRONTIER, EstimateMicros: est})
						if status.Code(err) == codes.ResourceExhausted {
							return
						}
						if err != nil {
							t.Error(err)
							return
						}
						actual := est - int64(i%3)*10_000
						if _, err := c.SettleSpend(ctx, &factoryv1.SettleSpendRequest{ReservationId: r.GetReservationId(),
							Actual: spendEventPB(fmt.Sprintf("%s-%d", name, i), name, actual)}); err != nil {
							t.Error(err)
							return
						}
						settled.Add(1)
					}
				})
			}
			wg.Wait()
			rep, err := op.GetSpend(ctx, &factoryv1.GetSpendRequest{})
			if err != nil {
				t.Fatal(err)
			}
			spent := rep.GetTotals().GetCostMicros()
			if spent > capMicros {
				t.Fatalf("spent %d, past the cap of %d", spent, capMicros)
			}
			// The cap was actually reached for: the last refusals came with
			// less than the largest estimate left.
			if spent < capMicros-2*700_000 || settled.Load() < 30 {
				t.Errorf("spent only %d of %d in %d calls: the reporters stopped early", spent, capMicros, settled.Load())
			}
		})
	}
}

// A reached cap refuses new claims with RESOURCE_EXHAUSTED and a
// QuotaFailure naming the budget: the agent's cap for that agent only,
// the total's for everyone; an emergency stop likewise.
func TestClaimRefusedWhenACapIsReached(t *testing.T) {
	b := newSpendBundle(t, sqliteStore(t))
	ctx := context.Background()
	opConn := b.dial(t, b.operator)
	op := factoryv1.NewBudgetServiceClient(opConn)
	queueOp := factoryv1.NewQueueServiceClient(opConn)
	for range 3 {
		if _, err := queueOp.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "work"}); err != nil {
			t.Fatal(err)
		}
	}
	set := func(scope factoryv1.BudgetScope, key string, capMicros int64) {
		t.Helper()
		if _, err := op.SetBudget(ctx, &factoryv1.SetBudgetRequest{Budget: &factoryv1.Budget{Scope: scope, Key: key, CapMicros: capMicros}}); err != nil {
			t.Fatal(err)
		}
	}
	set(factoryv1.BudgetScope_BUDGET_SCOPE_AGENT, "forge", 5_000_000)
	forgeConn, hammerConn := b.agent(t, "forge"), b.agent(t, "hammer")
	forgeQ, hammerQ := factoryv1.NewQueueServiceClient(forgeConn), factoryv1.NewQueueServiceClient(hammerConn)
	if _, err := factoryv1.NewBudgetServiceClient(forgeConn).ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: spendEventPB("f1", "forge", 5_000_000)}); err != nil {
		t.Fatal(err)
	}
	_, err := forgeQ.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge"})
	if got := quotaSubject(t, err); got != "budget:agent:forge" {
		t.Errorf("forge refused by %q, want budget:agent:forge", got)
	}
	if res, err := hammerQ.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "hammer"}); err != nil || len(res.GetTasks()) != 1 {
		t.Fatalf("hammer, under no cap: %v %v", res, err)
	}
	// A reservation also would cross forge's cap.
	_, err = factoryv1.NewBudgetServiceClient(forgeConn).ReserveSpend(ctx, &factoryv1.ReserveSpendRequest{Agent: "forge", Tier: factoryv1.SpendTier_SPEND_TIER_MID, EstimateMicros: 1})
	if got := quotaSubject(t, err); got != "budget:agent:forge" {
		t.Errorf("reservation refused by %q", got)
	}

	set(factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL, "", 5_000_000)
	_, err = hammerQ.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "hammer"})
	if got := quotaSubject(t, err); got != "budget:total" {
		t.Errorf("hammer refused by %q, want budget:total", got)
	}
	// Raising the cap lets claims in again.
	set(factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL, "", 50_000_000)
	if res, err := hammerQ.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "hammer"}); err != nil || len(res.GetTasks()) != 1 {
		t.Fatalf("after raising the cap: %v %v", res, err)
	}
	if _, err := op.EmergencyStop(ctx, &factoryv1.EmergencyStopRequest{Reason: "drill"}); err != nil {
		t.Fatal(err)
	}
	_, err = hammerQ.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "hammer"})
	if got := quotaSubject(t, err); got != "emergency-stop" {
		t.Errorf("under the stop refused by %q", got)
	}
	st, err := op.GetBudget(ctx, &factoryv1.GetBudgetRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !st.GetEmergencyStop().GetStopped() || st.GetEmergencyStop().GetStoppedBy() != "ops" && st.GetEmergencyStop().GetStoppedBy() == "" {
		t.Errorf("GetBudget's stop: %v", st.GetEmergencyStop())
	}
}

// The emergency stop is durable: after a restart the fleet is still
// stopped, claims are refused and READY tasks are still PAUSED; only a
// rearm lifts it and resumes them.
func TestEmergencyStopSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	type conn struct {
		q factoryv1.QueueServiceClient
		b factoryv1.BudgetServiceClient
	}
	start := func() (conn, func()) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		addrCh := make(chan net.Addr, 1)
		errCh := make(chan error, 1)
		go func() {
			errCh <- Run(ctx, Config{Listen: "127.0.0.1:0", DataDir: dir, Logger: log, TracerProvider: noop.NewTracerProvider(),
				MetricsListen: "", OnListening: func(a net.Addr) { addrCh <- a }})
		}()
		var addr net.Addr
		select {
		case addr = <-addrCh:
		case err := <-errCh:
			t.Fatalf("Run: %v", err)
		}
		cc, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()), operatorFrom(t, dir))
		if err != nil {
			t.Fatal(err)
		}
		return conn{q: factoryv1.NewQueueServiceClient(cc), b: factoryv1.NewBudgetServiceClient(cc)}, func() {
			cc.Close()
			cancel()
			if err := <-errCh; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v", err)
			}
		}
	}
	ctx := context.Background()
	c, stop := start()
	var ids []string
	for range 3 {
		res, err := c.q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "halt me"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.GetTask().GetId())
	}
	res, err := c.b.EmergencyStop(ctx, &factoryv1.EmergencyStopRequest{Reason: "runaway spend"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.GetState().GetStopped() || res.GetState().GetPausedTasks() != 3 {
		t.Fatalf("stop: %v", res.GetState())
	}
	stop()

	c, stop = start()
	defer stop()
	st, err := c.b.GetEmergencyStop(ctx, &factoryv1.GetEmergencyStopRequest{})
	if err != nil || !st.GetState().GetStopped() || st.GetState().GetReason() != "runaway spend" {
		t.Fatalf("after restart: %v %v", st, err)
	}
	_, err = c.q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge"})
	if got := quotaSubject(t, err); got != "emergency-stop" {
		t.Errorf("claim after restart refused by %q", got)
	}
	for _, id := range ids {
		got, err := c.q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: id})
		if err != nil || got.GetTask().GetState() != factoryv1.TaskState_TASK_STATE_PAUSED {
			t.Errorf("task %s after restart: %v %v", id, got.GetTask().GetState(), err)
		}
	}
	rearm, err := c.b.RearmEmergencyStop(ctx, &factoryv1.RearmEmergencyStopRequest{Note: "budget raised"})
	if err != nil || rearm.GetResumedTasks() != 3 {
		t.Fatalf("rearm: %v %v", rearm, err)
	}
	claimed, err := c.q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge"})
	if err != nil || len(claimed.GetTasks()) != 1 {
		t.Fatalf("claim after rearm: %v %v", claimed, err)
	}
}

// Sidecars hear of the stop over their stream: on connect while stopped,
// and when it is pulled or rearmed.
func TestSidecarsAreToldOfTheEmergencyStop(t *testing.T) {
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fc := factoryv1.NewFleetServiceClient(b.conn)
	op := factoryv1.NewBudgetServiceClient(b.conn)
	connect := func(host string) factoryv1.FleetService_ConnectClient {
		t.Helper()
		stream, err := fc.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: &factoryv1.Hello{Host: host}}}); err != nil {
			t.Fatal(err)
		}
		if m, err := stream.Recv(); err != nil || m.GetConfig() == nil {
			t.Fatalf("first message: %v %v", m, err)
		}
		return stream
	}
	nextStop := func(stream factoryv1.FleetService_ConnectClient) *factoryv1.EmergencyStop {
		t.Helper()
		for {
			m, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if m.GetEmergencyStop() != nil {
				return m.GetEmergencyStop()
			}
		}
	}
	early := connect("gpu-1")
	if _, err := op.EmergencyStop(ctx, &factoryv1.EmergencyStopRequest{Reason: "drill"}); err != nil {
		t.Fatal(err)
	}
	if s := nextStop(early); !s.GetStopped() || s.GetReason() != "drill" {
		t.Errorf("connected sidecar told %v", s)
	}
	late := connect("gpu-2")
	if s := nextStop(late); !s.GetStopped() {
		t.Errorf("sidecar connecting mid-stop told %v", s)
	}
	if _, err := op.RearmEmergencyStop(ctx, &factoryv1.RearmEmergencyStopRequest{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []factoryv1.FleetService_ConnectClient{early, late} {
		if got := nextStop(s); got.GetStopped() {
			t.Errorf("after the rearm told %v", got)
		}
	}
}

// Tokens without a cost are priced by the server from its table and
// marked so; an unknown model without a cost is refused naming the field.
func TestReportSpendPricesFromTheTable(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	c := factoryv1.NewBudgetServiceClient(b.conn)
	res, err := c.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: &factoryv1.SpendEvent{
		Id: "p1", Agent: "forge", Model: "claude-sonnet-4-20250514", Tier: factoryv1.SpendTier_SPEND_TIER_FRONTIER,
		InputTokens: 10_000, OutputTokens: 2_000, OccurredAt: timestamppb.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	// $3/M in, $15/M out: 0.03 + 0.03.
	if r := res.GetRecord(); !r.GetPricedByServer() || r.GetEvent().GetCostMicros() != 60_000 || r.GetDay() == "" {
		t.Errorf("priced record %v", r)
	}
	_, err = c.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: &factoryv1.SpendEvent{
		Id: "p2", Agent: "forge", Model: "mystery-9000", Tier: factoryv1.SpendTier_SPEND_TIER_MID,
		InputTokens: 10, OccurredAt: timestamppb.Now()}})
	st := wantCode(t, err, codes.InvalidArgument)
	if fieldOf(st) != "event.cost_micros" {
		t.Errorf("refusal names %q: %v", fieldOf(st), err)
	}
	again, err := c.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: &factoryv1.SpendEvent{
		Id: "p1", Agent: "forge", Model: "claude-sonnet-4-20250514", Tier: factoryv1.SpendTier_SPEND_TIER_FRONTIER,
		InputTokens: 10_000, OutputTokens: 2_000, OccurredAt: timestamppb.Now()}})
	if err != nil || !again.GetDuplicate() || again.GetRecord().GetEvent().GetCostMicros() != 60_000 {
		t.Errorf("duplicate answers with the first record: %v %v", again, err)
	}
	// The same id with a cost of its own is a rewrite, not a retry.
	_, err = c.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: spendEventPB("p1", "forge", 1)})
	if st := wantCode(t, err, codes.AlreadyExists); !strings.Contains(st.Message(), "cost_micros") {
		t.Errorf("the refusal does not name what differs: %v", err)
	}
	// Server-priced events are capped like sent costs.
	_, err = c.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: &factoryv1.SpendEvent{
		Id: "p3", Agent: "forge", Model: "claude-opus-4", Tier: factoryv1.SpendTier_SPEND_TIER_FRONTIER,
		InputTokens: 100_000_000_000, OutputTokens: 100_000_000_000, OccurredAt: timestamppb.Now()}})
	wantCode(t, err, codes.InvalidArgument)
}

// A batch records what it can: a rewritten id is listed, not stored, and
// the rest of the batch is recorded.
func TestReportSpendBatchListsRewrites(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	c := factoryv1.NewBudgetServiceClient(b.conn)
	if _, err := c.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: spendEventPB("b1", "forge", 100)}); err != nil {
		t.Fatal(err)
	}
	res, err := c.ReportSpendBatch(ctx, &factoryv1.ReportSpendBatchRequest{Events: []*factoryv1.SpendEvent{
		spendEventPB("b1", "forge", 100), spendEventPB("b1", "hammer", 7), spendEventPB("b2", "forge", 5)}})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetRecorded() != 2 || res.GetDuplicates() != 1 || len(res.GetConflicts()) != 0 {
		t.Fatalf("batch %v: want hammer's b1 and b2 recorded, forge's b1 a duplicate", res)
	}
	res, err = c.ReportSpendBatch(ctx, &factoryv1.ReportSpendBatchRequest{Events: []*factoryv1.SpendEvent{
		spendEventPB("b1", "forge", 9_000_000), spendEventPB("b3", "forge", 1)}})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetRecorded() != 1 || len(res.GetConflicts()) != 1 || res.GetConflicts()[0].GetId() != "b1" ||
		res.GetConflicts()[0].GetAgent() != "forge" || fmt.Sprint(res.GetConflicts()[0].GetFields()) != "[cost_micros]" {
		t.Fatalf("batch with a rewrite %v", res)
	}
	rep, err := c.GetSpend(ctx, &factoryv1.GetSpendRequest{})
	if err != nil || rep.GetTotals().GetCostMicros() != 113 {
		t.Errorf("total %v %v, want 113 (the rewrite not counted)", rep.GetTotals(), err)
	}
}

// An operator voids a bogus event; the report sees the net, and a second
// void is refused.
func TestVoidSpend(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	c := factoryv1.NewBudgetServiceClient(b.conn)
	for _, e := range []*factoryv1.SpendEvent{spendEventPB("ok", "forge", 2_000_000), spendEventPB("bogus", "forge", 50_000_000_000)} {
		if _, err := c.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: e}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := c.VoidSpend(ctx, &factoryv1.VoidSpendRequest{Agent: "forge", Id: "bogus", Reason: "test event"})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetRecord().GetEvent().GetCostMicros() != 50_000_000_000 || res.GetVoidedBy() == "" || res.GetVoidedAt() == nil {
		t.Errorf("void answered %v", res)
	}
	_, err = c.VoidSpend(ctx, &factoryv1.VoidSpendRequest{Agent: "forge", Id: "bogus", Reason: "again"})
	wantCode(t, err, codes.AlreadyExists)
	_, err = c.VoidSpend(ctx, &factoryv1.VoidSpendRequest{Agent: "forge", Id: "bogus"})
	if st := wantCode(t, err, codes.InvalidArgument); fieldOf(st) != "reason" {
		t.Errorf("a void without a reason names %q", fieldOf(st))
	}
	rep, err := c.GetSpend(ctx, &factoryv1.GetSpendRequest{})
	if err != nil || rep.GetTotals().GetCostMicros() != 2_000_000 || rep.GetTotals().GetEvents() != 1 {
		t.Errorf("report after the void %v %v, want the net", rep.GetTotals(), err)
	}
}

// A sidecar relays spend for the agents on its host and no others; an
// agent reports and settles only as itself.
func TestSpendIsReportedOnlyForOnesOwnAgents(t *testing.T) {
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// gpu-1 runs forge, as an operator placed it.
	if _, err := factoryv1.NewFleetServiceClient(b.conn).PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: "forge", Host: "gpu-1"}); err != nil {
		t.Fatal(err)
	}
	stream, err := factoryv1.NewFleetServiceClient(b.conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: &factoryv1.Hello{
		Host: "gpu-1", Agents: []*factoryv1.HostedAgent{{Name: "forge"}}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	sidecarSecret, _ := b.mintToken(t, store.RoleSidecar, "gpu-1")
	side := b.clientsAs(t, sidecarSecret).b
	if _, err := side.ReportSpendBatch(ctx, &factoryv1.ReportSpendBatchRequest{Events: []*factoryv1.SpendEvent{spendEventPB("s1", "forge", 5)}}); err != nil {
		t.Errorf("sidecar relaying forge's spend: %v", err)
	}
	_, err = side.ReportSpendBatch(ctx, &factoryv1.ReportSpendBatchRequest{Events: []*factoryv1.SpendEvent{
		spendEventPB("s2", "forge", 5), spendEventPB("s3", "hammer", 5)}})
	wantCode(t, err, codes.PermissionDenied)

	hammerSecret, _ := b.mintToken(t, store.RoleAgent, "hammer")
	hammer := b.clientsAs(t, hammerSecret).b
	_, err = hammer.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: spendEventPB("h1", "forge", 5)})
	wantCode(t, err, codes.PermissionDenied)
	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	forge := b.clientsAs(t, forgeSecret).b
	r, err := forge.ReserveSpend(ctx, &factoryv1.ReserveSpendRequest{Agent: "forge", Tier: factoryv1.SpendTier_SPEND_TIER_MID, EstimateMicros: 10})
	if err != nil {
		t.Fatal(err)
	}
	_, err = hammer.SettleSpend(ctx, &factoryv1.SettleSpendRequest{ReservationId: r.GetReservationId()})
	wantCode(t, err, codes.PermissionDenied)
	if _, err := side.SettleSpend(ctx, &factoryv1.SettleSpendRequest{ReservationId: r.GetReservationId()}); err != nil {
		t.Errorf("forge's sidecar releasing its reservation: %v", err)
	}
	rep, err := factoryv1.NewBudgetServiceClient(b.conn).GetSpend(ctx, &factoryv1.GetSpendRequest{})
	if err != nil || rep.GetTotals().GetEvents() != 1 {
		t.Errorf("recorded %v %v, want only s1", rep.GetTotals(), err)
	}
}
