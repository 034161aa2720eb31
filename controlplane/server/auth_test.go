package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// testAccess is the access service a test server runs, with an operator
// token made the way the first start makes it.
func testAccess(t *testing.T, st store.Store, clock access.Clock) (*access.Service, string) {
	t.Helper()
	acc, err := access.New(access.Config{Store: st, Clock: clock, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, _, err := acc.Bootstrap(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	return acc, readSecret(t, dir)
}

func readSecret(t *testing.T, dataDir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, access.OperatorTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// bearer sends secret with every call; the tests' connections are
// in-process or loopback, where plaintext is allowed.
func bearer(secret string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(access.Bearer{Secret: secret, Plaintext: true})
}

// operatorFrom sends the operator token bootstrapped into a data directory.
func operatorFrom(t *testing.T, dataDir string) grpc.DialOption {
	t.Helper()
	return bearer(readSecret(t, dataDir))
}

// operators holds the operator token of each control plane startRun
// serves, by port: tests dial the same server by IP and by name.
var operators sync.Map

func rememberOperator(t *testing.T, addr, dataDir string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	operators.Store(port, readSecret(t, dataDir))
}

// operatorAt sends the operator token of the control plane at addr.
func operatorAt(addr string) grpc.DialOption {
	_, port, _ := net.SplitHostPort(addr)
	secret, _ := operators.Load(port)
	s, _ := secret.(string)
	return bearer(s)
}

// dialAs connects to the bundle's server with secret ("" sends none).
func (b *testBundle) dialAs(t *testing.T, secret string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	all := []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return b.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}
	if secret != "" {
		all = append(all, bearer(secret))
	}
	conn, err := grpc.NewClient("passthrough:///bufnet", append(all, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// mintToken makes a token and returns its secret. An agent token granted
// no roles here gets every role ("*"), as tokens made before grants
// existed have; tests of grants name the roles.
func (b *testBundle) mintToken(t *testing.T, role store.Role, subject string, roles ...string) (string, *store.Token) {
	t.Helper()
	if role == store.RoleAgent && len(roles) == 0 {
		roles = []string{store.AnyRole}
	}
	tok, secret, err := b.access.Create(context.Background(), access.CreateParams{Role: role, Subject: subject, CreatedBy: "test", Roles: roles})
	if err != nil {
		t.Fatal(err)
	}
	return secret, tok
}

// clients are one caller's view of the API.
type clients struct {
	q factoryv1.QueueServiceClient
	a factoryv1.AccessServiceClient
	o factoryv1.OpsServiceClient
	f factoryv1.FleetServiceClient
	b factoryv1.BudgetServiceClient
	// ap is the ApprovalService.
	ap factoryv1.ApprovalServiceClient
}

func (b *testBundle) clientsAs(t *testing.T, secret string) clients {
	conn := b.dialAs(t, secret)
	return clients{q: factoryv1.NewQueueServiceClient(conn), a: factoryv1.NewAccessServiceClient(conn), o: factoryv1.NewOpsServiceClient(conn), f: factoryv1.NewFleetServiceClient(conn), b: factoryv1.NewBudgetServiceClient(conn),
		ap: factoryv1.NewApprovalServiceClient(conn)}
}

// The callers of the access table test, in column order.
const (
	anonymous = iota // no token
	forge            // agent forge, granted role builder: the agent the requests name
	hammer           // agent hammer: another agent
	sidecar          // sidecar on host gpu-1
	operator
	callerCount
)

var callerNames = [callerCount]string{"no token", "agent forge", "agent hammer", "sidecar gpu-1", "operator"}

const (
	ok           = codes.OK
	denied       = codes.PermissionDenied
	unauthorized = codes.Unauthenticated
	notFound     = codes.NotFound
)

// accessRow is one RPC's row: a call, and the code each caller gets. The
// requests name agent forge and tasks or tokens that do not exist, so an
// admitted call reaches the domain (NOT_FOUND, or OK) and the outcome does
// not depend on the order the rows run in.
type accessRow struct {
	call func(ctx context.Context, c clients) error
	want [callerCount]codes.Code
}

const missingTask = "no-such-task"

var accessTable = map[string]accessRow{
	factoryv1.QueueService_CreateTask_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "table test"})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, denied, ok}},
	factoryv1.QueueService_CreateTasks_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: []*factoryv1.CreateTaskRequest{{Title: "table test"}}})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, denied, ok}},
	factoryv1.QueueService_GetTask_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: missingTask})
		return err
	}, [...]codes.Code{unauthorized, notFound, notFound, denied, notFound}},
	factoryv1.QueueService_ListTasks_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.ListTasks(ctx, &factoryv1.ListTasksRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, denied, ok}},
	factoryv1.QueueService_ClaimTask_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge", Roles: []string{"builder"}})
		return err
	}, [...]codes.Code{unauthorized, ok, denied, denied, ok}},
	factoryv1.QueueService_RenewLease_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.RenewLease(ctx, &factoryv1.RenewLeaseRequest{TaskId: missingTask, Agent: "forge", FencingToken: 1})
		return err
	}, [...]codes.Code{unauthorized, notFound, denied, denied, notFound}},
	factoryv1.QueueService_CompleteTask_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: missingTask, Agent: "forge", FencingToken: 1})
		return err
	}, [...]codes.Code{unauthorized, notFound, denied, denied, notFound}},
	factoryv1.QueueService_CompleteTasks_FullMethodName: {func(ctx context.Context, c clients) error {
		// Items fail on their own inside an OK response.
		_, err := c.q.CompleteTasks(ctx, &factoryv1.CompleteTasksRequest{Items: []*factoryv1.CompleteTaskRequest{{TaskId: missingTask, Agent: "forge", FencingToken: 1}}})
		return err
	}, [...]codes.Code{unauthorized, ok, denied, denied, ok}},
	factoryv1.QueueService_FailTask_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.FailTask(ctx, &factoryv1.FailTaskRequest{TaskId: missingTask, Agent: "forge", FencingToken: 1, Error: "broke"})
		return err
	}, [...]codes.Code{unauthorized, notFound, denied, denied, notFound}},
	factoryv1.QueueService_MoveTask_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.MoveTask(ctx, &factoryv1.MoveTaskRequest{TaskId: missingTask, To: factoryv1.TaskState_TASK_STATE_READY, Reason: "table test"})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, notFound}},
	factoryv1.QueueService_SetPriority_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.SetPriority(ctx, &factoryv1.SetPriorityRequest{TaskId: missingTask, Priority: 5})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, notFound}},
	factoryv1.QueueService_PauseQueue_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.PauseQueue(ctx, &factoryv1.PauseQueueRequest{Reason: "table test"})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.QueueService_ResumeQueue_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.ResumeQueue(ctx, &factoryv1.ResumeQueueRequest{})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.QueueService_RequeueStuck_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.RequeueStuck(ctx, &factoryv1.RequeueStuckRequest{OlderThan: durationpb.New(time.Hour), DryRun: true})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.QueueService_BulkUpdateTasks_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.BulkUpdateTasks(ctx, &factoryv1.BulkUpdateTasksRequest{Filter: &factoryv1.TaskFilter{Role: "nobody-has-it"},
			Change: &factoryv1.BulkUpdateTasksRequest_To{To: factoryv1.TaskState_TASK_STATE_FAILED}, DryRun: true})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.QueueService_GetQueueStats_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.q.GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, ok, ok}},
	factoryv1.QueueService_Work_FullMethodName: {func(ctx context.Context, c clients) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.q.Work(ctx)
		if err != nil {
			return err
		}
		// A stream the server has already refused fails Send with io.EOF;
		// its status comes from Recv.
		if err := stream.Send(&factoryv1.WorkRequest{Ref: 1, Call: &factoryv1.WorkRequest_Claim{Claim: &factoryv1.ClaimTaskRequest{Agent: "forge", Roles: []string{"builder"}}}}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		resp, err := stream.Recv() // the claim's answer, or the refusal
		if e := resp.GetError(); e != nil {
			return status.Error(codes.Code(e.GetCode()), e.GetMessage())
		}
		return err
	}, [...]codes.Code{unauthorized, ok, denied, denied, ok}},
	factoryv1.QueueService_WatchTasks_FullMethodName: {func(ctx context.Context, c clients) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.q.WatchTasks(ctx, &factoryv1.WatchTasksRequest{TaskIds: []string{missingTask}})
		if err != nil {
			return err
		}
		_, err = stream.Recv() // SYNCED, or the refusal
		return err
	}, [...]codes.Code{unauthorized, ok, ok, denied, ok}},

	factoryv1.AccessService_CreateToken_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.a.CreateToken(ctx, &factoryv1.CreateTokenRequest{Role: factoryv1.Role_ROLE_AGENT, Subject: "anvil"})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.AccessService_ListTokens_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.a.ListTokens(ctx, &factoryv1.ListTokensRequest{})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.AccessService_RevokeToken_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.a.RevokeToken(ctx, &factoryv1.RevokeTokenRequest{TokenId: "no-such-token"})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, notFound}},
	factoryv1.AccessService_ListAudit_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.a.ListAudit(ctx, &factoryv1.ListAuditRequest{})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.AccessService_WhoAmI_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.a.WhoAmI(ctx, &factoryv1.WhoAmIRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, ok, ok}},
	factoryv1.AccessService_SetTokenRoles_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.a.SetTokenRoles(ctx, &factoryv1.SetTokenRolesRequest{TokenId: "no-such-token", Roles: []string{"deployer"}})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, notFound}},
	// A host no token names: an admitted rotation replaces nothing, so
	// the other rows' tokens keep working.
	factoryv1.AccessService_RotateTokens_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.a.RotateTokens(ctx, &factoryv1.RotateTokensRequest{Role: factoryv1.Role_ROLE_SIDECAR, Subjects: []string{"no-such-host"}})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},

	factoryv1.OpsService_ExportState_FullMethodName: {func(ctx context.Context, c clients) error {
		stream, err := c.o.ExportState(ctx, &factoryv1.ExportStateRequest{})
		if err != nil {
			return err
		}
		for {
			if _, err := stream.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	// Not a dump: an admitted import is refused before it touches the
	// store, whatever the other rows left in it.
	factoryv1.OpsService_ImportState_FullMethodName: {func(ctx context.Context, c clients) error {
		stream, err := c.o.ImportState(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&factoryv1.ImportStateRequest{Lines: "not a dump\n"}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		_, err = stream.CloseAndRecv()
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, codes.InvalidArgument}},
	// A start without a reason: refused before maintenance could hold
	// the other rows' claims.
	factoryv1.OpsService_StartMaintenance_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.o.StartMaintenance(ctx, &factoryv1.StartMaintenanceRequest{})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, codes.InvalidArgument}},
	// Ending when not in maintenance changes nothing.
	factoryv1.OpsService_EndMaintenance_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.o.EndMaintenance(ctx, &factoryv1.EndMaintenanceRequest{})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.OpsService_GetMaintenance_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.o.GetMaintenance(ctx, &factoryv1.GetMaintenanceRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, denied, ok}},
	factoryv1.OpsService_Backup_FullMethodName: {func(ctx context.Context, c clients) error {
		stream, err := c.o.Backup(ctx, &factoryv1.BackupRequest{})
		if err != nil {
			return err
		}
		for {
			if _, err := stream.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.OpsService_Doctor_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.o.Doctor(ctx, &factoryv1.DoctorRequest{})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.OpsService_GetBackupStatus_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.o.GetBackupStatus(ctx, &factoryv1.GetBackupStatusRequest{})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.OpsService_GetDigest_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.o.GetDigest(ctx, &factoryv1.GetDigestRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, denied, ok}},
	factoryv1.OpsService_ListAlerts_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.o.ListAlerts(ctx, &factoryv1.ListAlertsRequest{IncludeResolved: true})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, denied, ok}},
	factoryv1.OpsService_ListSilences_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.o.ListSilences(ctx, &factoryv1.ListSilencesRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, denied, ok}},
	factoryv1.OpsService_WatchEvents_FullMethodName: {func(ctx context.Context, c clients) error {
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		stream, err := c.o.WatchEvents(ctx, &factoryv1.WatchEventsRequest{})
		if err != nil {
			return err
		}
		// No alert fires here: an admitted watch waits for events until
		// the deadline, a refused one ends at once.
		if _, err := stream.Recv(); status.Code(err) != codes.DeadlineExceeded {
			return err
		}
		return nil
	}, [...]codes.Code{unauthorized, ok, ok, denied, ok}},
	factoryv1.OpsService_AckAlert_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.o.AckAlert(ctx, &factoryv1.AckAlertRequest{AlertId: "no-such-alert"})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, notFound}},
	factoryv1.OpsService_SilenceAlert_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.o.SilenceAlert(ctx, &factoryv1.SilenceAlertRequest{Rule: "no_such_rule", Duration: durationpb.New(time.Hour)})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, codes.InvalidArgument}},
	factoryv1.OpsService_ExpireSilence_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.o.ExpireSilence(ctx, &factoryv1.ExpireSilenceRequest{SilenceId: "no-such-silence"})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, notFound}},

	// Connect as host gpu-1, the sidecar's own host: its config reply is
	// the admitted outcome.
	factoryv1.FleetService_Connect_FullMethodName: {func(ctx context.Context, c clients) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.f.Connect(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: &factoryv1.Hello{Host: "gpu-1"}}}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		_, err = stream.Recv()
		return err
	}, [...]codes.Code{unauthorized, denied, denied, ok, ok}},
	factoryv1.FleetService_ListNodes_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.f.ListNodes(ctx, &factoryv1.ListNodesRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, ok, ok}},
	factoryv1.FleetService_GetNodeHistory_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.f.GetNodeHistory(ctx, &factoryv1.GetNodeHistoryRequest{Host: "gpu-1"})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, ok, ok}},
	factoryv1.FleetService_ListAgents_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.f.ListAgents(ctx, &factoryv1.ListAgentsRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, ok, ok}},
	factoryv1.FleetService_GetHealth_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.f.GetHealth(ctx, &factoryv1.GetHealthRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, ok, ok}},
	factoryv1.FleetService_WatchFleet_FullMethodName: {func(ctx context.Context, c clients) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := c.f.WatchFleet(ctx, &factoryv1.WatchFleetRequest{})
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}, [...]codes.Code{unauthorized, ok, ok, ok, ok}},
	// A command for a host with no stream here: admitted, then refused by
	// the fleet, which is the operator's outcome.
	factoryv1.FleetService_SendCommand_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.f.SendCommand(ctx, &factoryv1.SendCommandRequest{Host: "gpu-1",
			Command: &factoryv1.SendCommandRequest_Drain{Drain: &factoryv1.DrainHost{}}})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, codes.FailedPrecondition}},
	// Placing an agent no other row names, on a host no other row uses.
	factoryv1.FleetService_PlaceAgent_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.f.PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: "table-test-agent", Host: "table-test-host"})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.FleetService_UnplaceAgent_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.f.UnplaceAgent(ctx, &factoryv1.UnplaceAgentRequest{Agent: "no-such-agent"})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, notFound}},
	// Forgetting a host nothing names: admitted for operators only, then
	// NOT_FOUND.
	factoryv1.FleetService_ForgetNode_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.f.ForgetNode(ctx, &factoryv1.ForgetNodeRequest{Host: "no-such-host"})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, notFound}},
	factoryv1.FleetService_ListPlacements_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.f.ListPlacements(ctx, &factoryv1.ListPlacementsRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, ok, ok}},

	// Spend: forge's own events; forge is placed on no host, so the
	// sidecar may not report for it (TestGrantsDecideClaimsAndSpend
	// places it).
	factoryv1.BudgetService_ReportSpend_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.b.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: tableSpendEvent()})
		return err
	}, [...]codes.Code{unauthorized, ok, denied, denied, ok}},
	factoryv1.BudgetService_ReportSpendBatch_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.b.ReportSpendBatch(ctx, &factoryv1.ReportSpendBatchRequest{Events: []*factoryv1.SpendEvent{tableSpendEvent()}})
		return err
	}, [...]codes.Code{unauthorized, ok, denied, denied, ok}},
	factoryv1.BudgetService_GetSpend_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.b.GetSpend(ctx, &factoryv1.GetSpendRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, denied, ok}},
	factoryv1.BudgetService_SetBudget_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.b.SetBudget(ctx, &factoryv1.SetBudgetRequest{Budget: &factoryv1.Budget{
			Scope: factoryv1.BudgetScope_BUDGET_SCOPE_AGENT, Key: "table-test", AlertMicros: 1}})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.BudgetService_GetBudget_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.b.GetBudget(ctx, &factoryv1.GetBudgetRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, denied, ok}},
	factoryv1.BudgetService_ReserveSpend_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.b.ReserveSpend(ctx, &factoryv1.ReserveSpendRequest{Agent: "forge", Tier: factoryv1.SpendTier_SPEND_TIER_MID, EstimateMicros: 1})
		return err
	}, [...]codes.Code{unauthorized, ok, denied, denied, ok}},
	factoryv1.BudgetService_SettleSpend_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.b.SettleSpend(ctx, &factoryv1.SettleSpendRequest{ReservationId: "no-such-reservation"})
		return err
	}, [...]codes.Code{unauthorized, notFound, notFound, notFound, notFound}},
	// No reason: an admitted caller is refused by validation, so the
	// fleet is never stopped under the other rows.
	factoryv1.BudgetService_EmergencyStop_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.b.EmergencyStop(ctx, &factoryv1.EmergencyStopRequest{})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, codes.InvalidArgument}},
	factoryv1.BudgetService_RearmEmergencyStop_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.b.RearmEmergencyStop(ctx, &factoryv1.RearmEmergencyStopRequest{})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, ok}},
	factoryv1.BudgetService_GetEmergencyStop_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.b.GetEmergencyStop(ctx, &factoryv1.GetEmergencyStopRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, ok, ok}},
	// An unknown event: only an operator gets as far as the ledger.
	factoryv1.BudgetService_VoidSpend_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.b.VoidSpend(ctx, &factoryv1.VoidSpendRequest{Agent: "forge", Id: "no-such-event", Reason: "table test"})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, notFound}},

	// Approvals: forge requests as itself (Tier 0: approved by policy);
	// only an operator decides.
	factoryv1.ApprovalService_RequestApproval_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.ap.RequestApproval(ctx, &factoryv1.RequestApprovalRequest{What: "table test", Agent: "forge",
			Risk: factoryv1.ApprovalRisk_APPROVAL_RISK_LOW})
		return err
	}, [...]codes.Code{unauthorized, ok, denied, denied, ok}},
	factoryv1.ApprovalService_GetApproval_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.ap.GetApproval(ctx, &factoryv1.GetApprovalRequest{ApprovalId: "no-such-approval"})
		return err
	}, [...]codes.Code{unauthorized, notFound, notFound, denied, notFound}},
	factoryv1.ApprovalService_ListApprovals_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.ap.ListApprovals(ctx, &factoryv1.ListApprovalsRequest{})
		return err
	}, [...]codes.Code{unauthorized, ok, ok, denied, ok}},
	factoryv1.ApprovalService_WaitApproval_FullMethodName: {func(ctx context.Context, c clients) error {
		stream, err := c.ap.WaitApproval(ctx, &factoryv1.WaitApprovalRequest{ApprovalId: "no-such-approval"})
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}, [...]codes.Code{unauthorized, notFound, notFound, denied, notFound}},
	factoryv1.ApprovalService_Decide_FullMethodName: {func(ctx context.Context, c clients) error {
		_, err := c.ap.Decide(ctx, &factoryv1.DecideRequest{ApprovalId: "no-such-approval", Decision: factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE})
		return err
	}, [...]codes.Code{unauthorized, denied, denied, denied, notFound}},
}

