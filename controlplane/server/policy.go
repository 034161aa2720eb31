package server

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// This file is the one place that says who may call what. Every RPC of
// every factory service has a row; an RPC without one is refused to every
// caller (and a test fails until the row is written).

// rule is one RPC's row in the policy.
type rule struct {
	// roles may call the RPC at all.
	roles []store.Role
	// actsAs, when set, names the agents a request acts as (its agent
	// fields). A caller other than an operator may act only as itself: an
	// agent only as its own name, a sidecar only for the agents the fleet
	// places on its host (Policy.HostsAgent). verb says what the request
	// does, for the refusal: "agent forge may not claim as agent hammer".
	actsAs func(req any) []string
	verb   string
	// claims, when set, names the task roles a request claims. An agent
	// may claim only the roles its token grants (access.Caller.Roles,
	// which came with the cached token: the check reads nothing);
	// operators claim any.
	claims func(req any) []string
	// mutates marks a call that changes state. An operator's successful
	// call of it is audited, and so is any call acting as a party other
	// than the caller; an agent acting as itself (the hot path) is not.
	mutates bool
	// operatorFields, when set, names the request fields it sets that
	// only an operator may set; any other caller's request setting one is
	// refused, naming it.
	operatorFields func(req any) []string
}

var (
	operatorOnly = []store.Role{store.RoleOperator}
	agents       = []store.Role{store.RoleOperator, store.RoleAgent}
	everyone     = []store.Role{store.RoleOperator, store.RoleAgent, store.RoleSidecar}
)

