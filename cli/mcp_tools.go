package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// The tools' limits, from proto/factory/v1.
const (
	mcpMaxClaimWait     = 60      // ClaimTaskRequest.wait
	mcpMaxLease         = 3600    // ClaimTaskRequest.lease_duration
	mcpMaxNote          = 4096    // RenewLeaseRequest.progress, CompleteTaskRequest.note
	mcpMaxError         = 65536   // FailTaskRequest.error (bytes)
	mcpMaxTokens        = 1e9     // SpendEvent.input_tokens, output_tokens
	mcpMaxCostMicros    = 1e12    // SpendEvent.cost_micros ($1,000,000)
	mcpMaxApprovalWait  = 2592000 // RequestApprovalRequest.timeout (30 days)
	mcpMaxAmountMicros  = 1e15    // RequestApprovalRequest.amount_micros
	mcpProgressInterval = 15 * time.Second
)

// register adds every tool. None takes an agent name: the session's agent
// is fixed at start.
func (s *mcpSession) register(server *mcp.Server) {
	readOnly := &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true}
	destructive := true
	addMCPTool(s, server, &mcp.Tool{
		Name: "claim_task",
		Description: "Take the next task to work on: the highest-priority READY task for your roles, which moves to IN_PROGRESS under a lease held by this server. " +
			"Returns the task (id, title, kind, payload, attempt, lease expiry) or claimed=false when there is none. " +
			"The lease is renewed in the background until you call complete_task or fail_task, so take the time the work needs; report_progress as you go.",
	}, map[string][]mcpRule{
		"roles":         {schemaMaxItems(64), schemaItems(schemaMaxLen(128), schemaPattern(apiNamePattern))},
		"wait_seconds":  {schemaRange(0, mcpMaxClaimWait)},
		"lease_seconds": {schemaRange(1, mcpMaxLease)},
	}, s.claimTask)
	addMCPTool(s, server, &mcp.Tool{
		Name:        "get_task",
		Description: "Show one task in full: state, payload, attempt, progress, note and last error. held_by_you says whether you hold its lease.",
		Annotations: readOnly,
	}, map[string][]mcpRule{
		"task_id": {schemaPattern(apiTaskIDPattern)},
	}, s.getTask)
	addMCPTool(s, server, &mcp.Tool{
		Name: "report_progress",
		Description: "Record a short progress note on a task you hold (operators see it on the task) and extend its lease. " +
			"Fails when the lease was lost: then stop working on the task.",
		Annotations: &mcp.ToolAnnotations{IdempotentHint: true},
	}, map[string][]mcpRule{
		"task_id": {schemaPattern(apiTaskIDPattern)},
		"note":    {schemaNotBlank(), schemaMaxLen(mcpMaxNote)},
	}, s.reportProgress)
	addMCPTool(s, server, &mcp.Tool{
		Name: "complete_task",
		Description: "Finish a task you hold: to DONE, or with review=true to REVIEW for a human check. " +
			"Tasks that depend on it become READY. Put the outcome (what you did, where the result is) in note, " +
			"and what the next stage needs in result (any JSON, at most 256 KiB): the tasks depending on this one get it when claimed.",
		Annotations: &mcp.ToolAnnotations{IdempotentHint: true},
	}, map[string][]mcpRule{
		"task_id": {schemaPattern(apiTaskIDPattern)},
		"note":    {schemaMaxLen(mcpMaxNote)},
	}, s.completeTask)
	addMCPTool(s, server, &mcp.Tool{
		Name: "fail_task",
		Description: "Give up on a task you hold, saying what went wrong. It goes back to the queue for a retry after a backoff while attempts remain, " +
			"or with permanent=true (a retry cannot help: bad input, missing permission) straight to FAILED.",
		Annotations: &mcp.ToolAnnotations{DestructiveHint: &destructive, IdempotentHint: true},
	}, map[string][]mcpRule{
		"task_id": {schemaPattern(apiTaskIDPattern)},
		"error":   {schemaNotBlank(), schemaMaxLen(mcpMaxError)},
	}, s.failTask)
	addMCPTool(s, server, &mcp.Tool{
		Name: "report_spend",
		Description: "Record the cost of one LLM call (or infrastructure charge) you made, against today's budgets. " +
			"Give cost_usd or cost_micros when you know the cost; with neither, the control plane prices the call from its tokens. " +
			"Each call records one event with a fresh event_id; pass your own event_id to make a retry count once.",
	}, map[string][]mcpRule{
		"model":         {schemaNonEmpty(), schemaMaxLen(200)},
		"provider":      {schemaMaxLen(100)},
		"tier":          {schemaEnum(tierNames...)},
		"input_tokens":  {schemaRange(0, mcpMaxTokens)},
		"output_tokens": {schemaRange(0, mcpMaxTokens)},
		"cost_usd":      {schemaRange(0, mcpMaxCostMicros/1e6)},
		"cost_micros":   {schemaRange(0, mcpMaxCostMicros)},
		"task_id":       {schemaMaxLen(128), schemaPattern(apiNamePattern)},
		"event_id":      {schemaMaxLen(128), schemaPattern(apiSpendIDPattern)},
	}, s.reportSpend)
	addMCPTool(s, server, &mcp.Tool{
		Name: "request_approval",
		Description: "Ask a human before a risky action (production deploys, customer messages, DNS or domain or certificate changes, public posts, spending over $20) and wait for the decision. " +
			"Tier 0-1 requests of known harmless kinds are approved at once by policy; Tier 2 and up wait for an operator. " +
			"Returns state APPROVED, REJECTED, MODIFIED (go ahead only following instructions) or EXPIRED (nobody decided: do not go ahead); go_ahead says whether you may act. " +
			"With wait_seconds the call returns PENDING when no decision came in time: continue with wait_approval.",
	}, map[string][]mcpRule{
		"what":            {schemaNotBlank(), schemaMaxLen(500)},
		"why":             {schemaMaxLen(4096)},
		"risk":            {schemaEnum("low", "medium", "high")},
		"tier":            {schemaRange(0, 3)},
		"kind":            {schemaMaxLen(100), schemaPattern(apiKindPattern)},
		"payload":         {schemaObject()},
		"task_id":         {schemaPattern(apiTaskIDPattern)},
		"amount_micros":   {schemaRange(0, mcpMaxAmountMicros)},
		"timeout_seconds": {schemaRange(1, mcpMaxApprovalWait)},
		"wait_seconds":    {schemaRange(1, mcpMaxApprovalWait)},
	}, s.requestApproval)
	addMCPTool(s, server, &mcp.Tool{
		Name:        "wait_approval",
		Description: "Wait for the decision on an approval request that request_approval returned PENDING; returns as request_approval does.",
		Annotations: readOnly,
	}, map[string][]mcpRule{
		"approval_id":  {schemaPattern(apiTaskIDPattern)},
		"wait_seconds": {schemaRange(1, mcpMaxApprovalWait)},
	}, s.waitApproval)
	addMCPTool(s, server, &mcp.Tool{
		Name:        "queue_status",
		Description: "Show the queue's shape: tasks per state, the oldest READY task's age, retries, whether the queue is paused, and the tasks you hold with their lease expiry.",
		Annotations: readOnly,
	}, nil, s.queueStatus)
	addMCPTool(s, server, &mcp.Tool{
		Name:        "budget_status",
		Description: "Show today's spend against the budgets: yours and the whole factory's (spent, alert threshold, hard cap, what is left) and whether the emergency stop is on. At a cap, claims are refused until the day ends.",
		Annotations: readOnly,
	}, nil, s.budgetStatus)
}

