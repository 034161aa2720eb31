package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// withApprovals runs fn with an ApprovalService client inside one span
// named after the command.
func (a *app) withApprovals(cmd *cobra.Command, fn func(ctx context.Context, c factoryv1.ApprovalServiceClient) error) error {
	ctx, span := a.opts.TracerProvider.Tracer("github.com/factory/factory/cli").Start(cmd.Context(), spanName(cmd))
	defer span.End()
	conn, err := a.dial()
	if err == nil {
		defer conn.Close()
		err = fn(ctx, factoryv1.NewApprovalServiceClient(conn))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

func newApprovalsCommand(a *app) *cobra.Command {
	var (
		states      []string
		all         bool
		agent       string
		newestFirst bool
	)
	cmd := &cobra.Command{
		Use:     "approvals",
		Aliases: []string{"approval"},
		Short:   "List approval requests: pending first, with the time each has left",
		Long: `An agent asks for approval before a risky action (runbook §9). Tier 0-1
requests are approved by policy at once; Tier 2 and up wait for an
operator until their deadline, when they are denied and recorded as
EXPIRED (never as anyone's decision). Kinds are read in any spelling
("Production-Deploy", "dns"), and a kind the policy does not know waits
for an operator.

Without flags this lists the PENDING requests with the time each has left.
Decide with "factory approve", "factory reject" or "factory modify".
Requests come pending first, then the rest, each group oldest first;
--newest-first puts each group's newest request first.`,
		Example: `  factory approvals
  factory approvals --all -o json
  factory approvals --state approved --state rejected --newest-first
  factory approvals show 0193a2b4-...
  factory approvals watch`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &factoryv1.ListApprovalsRequest{Agent: agent, PageSize: 1000, NewestFirst: newestFirst}
			switch {
			case all && len(states) > 0:
				return usageErrorf("--all and --state are mutually exclusive")
			case !all && len(states) == 0:
				req.States = []factoryv1.ApprovalState{factoryv1.ApprovalState_APPROVAL_STATE_PENDING}
			}
			for _, s := range states {
				st, err := parseApprovalState(s)
				if err != nil {
					return usageErrorf("--state: %v", err)
				}
				req.States = append(req.States, st)
			}
			return a.withApprovals(cmd, func(ctx context.Context, c factoryv1.ApprovalServiceClient) error {
				var out []*factoryv1.Approval
				for {
					resp, err := c.ListApprovals(ctx, req)
					if err != nil {
						return err
					}
					out = append(out, resp.GetApprovals()...)
					if resp.GetNextPageToken() == "" {
						break
					}
					req.PageToken = resp.GetNextPageToken()
				}
				if a.jsonOutput() {
					return writeProtoList(a.stdout(), out)
				}
				return writeApprovalTable(a.stdout(), out)
			})
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&states, "state", nil, "only this state: pending, approved, rejected, modified, expired (repeatable; default pending)")
	f.BoolVar(&all, "all", false, "every request, pending first")
	f.StringVar(&agent, "agent", "", "only requests by this agent")
	f.BoolVar(&newestFirst, "newest-first", false, "each group's newest request first (default: oldest first)")
	cmd.AddCommand(newApprovalsShowCommand(a), newApprovalsWatchCommand(a), newApprovalsRequestCommand(a))
	return cmd
}

func newApprovalsShowCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one approval request",
		Long: `Show prints one request: what, why, the requesting agent, risk and tier,
the payload and its SHA-256, the deadline and its default, and once decided
the outcome, who decided, the reason and any instructions. -o json prints
the request as the API returns it, time_left included.

Here and in approve, reject, modify and watch, a unique prefix of the id
will do; a prefix that several ids start with is refused with those ids
listed.`,
		Example: `  factory approvals show 0193a2b4-...
  factory approvals show 0193a2b4 -o json | jq .state`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withApprovals(cmd, func(ctx context.Context, c factoryv1.ApprovalServiceClient) error {
				id, err := resolveApprovalID(ctx, c, args[0])
				if err != nil {
					return err
				}
				resp, err := c.GetApproval(ctx, &factoryv1.GetApprovalRequest{ApprovalId: id})
				if err != nil {
					return err
				}
				return a.printApproval(resp.GetApproval())
			})
		},
	}
}

func newApprovalsWatchCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "watch [ID]",
		Short: "Wait for one request's decision, or print approval events as they happen",
		Long: `With an id, watch prints the request as it is, then its decision the
moment an operator makes it (or the default applied at its deadline), and
exits 0 only when the action may go ahead: APPROVED (by an operator, or by
policy at once for Tier 0-1) or MODIFIED (follow the instructions). It
exits 3 for anything else: REJECTED, or EXPIRED whatever default was
applied, because an expiry means nobody decided and is never read as an
approval. An agent waits this way instead of polling.

Without an id, watch prints every approval card (requests, reminders,
decisions, expiries) until interrupted.`,
		Example: `  factory approvals watch 0193a2b4-... && ./deploy.sh
  factory approvals watch -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return a.watchApprovalEvents(cmd)
			}
			var final *factoryv1.Approval
			err := a.withApprovals(cmd, func(ctx context.Context, c factoryv1.ApprovalServiceClient) error {
				id, err := resolveApprovalID(ctx, c, args[0])
				if err != nil {
					return err
				}
				final, err = a.waitApproval(ctx, c, id)
				return err
			})
			return finalExit(final, err)
		},
	}
}

// waitApproval prints request id as it is and then its decision, as the
// WaitApproval stream sends them, and returns its final state. A stream
// that ends without one is an error: no decision was heard, so the action
// may not go ahead.
func (a *app) waitApproval(ctx context.Context, c factoryv1.ApprovalServiceClient, id string) (*factoryv1.Approval, error) {
	stream, err := c.WaitApproval(ctx, &factoryv1.WaitApprovalRequest{ApprovalId: id})
	if err != nil {
		return nil, err
	}
	var final *factoryv1.Approval
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if final == nil {
				return nil, fmt.Errorf("approval %s: the wait ended before a decision; the action may not go ahead", id)
			}
			return final, nil
		}
		if err != nil {
			return nil, err
		}
		if a.jsonOutput() {
			err = writeProtoLine(a.stdout(), resp.GetApproval())
		} else {
			err = writeApprovalLine(a.stdout(), resp.GetApproval())
		}
		if err != nil {
			return nil, err
		}
		if resp.GetFinal() {
			final = resp.GetApproval()
		}
	}
}

// finalExit is a wait's result: err, else exit 3 when the final state does
// not let the action go ahead.
func finalExit(final *factoryv1.Approval, err error) error {
	if err != nil {
		return err
	}
	if final != nil && !granted(final) {
		return notGranted(final)
	}
	return nil
}

// watchApprovalEvents prints the approval events of the event stream.
func (a *app) watchApprovalEvents(cmd *cobra.Command) error {
	return a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
		stream, err := c.WatchEvents(ctx, &factoryv1.WatchEventsRequest{Kinds: []string{"approval"}})
		if err != nil {
			return err
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) || ctx.Err() != nil {
					return nil
				}
				return err
			}
			if a.jsonOutput() {
				err = writeProtoLine(a.stdout(), resp.GetEvent())
			} else {
				err = writeEvent(a.stdout(), resp.GetEvent())
			}
			if err != nil {
				return err
			}
		}
	})
}

func newApprovalsRequestCommand(a *app) *cobra.Command {
	var (
		req     factoryv1.RequestApprovalRequest
		risk    string
		def     string
		timeout time.Duration
		amount  string
		wait    bool
	)
	cmd := &cobra.Command{
		Use:   "request --what TEXT --agent NAME --risk low|medium|high [flags]",
		Short: "Ask for approval (as an agent), optionally waiting for the decision",
		Long: `Request asks an operator to approve an action. Policy raises the tier for
the kind and approves Tier 0-1 at once. Kinds are read in a normal form
(case, spaces, '-' and '_' do not matter) and through aliases: with the
default policy production_deploy, first_customer_message
(customer_message), dns_change (dns), domain_change (domain),
certificate_change (certificate), public_post and any kind the policy does
not know (or none) are at least Tier 2; so is any request with --amount
(or an amount_micros in the payload) over $20, and a spend that does not
say how much. Known harmless kinds (research, read, analysis, summary,
draft, build, test, code_review; staging_deploy and internal_message at
Tier 1) keep the declared tier.