// tableSpendEvent is a spend event of agent forge, the same for every
// caller: the ones admitted record it once.
func tableSpendEvent() *factoryv1.SpendEvent {
	cost := int64(1)
	return &factoryv1.SpendEvent{Id: "table-test-event", Agent: "forge", Model: "m", Tier: factoryv1.SpendTier_SPEND_TIER_MID,
		CostMicros: &cost, OccurredAt: timestamppb.Now()}
}

// registeredMethods is every method the server serves that needs a
// caller: all but health and reflection.
func registeredMethods(srv *grpc.Server) []string {
	var out []string
	for service, info := range srv.GetServiceInfo() {
		if openServices[service] {
			continue
		}
		for _, m := range info.Methods {
			out = append(out, "/"+service+"/"+m.Name)
		}
	}
	slices.Sort(out)
	return out
}

// diffKeys returns the methods without a key in m, and m's keys that are
// no method.
func diffKeys[V any](methods []string, m map[string]V) (missing, extra []string) {
	for _, name := range methods {
		if _, ok := m[name]; !ok {
			missing = append(missing, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(methods, name) {
			extra = append(extra, name)
		}
	}
	return missing, extra
}

// Every RPC, called by every kind of caller. A new RPC fails this test
// until it has a row here and in the policy.
func TestEveryRPCByEveryCaller(t *testing.T) {
	b := setup(t, nil)
	registered := registeredMethods(b.srv)
	if len(registered) < 20 {
		t.Fatalf("only %d methods registered: %v", len(registered), registered)
	}
	if missing, extra := diffKeys(registered, accessTable); len(missing)+len(extra) > 0 {
		t.Errorf("this test's table must have one row per registered RPC: no row for %v; rows for unknown RPCs %v", missing, extra)
	}
	if missing, extra := diffKeys(registered, rules); len(missing)+len(extra) > 0 {
		t.Errorf("the policy (policy.go) must have one row per registered RPC, or the RPC is refused to everyone: no row for %v; rows for unknown RPCs %v", missing, extra)
	}

	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge", "builder")
	hammerSecret, _ := b.mintToken(t, store.RoleAgent, "hammer")
	sidecarSecret, _ := b.mintToken(t, store.RoleSidecar, "gpu-1")
	var as [callerCount]clients
	for i, secret := range [callerCount]string{"", forgeSecret, hammerSecret, sidecarSecret, b.operator} {
		as[i] = b.clientsAs(t, secret)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, method := range slices.Sorted(maps.Keys(accessTable)) {
		row := accessTable[method]
		for who := range callerCount {
			err := row.call(ctx, as[who])
			if got := status.Code(err); got != row.want[who] {
				t.Errorf("%s by %s: got %v (%v), want %v", method, callerNames[who], got, err, row.want[who])
			}
		}
	}
}

func TestAnRPCWithoutAPolicyRowIsRefusedToEveryone(t *testing.T) {
	p := newPolicy(nil)
	for _, role := range []store.Role{store.RoleOperator, store.RoleAgent, store.RoleSidecar} {
		_, err := p.admit(access.Caller{Role: role, Subject: "x"}, "/factory.v1.FutureService/DoThings")
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "no row in the access policy") {
			t.Errorf("%s calling an RPC with no row: %v", role, err)
		}
	}
}

func TestRefusalsSayWhatAndWhy(t *testing.T) {
	b := setup(t, nil)
	forgeSecret, _ := b.mintToken(t, store.RoleAgent, "forge")
	sidecarSecret, _ := b.mintToken(t, store.RoleSidecar, "gpu-1")
	forge, side := b.clientsAs(t, forgeSecret), b.clientsAs(t, sidecarSecret)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"claim as another agent", func() error {
			_, err := forge.q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "hammer"})
			return err
		}, "agent forge may not claim as agent hammer"},
		{"complete as another agent", func() error {
			_, err := forge.q.CompleteTasks(ctx, &factoryv1.CompleteTasksRequest{Items: []*factoryv1.CompleteTaskRequest{
				{TaskId: "a", Agent: "forge", FencingToken: 1}, {TaskId: "b", Agent: "hammer", FencingToken: 1}}})
			return err
		}, "agent forge may not complete tasks as agent hammer"},
		{"operator RPC", func() error {
			_, err := forge.q.PauseQueue(ctx, &factoryv1.PauseQueueRequest{})
			return err
		}, "agent forge may not call PauseQueue: it is for operator only"},
		{"sidecar outside its grant", func() error {
			_, err := side.q.ListTasks(ctx, &factoryv1.ListTasksRequest{})
			return err
		}, "sidecar gpu-1 may not call ListTasks: it is for operator, agent only"},
	} {
		err := tc.call()
		if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != tc.want {
			t.Errorf("%s: got %v, want PERMISSION_DENIED %q", tc.name, err, tc.want)
		}
	}
}