// mcpTask is a task as a tool returns it.
type mcpTask struct {
	ID          string            `json:"id"`
	Title       string            `json:"title"`
	Kind        string            `json:"kind,omitempty"`
	Role        string            `json:"role,omitempty"`
	State       string            `json:"state" jsonschema:"BACKLOG, READY, IN_PROGRESS, REVIEW, DONE, FAILED or PAUSED"`
	Priority    int32             `json:"priority"`
	Attempt     int32             `json:"attempt" jsonschema:"which attempt this is, from 1"`
	MaxAttempts int32             `json:"max_attempts,omitempty"`
	Payload     any               `json:"payload,omitempty" jsonschema:"the task's input, as JSON"`
	Labels      map[string]string `json:"labels,omitempty"`
	DependsOn   []string          `json:"depends_on,omitempty"`
	Progress    string            `json:"progress,omitempty"`
	Note        string            `json:"note,omitempty"`
	LastError   string            `json:"last_error,omitempty" jsonschema:"why the previous attempt failed"`
	// DependencyResults are what the tasks it depends on handed on.
	DependencyResults []mcpDependencyResult `json:"dependency_results,omitempty" jsonschema:"the results of the tasks this one depends on (a pipeline's earlier stages), for the agent holding it"`
	// LeaseExpiresAt is when the lease runs out unless renewed (this
	// server renews the leases it holds).
	LeaseExpiresAt string `json:"lease_expires_at,omitempty" jsonschema:"when the lease runs out unless renewed (RFC 3339); this server renews the leases it holds"`
	HeldByYou      bool   `json:"held_by_you"`
}

// mcpDependencyResult is one dependency's result, as an agent holding the
// dependent task reads it.
type mcpDependencyResult struct {
	TaskID  string          `json:"task_id"`
	Stage   string          `json:"stage,omitempty"`
	Kind    string          `json:"kind,omitempty"`
	Title   string          `json:"title,omitempty"`
	Result  json.RawMessage `json:"result,omitempty" jsonschema:"the dependency's result, as JSON"`
	Omitted bool            `json:"omitted,omitempty" jsonschema:"the result was too large for the claim; show_task has it"`
	// Withheld: the dependency was done before this task was created.
	Withheld bool `json:"withheld,omitempty" jsonschema:"the dependency was done before this task was created, so its result is not handed on"`
}