A request that waits for an operator fails closed: at its deadline it is
denied (--default approve is refused for it), and its --timeout must be at
least the control plane's minimum (default 5m). With --wait it then waits
like "factory approvals watch ID" and exits 3 unless an operator (or
policy) approved or modified it.`,
		Example: `  factory approvals request --agent deployer --what "Deploy api 1.4.2" --risk high \
      --kind production_deploy --payload '{"version":"1.4.2"}' --timeout 30m --wait
  factory approvals request --agent buyer --what "GPU hours" --risk medium --tier 1 \
      --kind spend --amount 25.00 --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch strings.ToLower(risk) {
			case "low":
				req.Risk = factoryv1.ApprovalRisk_APPROVAL_RISK_LOW
			case "medium":
				req.Risk = factoryv1.ApprovalRisk_APPROVAL_RISK_MEDIUM
			case "high":
				req.Risk = factoryv1.ApprovalRisk_APPROVAL_RISK_HIGH
			default:
				return usageErrorf("--risk %q: want low, medium or high", risk)
			}
			switch strings.ToLower(def) {
			case "deny", "reject", "":
			case "approve":
				req.DefaultOnTimeout = factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE
			default:
				return usageErrorf("--default %q: want deny or approve", def)
			}
			if req.PayloadJson != "" && !json.Valid([]byte(req.PayloadJson)) {
				return usageErrorf("--payload is not valid JSON")
			}
			if timeout > 0 {
				req.Timeout = durationpb.New(timeout)
			}
			if amount != "" {
				micros, err := parseDollars(amount)
				if err != nil {
					return usageErrorf("--amount: %v", err)
				}
				req.AmountMicros = micros
			}
			if needsLookup(req.TaskId) {
				// A shortened --task costs a lookup on a connection of its
				// own; a whole id (what scripts pass) goes as it is.
				if err := a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) (err error) {
					req.TaskId, err = resolveTaskID(ctx, q, req.TaskId)
					return err
				}); err != nil {
					return fmt.Errorf("--task: %w", err)
				}
			}
			var final *factoryv1.Approval
			err := a.withApprovals(cmd, func(ctx context.Context, c factoryv1.ApprovalServiceClient) error {
				resp, err := c.RequestApproval(ctx, &req)
				if err != nil {
					return err
				}
				got := resp.GetApproval()
				if !wait {
					return a.printApproval(got)
				}
				final, err = a.waitApproval(ctx, c, got.GetId())
				return err
			})
			return finalExit(final, err)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.What, "what", "", "what the agent wants to do, one line (required)")
	f.StringVar(&req.Why, "why", "", "why")
	f.StringVar(&req.Agent, "agent", envOr("FACTORY_AGENT", ""), "the requesting agent (env FACTORY_AGENT)")
	f.StringVar(&risk, "risk", "", "low, medium or high (required)")
	f.Int32Var(&req.Tier, "tier", 2, "declared tier 0-3; policy may raise it")
	f.StringVar(&req.Kind, "kind", "", "kind of action, such as production_deploy, dns_change, spend or research (unknown or none: at least Tier 2)")
	f.StringVar(&req.PayloadJson, "payload", "", "the action's details, as JSON")
	f.DurationVar(&timeout, "timeout", 0, "time until the default applies (server default 1h; at least the server's minimum, 5m by default, for Tier 2 and up)")
	f.StringVar(&def, "default", "deny", "applied at the deadline: deny, or approve only for a request policy approves at once anyway")
	f.StringVar(&amount, "amount", "", "what the action spends, in dollars (25 or 12.50); over $20 makes it Tier 2")
	f.StringVar(&req.TaskId, "task", "", "the task the action belongs to (id or unique id prefix)")
	f.BoolVar(&wait, "wait", false, "wait for the decision and exit 3 unless it lets the action go ahead")
	_ = cmd.MarkFlagRequired("what")
	_ = cmd.MarkFlagRequired("risk")
	return cmd
}