// rules is the policy table, keyed by full RPC name.
var rules = map[string]rule{
	// Creating work and reading the queue: agents too (an orchestrator
	// agent decomposes work into tasks).
	// A new task's history (attempt, last_error, progress) is an
	// operator's to set: see operatorFields (policy_history.go).
	factoryv1.QueueService_CreateTask_FullMethodName:  {roles: agents, mutates: true},
	factoryv1.QueueService_CreateTasks_FullMethodName: {roles: agents, mutates: true},
	factoryv1.QueueService_GetTask_FullMethodName:     {roles: agents},
	factoryv1.QueueService_ListTasks_FullMethodName:   {roles: agents},
	factoryv1.QueueService_WatchTasks_FullMethodName:  {roles: agents},
	// Queue stats are what a sidecar reports next to its host's health.
	factoryv1.QueueService_GetQueueStats_FullMethodName: {roles: everyone},

	// Working tasks: an agent only as itself. The fencing token already
	// proves the caller holds the task; the agent field must be the caller.
	factoryv1.QueueService_ClaimTask_FullMethodName: {roles: agents, mutates: true, verb: "claim",
		actsAs: agentField[*factoryv1.ClaimTaskRequest], claims: func(req any) []string {
			r, _ := req.(*factoryv1.ClaimTaskRequest)
			return r.GetRoles()
		}},
	factoryv1.QueueService_RenewLease_FullMethodName: {roles: agents, mutates: true, verb: "renew a lease",
		actsAs: agentField[*factoryv1.RenewLeaseRequest]},
	factoryv1.QueueService_CompleteTask_FullMethodName: {roles: agents, mutates: true, verb: "complete a task",
		actsAs: agentField[*factoryv1.CompleteTaskRequest]},
	factoryv1.QueueService_CompleteTasks_FullMethodName: {roles: agents, mutates: true, verb: "complete tasks",
		actsAs: func(req any) []string {
			r, _ := req.(*factoryv1.CompleteTasksRequest)
			items := r.GetItems()
			names := make([]string, len(items))
			for i, it := range items {
				names[i] = it.GetAgent()
			}
			return names
		}},
	factoryv1.QueueService_FailTask_FullMethodName: {roles: agents, mutates: true, verb: "fail a task",
		actsAs: agentField[*factoryv1.FailTaskRequest]},
	// The same four calls on one stream: each message is checked as its
	// unary call is, as it arrives.
	factoryv1.QueueService_Work_FullMethodName: {roles: agents, mutates: true, verb: "work",
		actsAs: func(req any) []string {
			r, _ := req.(*factoryv1.WorkRequest)
			switch c := r.GetCall().(type) {
			case *factoryv1.WorkRequest_Claim:
				return []string{c.Claim.GetAgent()}
			case *factoryv1.WorkRequest_Complete:
				return []string{c.Complete.GetAgent()}
			case *factoryv1.WorkRequest_Renew:
				return []string{c.Renew.GetAgent()}
			case *factoryv1.WorkRequest_Fail:
				return []string{c.Fail.GetAgent()}
			case *factoryv1.WorkRequest_CompleteMany:
				items := c.CompleteMany.GetItems()
				names := make([]string, len(items))
				for i, it := range items {
					names[i] = it.GetAgent()
				}
				return names
			}
			// No call acts as nobody; validation then refuses the request
			// for lacking one (and the handler would too).
			return nil
		},
		claims: func(req any) []string {
			r, _ := req.(*factoryv1.WorkRequest)
			return r.GetClaim().GetRoles()
		}},

	// Steering other parties' work and the whole queue: operators only.
	factoryv1.QueueService_MoveTask_FullMethodName:     {roles: operatorOnly, mutates: true},
	factoryv1.QueueService_SetPriority_FullMethodName:  {roles: operatorOnly, mutates: true},
	factoryv1.QueueService_PauseQueue_FullMethodName:   {roles: operatorOnly, mutates: true},
	factoryv1.QueueService_ResumeQueue_FullMethodName:  {roles: operatorOnly, mutates: true},
	factoryv1.QueueService_RequeueStuck_FullMethodName: {roles: operatorOnly, mutates: true},
	// Many tasks at once, by filter: operators only.
	factoryv1.QueueService_BulkUpdateTasks_FullMethodName: {roles: operatorOnly, mutates: true},

	// Identity: everyone may ask who they are; the rest is for operators.
	factoryv1.AccessService_CreateToken_FullMethodName: {roles: operatorOnly, mutates: true},
	factoryv1.AccessService_ListTokens_FullMethodName:  {roles: operatorOnly},
	factoryv1.AccessService_RevokeToken_FullMethodName: {roles: operatorOnly, mutates: true},
	factoryv1.AccessService_ListAudit_FullMethodName:   {roles: operatorOnly},
	factoryv1.AccessService_WhoAmI_FullMethodName:      {roles: everyone},
	// An agent token's grant of task roles is an operator's decision.
	factoryv1.AccessService_SetTokenRoles_FullMethodName: {roles: operatorOnly, mutates: true},
	// Rotating a role's credentials ends every holder's old secret.
	factoryv1.AccessService_RotateTokens_FullMethodName: {roles: operatorOnly, mutates: true},

	// Moving the whole state: operators only. An export holds every
	// task's payload and every token's hash; an import writes every kind
	// of row, tokens included.
	factoryv1.OpsService_ExportState_FullMethodName: {roles: operatorOnly},
	factoryv1.OpsService_ImportState_FullMethodName: {roles: operatorOnly, mutates: true},
	// Maintenance, backups and the doctor steer or read the whole store:
	// operators only, starts and ends audited. Whether the factory is in
	// maintenance, and the digest, agents may read too (an orchestrator
	// reports them).
	factoryv1.OpsService_StartMaintenance_FullMethodName: {roles: operatorOnly, mutates: true},
	factoryv1.OpsService_EndMaintenance_FullMethodName:   {roles: operatorOnly, mutates: true},
	factoryv1.OpsService_GetMaintenance_FullMethodName:   {roles: agents},
	factoryv1.OpsService_Backup_FullMethodName:           {roles: operatorOnly, mutates: true}, // audited: who took a copy of everything
	factoryv1.OpsService_Doctor_FullMethodName:           {roles: operatorOnly},
	factoryv1.OpsService_GetBackupStatus_FullMethodName:  {roles: operatorOnly},
	factoryv1.OpsService_GetDigest_FullMethodName:        {roles: agents},
	// Alerts: agents read them and watch the event stream (the
	// orchestrator agent relays them to chat); acks and silences change
	// what operators hear, so they are operators' and audited.
	factoryv1.OpsService_ListAlerts_FullMethodName:    {roles: agents},
	factoryv1.OpsService_ListSilences_FullMethodName:  {roles: agents},
	factoryv1.OpsService_WatchEvents_FullMethodName:   {roles: agents},
	factoryv1.OpsService_AckAlert_FullMethodName:      {roles: operatorOnly, mutates: true},
	factoryv1.OpsService_SilenceAlert_FullMethodName:  {roles: operatorOnly, mutates: true},
	factoryv1.OpsService_ExpireSilence_FullMethodName: {roles: operatorOnly, mutates: true},

	// The fleet: a sidecar connects for its own host (the handler checks
	// Hello.host against the token's subject, since the host arrives in
	// the stream, not in the call); an operator may connect as any host,
	// which lets `make run` start a local sidecar with the operator token.
	// Reading the fleet is for every role: an orchestrator agent routes
	// work by it, a sidecar reports next to it.
	factoryv1.FleetService_Connect_FullMethodName:    {roles: []store.Role{store.RoleOperator, store.RoleSidecar}},
	factoryv1.FleetService_ListNodes_FullMethodName:  {roles: everyone},
	factoryv1.FleetService_ListAgents_FullMethodName: {roles: everyone},
	factoryv1.FleetService_GetHealth_FullMethodName:  {roles: everyone},
	factoryv1.FleetService_WatchFleet_FullMethodName: {roles: everyone},
	// A host's telemetry history is read like its latest reading.
	factoryv1.FleetService_GetNodeHistory_FullMethodName: {roles: everyone},
	// Commands restart agents and drain hosts: operators only, audited.
	factoryv1.FleetService_SendCommand_FullMethodName: {roles: operatorOnly, mutates: true},
	// Forgetting a gone host drops its readings and its placements:
	// operators only, audited.
	factoryv1.FleetService_ForgetNode_FullMethodName: {roles: operatorOnly, mutates: true},
	// Placing an agent on a host lets that host's sidecar declare it and
	// report its spend: operators only, audited. Where agents are placed
	// is read like the fleet.
	factoryv1.FleetService_PlaceAgent_FullMethodName:     {roles: operatorOnly, mutates: true},
	factoryv1.FleetService_UnplaceAgent_FullMethodName:   {roles: operatorOnly, mutates: true},
	factoryv1.FleetService_ListPlacements_FullMethodName: {roles: everyone},

	// Spend: an agent reports and reserves only as itself, a sidecar only
	// for the agents an operator placed on its host (it relays their
	// spool). Every event of a
	// batch is checked. Reading spend and budgets is for agents (they pace
	// themselves by them) and operators; the stop's state for sidecars too.
	factoryv1.BudgetService_ReportSpend_FullMethodName: {roles: everyone, mutates: true, verb: "report spend",
		actsAs: func(req any) []string {
			r, _ := req.(*factoryv1.ReportSpendRequest)
			return []string{r.GetEvent().GetAgent()}
		}},
	factoryv1.BudgetService_ReportSpendBatch_FullMethodName: {roles: everyone, mutates: true, verb: "report spend",
		actsAs: func(req any) []string {
			r, _ := req.(*factoryv1.ReportSpendBatchRequest)
			names := make([]string, len(r.GetEvents()))
			for i, e := range r.GetEvents() {
				names[i] = e.GetAgent()
			}
			return names
		}},
	factoryv1.BudgetService_ReserveSpend_FullMethodName: {roles: everyone, mutates: true, verb: "reserve spend",
		actsAs: agentField[*factoryv1.ReserveSpendRequest]},
	// A settle names its agent in the actual event; a release names none,
	// and the handler checks the reservation's agent against the caller.
	factoryv1.BudgetService_SettleSpend_FullMethodName: {roles: everyone, mutates: true, verb: "settle spend",
		actsAs: func(req any) []string {
			r, _ := req.(*factoryv1.SettleSpendRequest)
			if r.GetActual() == nil {
				return nil
			}
			return []string{r.GetActual().GetAgent()}
		}},
	factoryv1.BudgetService_GetSpend_FullMethodName:         {roles: agents},
	factoryv1.BudgetService_GetBudget_FullMethodName:        {roles: agents},
	factoryv1.BudgetService_GetEmergencyStop_FullMethodName: {roles: everyone},
	// Limits and the fleet's stop: operators only, audited.
	factoryv1.BudgetService_SetBudget_FullMethodName:          {roles: operatorOnly, mutates: true},
	factoryv1.BudgetService_EmergencyStop_FullMethodName:      {roles: operatorOnly, mutates: true},
	factoryv1.BudgetService_RearmEmergencyStop_FullMethodName: {roles: operatorOnly, mutates: true},
	// Voiding a spend event rewrites what every budget sees: operators
	// only, audited.
	factoryv1.BudgetService_VoidSpend_FullMethodName: {roles: operatorOnly, mutates: true},

	// Approvals: an agent requests only as itself, and reads and waits on
	// requests; only an operator decides (and the domain refuses the
	// requester, whatever its token). Decisions are audited with what was
	// decided.
	factoryv1.ApprovalService_RequestApproval_FullMethodName: {roles: agents, mutates: true, verb: "request approval",
		actsAs: agentField[*factoryv1.RequestApprovalRequest]},
	factoryv1.ApprovalService_GetApproval_FullMethodName:   {roles: agents},
	factoryv1.ApprovalService_ListApprovals_FullMethodName: {roles: agents},
	factoryv1.ApprovalService_WaitApproval_FullMethodName:  {roles: agents},
	factoryv1.ApprovalService_Decide_FullMethodName:        {roles: operatorOnly, mutates: true},
}

