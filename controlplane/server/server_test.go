package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/approval"
	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/ops"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// fakeClock is a settable clock, so leases expire without sleeping.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type testBundle struct {
	client factoryv1.QueueServiceClient
	conn   *grpc.ClientConn
	queue  *queue.Service
	clock  *fakeClock
	store  store.Store
	// access issues tokens; client and conn call as operator, whose
	// secret is operator. dialAs connects with another token.
	access   *access.Service
	operator string
	lis      *bufconn.Listener
	srv      *grpc.Server
	dbPath   string
	// fleet is the server's fleet registry, on clock when one is given.
	fleet *fleet.Registry
	// budget is the spend ledger, its gate installed on queue.
	budget *budget.Service
	// approvals is the approval gate, its create hook installed on queue.
	approvals *approval.Service
}

// setup starts the queue service on a real SQLite store behind a gRPC
// server on bufconn, with a client calling as an operator. With a nil
// clock the wall clock is used.
func setup(t *testing.T, clock *fakeClock) *testBundle {
	t.Helper()
	return setupWith(t, clock, nil)
}

// setupWith is setup with server options and extra client dial options.
func setupWith(t *testing.T, clock *fakeClock, opts []GRPCOption, dialOpts ...grpc.DialOption) *testBundle {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dbPath := t.TempDir() + "/factory.db"
	st, err := sqlite.Open(ctx, sqlite.Config{Path: dbPath, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	qcfg := queue.Config{Store: st, Logger: log, Rand: func() float64 { return 0.5 }}
	if clock != nil {
		qcfg.Clock = clock
	}
	q, err := queue.New(qcfg)
	if err != nil {
		t.Fatal(err)
	}
	acc, operator := testAccess(t, st, qcfg.Clock)
	opsSvc, err := ops.New(ops.Config{Store: st, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	var fleetClock fleet.Clock
	if clock != nil {
		fleetClock = clock
	}
	fl := fleet.New(fleetClock, fleet.Config{})
	maint, dig, err := newOpsDomains(ctx, DigestConfig{}, st, q, fl, qcfg.Clock, log)
	if err != nil {
		t.Fatal(err)
	}
	bud, err := newBudget(ctx, BudgetConfig{}, st, q, qcfg.Clock, log)
	if err != nil {
		t.Fatal(err)
	}
	joinPauseHolders(q, bud, maint)
	events := notify.NewHub(0)
	alerts, err := newAlerts(AlertsConfig{}, st, fl, fleet.NewEvents(st, fleetClock), bud, qcfg.Clock, events, log)
	if err != nil {
		t.Fatal(err)
	}
	approvals, err := newApprovals(ApprovalConfig{}, st, q, qcfg.Clock, events, events, log, "")
	if err != nil {
		t.Fatal(err)
	}
	stopping := make(chan struct{})
	srv, _ := NewGRPCServer(Services{Queue: q, Access: acc, Ops: opsSvc, Fleet: fl, Placements: fleet.NewPlacements(st, fleetClock, 0), FleetEvents: fleet.NewEvents(st, fleetClock), FleetHistory: fleet.NewHistory(st, fleetClock, fleet.Config{}), Maintenance: maint, Digest: dig, Budget: bud, Alerts: alerts, Events: events, Approvals: approvals}, log, noop.NewTracerProvider(), stopping, opts...)
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	t.Cleanup(func() { close(stopping); srv.Stop() })
	b := &testBundle{queue: q, clock: clock, store: st, access: acc, operator: operator, lis: lis, srv: srv, dbPath: dbPath, fleet: fl, budget: bud, approvals: approvals}
	b.conn = b.dialAs(t, operator, dialOpts...)
	b.client = factoryv1.NewQueueServiceClient(b.conn)
	return b
}

func wantCode(t *testing.T, err error, code codes.Code) *status.Status {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	return st
}

func fieldOf(st *status.Status) string {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

func create(t *testing.T, b *testBundle, req *factoryv1.CreateTaskRequest) *factoryv1.Task {
	t.Helper()
	res, err := b.client.CreateTask(context.Background(), req)
	if err != nil {
		t.Fatalf("CreateTask: %v", err)
	}
	return res.GetTask()
}

func TestBadInputIsInvalidArgumentAndWritesNothing(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	existing := create(t, b, &factoryv1.CreateTaskRequest{Title: "existing"})

	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"missing title", func() error {
			_, err := b.client.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "  "})
			return err
		}, "title"},
		{"priority out of range", func() error {
			_, err := b.client.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "x", Priority: 5000})
			return err
		}, "priority"},
		{"payload not JSON", func() error {
			_, err := b.client.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "x", PayloadJson: "{not json"})
			return err
		}, "payload_json"},
		{"unknown initial state", func() error {
			_, err := b.client.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "x", InitialState: 42})
			return err
		}, "initial_state"},
		{"bad task in a batch", func() error {
			_, err := b.client.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: []*factoryv1.CreateTaskRequest{{Title: "ok"}, {Title: ""}}})
			return err
		}, "tasks[1].title"},
		{"unknown dependency", func() error {
			_, err := b.client.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "x", DependsOn: []string{"no-such-task"}})
			return err
		}, "depends_on"},
		{"unknown state in list filter", func() error {
			_, err := b.client.ListTasks(ctx, &factoryv1.ListTasksRequest{States: []factoryv1.TaskState{99}})
			return err
		}, "states[0]"},
		{"page_size over the maximum", func() error {
			_, err := b.client.ListTasks(ctx, &factoryv1.ListTasksRequest{PageSize: 5000})
			return err
		}, "page_size"},
		{"garbage page token", func() error {
			_, err := b.client.ListTasks(ctx, &factoryv1.ListTasksRequest{PageToken: "%%%"})
			return err
		}, "page_token"},
		{"unknown state in move", func() error {
			_, err := b.client.MoveTask(ctx, &factoryv1.MoveTaskRequest{TaskId: existing.GetId(), To: 99, Reason: "r"})
			return err
		}, "to"},
		{"move without reason", func() error {
			_, err := b.client.MoveTask(ctx, &factoryv1.MoveTaskRequest{TaskId: existing.GetId(), To: factoryv1.TaskState_TASK_STATE_FAILED})
			return err
		}, "reason"},
		{"priority out of range on set", func() error {
			_, err := b.client.SetPriority(ctx, &factoryv1.SetPriorityRequest{TaskId: existing.GetId(), Priority: -1001})
			return err
		}, "priority"},
		{"claim without agent", func() error {
			_, err := b.client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{})
			return err
		}, "agent"},
		{"claim wait over 60s", func() error {
			_, err := b.client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "a", Wait: durationpb.New(2 * time.Minute)})
			return err
		}, "wait"},
		{"claim batch too large", func() error {
			_, err := b.client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "a", MaxTasks: 1000})
			return err
		}, "max_tasks"},
		{"fail without error text", func() error {
			_, err := b.client.FailTask(ctx, &factoryv1.FailTaskRequest{TaskId: existing.GetId(), Agent: "a", FencingToken: 1})
			return err
		}, "error"},
		{"requeue-stuck without older_than", func() error {
			_, err := b.client.RequeueStuck(ctx, &factoryv1.RequeueStuckRequest{})
			return err
		}, "older_than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := wantCode(t, tt.call(), codes.InvalidArgument)
			if got := fieldOf(st); got != tt.field {
				t.Errorf("field violation names %q, want %q (message %q)", got, tt.field, st.Message())
			}
		})
	}

	// Nothing was written: the one task is still the only one, untouched.
	list, err := b.client.ListTasks(ctx, &factoryv1.ListTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetTasks()) != 1 || list.GetTasks()[0].GetId() != existing.GetId() {
		t.Fatalf("store changed: %d tasks", len(list.GetTasks()))
	}
	got := list.GetTasks()[0]
	if got.GetState() != factoryv1.TaskState_TASK_STATE_READY || got.GetPriority() != 0 || got.GetNote() != "" {
		t.Fatalf("existing task changed: %v", got)
	}
}