func mcpTaskOf(t *factoryv1.Task, held bool) *mcpTask {
	out := &mcpTask{
		ID: t.GetId(), Title: t.GetTitle(), Kind: t.GetKind(), Role: t.GetRole(),
		State:    stateLabel(t.GetState()),
		Priority: t.GetPriority(), Attempt: t.GetAttempt(), MaxAttempts: t.GetMaxAttempts(),
		Labels: t.GetLabels(), DependsOn: t.GetDependsOn(),
		Progress: t.GetProgress(), Note: t.GetNote(), LastError: t.GetLastError(),
		HeldByYou: held,
	}
	for _, d := range t.GetDependencyResults() {
		r := mcpDependencyResult{TaskID: d.GetTaskId(), Stage: d.GetStage(), Kind: d.GetKind(), Title: d.GetTitle(), Omitted: d.GetOmitted(), Withheld: d.GetWithheld()}
		if d.GetResultJson() != "" {
			r.Result = json.RawMessage(d.GetResultJson())
		}
		out.DependencyResults = append(out.DependencyResults, r)
	}
	if p := t.GetPayloadJson(); p != "" {
		// UseNumber keeps large integers exact; a payload that is not
		// JSON after all is handed over as the text it is.
		dec := json.NewDecoder(strings.NewReader(p))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err == nil {
			out.Payload = v
		} else {
			out.Payload = p
		}
	}
	if t.GetState() == factoryv1.TaskState_TASK_STATE_IN_PROGRESS {
		out.LeaseExpiresAt = mcpTime(t.GetLease().GetExpiresAt())
	}
	return out
}

func mcpTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// mcpDollars prints micro-dollars exactly, as a decimal number of dollars.
func mcpDollars(micros int64) string {
	sign := ""
	if micros < 0 {
		sign, micros = "-", -micros
	}
	return fmt.Sprintf("%s%d.%06d", sign, micros/1_000_000, micros%1_000_000)
}

type mcpClaimInput struct {
	Roles        []string `json:"roles,omitempty" jsonschema:"roles you can take; tasks with one of them (or none) are offered. Omit for this server's roles"`
	WaitSeconds  int      `json:"wait_seconds,omitempty" jsonschema:"when nothing is READY, wait up to this many seconds for a task (0 to 60; default 0: answer at once)"`
	LeaseSeconds int      `json:"lease_seconds,omitempty" jsonschema:"lease length in seconds (1 to 3600; default: the control plane's, 5 minutes); renewed for you every third of it"`
}

type mcpClaimOutput struct {
	Claimed bool     `json:"claimed"`
	Task    *mcpTask `json:"task,omitempty"`
	Message string   `json:"message"`
}

func (s *mcpSession) claimTask(ctx context.Context, _ *mcp.CallToolRequest, in mcpClaimInput) (mcpClaimOutput, error) {
	roles := in.Roles
	if len(roles) == 0 {
		roles = s.roles
	}
	wait := time.Duration(in.WaitSeconds) * time.Second
	lease := time.Duration(in.LeaseSeconds) * time.Second
	req := &factoryv1.ClaimTaskRequest{Agent: s.agent, Roles: roles, MaxTasks: 1}
	if wait > 0 {
		req.Wait = durationpb.New(wait)
	}
	if lease > 0 {
		req.LeaseDuration = durationpb.New(lease)
	}
	callCtx, cancel := context.WithTimeout(ctx, s.timeout+wait)
	defer cancel()
	resp, err := s.queue.ClaimTask(callCtx, req)
	if err != nil {
		return mcpClaimOutput{}, err
	}
	if len(resp.GetTasks()) == 0 {
		return mcpClaimOutput{Message: fmt.Sprintf("no task: nothing READY for roles %s after waiting %ds; try again later (wait_seconds waits for one)",
			mcpRolesText(roles), in.WaitSeconds)}, nil
	}
	t := resp.GetTasks()[0]
	l := s.hold(t, lease)
	s.log.Info("claimed", "task_id", t.GetId(), "attempt", t.GetAttempt(), "lease", l.length.String())
	return mcpClaimOutput{
		Claimed: true,
		Task:    mcpTaskOf(t, true),
		Message: fmt.Sprintf("claimed task %s (attempt %d); its lease is renewed in the background every %s until you call complete_task or fail_task",
			t.GetId(), t.GetAttempt(), l.renewEvery().Round(time.Millisecond)),
	}, nil
}

func mcpRolesText(roles []string) string {
	if len(roles) == 0 {
		return "(none: only tasks without a role)"
	}
	return strings.Join(roles, ", ")
}

type mcpTaskIDInput struct {
	TaskID string `json:"task_id" jsonschema:"the task's id"`
}

func (s *mcpSession) getTask(ctx context.Context, _ *mcp.CallToolRequest, in mcpTaskIDInput) (*mcpTask, error) {
	if err := s.lostError(in.TaskID); err != nil {
		return nil, err
	}
	resp, err := s.queue.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: in.TaskID})
	if err != nil {
		return nil, err
	}
	return mcpTaskOf(resp.GetTask(), s.holds(in.TaskID)), nil
}