// newDecideCommand builds approve, reject and modify.
func newDecideCommand(a *app, verb string) *cobra.Command {
	var reason, instructions string
	cmd := &cobra.Command{
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &factoryv1.DecideRequest{ApprovalId: args[0], Reason: reason, Instructions: instructions}
			switch verb {
			case "approve":
				req.Decision = factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE
			case "reject":
				req.Decision = factoryv1.ApprovalDecision_APPROVAL_DECISION_REJECT
			default:
				req.Decision = factoryv1.ApprovalDecision_APPROVAL_DECISION_MODIFY
			}
			return a.withApprovals(cmd, func(ctx context.Context, c factoryv1.ApprovalServiceClient) error {
				id, err := resolveApprovalID(ctx, c, req.ApprovalId)
				if err != nil {
					return err
				}
				req.ApprovalId = id
				resp, err := c.Decide(ctx, req)
				if err != nil {
					return err
				}
				return a.printApproval(resp.GetApproval())
			})
		},
	}
	f := cmd.Flags()
	cmd.Long = `Approve, reject and modify decide a PENDING approval request. Only an
operator decides, and never on a request made under the operator's own
name. A decision is final: a second one fails with FAILED_PRECONDITION.
Every decision is in the audit log (factory audit ls).

A request gating a task moves the task at once: approve and modify make it
READY (or leave it in BACKLOG until its dependencies are DONE), modify puts
the instructions in the task's note, reject sends it to FAILED with the
reason. The agent waiting on the request hears the decision immediately.`
	switch verb {
	case "approve":
		cmd.Use, cmd.Short = "approve ID [--note TEXT]", "Approve a pending request (operators; never your own)"
		cmd.Example = `  factory approve 0193a2b4-... --note "go ahead after 18:00"`
		f.StringVar(&reason, "note", "", "a note kept with the decision")
	case "reject":
		cmd.Use, cmd.Short = "reject ID --reason TEXT", "Reject a pending request; a gated task goes to FAILED with the reason"
		cmd.Example = `  factory reject 0193a2b4-... --reason "not during the freeze"`
		f.StringVar(&reason, "reason", "", "why (required)")
		_ = cmd.MarkFlagRequired("reason")
	default:
		cmd.Use, cmd.Short = "modify ID --instructions TEXT --reason TEXT", "Approve with changes the agent must follow"
		cmd.Example = `  factory modify 0193a2b4-... --instructions "canary only" --reason "too broad"`
		f.StringVar(&instructions, "instructions", "", "what the agent must do differently (required)")
		f.StringVar(&reason, "reason", "", "why (required)")
		_ = cmd.MarkFlagRequired("instructions")
		_ = cmd.MarkFlagRequired("reason")
	}
	return cmd
}

func newApproveCommand(a *app) *cobra.Command { return newDecideCommand(a, "approve") }
func newRejectCommand(a *app) *cobra.Command  { return newDecideCommand(a, "reject") }
func newModifyCommand(a *app) *cobra.Command  { return newDecideCommand(a, "modify") }

func (a *app) printApproval(ap *factoryv1.Approval) error {
	if a.jsonOutput() {
		return writeProto(a.stdout(), ap)
	}
	return writeApprovalDetail(a.stdout(), ap)
}

func parseApprovalState(s string) (factoryv1.ApprovalState, error) {
	n := strings.ToUpper(strings.TrimSpace(s))
	n = strings.TrimPrefix(n, "APPROVAL_STATE_")
	v, ok := factoryv1.ApprovalState_value["APPROVAL_STATE_"+n]
	if !ok || v == 0 {
		return 0, fmt.Errorf("unknown state %q (want pending, approved, rejected, modified or expired)", s)
	}
	return factoryv1.ApprovalState(v), nil
}

func approvalStateName(s factoryv1.ApprovalState) string {
	return strings.TrimPrefix(s.String(), "APPROVAL_STATE_")
}

func riskName(r factoryv1.ApprovalRisk) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "APPROVAL_RISK_"))
}

func outcomeName(d factoryv1.ApprovalDecision) string {
	return strings.TrimPrefix(d.String(), "APPROVAL_DECISION_")
}

// ExitNotGranted is the exit status of a wait whose request ended
// rejected or expired: the action may not go ahead.
const ExitNotGranted = 3