func TestClaimWaitIsWokenByPush(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	type result struct {
		res *factoryv1.ClaimTaskResponse
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		res, err := b.client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge", Roles: []string{"builder"}, Wait: durationpb.New(10 * time.Second)})
		done <- result{res, err, time.Now()}
	}()
	// Give the claimer time to find the queue empty and block.
	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("claim returned before any task existed: %v %v", r.res, r.err)
	default:
	}
	created := time.Now()
	task := create(t, b, &factoryv1.CreateTaskRequest{Title: "build it", Role: "builder"})
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.res.GetTasks()) != 1 || r.res.GetTasks()[0].GetId() != task.GetId() {
		t.Fatalf("claimed %v, want %s", r.res.GetTasks(), task.GetId())
	}
	// A 1 s poll would have taken up to a second; a push takes milliseconds.
	if lat := r.at.Sub(created); lat > 250*time.Millisecond {
		t.Fatalf("waiting claimer got the task %s after it was created; want push-speed", lat)
	}
}

func TestClaimWaitEndsEmptyWithoutError(t *testing.T) {
	b := setup(t, nil)
	res, err := b.client.ClaimTask(context.Background(), &factoryv1.ClaimTaskRequest{Agent: "forge", Wait: durationpb.New(50 * time.Millisecond)})
	if err != nil || len(res.GetTasks()) != 0 {
		t.Fatalf("got %v, %v; want no tasks and no error", res, err)
	}
}