// agentField is the actsAs of a request with one agent field.
func agentField[T interface{ GetAgent() string }](req any) []string {
	// Another type only by a bug; its nil then answers "", no caller's name.
	r, _ := req.(T)
	return []string{r.GetAgent()}
}

// HostsAgent reports whether agent is placed on host (fleet.Placements,
// in the store, so every replica answers alike); without one no sidecar
// acts for any agent.
type HostsAgent func(ctx context.Context, host, agent string) (bool, error)

// Policy applies the table.
type Policy struct {
	rules      map[string]rule
	hostsAgent HostsAgent
}

func newPolicy(hostsAgent HostsAgent) *Policy {
	return &Policy{rules: rules, hostsAgent: hostsAgent}
}

// admit finds the RPC's row and checks the caller's role.
func (p *Policy) admit(c access.Caller, method string) (rule, error) {
	r, ok := p.rules[method]
	if !ok {
		return rule{}, status.Errorf(codes.PermissionDenied,
			"%s has no row in the access policy, so it is refused to every caller", method)
	}
	if !slices.Contains(r.roles, c.Role) {
		allowed := make([]string, len(r.roles))
		for i, role := range r.roles {
			allowed[i] = string(role)
		}
		return rule{}, status.Errorf(codes.PermissionDenied, "%s may not call %s: it is for %s only",
			c, path.Base(method), strings.Join(allowed, ", "))
	}
	return r, nil
}