type mcpProgressInput struct {
	TaskID string `json:"task_id" jsonschema:"a task you hold"`
	Note   string `json:"note" jsonschema:"what you have done so far, one or two sentences (at most 4096 characters)"`
}

type mcpLeaseOutput struct {
	TaskID         string `json:"task_id"`
	LeaseExpiresAt string `json:"lease_expires_at"`
	Message        string `json:"message"`
}

func (s *mcpSession) reportProgress(ctx context.Context, _ *mcp.CallToolRequest, in mcpProgressInput) (mcpLeaseOutput, error) {
	var out mcpLeaseOutput
	err := s.onLease(in.TaskID, func(l *mcpLease) (bool, error) {
		t, err := s.renewLocked(ctx, l, in.Note)
		if err != nil {
			return false, err
		}
		out = mcpLeaseOutput{TaskID: t.GetId(), LeaseExpiresAt: mcpTime(t.GetLease().GetExpiresAt()), Message: "progress recorded; lease extended"}
		return false, nil
	})
	return out, err
}

type mcpCompleteInput struct {
	TaskID string `json:"task_id" jsonschema:"a task you hold"`
	Note   string `json:"note,omitempty" jsonschema:"the outcome: what you did and where the result is (at most 4096 characters)"`
	Review bool   `json:"review,omitempty" jsonschema:"true: send to REVIEW for a human check instead of DONE"`
	// Result is any JSON value; it is kept as the task's result.
	Result any `json:"result,omitempty" jsonschema:"the task's result as JSON (at most 256 KiB), handed to the tasks that depend on it"`
}

type mcpDoneOutput struct {
	TaskID  string `json:"task_id"`
	State   string `json:"state"`
	Attempt int32  `json:"attempt"`
	Message string `json:"message"`
}

func (s *mcpSession) completeTask(ctx context.Context, _ *mcp.CallToolRequest, in mcpCompleteInput) (mcpDoneOutput, error) {
	var result string
	if in.Result != nil {
		b, err := json.Marshal(in.Result)
		if err != nil {
			return mcpDoneOutput{}, fmt.Errorf("result: %w", err)
		}
		if len(b) > workResultMax {
			return mcpDoneOutput{}, fmt.Errorf("result: %d bytes of JSON, over the %d a result holds", len(b), workResultMax)
		}
		result = string(b)
	}
	t, err := s.endTask(in.TaskID, func(l *mcpLease) (*factoryv1.Task, error) {
		resp, err := s.queue.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{
			TaskId: l.taskID, Agent: s.agent, FencingToken: l.token, Review: in.Review, Note: in.Note, ResultJson: result,
		})
		return resp.GetTask(), err
	})
	if err != nil {
		return mcpDoneOutput{}, err
	}
	s.log.Info("completed", "task_id", in.TaskID, "state", stateLabel(t.GetState()))
	return mcpDoneOf(t, "task finished; claim_task for the next one"), nil
}

// endTask makes call, the completion or failure of taskID under its
// lease, and returns the task as the control plane then has it; the lease
// is over once call succeeds.
func (s *mcpSession) endTask(taskID string, call func(l *mcpLease) (*factoryv1.Task, error)) (*factoryv1.Task, error) {
	var t *factoryv1.Task
	err := s.onLease(taskID, func(l *mcpLease) (bool, error) {
		var err error
		t, err = call(l)
		return err == nil, err
	})
	return t, err
}

func mcpDoneOf(t *factoryv1.Task, msg string) mcpDoneOutput {
	return mcpDoneOutput{TaskID: t.GetId(), State: stateLabel(t.GetState()), Attempt: t.GetAttempt(), Message: msg}
}

type mcpFailInput struct {
	TaskID    string `json:"task_id" jsonschema:"a task you hold"`
	Error     string `json:"error" jsonschema:"what went wrong, for the next attempt and the operators (at most 64 KiB)"`
	Permanent bool   `json:"permanent,omitempty" jsonschema:"true: no retry, straight to FAILED (a retry cannot help); false: retry after a backoff while attempts remain"`
}

func (s *mcpSession) failTask(ctx context.Context, _ *mcp.CallToolRequest, in mcpFailInput) (mcpDoneOutput, error) {
	t, err := s.endTask(in.TaskID, func(l *mcpLease) (*factoryv1.Task, error) {
		resp, err := s.queue.FailTask(ctx, &factoryv1.FailTaskRequest{
			TaskId: l.taskID, Agent: s.agent, FencingToken: l.token, Error: in.Error, Permanent: in.Permanent,
		})
		return resp.GetTask(), err
	})
	if err != nil {
		return mcpDoneOutput{}, err
	}
	s.log.Info("failed", "task_id", in.TaskID, "state", stateLabel(t.GetState()))
	msg := "task failed for good (FAILED)"
	if t.GetState() != factoryv1.TaskState_TASK_STATE_FAILED {
		msg = fmt.Sprintf("task returned to the queue for attempt %d", t.GetAttempt()+1)
		if ra := t.GetRunAfter(); ra != nil {
			msg += " after " + mcpTime(ra)
		}
	}
	return mcpDoneOf(t, msg), nil
}