// An agent claims only the roles its token grants, and a sidecar reports
// only for the agents an operator placed on its host; both grants take
// effect on the next call, and operators are unaffected.
func TestGrantsDecideClaimsAndSpend(t *testing.T) {
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	scoutSecret, scoutTok := b.mintToken(t, store.RoleAgent, "scout", "researcher")
	scout := b.clientsAs(t, scoutSecret)
	op := b.clientsAs(t, b.operator)
	deploy, err := op.q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "deploy", Role: "deployer"})
	if err != nil {
		t.Fatal(err)
	}

	_, err = scout.q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "scout", Roles: []string{"researcher", "deployer"}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "may not claim role deployer") {
		t.Fatalf("scout claiming deployer: %v, want PERMISSION_DENIED naming the role", err)
	}
	if got, _ := op.q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: deploy.GetTask().GetId()}); got.GetTask().GetState() != factoryv1.TaskState_TASK_STATE_READY {
		t.Fatalf("the deploy task after the refused claim: %v", got.GetTask().GetState())
	}
	if _, err := scout.q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "scout", Roles: []string{"researcher"}}); err != nil {
		t.Fatalf("scout claiming its own role: %v", err)
	}
	// The grant widens on the next call (the cached token was dropped).
	if _, err := op.a.SetTokenRoles(ctx, &factoryv1.SetTokenRolesRequest{TokenId: scoutTok.ID, Roles: []string{"deployer", "researcher"}}); err != nil {
		t.Fatal(err)
	}
	who, err := scout.a.WhoAmI(ctx, &factoryv1.WhoAmIRequest{})
	if err != nil || !slices.Equal(who.GetRoles(), []string{"deployer", "researcher"}) {
		t.Fatalf("WhoAmI after the grant: %v, %v", who.GetRoles(), err)
	}
	got, err := scout.q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "scout", Roles: []string{"deployer"}})
	if err != nil || len(got.GetTasks()) != 1 {
		t.Fatalf("scout claiming deployer once granted: %v, %v", got, err)
	}
	// An operator claims any role, whatever grants say.
	if _, err := op.q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "ship", Role: "shipper"}); err != nil {
		t.Fatal(err)
	}
	if got, err := op.q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "anyone", Roles: []string{"shipper"}}); err != nil || len(got.GetTasks()) != 1 {
		t.Fatalf("operator claiming: %v, %v", got, err)
	}
	entries := auditOf(t, b, &factoryv1.ListAuditRequest{Who: "operator"})
	if !slices.ContainsFunc(entries, func(e *factoryv1.AuditEntry) bool {
		return strings.HasSuffix(e.GetRpc(), "/SetTokenRoles") && strings.Contains(e.GetBeforeJson(), "researcher") && strings.Contains(e.GetAfterJson(), "deployer")
	}) {
		t.Errorf("the grant is not audited with its before and after: %v", entries)
	}

	// Placement: the sidecar reports for forge only while forge is placed
	// on its host.
	sideSecret, _ := b.mintToken(t, store.RoleSidecar, "gpu-1")
	side := b.clientsAs(t, sideSecret)
	report := func(id string) error {
		_, err := side.b.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: spendEventPB(id, "forge", 5)})
		return err
	}
	if err := report("p1"); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not placed on host gpu-1") {
		t.Fatalf("spend for an unplaced agent: %v", err)
	}
	if _, err := op.f.PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: "forge", Host: "gpu-1"}); err != nil {
		t.Fatal(err)
	}
	if err := report("p2"); err != nil {
		t.Fatalf("spend once forge is placed on gpu-1: %v", err)
	}
	moved, err := op.f.PlaceAgent(ctx, &factoryv1.PlaceAgentRequest{Agent: "forge", Host: "gpu-2"})
	if err != nil || moved.GetPreviousHost() != "gpu-1" {
		t.Fatalf("moving forge: %v, %v", moved, err)
	}
	if err := report("p3"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("spend right after forge moved away: %v", err)
	}
	list, err := side.f.ListPlacements(ctx, &factoryv1.ListPlacementsRequest{})
	if err != nil || len(list.GetPlacements()) != 1 || list.GetPlacements()[0].GetHost() != "gpu-2" {
		t.Fatalf("placements: %v, %v", list, err)
	}
}