func TestLeaseLifecycleOverGRPC(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 11, 27, 7, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	ctx := context.Background()
	task := create(t, b, &factoryv1.CreateTaskRequest{Title: "research", Role: "researcher", MaxAttempts: 2})

	claim := func(agent string) *factoryv1.Task {
		t.Helper()
		res, err := b.client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: agent, Roles: []string{"researcher"}, LeaseDuration: durationpb.New(time.Minute)})
		if err != nil || len(res.GetTasks()) != 1 {
			t.Fatalf("claim: %v %v", res, err)
		}
		return res.GetTasks()[0]
	}
	first := claim("scout")
	if first.GetLease().GetHolder() != "scout" || first.GetAttempt() != 1 {
		t.Fatalf("lease: %v", first)
	}
	if _, err := b.client.RenewLease(ctx, &factoryv1.RenewLeaseRequest{TaskId: task.GetId(), Agent: "scout", FencingToken: first.GetLease().GetToken(), Progress: "halfway", LeaseDuration: durationpb.New(time.Minute)}); err != nil {
		t.Fatal(err)
	}

	// The lease expires: the sweeper puts it back with backoff.
	clock.Advance(2 * time.Minute)
	if _, err := b.queue.RescueExpired(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := b.client.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: task.GetId()})
	if got.GetTask().GetState() != factoryv1.TaskState_TASK_STATE_READY || got.GetTask().GetRunAfter() == nil {
		t.Fatalf("after expiry: %v", got.GetTask())
	}
	// The old holder's token is stale now.
	_, err := b.client.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: task.GetId(), Agent: "scout", FencingToken: first.GetLease().GetToken()})
	wantCode(t, err, codes.FailedPrecondition)

	clock.Advance(time.Hour) // past the backoff
	second := claim("scout-2")
	if second.GetLease().GetToken() <= first.GetLease().GetToken() || second.GetAttempt() != 2 {
		t.Fatalf("second claim: %v", second)
	}
	// A replayed old token is refused even though the task is claimed again.
	_, err = b.client.RenewLease(ctx, &factoryv1.RenewLeaseRequest{TaskId: task.GetId(), Agent: "scout", FencingToken: first.GetLease().GetToken()})
	wantCode(t, err, codes.FailedPrecondition)

	// Out of attempts: the next expiry is the dead letter, last error kept.
	clock.Advance(2 * time.Minute)
	if _, err := b.queue.RescueExpired(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ = b.client.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: task.GetId()})
	if got.GetTask().GetState() != factoryv1.TaskState_TASK_STATE_FAILED || got.GetTask().GetLastError() == "" {
		t.Fatalf("after last expiry: %v", got.GetTask())
	}
}

func TestIllegalMoveNamesAllowedStates(t *testing.T) {
	b := setup(t, nil)
	task := create(t, b, &factoryv1.CreateTaskRequest{Title: "shipped", InitialState: factoryv1.TaskState_TASK_STATE_REVIEW})
	_, err := b.client.MoveTask(context.Background(), &factoryv1.MoveTaskRequest{TaskId: task.GetId(), To: factoryv1.TaskState_TASK_STATE_BACKLOG, Reason: "oops"})
	st := wantCode(t, err, codes.FailedPrecondition)
	for _, allowed := range []string{"READY", "DONE", "FAILED"} {
		if !containsWord(st.Message(), allowed) {
			t.Errorf("message %q does not name allowed state %s", st.Message(), allowed)
		}
	}
}

func containsWord(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if s[i:i+len(w)] == w {
			return true
		}
	}
	return false
}

func TestCompleteTasksReportsEachItem(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	for range 3 {
		create(t, b, &factoryv1.CreateTaskRequest{Title: "t"})
	}
	res, err := b.client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "a", MaxTasks: 3})
	if err != nil || len(res.GetTasks()) != 3 {
		t.Fatalf("claim: %v %v", res, err)
	}
	items := []*factoryv1.CompleteTaskRequest{}
	for _, tk := range res.GetTasks() {
		items = append(items, &factoryv1.CompleteTaskRequest{TaskId: tk.GetId(), Agent: "a", FencingToken: tk.GetLease().GetToken()})
	}
	items[1].FencingToken += 100 // stale
	items = append(items, &factoryv1.CompleteTaskRequest{TaskId: "missing", Agent: "a", FencingToken: 1})
	out, err := b.client.CompleteTasks(ctx, &factoryv1.CompleteTasksRequest{Items: items})
	if err != nil {
		t.Fatal(err)
	}
	codesGot := []string{}
	for _, r := range out.GetResults() {
		codesGot = append(codesGot, r.GetErrorCode())
	}
	want := []string{"", "FAILED_PRECONDITION", "", "NOT_FOUND"}
	for i := range want {
		if codesGot[i] != want[i] {
			t.Fatalf("result codes %q, want %q", codesGot, want)
		}
	}
	if out.GetResults()[0].GetTask().GetState() != factoryv1.TaskState_TASK_STATE_DONE {
		t.Fatalf("item 0 not DONE: %v", out.GetResults()[0])
	}
}