type mcpSpendInput struct {
	Model        string   `json:"model" jsonschema:"the model as the provider names it, e.g. claude-sonnet-4 or qwen2.5:7b"`
	Provider     string   `json:"provider,omitempty" jsonschema:"the provider, e.g. anthropic, openai, ollama"`
	Tier         string   `json:"tier" jsonschema:"frontier (frontier hosted models), mid (mid-range hosted models), local (local models, usually free) or infra (GPUs, hosting: anything not a model call)"`
	InputTokens  int64    `json:"input_tokens,omitempty" jsonschema:"prompt tokens"`
	OutputTokens int64    `json:"output_tokens,omitempty" jsonschema:"completion tokens"`
	CostUSD      *float64 `json:"cost_usd,omitempty" jsonschema:"the cost in US dollars, at most 6 decimals (a micro-dollar); or give cost_micros"`
	CostMicros   *int64   `json:"cost_micros,omitempty" jsonschema:"the cost in micro-dollars (1 USD = 1000000); or give cost_usd"`
	TaskID       string   `json:"task_id,omitempty" jsonschema:"the task the call was for"`
	EventID      string   `json:"event_id,omitempty" jsonschema:"your id for this event: the same id sent again counts once. Omit for a fresh one"`
}

type mcpSpendOutput struct {
	EventID        string `json:"event_id"`
	CostMicros     int64  `json:"cost_micros"`
	CostUSD        string `json:"cost_usd"`
	PricedByServer bool   `json:"priced_by_server"`
	Duplicate      bool   `json:"duplicate" jsonschema:"the event id was already recorded; nothing changed"`
	Day            string `json:"day" jsonschema:"the day (YYYY-MM-DD) whose budget it counts against"`
}

func (s *mcpSession) reportSpend(ctx context.Context, _ *mcp.CallToolRequest, in mcpSpendInput) (mcpSpendOutput, error) {
	tier, err := parseTier(in.Tier)
	if err != nil {
		return mcpSpendOutput{}, err
	}
	ev := &factoryv1.SpendEvent{
		Id: in.EventID, Agent: s.agent, Model: in.Model, Provider: in.Provider, Tier: tier,
		InputTokens: in.InputTokens, OutputTokens: in.OutputTokens, TaskId: in.TaskID,
		OccurredAt: timestamppb.Now(),
	}
	switch {
	case in.CostUSD != nil && in.CostMicros != nil:
		return mcpSpendOutput{}, errors.New("cost_usd and cost_micros: give one, not both")
	case in.CostUSD != nil:
		// The shortest decimal that reads back as the float is what the
		// agent wrote; it is then read as exact micro-dollars.
		m, err := parseDollars(strconv.FormatFloat(*in.CostUSD, 'f', -1, 64))
		if err != nil {
			return mcpSpendOutput{}, fmt.Errorf("cost_usd: %w", err)
		}
		ev.CostMicros = &m
	case in.CostMicros != nil:
		ev.CostMicros = in.CostMicros
	}
	if ev.Id == "" {
		ev.Id = "mcp-" + uuid.Must(uuid.NewV7()).String()
	}
	resp, err := s.budget.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: ev})
	if err != nil {
		return mcpSpendOutput{}, err
	}
	rec := resp.GetRecord()
	cost := rec.GetEvent().GetCostMicros()
	return mcpSpendOutput{
		EventID: ev.Id, CostMicros: cost, CostUSD: mcpDollars(cost),
		PricedByServer: rec.GetPricedByServer(), Duplicate: resp.GetDuplicate(), Day: rec.GetDay(),
	}, nil
}

type mcpApprovalInput struct {
	What           string          `json:"what" jsonschema:"what you want to do, one line (at most 500 characters)"`
	Why            string          `json:"why,omitempty" jsonschema:"why you want to do it (at most 4096 characters)"`
	Risk           string          `json:"risk" jsonschema:"low (easily undone), medium (some exposure or cost) or high (customer-visible, costly or hard to undo)"`
	Tier           int32           `json:"tier,omitempty" jsonschema:"declared tier 0-3; policy may raise it for the kind and the amount, never lower it"`
	Kind           string          `json:"kind,omitempty" jsonschema:"the kind of action: production_deploy, staging_deploy, first_customer_message, internal_message, dns_change, domain_change, certificate_change, public_post, spend, research, build, test, ... An unknown kind (or none) needs an operator"`
	Payload        json.RawMessage `json:"payload,omitempty" jsonschema:"the action's details as a JSON object: exactly what the operator approves"`
	TaskID         string          `json:"task_id,omitempty" jsonschema:"the task the action belongs to"`
	AmountMicros   int64           `json:"amount_micros,omitempty" jsonschema:"what the action spends in micro-dollars (1 USD = 1000000); over $20 it needs an operator"`
	TimeoutSeconds int64           `json:"timeout_seconds,omitempty" jsonschema:"seconds until the request expires undecided (denied); default: the control plane's. A request for an operator needs at least its minimum (5 minutes by default)"`
	WaitSeconds    int64           `json:"wait_seconds,omitempty" jsonschema:"return PENDING if no decision came within this many seconds (continue with wait_approval); default: wait for the decision"`
}

