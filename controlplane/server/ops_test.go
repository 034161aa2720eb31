package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// exportVia downloads a dump and returns it with the messages it came in.
func exportVia(t *testing.T, conn *grpc.ClientConn) (string, []*factoryv1.ExportStateResponse) {
	t.Helper()
	stream, err := factoryv1.NewOpsServiceClient(conn).ExportState(context.Background(), &factoryv1.ExportStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var (
		dump strings.Builder
		msgs []*factoryv1.ExportStateResponse
	)
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return dump.String(), msgs
		}
		if err != nil {
			t.Fatalf("ExportState: %v", err)
		}
		dump.WriteString(m.GetLines())
		msgs = append(msgs, m)
	}
}

// importVia uploads dump in messages of whole lines, at most chunk bytes
// each (unless a line is longer).
func importVia(conn *grpc.ClientConn, dump string, merge bool, chunk int) (*factoryv1.ImportStateResponse, error) {
	stream, err := factoryv1.NewOpsServiceClient(conn).ImportState(context.Background())
	if err != nil {
		return nil, err
	}
	first := true
	for first || dump != "" {
		n := len(dump)
		if n > chunk {
			n = strings.LastIndexByte(dump[:chunk], '\n') + 1
			if n == 0 {
				n = strings.IndexByte(dump, '\n') + 1
			}
		}
		req := &factoryv1.ImportStateRequest{Lines: dump[:n]}
		if first {
			req.Merge, first = merge, false
		}
		if err := stream.Send(req); err != nil {
			if errors.Is(err, io.EOF) {
				break // the server answered already; CloseAndRecv has it
			}
			return nil, err
		}
		dump = dump[n:]
	}
	return stream.CloseAndRecv()
}