func TestWatchTasksSnapshotThenChanges(t *testing.T) {
	b := setup(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	before := create(t, b, &factoryv1.CreateTaskRequest{Title: "before", Role: "builder"})
	create(t, b, &factoryv1.CreateTaskRequest{Title: "other role", Role: "tester"})
	stream, err := b.client.WatchTasks(ctx, &factoryv1.WatchTasksRequest{Role: "builder"})
	if err != nil {
		t.Fatal(err)
	}
	recv := func() *factoryv1.WatchTasksResponse {
		t.Helper()
		e, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if e := recv(); e.GetType() != factoryv1.TaskEventType_TASK_EVENT_TYPE_SNAPSHOT || e.GetTask().GetId() != before.GetId() {
		t.Fatalf("first event %v", e)
	}
	if e := recv(); e.GetType() != factoryv1.TaskEventType_TASK_EVENT_TYPE_SYNCED {
		t.Fatalf("second event %v", e)
	}
	after := create(t, b, &factoryv1.CreateTaskRequest{Title: "after", Role: "builder"})
	if e := recv(); e.GetType() != factoryv1.TaskEventType_TASK_EVENT_TYPE_CREATED || e.GetTask().GetId() != after.GetId() {
		t.Fatalf("create event %v", e)
	}
	if _, err := b.client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge", Roles: []string{"builder"}}); err != nil {
		t.Fatal(err)
	}
	e := recv()
	if e.GetType() != factoryv1.TaskEventType_TASK_EVENT_TYPE_STATE_CHANGED || e.GetPreviousState() != factoryv1.TaskState_TASK_STATE_READY ||
		e.GetTask().GetState() != factoryv1.TaskState_TASK_STATE_IN_PROGRESS || e.GetTask().GetId() != before.GetId() {
		t.Fatalf("claim event %v", e)
	}
}

func TestHealthAndReflectionNeedNoProtoFiles(t *testing.T) {
	b := setup(t, nil)
	res, err := healthpb.NewHealthClient(b.conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "factory.v1.QueueService"})
	if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", res, err)
	}
}

func TestRunRestartKeepsTasksAndLeases(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func() (factoryv1.QueueServiceClient, func()) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		addrCh := make(chan net.Addr, 1)
		errCh := make(chan error, 1)
		go func() {
			errCh <- Run(ctx, Config{Listen: "127.0.0.1:0", DataDir: dir, Logger: log, TracerProvider: noop.NewTracerProvider(),
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
		return factoryv1.NewQueueServiceClient(conn), func() {
			conn.Close()
			cancel()
			if err := <-errCh; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v", err)
			}
		}
	}
	ctx := context.Background()
	client, stop := start()
	created, err := client.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "survive"})
	if err != nil {
		t.Fatal(err)
	}
	claimed, err := client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge"})
	if err != nil || len(claimed.GetTasks()) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	stop()

	client, stop = start()
	defer stop()
	got, err := client.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: created.GetTask().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	lease := got.GetTask().GetLease()
	if got.GetTask().GetState() != factoryv1.TaskState_TASK_STATE_IN_PROGRESS || lease.GetHolder() != "forge" || lease.GetToken() != claimed.GetTasks()[0].GetLease().GetToken() {
		t.Fatalf("after restart: %v", got.GetTask())
	}
	if _, err := client.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: created.GetTask().GetId(), Agent: "forge", FencingToken: lease.GetToken()}); err != nil {
		t.Fatalf("complete after restart: %v", err)
	}
}

func TestReflectionServesDocumentedAPI(t *testing.T) {
	files, err := apiFiles()
	if err != nil {
		t.Fatal(err)
	}
	desc, err := files.FindDescriptorByName("factory.v1.QueueService.ClaimTask")
	if err != nil {
		t.Fatal(err)
	}
	loc := desc.ParentFile().SourceLocations().ByDescriptor(desc)
	if !strings.Contains(loc.LeadingComments, "fencing token") {
		t.Fatalf("ClaimTask's doc comment is missing from the served descriptors: %q", loc.LeadingComments)
	}
	// Every service in the compiled-in API is in the documented set: a stale
	// api.binpb would fail here.
	for _, name := range []string{factoryv1.QueueService_ServiceDesc.ServiceName, factoryv1.AccessService_ServiceDesc.ServiceName} {
		if _, err := files.FindDescriptorByName(protoreflect.FullName(name)); err != nil {
			t.Errorf("%s missing from api.binpb: run make generate", name)
		}
	}
}