func notGranted(ap *factoryv1.Approval) error {
	return &ExitError{Code: ExitNotGranted, Err: fmt.Errorf("approval %s is %s: the action may not go ahead", ap.GetId(), strings.ToLower(approvalStateName(ap.GetState())))}
}

// granted reports whether the action may go ahead: an operator (or policy,
// at once) approved or modified the request. An expiry never grants, even
// one whose applied default is APPROVE: nobody decided, and a script that
// runs "factory approvals watch ID && ./deploy.sh" must not deploy.
func granted(ap *factoryv1.Approval) bool {
	if ap.GetExpired() {
		return false
	}
	switch ap.GetState() {
	case factoryv1.ApprovalState_APPROVAL_STATE_APPROVED:
		return ap.GetAppliedOutcome() == factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE
	case factoryv1.ApprovalState_APPROVAL_STATE_MODIFIED:
		return ap.GetAppliedOutcome() == factoryv1.ApprovalDecision_APPROVAL_DECISION_MODIFY
	}
	return false
}

// statusText is PENDING with the time left, or the outcome and who.
func statusText(ap *factoryv1.Approval) string {
	switch {
	case ap.GetState() == factoryv1.ApprovalState_APPROVAL_STATE_PENDING && ap.GetTimeLeft().AsDuration() <= 0:
		return "due: the default applies now"
	case ap.GetState() == factoryv1.ApprovalState_APPROVAL_STATE_PENDING:
		return humanSpan(ap.GetTimeLeft()) + " left"
	case ap.GetExpired():
		return "expired: " + strings.ToLower(outcomeName(ap.GetAppliedOutcome())) + " applied"
	default:
		return "by " + ap.GetDecidedBy()
	}
}

func writeApprovalTable(w io.Writer, list []*factoryv1.Approval) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "no approval requests")
		return err
	}
	t := newTable(w)
	fmt.Fprintln(t, "ID\tSTATE\tTIER\tRISK\tAGENT\tWHAT\tSTATUS")
	for _, ap := range list {
		fmt.Fprintf(t, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", ap.GetId(), approvalStateName(ap.GetState()), ap.GetTier(),
			riskName(ap.GetRisk()), ap.GetAgent(), truncate(ap.GetWhat(), 60), statusText(ap))
	}
	return t.Flush()
}

func writeApprovalLine(w io.Writer, ap *factoryv1.Approval) error {
	_, err := fmt.Fprintf(w, "%s %s %s\n", ap.GetId(), approvalStateName(ap.GetState()), statusText(ap))
	return err
}

func writeApprovalDetail(w io.Writer, ap *factoryv1.Approval) error {
	t := newTable(w)
	row := func(k, v string) {
		if v != "" {
			// One line per field: a newline in an agent's text would
			// forge one.
			fmt.Fprintf(t, "%s:\t%s\n", k, escapeTerminal(v))
		}
	}
	row("ID", ap.GetId())
	row("State", approvalStateName(ap.GetState()))
	row("Status", statusText(ap))
	row("What", ap.GetWhat())
	row("Why", ap.GetWhy())
	row("Agent", ap.GetAgent())
	row("Risk", riskName(ap.GetRisk()))
	row("Tier", fmt.Sprint(ap.GetTier()))
	row("Kind", ap.GetKind())
	row("Task", ap.GetTaskId())
	row("Payload", truncate(ap.GetPayloadJson(), 200))
	row("Payload SHA-256", ap.GetPayloadSha256())
	if d := ap.GetDeadline(); d != nil {
		row("Deadline", d.AsTime().UTC().Format(time.RFC3339))
	}
	def := "deny"
	if ap.GetDefaultOnTimeout() == factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE {
		def = "approve"
	}
	row("At the deadline", def)
	if ap.GetAutoApproved() {
		row("Auto-approved", "yes (policy)")
	}
	if ap.GetState() != factoryv1.ApprovalState_APPROVAL_STATE_PENDING {
		row("Outcome", outcomeName(ap.GetAppliedOutcome()))
		row("Decided by", ap.GetDecidedBy())
		if d := ap.GetDecidedAt(); d != nil {
			row("Decided at", d.AsTime().UTC().Format(time.RFC3339))
		}
	}
	row("Reason", ap.GetReason())
	row("Instructions", ap.GetInstructions())
	return t.Flush()
}