// The hook the fleet service will fill: a sidecar may then act for the
// agents on its host and no others. Nothing grants sidecars a lease RPC
// yet, so the test grants one to itself.
func TestSidecarActsOnlyForAgentsOnItsHost(t *testing.T) {
	p := &Policy{rules: map[string]rule{"/x/Claim": {roles: everyone, verb: "claim", mutates: true, actsAs: agentField[*factoryv1.ClaimTaskRequest]}},
		hostsAgent: func(_ context.Context, host, agent string) (bool, error) {
			return host == "gpu-1" && agent == "forge", nil
		}}
	c := access.Caller{Role: store.RoleSidecar, Subject: "gpu-1", TokenID: "t"}
	r, err := p.admit(c, "/x/Claim")
	if err != nil {
		t.Fatal(err)
	}
	onBehalf, err := p.check(context.Background(), c, r, &factoryv1.ClaimTaskRequest{Agent: "forge"})
	if err != nil || !onBehalf || !audited(c, r, onBehalf) {
		t.Fatalf("sidecar for an agent on its host: on behalf %v, err %v", onBehalf, err)
	}
	_, err = p.check(context.Background(), c, r, &factoryv1.ClaimTaskRequest{Agent: "hammer"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not placed on host gpu-1") {
		t.Fatalf("sidecar for an agent elsewhere: %v", err)
	}
	// Without the hook, nothing.
	p.hostsAgent = nil
	if _, err := p.check(context.Background(), c, r, &factoryv1.ClaimTaskRequest{Agent: "forge"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("sidecar without the fleet's hook: %v", err)
	}
}

func TestUnauthenticatedSaysWhy(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	ctx := context.Background()
	revokedSecret, revoked := b.mintToken(t, store.RoleAgent, "revoked")
	if _, err := b.access.Revoke(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	tok, expiringSecret, err := b.access.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "brief", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)

	for _, tc := range []struct {
		name string
		conn *grpc.ClientConn
		want string
	}{
		{"no token", b.dialAs(t, ""), "missing token"},
		{"unknown token", b.dialAs(t, "fct_not-a-real-token"), "unknown token"},
		{"revoked", b.dialAs(t, revokedSecret), "token " + revoked.ID + " (agent revoked) was revoked at"},
		{"expired", b.dialAs(t, expiringSecret), "token " + tok.ID + " (agent brief) expired at 2031-03-14T10:00:00Z"},
		{"not a bearer token", b.dialAs(t, "", grpc.WithPerRPCCredentials(rawAuth("Basic dXNlcjpwYXNz"))), "want 'Bearer <token>'"},
	} {
		_, err := factoryv1.NewQueueServiceClient(tc.conn).GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{})
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), tc.want) {
			t.Errorf("%s: got %v, want UNAUTHENTICATED saying %q", tc.name, err, tc.want)
		}
	}
}