type mcpWaitApprovalInput struct {
	ApprovalID  string `json:"approval_id" jsonschema:"the id request_approval returned"`
	WaitSeconds int64  `json:"wait_seconds,omitempty" jsonschema:"return PENDING if no decision came within this many seconds; default: wait for the decision"`
}

type mcpApprovalOutput struct {
	ApprovalID     string `json:"approval_id"`
	State          string `json:"state" jsonschema:"PENDING, APPROVED, REJECTED, MODIFIED or EXPIRED"`
	GoAhead        bool   `json:"go_ahead" jsonschema:"whether you may do the action now (for MODIFIED: only following instructions)"`
	Tier           int32  `json:"tier" jsonschema:"the tier after policy"`
	Kind           string `json:"kind,omitempty"`
	AutoApproved   bool   `json:"auto_approved,omitempty"`
	DecidedBy      string `json:"decided_by,omitempty"`
	Reason         string `json:"reason,omitempty"`
	Instructions   string `json:"instructions,omitempty" jsonschema:"for MODIFIED: what you must do differently"`
	AppliedOutcome string `json:"applied_outcome,omitempty"`
	Deadline       string `json:"deadline,omitempty"`
	Message        string `json:"message"`
}

func (s *mcpSession) requestApproval(ctx context.Context, req *mcp.CallToolRequest, in mcpApprovalInput) (mcpApprovalOutput, error) {
	risk, ok := factoryv1.ApprovalRisk_value["APPROVAL_RISK_"+strings.ToUpper(in.Risk)]
	if !ok || risk == 0 {
		return mcpApprovalOutput{}, fmt.Errorf("risk %q: want low, medium or high", in.Risk)
	}
	r := &factoryv1.RequestApprovalRequest{
		What: in.What, Why: in.Why, Agent: s.agent, Risk: factoryv1.ApprovalRisk(risk), Tier: in.Tier,
		Kind: in.Kind, TaskId: in.TaskID, AmountMicros: in.AmountMicros,
	}
	if len(in.Payload) > 0 && string(in.Payload) != "null" {
		r.PayloadJson = string(in.Payload)
	}
	if in.TimeoutSeconds > 0 {
		r.Timeout = durationpb.New(time.Duration(in.TimeoutSeconds) * time.Second)
	}
	resp, err := s.approvals.RequestApproval(ctx, r)
	if err != nil {
		return mcpApprovalOutput{}, err
	}
	ap := resp.GetApproval()
	s.log.Info("approval requested", "approval_id", ap.GetId(), "tier", ap.GetTier(), "state", approvalStateName(ap.GetState()))
	if ap.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_PENDING {
		return mcpApprovalOf(ap), nil
	}
	progress := newMCPProgress(req)
	progress.send(ctx, s, mcpPendingText(ap))
	return s.awaitDecision(ctx, progress, ap.GetId(), in.WaitSeconds)
}

func (s *mcpSession) waitApproval(ctx context.Context, req *mcp.CallToolRequest, in mcpWaitApprovalInput) (mcpApprovalOutput, error) {
	return s.awaitDecision(ctx, newMCPProgress(req), in.ApprovalID, in.WaitSeconds)
}

func mcpPendingText(ap *factoryv1.Approval) string {
	return fmt.Sprintf("approval %s is PENDING (tier %d): waiting for an operator until %s", ap.GetId(), ap.GetTier(), mcpTime(ap.GetDeadline()))
}