// check applies the row's per-request rule. onBehalf reports that the
// caller acted as a party other than itself (an operator working an
// agent's task, or a sidecar acting for an agent on its host).
func (p *Policy) check(ctx context.Context, c access.Caller, r rule, req any) (onBehalf bool, err error) {
	if r.operatorFields != nil && c.Role != store.RoleOperator {
		if fields := r.operatorFields(req); len(fields) > 0 {
			return false, status.Errorf(codes.PermissionDenied, "%s may not set %s: only an operator sets a task's history (an import)", c, fields[0])
		}
	}
	if r.claims != nil {
		for _, role := range r.claims(req) {
			if !c.MayClaim(role) {
				return false, status.Errorf(codes.PermissionDenied, "%s may not claim role %s: its token grants %s (an operator grants roles: factory token grant %s --roles ...)",
					c, role, grantText(c.Roles), c.TokenID)
			}
		}
	}
	if r.actsAs == nil {
		return false, nil
	}
	for _, agent := range r.actsAs(req) {
		switch {
		case c.Role == store.RoleAgent && agent == c.Subject:
		case c.Role == store.RoleOperator:
			onBehalf = true
		case c.Role == store.RoleSidecar && p.hostsAgent != nil:
			ok, err := p.hostsAgent(ctx, c.Subject, agent)
			if err != nil {
				return false, fmt.Errorf("checking whether host %s runs agent %s: %w", c.Subject, agent, err)
			}
			if !ok {
				return false, status.Errorf(codes.PermissionDenied, "%s may not %s as agent %s: that agent is not placed on host %s (factory agents place %s --host %s)",
					c, r.verb, orNone(agent), c.Subject, orNone(agent), c.Subject)
			}
			onBehalf = true
		default:
			return false, status.Errorf(codes.PermissionDenied, "%s may not %s as agent %s", c, r.verb, orNone(agent))
		}
	}
	return onBehalf, nil
}

// grantText names a token's grant in a refusal.
func grantText(roles []string) string {
	if len(roles) == 0 {
		return "no role"
	}
	return "only " + strings.Join(roles, ", ")
}

func orNone(name string) string {
	if name == "" {
		return `"" (no agent named)`
	}
	return name
}

// audited says whether a call admitted under r is recorded in the audit
// log.
func audited(c access.Caller, r rule, onBehalf bool) bool {
	return r.mutates && (c.Role == store.RoleOperator || onBehalf)
}
