package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// mcpAgentNamePattern is the API's rule for an agent's name (ClaimTaskRequest.agent).
var mcpAgentNamePattern = regexp.MustCompile(`^[A-Za-z0-9._:/-]{1,128}$`)

// mcpReleaseTimeout bounds how long a closing session spends handing its
// unfinished tasks back.
const mcpReleaseTimeout = 10 * time.Second

func newMCPCommand(a *app) *cobra.Command {
	var (
		agent string
		roles []string
	)
	cmd := &cobra.Command{
		Use:   "mcp --agent A [--role R]...",
		Short: "Serve the factory to an LLM agent as MCP tools over stdio",
		Long: `mcp runs a Model Context Protocol server on standard input and output
for one agent, so an LLM client (Claude Desktop, Claude Code, any MCP
host) can work the factory's queue through tools: claim_task, get_task,
report_progress, complete_task, fail_task, report_spend,
request_approval, wait_approval, queue_status and budget_status.

The agent is fixed when the server starts (--agent or FACTORY_AGENT) and
no tool takes an agent name: the token must be that agent's own (an
operator's token works too, with a warning). A token of another agent is
refused at start, before the client connects.

This process holds the fencing token of every task it claims; the LLM
names tasks by id only, and a task this process did not claim is refused.
While the LLM thinks, the lease is renewed in the background every third
of its length until complete_task or fail_task; if the control plane
ends the lease (it expired, an operator moved the task), the next tool
call on that task says so. When the client disconnects, tasks still held
are failed back to the queue (retryable) so another agent can take them
at once instead of waiting for the lease to run out.

Standard output is the protocol: logs go to standard error as JSON.

Add it to an MCP client's configuration, for example:
  {"mcpServers": {"factory": {"command": "factory",
    "args": ["mcp", "--agent", "forge", "--role", "builder"],
    "env": {"FACTORY_TOKEN": "fct_...", "FACTORY_ADDR": "127.0.0.1:7420"}}}}`,
		Example: `  FACTORY_TOKEN=fct_... factory mcp --agent forge --role builder
  factory mcp --agent researcher-2 --role researcher --addr cp.internal:7420 --ca ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !mcpAgentNamePattern.MatchString(agent) {
				if strings.TrimSpace(agent) == "" {
					return usageErrorf("--agent (or FACTORY_AGENT) is required")
				}
				return usageErrorf("--agent %q: want 1 to 128 letters, digits, '.', '_', ':', '/' or '-'", agent)
			}
			return a.serveMCP(cmd, agent, roles)
		},
	}
	f := cmd.Flags()
	f.StringVar(&agent, "agent", envOr("FACTORY_AGENT", ""), "the agent the tools act as (env FACTORY_AGENT; required)")
	f.StringSliceVar(&roles, "role", nil, "roles claim_task asks for when the call names none (repeatable; default: the roles the agent's token grants)")
	return cmd
}

// serveMCP checks who the token is, then serves MCP on stdin/stdout until
// the client disconnects or the process is told to stop.
func (a *app) serveMCP(cmd *cobra.Command, agent string, roles []string) error {
	log := slog.New(slog.NewJSONHandler(a.stderr(), nil)).With("agent", agent)
	conn, err := a.dial()
	if err != nil {
		return err
	}
	defer conn.Close()

	ctx := cmd.Context()
	roles, err = a.checkMCPIdentity(ctx, factoryv1.NewAccessServiceClient(conn), agent, roles, log)
	if err != nil {
		return err
	}

	s := &mcpSession{
		agent:     agent,
		roles:     roles,
		timeout:   a.timeout,
		log:       log,
		tracer:    a.opts.TracerProvider.Tracer("github.com/factory/factory/cli"),
		queue:     factoryv1.NewQueueServiceClient(conn),
		budget:    factoryv1.NewBudgetServiceClient(conn),
		approvals: factoryv1.NewApprovalServiceClient(conn),
		leases:    map[string]*mcpLease{},
	}
	// Renewers outlive the tool call that claimed: they run until the
	// session ends.
	var stopRenewers context.CancelFunc
	s.life, stopRenewers = context.WithCancel(context.WithoutCancel(ctx))
	defer stopRenewers()

	server := mcp.NewServer(&mcp.Implementation{Name: "factory", Title: "Factory control plane", Version: "v1"},
		&mcp.ServerOptions{
			Instructions: mcpInstructions(agent),
			Logger:       log.With("component", "mcp"),
		})
	s.register(server)

	log.Info("serving MCP on stdio", "addr", a.addr, "roles", roles)
	// A person, not an MCP client, on the other end: say what is expected.
	if f, ok := cmd.InOrStdin().(*os.File); ok && isTerminal(f) {
		log.Info("standard input is a terminal: this command is meant to be started by an MCP client, which speaks JSON-RPC on its stdin and stdout")
	}
	transport := &mcp.IOTransport{Reader: io.NopCloser(cmd.InOrStdin()), Writer: mcpStdout{a.rawStdout()}}
	runErr := server.Run(ctx, transport)
	stopRenewers()
	s.releaseAll(log)
	if runErr != nil && ctx.Err() == nil && !errors.Is(runErr, io.EOF) {
		return fmt.Errorf("mcp session: %w", runErr)
	}
	log.Info("MCP session ended")
	return nil
}

type mcpStdout struct{ io.Writer }

func (mcpStdout) Close() error { return nil }

// checkMCPIdentity refuses a token that may not act as agent, before any
// client connects: an agent token of another agent would have every call
// refused with PERMISSION_DENIED, and a clear error at start is kinder
// than ten failed tool calls. It returns the roles claims default to.
func (a *app) checkMCPIdentity(ctx context.Context, acc factoryv1.AccessServiceClient, agent string, roles []string, log *slog.Logger) ([]string, error) {
	who, err := acc.WhoAmI(ctx, &factoryv1.WhoAmIRequest{})
	if err != nil {
		return nil, fmt.Errorf("checking the token with the control plane at %s: %w", a.addr, err)
	}
	switch who.GetRole() {
	case factoryv1.Role_ROLE_AGENT:
		if who.GetSubject() != agent {
			return nil, &ExitError{Code: ExitFailure, Err: fmt.Errorf(
				"this token is agent %s's and cannot serve --agent %s: an agent token acts only as its own agent (PERMISSION_DENIED); start with --agent %s or use %s's token",
				who.GetSubject(), agent, who.GetSubject(), agent)}
		}
		if len(roles) == 0 && !slices.Contains(who.GetRoles(), "*") {
			roles = who.GetRoles()
		}
	case factoryv1.Role_ROLE_OPERATOR:
		log.Warn("serving with an operator token: the tools act as the agent with an operator's rights; give the agent a token of its own (factory token create --role agent --subject "+agent+")",
			"operator", who.GetSubject())
	default:
		return nil, fmt.Errorf("a %s token (%s) cannot work tasks: factory mcp needs agent %s's token (factory token create --role agent --subject %s)",
			strings.ToLower(strings.TrimPrefix(who.GetRole().String(), "ROLE_")), who.GetSubject(), agent, agent)
	}
	return roles, nil
}

func mcpInstructions(agent string) string {
	return `You are agent "` + agent + `" of an agentic factory. Work its task queue with these tools:
claim_task takes the next task for your roles (wait_seconds waits for one); work on it; call report_progress with a short note as you go; then complete_task, or fail_task with what went wrong (permanent=true when a retry cannot help).
Leases are renewed for you in the background until you complete or fail; if a tool says the lease was lost, stop working on that task and do not report it done.
Report every LLM call you make with report_spend. Before a risky action (deploys, customer messages, DNS, public posts, spending money) call request_approval and follow the decision: go ahead only when go_ahead is true, and follow any instructions.
queue_status and budget_status show the queue and what you may still spend today.`
}

// mcpSession is one MCP server's state: the agent it acts as, its clients
// and the leases it holds.
type mcpSession struct {
	agent     string
	roles     []string
	timeout   time.Duration
	log       *slog.Logger
	tracer    trace.Tracer
	queue     factoryv1.QueueServiceClient
	budget    factoryv1.BudgetServiceClient
	approvals factoryv1.ApprovalServiceClient
	// life ends when the session does; renewers run under it.
	life context.Context

	mu     sync.Mutex
	leases map[string]*mcpLease
	wg     sync.WaitGroup
}

// mcpLease is a task this session claimed. Its fencing token never leaves
// the process: the LLM names the task by id.
type mcpLease struct {
	taskID string
	token  int64
	length time.Duration
	stop   context.CancelFunc

	// mu serialises the calls made on the lease (background renewals,
	// progress, complete, fail), so a renewal never races the completion
	// that ends the lease and is then mistaken for a lost lease.
	mu        sync.Mutex
	expiresAt time.Time
	// lost is why the control plane ended the lease without this session
	// asking; it is reported by the next tool call on the task.
	lost error
	// ended is set once this session completed or failed the task.
	ended bool
}

// mcpNotHeldError is a task id the session did not claim.
type mcpNotHeldError struct {
	taskID string
	held   []string
}

func (e *mcpNotHeldError) Error() string {
	return fmt.Sprintf("task %s is not held by this session (held: %s): claim it with claim_task first; only tasks this server claimed can be worked on",
		e.taskID, idsOrNone(e.held))
}

// mcpLostLease is the error for a task whose lease the control plane ended.
func mcpLostLease(taskID string, cause error) error {
	return fmt.Errorf("the lease on task %s was lost: %s; the task may be given to another agent, so stop working on it and do not report it done",
		taskID, mcpErrorText(cause))
}

// mcpLeaseEnded reports whether err says the lease is gone for good: fenced
// out (expired, moved, claimed again) or the task no longer exists.
func mcpLeaseEnded(err error) bool {
	return isCode(err, codes.FailedPrecondition) || isCode(err, codes.NotFound)
}

// hold records a claimed task and starts renewing its lease.
func (s *mcpSession) hold(t *factoryv1.Task, requested time.Duration) *mcpLease {
	length := requested
	if l := t.GetLease(); l.GetExpiresAt() != nil && l.GetClaimedAt() != nil {
		if d := l.GetExpiresAt().AsTime().Sub(l.GetClaimedAt().AsTime()); d > 0 {
			length = d
		}
	}
	if length <= 0 {
		length = 5 * time.Minute
	}
	ctx, stop := context.WithCancel(s.life)
	l := &mcpLease{taskID: t.GetId(), token: t.GetLease().GetToken(), length: length, stop: stop,
		expiresAt: t.GetLease().GetExpiresAt().AsTime()}
	s.mu.Lock()
	if old := s.leases[l.taskID]; old != nil {
		// Claimed again after the old lease ended unreported: the old
		// token is stale, its renewer has nothing left to do.
		old.stop()
	}
	s.leases[l.taskID] = l
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.keepRenewed(ctx, l)
	}()
	return l
}

// keepRenewed renews l every third of its length until the session ends
// it, the session closes or the control plane refuses: a lost lease is
// kept for the next tool call on the task to report.
func (s *mcpSession) keepRenewed(ctx context.Context, l *mcpLease) {
	every := l.renewEvery()
	retry := leaseRetryBackOff(every)
	timer := time.NewTimer(every)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		callCtx, cancel := context.WithTimeout(ctx, min(s.timeout, max(every, time.Second)))
		_, err := s.renew(callCtx, l, "")
		cancel()
		switch {
		case err == nil:
			retry.Reset()
			timer.Reset(every)
		case ctx.Err() != nil || errors.Is(err, errMCPLeaseClosed):
			return
		case mcpLeaseEnded(err):
			s.log.Warn("lease lost", "task_id", l.taskID, "error", mcpErrorText(err))
			return
		default:
			// The control plane may be briefly out of reach: try again
			// well before the lease runs out.
			s.log.Warn("lease renewal failed; retrying", "task_id", l.taskID, "error", mcpErrorText(err))
			timer.Reset(retry.NextBackOff())
		}
	}
}

// renewEvery is how often the lease is renewed: every third of its length.
func (l *mcpLease) renewEvery() time.Duration {
	return max(l.length/3, 100*time.Millisecond)
}

// errMCPLeaseClosed stops a renewal of a lease that already ended.
var errMCPLeaseClosed = errors.New("lease already ended")

// renew extends l by its length, with a progress note when given.
func (s *mcpSession) renew(ctx context.Context, l *mcpLease, progress string) (*factoryv1.Task, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended || l.lost != nil {
		return nil, errMCPLeaseClosed
	}
	return s.renewLocked(ctx, l, progress)
}

// renewLocked is renew for a caller that holds l.mu.
func (s *mcpSession) renewLocked(ctx context.Context, l *mcpLease, progress string) (*factoryv1.Task, error) {
	resp, err := s.queue.RenewLease(ctx, &factoryv1.RenewLeaseRequest{
		TaskId: l.taskID, Agent: s.agent, FencingToken: l.token,
		LeaseDuration: durationpb.New(l.length), Progress: progress,
	})
	if err != nil {
		if mcpLeaseEnded(err) {
			l.lost = err
		}
		return nil, err
	}
	l.expiresAt = resp.GetTask().GetLease().GetExpiresAt().AsTime()
	return resp.GetTask(), nil
}

// onLease runs call on the lease of taskID, serialised with its renewals.
// A task the session does not hold, or whose lease was lost, is an error
// (the lost lease is then forgotten). A call that ends the lease, or finds
// it gone, stops its renewer.
func (s *mcpSession) onLease(taskID string, call func(l *mcpLease) (ends bool, err error)) error {
	s.mu.Lock()
	l, ok := s.leases[taskID]
	s.mu.Unlock()
	if !ok {
		return &mcpNotHeldError{taskID: taskID, held: s.heldIDs()}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		s.forget(l)
		return mcpLostLease(taskID, l.lost)
	}
	if l.ended {
		return &mcpNotHeldError{taskID: taskID, held: s.heldIDs()}
	}
	ends, err := call(l)
	switch {
	case err != nil && mcpLeaseEnded(err):
		l.lost = err
		s.forget(l)
		return mcpLostLease(taskID, err)
	case err != nil:
		return err
	case ends:
		l.ended = true
		s.forget(l)
	}
	return nil
}

// forget drops l and stops its renewer. The caller holds l.mu.
func (s *mcpSession) forget(l *mcpLease) {
	l.stop()
	s.mu.Lock()
	if s.leases[l.taskID] == l {
		delete(s.leases, l.taskID)
	}
	s.mu.Unlock()
}

// lostError returns why taskID's lease was lost, when the session holds
// it and the control plane ended it, and forgets it: the report is made once.
func (s *mcpSession) lostError(taskID string) error {
	s.mu.Lock()
	l, ok := s.leases[taskID]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost == nil {
		return nil
	}
	s.forget(l)
	return mcpLostLease(taskID, l.lost)
}

func (s *mcpSession) holds(taskID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.leases[taskID]
	return ok
}

func (s *mcpSession) heldIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.leases))
	for id := range s.leases {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (s *mcpSession) heldLeases() []*mcpLease {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*mcpLease, 0, len(s.leases))
	for _, l := range s.leases {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b *mcpLease) int { return strings.Compare(a.taskID, b.taskID) })
	return out
}

// releaseAll fails every task still held back to the queue (retryable):
// the fencing tokens die with this process, so nobody could finish them,
// and the next agent need not wait for the leases to run out.
func (s *mcpSession) releaseAll(log *slog.Logger) {
	s.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), mcpReleaseTimeout)
	defer cancel()
	for _, l := range s.heldLeases() {
		_, err := s.endTask(l.taskID, func(l *mcpLease) (*factoryv1.Task, error) {
			resp, err := s.queue.FailTask(ctx, &factoryv1.FailTaskRequest{
				TaskId: l.taskID, Agent: s.agent, FencingToken: l.token,
				Error: "factory mcp: the MCP client disconnected before completing the task",
			})
			return resp.GetTask(), err
		})
		if err != nil {
			log.Warn("unfinished task not handed back; it returns to the queue when its lease runs out", "task_id", l.taskID, "error", err.Error())
			continue
		}
		log.Info("handed an unfinished task back to the queue", "task_id", l.taskID)
	}
}

// mcpToolError is err as the LLM reads it: the API's message, which names
// the field, with its code and each field violation.
func mcpToolError(err error) error {
	if unwrapStatus(err) == nil {
		return err
	}
	return errors.New(mcpErrorText(err))
}

// mcpErrorText renders a gRPC error as "message (CODE)", followed by
// the field violations of a google.rpc.BadRequest detail.
func mcpErrorText(err error) string {
	text := describeError(err)
	if st, ok := status.FromError(unwrapStatus(err)); ok {
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					text += fmt.Sprintf("; %s: %s", v.GetField(), v.GetDescription())
				}
			}
		}
	}
	return text
}

// addMCPTool registers a tool whose input schema is In's, narrowed by
// rules, with h's errors returned as tool errors (IsError), never as
// protocol errors, and each call traced.
func addMCPTool[In, Out any](s *mcpSession, server *mcp.Server, tool *mcp.Tool, rules map[string][]mcpRule, h func(context.Context, *mcp.CallToolRequest, In) (Out, error)) {
	tool.InputSchema = mcpInputSchema[In](rules)
	name := tool.Name
	mcp.AddTool(server, tool, func(ctx context.Context, req *mcp.CallToolRequest, in In) (*mcp.CallToolResult, Out, error) {
		ctx, span := s.tracer.Start(ctx, "factory mcp "+name)
		defer span.End()
		out, err := h(ctx, req, in)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(otelcodes.Error, err.Error())
			s.log.Info("tool call refused", "tool", name, "error", err.Error())
			var zero Out
			return nil, zero, mcpToolError(err)
		}
		return nil, out, nil
	})
}