// awaitDecision follows the WaitApproval stream until the request is
// final, or for waitSeconds when given (then the request as it is). While
// it waits, an MCP progress notification goes out now and then, when the
// client asked for them, so the client knows the call is alive.
func (s *mcpSession) awaitDecision(ctx context.Context, progress *mcpProgress, id string, waitSeconds int64) (mcpApprovalOutput, error) {
	// Cancelling ctx on return ends the stream and its reader.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.approvals.WaitApproval(ctx, &factoryv1.WaitApprovalRequest{ApprovalId: id})
	if err != nil {
		return mcpApprovalOutput{}, err
	}
	type received struct {
		resp *factoryv1.WaitApprovalResponse
		err  error
	}
	msgs := make(chan received)
	go func() {
		for {
			resp, err := stream.Recv()
			select {
			case msgs <- received{resp, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var waitEnd <-chan time.Time
	if waitSeconds > 0 {
		timer := time.NewTimer(time.Duration(waitSeconds) * time.Second)
		defer timer.Stop()
		waitEnd = timer.C
	}
	tick := time.NewTicker(mcpProgressInterval)
	defer tick.Stop()
	var last *factoryv1.Approval
	for {
		select {
		case m := <-msgs:
			switch {
			case errors.Is(m.err, io.EOF):
				return mcpApprovalOutput{}, fmt.Errorf("approval %s: the wait ended before a decision; do not go ahead (wait_approval waits again)", id)
			case m.err != nil:
				return mcpApprovalOutput{}, m.err
			}
			last = m.resp.GetApproval()
			if m.resp.GetFinal() {
				out := mcpApprovalOf(last)
				s.log.Info("approval decided", "approval_id", id, "state", out.State)
				return out, nil
			}
			if progress.n == 0 {
				progress.send(ctx, s, mcpPendingText(last))
			}
		case <-tick.C:
			progress.send(ctx, s, fmt.Sprintf("approval %s: still waiting for an operator", id))
		case <-waitEnd:
			if last == nil {
				return mcpApprovalOutput{}, fmt.Errorf("approval %s: the control plane did not answer within wait_seconds; do not go ahead (wait_approval waits again)", id)
			}
			return mcpStillPending(last), nil
		case <-ctx.Done():
			return mcpApprovalOutput{}, fmt.Errorf("approval %s: the wait was cancelled before a decision; do not go ahead: %w", id, ctx.Err())
		}
	}
}

func mcpStillPending(ap *factoryv1.Approval) mcpApprovalOutput {
	out := mcpApprovalOf(ap)
	out.Message = fmt.Sprintf("no decision yet; do not go ahead. Call wait_approval with approval_id %s to keep waiting (deadline %s)", ap.GetId(), out.Deadline)
	return out
}

// mcpProgress sends progress notifications for one tool call, when the
// client gave a progress token.
type mcpProgress struct {
	req   *mcp.CallToolRequest
	token any
	n     float64
}

func newMCPProgress(req *mcp.CallToolRequest) *mcpProgress {
	p := &mcpProgress{req: req}
	if req != nil && req.Params != nil {
		p.token = req.Params.GetProgressToken()
	}
	return p
}

func (p *mcpProgress) send(ctx context.Context, s *mcpSession, msg string) {
	if p.token == nil || p.req.Session == nil {
		return
	}
	p.n++
	if err := p.req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: p.token, Progress: p.n, Message: msg}); err != nil {
		s.log.Debug("progress notification not sent", "error", err.Error())
	}
}

func mcpApprovalOf(ap *factoryv1.Approval) mcpApprovalOutput {
	out := mcpApprovalOutput{
		ApprovalID: ap.GetId(), State: approvalStateName(ap.GetState()), GoAhead: granted(ap),
		Tier: ap.GetTier(), Kind: ap.GetKind(), AutoApproved: ap.GetAutoApproved(), DecidedBy: ap.GetDecidedBy(),
		Reason: ap.GetReason(), Instructions: ap.GetInstructions(), Deadline: mcpTime(ap.GetDeadline()),
	}
	if o := ap.GetAppliedOutcome(); o != factoryv1.ApprovalDecision_APPROVAL_DECISION_UNSPECIFIED {
		out.AppliedOutcome = outcomeName(o)
	}
	switch ap.GetState() {
	case factoryv1.ApprovalState_APPROVAL_STATE_APPROVED:
		out.Message = "approved by " + orDash(ap.GetDecidedBy()) + ": go ahead"
	case factoryv1.ApprovalState_APPROVAL_STATE_MODIFIED:
		out.Message = "approved with modifications by " + orDash(ap.GetDecidedBy()) + ": go ahead only following instructions"
	case factoryv1.ApprovalState_APPROVAL_STATE_REJECTED:
		out.Message = "rejected by " + orDash(ap.GetDecidedBy()) + ": do not do it"
	case factoryv1.ApprovalState_APPROVAL_STATE_EXPIRED:
		out.Message = "expired: nobody decided before the deadline, so do not do it"
	default:
		out.Message = "no decision yet; do not go ahead"
	}
	return out
}

type mcpNoInput struct{}

type mcpQueueOutput struct {
	Counts                     map[string]int64 `json:"counts" jsonschema:"tasks per state"`
	OldestReadyAgeSeconds      float64          `json:"oldest_ready_age_seconds"`
	OldestInProgressAgeSeconds float64          `json:"oldest_in_progress_age_seconds"`
	Retrying                   int64            `json:"retrying" jsonschema:"tasks not DONE past their first attempt"`
	Paused                     bool             `json:"paused"`
	PauseReason                string           `json:"pause_reason,omitempty"`
	YourTasks                  []mcpHeldTask    `json:"your_tasks" jsonschema:"the tasks this server holds for you"`
}

type mcpHeldTask struct {
	TaskID         string `json:"task_id"`
	LeaseExpiresAt string `json:"lease_expires_at"`
	LeaseLost      string `json:"lease_lost,omitempty" jsonschema:"why the lease was lost: stop working on the task"`
}

func (s *mcpSession) queueStatus(ctx context.Context, _ *mcp.CallToolRequest, _ mcpNoInput) (mcpQueueOutput, error) {
	resp, err := s.queue.GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{})
	if err != nil {
		return mcpQueueOutput{}, err
	}
	out := mcpQueueOutput{
		Counts:                     map[string]int64{},
		OldestReadyAgeSeconds:      resp.GetOldestReadyAge().AsDuration().Seconds(),
		OldestInProgressAgeSeconds: resp.GetOldestInProgressAge().AsDuration().Seconds(),
		Retrying:                   resp.GetRetrying(), Paused: resp.GetPaused(), PauseReason: resp.GetPauseReason(),
		YourTasks: []mcpHeldTask{},
	}
	for _, c := range resp.GetCounts() {
		out.Counts[stateLabel(c.GetState())] = c.GetCount()
	}
	for _, l := range s.heldLeases() {
		l.mu.Lock()
		h := mcpHeldTask{TaskID: l.taskID, LeaseExpiresAt: l.expiresAt.UTC().Format(time.RFC3339)}
		if l.lost != nil {
			h.LeaseLost = mcpErrorText(l.lost)
		}
		l.mu.Unlock()
		out.YourTasks = append(out.YourTasks, h)
	}
	return out, nil
}

type mcpBudgetOutput struct {
	Day           string        `json:"day"`
	TimeZone      string        `json:"time_zone"`
	You           mcpBudgetLine `json:"you" jsonschema:"your spend today against your budget"`
	Total         mcpBudgetLine `json:"total" jsonschema:"the whole factory's spend today against the total budget"`
	EmergencyStop bool          `json:"emergency_stop" jsonschema:"the fleet is halted: no claims until an operator re-arms it"`
	StopReason    string        `json:"stop_reason,omitempty"`
}

type mcpBudgetLine struct {
	SpentMicros     int64  `json:"spent_micros"`
	SpentUSD        string `json:"spent_usd"`
	AlertMicros     int64  `json:"alert_micros,omitempty" jsonschema:"crossing it raises an alert; 0: none"`
	CapMicros       int64  `json:"cap_micros,omitempty" jsonschema:"reaching it refuses new claims; 0: none"`
	RemainingMicros int64  `json:"remaining_micros" jsonschema:"what is left under the cap; -1: no cap"`
	Alerting        bool   `json:"alerting"`
	Capped          bool   `json:"capped"`
}

func (s *mcpSession) budgetStatus(ctx context.Context, _ *mcp.CallToolRequest, _ mcpNoInput) (mcpBudgetOutput, error) {
	resp, err := s.budget.GetBudget(ctx, &factoryv1.GetBudgetRequest{})
	if err != nil {
		return mcpBudgetOutput{}, err
	}
	out := mcpBudgetOutput{Day: resp.GetDay(), TimeZone: resp.GetTimeZone(),
		Total: mcpBudgetLine{RemainingMicros: -1}, You: mcpBudgetLine{RemainingMicros: -1},
		EmergencyStop: resp.GetEmergencyStop().GetStopped(), StopReason: resp.GetEmergencyStop().GetReason()}
	var own, agentDefault *factoryv1.BudgetStatus
	for _, b := range resp.GetBudgets() {
		switch {
		case b.GetBudget().GetScope() == factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL:
			out.Total = mcpBudgetLineOf(b)
		case b.GetBudget().GetScope() == factoryv1.BudgetScope_BUDGET_SCOPE_AGENT && b.GetBudget().GetKey() == s.agent:
			own = b
		case b.GetBudget().GetScope() == factoryv1.BudgetScope_BUDGET_SCOPE_AGENT && b.GetBudget().GetKey() == "":
			agentDefault = b
		}
	}
	if own != nil {
		out.You = mcpBudgetLineOf(own)
		return out, nil
	}
	// Under the default agent budget, whose standing is the largest
	// spender's: this agent's own spend comes from the ledger.
	spend, err := s.budget.GetSpend(ctx, &factoryv1.GetSpendRequest{Agent: s.agent, ToDay: resp.GetDay()})
	if err != nil {
		return mcpBudgetOutput{}, err
	}
	spent := spend.GetTotals().GetCostMicros()
	out.You = mcpBudgetLine{SpentMicros: spent, SpentUSD: mcpDollars(spent), RemainingMicros: -1}
	if b := agentDefault.GetBudget(); b != nil {
		out.You.AlertMicros, out.You.CapMicros = b.GetAlertMicros(), b.GetCapMicros()
		out.You.Alerting = b.GetAlertMicros() > 0 && spent >= b.GetAlertMicros()
		if b.GetCapMicros() > 0 {
			out.You.RemainingMicros = max(0, b.GetCapMicros()-spent)
			out.You.Capped = spent >= b.GetCapMicros()
		}
	}
	return out, nil
}

func mcpBudgetLineOf(b *factoryv1.BudgetStatus) mcpBudgetLine {
	return mcpBudgetLine{
		SpentMicros: b.GetSpentMicros(), SpentUSD: mcpDollars(b.GetSpentMicros()),
		AlertMicros: b.GetBudget().GetAlertMicros(), CapMicros: b.GetBudget().GetCapMicros(),
		RemainingMicros: b.GetRemainingMicros(), Alerting: b.GetAlerting(), Capped: b.GetCapped(),
	}
}