// dropLines removes the lines for which drop is true.
func dropLines(dump string, drop func(line string) bool) string {
	var out []string
	for _, l := range strings.SplitAfter(dump, "\n") {
		if l != "" && !drop(l) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// A dump moves everything between control planes over the API: streamed
// out in whole lines, streamed in, refused when the target is not empty,
// audited, and the moved tokens work on the new control plane.
func TestExportAndImportOverTheAPI(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 123456789, time.UTC)}
	src := setup(t, clock)
	ctx := context.Background()

	// Big payloads, so the dump needs more than one message.
	big := `{"blob":"` + strings.Repeat("x", 700<<10) + `"}`
	for _, id := range []string{"big-1", "big-2", "big-3"} {
		create(t, src, &factoryv1.CreateTaskRequest{TaskId: id, Title: id, PayloadJson: big, Role: "builder"})
	}
	create(t, src, &factoryv1.CreateTaskRequest{TaskId: "after", Title: "after", DependsOn: []string{"big-1"},
		Labels: map[string]string{"proj": "factory"}})
	claimed, err := src.client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge", Roles: []string{"builder"}})
	if err != nil || len(claimed.GetTasks()) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if _, err := src.client.PauseQueue(ctx, &factoryv1.PauseQueueRequest{Reason: "moving to PostgreSQL"}); err != nil {
		t.Fatal(err)
	}
	agentSecret, agentTok := src.mintToken(t, store.RoleAgent, "forge")
	_, gone := src.mintToken(t, store.RoleAgent, "hammer")
	if _, err := src.access.Revoke(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	// Fleet events go along; none lands in the audit log.
	if _, err := src.store.FleetEventsAppend(ctx, &store.FleetEventsAppendParams{Events: []*store.FleetEvent{
		{ID: "ev-2", Host: "gpu-1", Kind: "model_swap", Time: clock.now, Attributes: map[string]string{"to": "m2", "from": "m1"}},
		{ID: "ev-1", Host: "gpu-1", Kind: "log_count", Time: clock.now.Add(-time.Second)},
	}}); err != nil {
		t.Fatal(err)
	}

	dump, msgs := exportVia(t, src.conn)
	if !strings.Contains(dump, `{"kind":"fleet_event","fleet_event":{"id":"ev-2","host":"gpu-1","kind":"model_swap","time":"2031-03-14T09:00:00.123456Z","attributes":{"from":"m1","to":"m2"}}}`+"\n"+
		`{"kind":"fleet_event","fleet_event":{"id":"ev-1","host":"gpu-1","kind":"log_count","time":"2031-03-14T08:59:59.123456Z","attributes":{}}}`) {
		t.Fatalf("the dump's fleet events:\n%s", dropLines(dump, func(l string) bool { return !strings.Contains(l, "fleet_event") }))
	}
	if len(msgs) < 2 {
		t.Fatalf("a %d-byte dump came in %d message(s)", len(dump), len(msgs))
	}
	for i, m := range msgs {
		if !strings.HasSuffix(m.GetLines(), "\n") {
			t.Fatalf("message %d does not end with a whole line", i)
		}
		if (m.GetCounts() != nil) != (i == len(msgs)-1) {
			t.Fatalf("message %d of %d: counts %v; only the last carries them", i, len(msgs), m.GetCounts())
		}
	}
	// Audited: four creates, the claim on forge's behalf and the pause.
	// Rows: the singleton rows every store holds (the emergency stop).
	wantCounts := &factoryv1.DumpCounts{Queue: 1, Tasks: 4, Tokens: 3, AuditEntries: 6, FleetEvents: 2, Rows: int64(strings.Count(dump, `{"kind":"row",`))}
	if got := msgs[len(msgs)-1].GetCounts(); got.String() != wantCounts.String() {
		t.Fatalf("export counts %v, want %v", got, wantCounts)
	}

	// The target is fresh, but for the operator token its first start
	// made, which the import is called with.
	dst := setup(t, clock)
	resp, err := importVia(dst.conn, dump, false, 256<<10)
	if err != nil {
		t.Fatalf("ImportState: %v", err)
	}
	if resp.GetLoaded().String() != wantCounts.String() {
		t.Fatalf("imported %v, want %v", resp.GetLoaded(), wantCounts)
	}
	wantCode(t, func() error { _, err := importVia(dst.conn, dump, false, 1<<20); return err }(), codes.FailedPrecondition)
	st := wantCode(t, func() error { _, err := importVia(dst.conn, dump, true, 1<<20); return err }(), codes.AlreadyExists)
	if !strings.Contains(st.Message(), `"big-1"`) {
		t.Fatalf("the merge refusal does not name the task: %s", st.Message())
	}
	wantCode(t, func() error { _, err := importVia(dst.conn, "", false, 1<<20); return err }(), codes.InvalidArgument)

	// One audit entry for the import, with its counts; none for the
	// refusals.
	audit, err := factoryv1.NewAccessServiceClient(dst.conn).ListAudit(ctx, &factoryv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var imports []*factoryv1.AuditEntry
	for _, e := range audit.GetEntries() {
		if e.GetRpc() == factoryv1.OpsService_ImportState_FullMethodName {
			imports = append(imports, e)
		}
	}
	if len(imports) != 1 {
		t.Fatalf("%d audit entries for ImportState, want 1", len(imports))
	}
	var note map[string]any
	if err := json.Unmarshal([]byte(imports[0].GetAfterJson()), &note); err != nil || note["tasks"] != 4.0 || note["tokens"] != 3.0 ||
		note["fleet_events"] != 2.0 ||
		note["merge"] != false || imports[0].GetTarget() != "state" || imports[0].GetOutcome() != "OK" {
		t.Fatalf("the import's audit entry: %v (after %s)", imports[0], imports[0].GetAfterJson())
	}

	// The new control plane's dump is the old one, plus what the import
	// itself added: the target's own operator token and the import's
	// audit entry (and so its end line).
	moved, _ := exportVia(t, dst.conn)
	dstBoot := dst.operatorTokenID(t)
	strip := func(l string) bool {
		return strings.Contains(l, `"id":"`+dstBoot+`"`) || strings.Contains(l, factoryv1.OpsService_ImportState_FullMethodName) ||
			strings.HasPrefix(l, `{"kind":"end"`)
	}
	if got, want := dropLines(moved, strip), dropLines(dump, strip); got != want {
		t.Fatalf("the moved state differs:\n got  %.2000s\n want %.2000s", got, want)
	}

	// The hashes moved: the old control plane's tokens work here, and the
	// revoked one stays revoked.
	who, err := factoryv1.NewAccessServiceClient(dst.dialAs(t, agentSecret)).WhoAmI(ctx, &factoryv1.WhoAmIRequest{})
	if err != nil || who.GetTokenId() != agentTok.ID || who.GetSubject() != "forge" {
		t.Fatalf("the moved agent token: %v, %v", who, err)
	}
	if _, err := factoryv1.NewAccessServiceClient(dst.dialAs(t, src.operator)).WhoAmI(ctx, &factoryv1.WhoAmIRequest{}); err != nil {
		t.Fatalf("the moved operator token: %v", err)
	}
	// The held lease holds: forge completes under its fencing token.
	held := claimed.GetTasks()[0]
	if _, err := dst.client.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: held.GetId(), Agent: "forge",
		FencingToken: held.GetLease().GetToken()}); err != nil {
		t.Fatalf("completing the moved lease: %v", err)
	}
}

// operatorTokenID is the id of the bundle's operator token.
func (b *testBundle) operatorTokenID(t *testing.T) string {
	t.Helper()
	who, err := factoryv1.NewAccessServiceClient(b.conn).WhoAmI(context.Background(), &factoryv1.WhoAmIRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return who.GetTokenId()
}