type rawAuth string

func (r rawAuth) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": string(r)}, nil
}
func (rawAuth) RequireTransportSecurity() bool { return false }

func TestHealthAndReflectionNeedNoToken(t *testing.T) {
	b := setup(t, nil)
	anon := b.dialAs(t, "")
	ctx := context.Background()
	res, err := healthpb.NewHealthClient(anon).Check(ctx, &healthpb.HealthCheckRequest{Service: factoryv1.AccessService_ServiceDesc.ServiceName})
	if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without a token: %v %v", res, err)
	}
	stream, err := reflectionpb.NewServerReflectionClient(anon).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	got, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection without a token: %v", err)
	}
	var names []string
	for _, s := range got.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !slices.Contains(names, factoryv1.AccessService_ServiceDesc.ServiceName) {
		t.Fatalf("reflection lists %v", names)
	}
}

func TestRevokedTokenFailsOnTheNextCall(t *testing.T) {
	b := setup(t, nil)
	secret, tok := b.mintToken(t, store.RoleAgent, "forge")
	agent := b.clientsAs(t, secret)
	ctx := context.Background()
	// Warm the cache: the token is now trusted for a while.
	for range 3 {
		if _, err := agent.a.WhoAmI(ctx, &factoryv1.WhoAmIRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	ops := factoryv1.NewAccessServiceClient(b.conn)
	if _, err := ops.RevokeToken(ctx, &factoryv1.RevokeTokenRequest{TokenId: tok.ID}); err != nil {
		t.Fatal(err)
	}
	_, err := agent.q.GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("the call after the revoke: got %v, want UNAUTHENTICATED (revoked)", err)
	}
}

// Another replica learns of a revoke when its cached lookup expires: the
// documented bound is access.DefaultCacheTTL.
func TestRevokeReachesOtherReplicasWithinTheCacheTTL(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	ctx := context.Background()
	other, err := access.New(access.Config{Store: b.store, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	tok, secret, err := b.access.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "forge"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if _, err := b.access.Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.access.Authenticate(ctx, secret); err == nil {
		t.Fatal("the revoking replica still accepts the token")
	}
	clock.Advance(access.DefaultCacheTTL)
	var ae *access.AuthError
	if _, err := other.Authenticate(ctx, secret); !errors.As(err, &ae) {
		t.Fatalf("another replica a cache TTL after the revoke: %v", err)
	}
}

func TestSecretsAreNeverStoredOrListed(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	ops := factoryv1.NewAccessServiceClient(b.conn)
	created, err := ops.CreateToken(ctx, &factoryv1.CreateTokenRequest{Role: factoryv1.Role_ROLE_AGENT, Subject: "forge", Description: "builder"})
	if err != nil {
		t.Fatal(err)
	}
	secret := created.GetSecret()
	if !strings.HasPrefix(secret, access.SecretPrefix) || len(secret) < 40 {
		t.Fatalf("secret %q", secret)
	}
	secrets := []string{secret, b.operator}

	// What the store holds: hashes only.
	res, err := b.store.TokenList(ctx, &store.TokenListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tokens) != 2 {
		t.Fatalf("store holds %d tokens", len(res.Tokens))
	}
	for _, tok := range res.Tokens {
		fields, _ := json.Marshal(tok)
		for _, s := range secrets {
			if strings.Contains(string(fields), s) {
				t.Fatalf("the store's record %s holds a secret", fields)
			}
		}
		if tok.Hash != access.HashSecret(secret) && tok.Hash != access.HashSecret(b.operator) {
			t.Fatalf("token %s's hash matches neither secret", tok.ID)
		}
	}
	// And nowhere in the database's files (the WAL included).
	files, _ := filepath.Glob(b.dbPath + "*")
	if len(files) == 0 {
		t.Fatal("no database files found")
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if bytes.Contains(raw, []byte(s)) {
				t.Fatalf("%s contains a secret in clear", f)
			}
		}
	}

	// What the API lists: no secret, no hash.
	list, err := ops.ListTokens(ctx, &factoryv1.ListTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(list)
	for _, s := range append(secrets, access.HashSecret(secret)) {
		if strings.Contains(string(out), s) {
			t.Fatalf("ListTokens shows a secret or hash: %s", out)
		}
	}
	// The audit entry for the creation holds neither.
	audit, err := ops.ListAudit(ctx, &factoryv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := json.Marshal(audit); strings.Contains(string(out), secret) || strings.Contains(string(out), access.HashSecret(secret)) {
		t.Fatalf("the audit log holds a secret or hash: %s", out)
	}
}

func TestWhoAmI(t *testing.T) {
	b := setup(t, nil)
	secret, tok := b.mintToken(t, store.RoleSidecar, "gpu-1")
	res, err := b.clientsAs(t, secret).a.WhoAmI(context.Background(), &factoryv1.WhoAmIRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetRole() != factoryv1.Role_ROLE_SIDECAR || res.GetSubject() != "gpu-1" || res.GetTokenId() != tok.ID || res.GetExpiresAt() != nil {
		t.Fatalf("whoami: %v", res)
	}
}

func TestTokenLifecycleOverGRPC(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	ops := factoryv1.NewAccessServiceClient(b.conn)
	created, err := ops.CreateToken(ctx, &factoryv1.CreateTokenRequest{
		Role: factoryv1.Role_ROLE_AGENT, Subject: "forge", Description: "builder", ExpiresIn: durationpb.New(720 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	tok := created.GetToken()
	if tok.GetRole() != factoryv1.Role_ROLE_AGENT || tok.GetSubject() != "forge" || tok.GetExpiresAt() == nil ||
		!strings.HasPrefix(tok.GetCreatedBy(), "operator operator (") {
		t.Fatalf("created %v", tok)
	}
	if _, err := factoryv1.NewAccessServiceClient(b.dialAs(t, created.GetSecret())).WhoAmI(ctx, &factoryv1.WhoAmIRequest{}); err != nil {
		t.Fatalf("the new token: %v", err)
	}
	for _, bad := range []*factoryv1.CreateTokenRequest{
		{Role: factoryv1.Role_ROLE_UNSPECIFIED, Subject: "x"},
		{Role: factoryv1.Role_ROLE_AGENT, Subject: "has space"},
		{Role: factoryv1.Role_ROLE_AGENT},
		{Role: factoryv1.Role_ROLE_AGENT, Subject: "x", ExpiresIn: durationpb.New(time.Second)},
	} {
		if _, err := ops.CreateToken(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("CreateToken(%v): %v, want INVALID_ARGUMENT", bad, err)
		}
	}

	if _, err := ops.RevokeToken(ctx, &factoryv1.RevokeTokenRequest{TokenId: tok.GetId()}); err != nil {
		t.Fatal(err)
	}
	active, err := ops.ListTokens(ctx, &factoryv1.ListTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	all, err := ops.ListTokens(ctx, &factoryv1.ListTokensRequest{IncludeInactive: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(active.GetTokens()) != 1 || len(all.GetTokens()) != 2 || all.GetTokens()[1].GetRevokedAt() == nil {
		t.Fatalf("after revoke: active %v, all %v", active.GetTokens(), all.GetTokens())
	}
}

// auditOf lists the audit log as the operator.
func auditOf(t *testing.T, b *testBundle, req *factoryv1.ListAuditRequest) []*factoryv1.AuditEntry {
	t.Helper()
	res, err := factoryv1.NewAccessServiceClient(b.conn).ListAudit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return res.GetEntries()
}

func TestOperatorMoveIsAuditedWithBeforeAfterAndTrace(t *testing.T) {
	b := setup(t, nil)
	task := create(t, b, &factoryv1.CreateTaskRequest{Title: "to kill", Priority: 3})

	// The caller's trace reaches the audit entry through the W3C header
	// the CLI's instrumented client sends.
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if _, err := b.client.MoveTask(ctx, &factoryv1.MoveTaskRequest{TaskId: task.GetId(), To: factoryv1.TaskState_TASK_STATE_FAILED, Reason: "wrong approach"}); err != nil {
		t.Fatal(err)
	}
	entries := auditOf(t, b, &factoryv1.ListAuditRequest{})
	if len(entries) != 2 {
		t.Fatalf("audit entries: %v", entries)
	}
	e := entries[0] // newest first: the move, then the creation
	if e.GetRpc() != factoryv1.QueueService_MoveTask_FullMethodName || e.GetTarget() != task.GetId() || e.GetWho() != access.BootstrapSubject ||
		e.GetRole() != factoryv1.Role_ROLE_OPERATOR || e.GetOutcome() != "OK" || e.GetTokenId() == "" || e.GetTime() == nil {
		t.Fatalf("move entry: %v", e)
	}
	if e.GetTraceId() != traceID {
		t.Fatalf("move entry trace id %q, want %q", e.GetTraceId(), traceID)
	}
	var before, after map[string]any
	if err := json.Unmarshal([]byte(e.GetBeforeJson()), &before); err != nil {
		t.Fatalf("before %q: %v", e.GetBeforeJson(), err)
	}
	if err := json.Unmarshal([]byte(e.GetAfterJson()), &after); err != nil {
		t.Fatalf("after %q: %v", e.GetAfterJson(), err)
	}
	if before["state"] != "READY" || before["priority"] != float64(3) || after["state"] != "FAILED" || after["reason"] != "wrong approach" {
		t.Fatalf("before %v, after %v", before, after)
	}
	if c := entries[1]; c.GetRpc() != factoryv1.QueueService_CreateTask_FullMethodName || c.GetTarget() != task.GetId() || c.GetBeforeJson() != "" {
		t.Fatalf("create entry: %v", c)
	}
}

func TestAgentsOwnWorkIsNotAuditedButRefusalsAre(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	task := create(t, b, &factoryv1.CreateTaskRequest{Title: "work", Role: "builder"})
	secret, tok := b.mintToken(t, store.RoleAgent, "forge")
	forge := b.clientsAs(t, secret)
	baseline := len(auditOf(t, b, &factoryv1.ListAuditRequest{}))

	claimed, err := forge.q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge", Roles: []string{"builder"}})
	if err != nil || len(claimed.GetTasks()) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	lease := claimed.GetTasks()[0].GetLease()
	if _, err := forge.q.RenewLease(ctx, &factoryv1.RenewLeaseRequest{TaskId: task.GetId(), Agent: "forge", FencingToken: lease.GetToken()}); err != nil {
		t.Fatal(err)
	}
	if _, err := forge.q.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: task.GetId(), Agent: "forge", FencingToken: lease.GetToken()}); err != nil {
		t.Fatal(err)
	}
	if _, err := forge.q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: "sub-task"}); err != nil {
		t.Fatal(err)
	}
	if got := auditOf(t, b, &factoryv1.ListAuditRequest{}); len(got) != baseline {
		t.Fatalf("an agent's own work was audited: %v", got[:len(got)-baseline])
	}

	// A refused attempt is recorded, with what it aimed at and why.
	_, err = forge.q.MoveTask(ctx, &factoryv1.MoveTaskRequest{TaskId: task.GetId(), To: factoryv1.TaskState_TASK_STATE_READY, Reason: "again"})
	wantCode(t, err, codes.PermissionDenied)
	got := auditOf(t, b, &factoryv1.ListAuditRequest{Who: "forge"})
	if len(got) != 1 {
		t.Fatalf("entries by forge: %v", got)
	}
	if e := got[0]; e.GetOutcome() != "PERMISSION_DENIED" || e.GetTarget() != task.GetId() || e.GetTokenId() != tok.ID ||
		!strings.Contains(e.GetDetail(), "may not call MoveTask") || e.GetRole() != factoryv1.Role_ROLE_AGENT {
		t.Fatalf("refusal entry: %v", e)
	}
	// --who takes a token id too, and since filters by time.
	if got := auditOf(t, b, &factoryv1.ListAuditRequest{Who: tok.ID}); len(got) != 1 {
		t.Fatalf("entries by token id: %v", got)
	}
	if got := auditOf(t, b, &factoryv1.ListAuditRequest{Since: ts(time.Now().Add(time.Hour))}); len(got) != 0 {
		t.Fatalf("entries from the future: %v", got)
	}
}

// An operator working an agent's lease acts for another party: audited.
func TestOperatorActingForAnAgentIsAudited(t *testing.T) {
	b := setup(t, nil)
	ctx := context.Background()
	task := create(t, b, &factoryv1.CreateTaskRequest{Title: "work"})
	if _, err := b.client.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "forge"}); err != nil {
		t.Fatal(err)
	}
	got := auditOf(t, b, &factoryv1.ListAuditRequest{})
	if len(got) != 2 || got[0].GetRpc() != factoryv1.QueueService_ClaimTask_FullMethodName || got[0].GetTarget() != task.GetId() ||
		!strings.Contains(got[0].GetAfterJson(), `"lease_holder":"forge"`) {
		t.Fatalf("entries: %v", got)
	}
}

func TestBootstrapWritesAPrivateFileOnce(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	runOnce := func() {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		errCh := make(chan error, 1)
		go func() {
			errCh <- Run(ctx, Config{Listen: "127.0.0.1:0", DataDir: dir, Logger: log, TracerProvider: noop.NewTracerProvider(),
				OnListening: func(net.Addr) { cancel() }})
		}()
		if err := <-errCh; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	}
	runOnce()
	path := filepath.Join(dir, access.OperatorTokenFile)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", path, info.Mode().Perm())
	}
	first := readSecret(t, dir)
	if !strings.HasPrefix(first, access.SecretPrefix) {
		t.Fatalf("token file holds %q", first)
	}

	runOnce()
	info2, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if readSecret(t, dir) != first || !info2.ModTime().Equal(info.ModTime()) {
		t.Fatal("a restart rewrote the operator token file")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "."+access.OperatorTokenFile) {
			t.Fatalf("temporary file %s left behind", e.Name())
		}
	}
}

// The spend event's newer fields (failed, cache tokens) open no door: an
// agent reporting a failed call with cache tokens under another agent's
// name, alone or hidden in a batch behind one of its own, is refused and
// nothing of the batch is recorded; a sidecar reports them only for the
// agents placed on its host.
func TestSpendFailuresAndCacheTokensOnlyAsItself(t *testing.T) {
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hammerSecret, _ := b.mintToken(t, store.RoleAgent, "hammer")
	sideSecret, _ := b.mintToken(t, store.RoleSidecar, "gpu-2")
	hammer, side, op := b.clientsAs(t, hammerSecret), b.clientsAs(t, sideSecret), b.clientsAs(t, b.operator)
	forged := func(id, agent string) *factoryv1.SpendEvent {
		e := spendEventPB(id, agent, 5)
		e.Failed, e.CacheReadTokens, e.CacheWriteTokens = true, 1<<20, 1<<20
		return e
	}
	if _, err := hammer.b.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: forged("f1", "forge")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("hammer reporting forge's failed call: %v, want PERMISSION_DENIED", err)
	}
	_, err := hammer.b.ReportSpendBatch(ctx, &factoryv1.ReportSpendBatchRequest{Events: []*factoryv1.SpendEvent{
		spendEventPB("h1", "hammer", 5), forged("f2", "forge")}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "forge") {
		t.Fatalf("hammer's batch with forge's failed call: %v, want PERMISSION_DENIED naming forge", err)
	}
	if _, err := side.b.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: forged("f3", "forge")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("sidecar gpu-2 reporting forge (not placed on it): %v, want PERMISSION_DENIED", err)
	}
	rep, err := op.b.GetSpend(ctx, &factoryv1.GetSpendRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.GetTotals(); got.GetEvents() != 0 {
		t.Fatalf("refused reports were recorded: %v", got)
	}
	// As itself, hammer reports a failed call with cache tokens.
	if _, err := hammer.b.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: forged("h2", "hammer")}); err != nil {
		t.Fatalf("hammer reporting its own failed call: %v", err)
	}
}
