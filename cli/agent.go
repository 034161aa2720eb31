package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// agentFlags are the flags every agent verb shares.
type agentFlags struct {
	agent     string
	stateFile string
}

func (af *agentFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&af.agent, "agent", envOr("FACTORY_AGENT", ""), "the agent's name (env FACTORY_AGENT; required)")
	f.StringVar(&af.stateFile, "state-file", envOr("FACTORY_STATE_FILE", defaultStateFile()), "where held leases are kept (env FACTORY_STATE_FILE)")
}

func (af *agentFlags) check() error {
	if strings.TrimSpace(af.agent) == "" {
		return usageErrorf("--agent (or FACTORY_AGENT) is required")
	}
	return nil
}

func (af *agentFlags) store() *leaseStore { return &leaseStore{path: af.stateFile} }

// completeHeldIDs offers the task ids the agent holds, from the state file.
func (af *agentFlags) completeHeldIDs(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 || af.agent == "" {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	f, err := af.store().load()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return f.heldIDs(af.agent), cobra.ShellCompDirectiveNoFileComp
}

// lease is the task and fencing token an agent verb acts on.
type lease struct {
	taskID string
	token  int64
}

// severalLeasesError is resolveLease's refusal when more than one of the
// agent's leases in the file could be meant. Some may be leases the server
// no longer holds: leaseFor asks before it refuses.
type severalLeasesError struct{ msg string }

func (e *severalLeasesError) Error() string { return e.msg }

// resolveLease finds the lease to act on in the state file: the one named
// (by its id or a prefix of it that only one held id starts with), or the
// agent's only one. An explicit --fencing-token bypasses the state file
// for agents that keep their own.
func (af *agentFlags) resolveLease(args []string, token int64) (lease, error) {
	id := ""
	if len(args) > 0 {
		id = args[0]
	}
	if token > 0 {
		if id == "" {
			return lease{}, usageErrorf("--fencing-token needs the task ID")
		}
		return lease{taskID: id, token: token}, nil
	}
	f, err := af.store().load()
	if err != nil {
		return lease{}, err
	}
	held := f.held(af.agent)
	if id != "" {
		if tok, ok := held[id]; ok {
			return lease{taskID: id, token: tok}, nil
		}
		var matches []string
		for _, h := range f.heldIDs(af.agent) {
			if strings.HasPrefix(h, id) {
				matches = append(matches, h)
			}
		}
		switch len(matches) {
		case 0:
			return lease{}, fmt.Errorf("agent %s holds no lease on %s in %s (held: %s); pass --fencing-token if the lease was claimed elsewhere",
				af.agent, id, af.stateFile, idsOrNone(f.heldIDs(af.agent)))
		case 1:
			return lease{taskID: matches[0], token: held[matches[0]]}, nil
		default:
			return lease{}, &severalLeasesError{fmt.Sprintf("agent %s holds %d leases whose id starts with %s; give more of the id: %s",
				af.agent, len(matches), id, strings.Join(matches, ", "))}
		}
	}
	switch ids := f.heldIDs(af.agent); len(ids) {
	case 0:
		return lease{}, fmt.Errorf("agent %s holds no leases in %s; claim a task first", af.agent, af.stateFile)
	case 1:
		return lease{taskID: ids[0], token: held[ids[0]]}, nil
	default:
		return lease{}, &severalLeasesError{fmt.Sprintf("agent %s holds %d leases; name the task: %s", af.agent, len(ids), strings.Join(ids, ", "))}
	}
}

// leaseFor is resolveLease checked with the server. Where the file offers
// several leases, the ones the server no longer holds for the agent (a
// rescue after the lease ran out, a move by an operator) are forgotten
// first, so that only live leases are counted or listed; the single-lease
// path costs no extra call, as the call on the lease says itself when it
// is stale. With --fencing-token a shortened id is looked up.
func (af *agentFlags) leaseFor(ctx context.Context, q factoryv1.QueueServiceClient, args []string, token int64) (lease, error) {
	l, err := af.resolveLease(args, token)
	var several *severalLeasesError
	switch {
	case err == nil && token > 0:
		l.taskID, err = resolveTaskID(ctx, q, l.taskID)
		return l, err
	case errors.As(err, &several):
		if err := af.store().forgetLost(ctx, q, af.agent); err != nil {
			return lease{}, err
		}
		return af.resolveLease(args, token)
	}
	return l, err
}

func idsOrNone(ids []string) string {
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

// settle updates the state file after a call on a lease: finished leases
// are forgotten, and so is a lease the server says is no longer ours.
func (af *agentFlags) settle(l lease, callErr error, finished bool) error {
	stale := isCode(callErr, codes.FailedPrecondition)
	if callErr != nil && !stale {
		return callErr
	}
	if callErr == nil && !finished {
		return nil
	}
	if err := af.store().update(func(f *leaseFile) error {
		if tok, ok := f.held(af.agent)[l.taskID]; ok && tok == l.token {
			f.drop(af.agent, l.taskID)
		}
		return nil
	}); err != nil {
		return errors.Join(callErr, err)
	}
	if stale {
		return fmt.Errorf("lease on %s (token %d) is no longer held, forgotten: %w", l.taskID, l.token, callErr)
	}
	return nil
}

func newTaskClaimCommand(a *app) *cobra.Command {
	var (
		af     agentFlags
		roles  []string
		wait   time.Duration
		max    int32
		leaseD time.Duration
		quiet  bool
	)
	cmd := &cobra.Command{
		Use:   "claim --agent A --role R [--role R2] [--wait 30s] [--max N] [--lease 5m]",
		Short: "Claim READY work as an agent",
		Long: `Claim hands the agent the highest-priority READY tasks (oldest first
within a priority) whose role is one of --role (or empty) and whose
assignee is the agent (or empty). Each claimed task moves to IN_PROGRESS
under a lease with a fresh fencing token, and its attempt count goes up.

The tokens are written to the state file, so renew, done and fail need
only the task id, or nothing at all while the agent holds one lease.
Agents sharing a machine can share the file: updates are locked and
atomic.

--wait holds the call open on an empty queue until work arrives (at most
60s); when the wait ends with nothing, nothing is printed (-o json: []) and
the exit code is still 0. Renew before --lease runs out, or the task goes
back to READY for another agent and your token goes stale.`,
		Example: `  factory task claim --agent builder-1 --role builder --wait 30s
  export FACTORY_AGENT=researcher-2
  id=$(factory task claim --role researcher --wait 60s --quiet)
  factory task claim --role tester --max 5 --lease 15m -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := af.check(); err != nil {
				return err
			}
			req := &factoryv1.ClaimTaskRequest{Agent: af.agent, Roles: roles, MaxTasks: max}
			if wait > 0 {
				req.Wait = durationpb.New(wait)
			}
			if leaseD > 0 {
				req.LeaseDuration = durationpb.New(leaseD)
			}
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				ctx, cancel := context.WithTimeout(ctx, a.timeout+wait)
				defer cancel()
				resp, err := q.ClaimTask(ctx, req)
				if err != nil {
					return err
				}
				tasks := resp.GetTasks()
				saveErr := af.store().update(func(f *leaseFile) error {
					for _, t := range tasks {
						f.put(af.agent, t.GetId(), t.GetLease().GetToken())
					}
					return nil
				})
				// Print even when saving failed: the tokens on screen are the
				// agent's only way to finish the work it now holds.
				if err := a.printClaimed(tasks, quiet); err != nil {
					return err
				}
				if saveErr != nil {
					return fmt.Errorf("claimed %d task(s) but could not record the leases; use --fencing-token with the tokens shown: %w", len(tasks), saveErr)
				}
				return nil
			})
		},
	}
	af.register(cmd)
	f := cmd.Flags()
	f.StringSliceVar(&roles, "role", nil, "a role the agent can take (repeatable)")
	f.DurationVar(&wait, "wait", 0, "wait up to this long for work on an empty queue (at most 60s)")
	f.Int32Var(&max, "max", 1, "claim up to this many tasks (at most 100)")
	f.DurationVar(&leaseD, "lease", 0, "lease length (server default 5m; 1s to 1h)")
	f.BoolVarP(&quiet, "quiet", "q", false, "print only the claimed ids, one per line")
	return cmd
}

func (a *app) printClaimed(tasks []*factoryv1.Task, quiet bool) error {
	if a.jsonOutput() {
		return writeProtoList(a.stdout(), tasks)
	}
	if quiet {
		for _, t := range tasks {
			fmt.Fprintln(a.stdout(), t.GetId())
		}
		return nil
	}
	if len(tasks) == 0 {
		_, err := fmt.Fprintln(a.stderr(), "no task claimed")
		return err
	}
	now := time.Now()
	tw := newTable(a.stdout())
	fmt.Fprintln(tw, "ID\tTOKEN\tEXPIRES\tPRI\tATTEMPT\tKIND\tTITLE")
	for _, t := range tasks {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\n", t.GetId(), t.GetLease().GetToken(),
			humanAge(t.GetLease().GetExpiresAt(), now), t.GetPriority(), attemptText(t), orDash(t.GetKind()), truncate(t.GetTitle(), 60))
	}
	return tw.Flush()
}

func newTaskRenewCommand(a *app) *cobra.Command {
	var (
		af       agentFlags
		progress string
		leaseD   time.Duration
		token    int64
	)
	cmd := &cobra.Command{
		Use:   "renew [ID] --agent A [--progress TEXT]",
		Short: "Extend a held lease and report progress",
		Long: `Renew extends the agent's lease on a task (default 5m from now) and
records a progress note on it. ID may be left out while the agent holds
exactly one lease, or shortened to a prefix only one held id starts with.
Leases the server no longer holds for the agent are forgotten before the
held ones are counted.

If the lease already expired or the task was taken away (killed,
requeued, re-claimed), the server answers FAILED_PRECONDITION: stop
working on it. The stale lease is dropped from the state file.`,
		Example: `  factory task renew --agent builder-1 --progress "tests passing, writing docs"
  factory task renew 0193a2b4-... --agent builder-1 --lease 15m`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: af.completeHeldIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := af.check(); err != nil {
				return err
			}
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				l, err := af.leaseFor(ctx, q, args, token)
				if err != nil {
					return err
				}
				req := &factoryv1.RenewLeaseRequest{TaskId: l.taskID, Agent: af.agent, FencingToken: l.token, Progress: progress}
				if leaseD > 0 {
					req.LeaseDuration = durationpb.New(leaseD)
				}
				resp, err := q.RenewLease(ctx, req)
				if err := af.settle(l, err, false); err != nil {
					return err
				}
				t := resp.GetTask()
				if a.jsonOutput() {
					return writeProto(a.stdout(), t)
				}
				_, err = fmt.Fprintf(a.stdout(), "%s renewed: token %d, lease expires %s\n",
					t.GetId(), t.GetLease().GetToken(), humanAge(t.GetLease().GetExpiresAt(), time.Now()))
				return err
			})
		},
	}
	af.register(cmd)
	cmd.Flags().StringVar(&progress, "progress", "", "progress note, kept on the task")
	cmd.Flags().DurationVar(&leaseD, "lease", 0, "new lease length from now (server default 5m)")
	cmd.Flags().Int64Var(&token, "fencing-token", 0, "fencing token, instead of the one in the state file")
	return cmd
}

func newTaskDoneCommand(a *app) *cobra.Command {
	var (
		af     agentFlags
		review bool
		note   string
		result string
		token  int64
	)
	cmd := &cobra.Command{
		Use:   "done [ID] --agent A [--review] [--note TEXT] [--result JSON|@FILE]",
		Short: "Finish a held task",
		Long: `Done completes a task the agent holds: straight to DONE, or with --review
to REVIEW for a human check (an operator then approves it with
"task move ID --to done" or sends it back with "--to ready").

DONE releases the tasks that were waiting on this one: BACKLOG tasks
whose dependencies are now all DONE become READY. The lease is dropped
from the state file. ID may be left out while the agent holds one lease,
or shortened to a prefix only one held id starts with. Leases the server
no longer holds for the agent (rescued after they ran out, moved by an
operator) are forgotten before the held ones are counted.

--result keeps a JSON result (at most 256 KiB) on the task: the tasks
that depend on it read it when they are claimed (a pipeline's next stage).`,
		Example: `  factory task done --agent builder-1 --note "merged as #412"
  factory task done --agent atlas-1 --result '{"plan": ["api", "db"]}'

  factory task done 0193a2b4-... --agent builder-1 --review`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: af.completeHeldIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := af.check(); err != nil {
				return err
			}
			resultJSON, err := resultFlag(result)
			if err != nil {
				return err
			}
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				l, err := af.leaseFor(ctx, q, args, token)
				if err != nil {
					return err
				}
				resp, err := q.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{
					TaskId: l.taskID, Agent: af.agent, FencingToken: l.token, Review: review, Note: note, ResultJson: resultJSON,
				})
				if err := af.settle(l, err, true); err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp.GetTask())
				}
				_, err = fmt.Fprintf(a.stdout(), "%s → %s\n", resp.GetTask().GetId(), stateLabel(resp.GetTask().GetState()))
				return err
			})
		},
	}
	af.register(cmd)
	cmd.Flags().BoolVar(&review, "review", false, "send to REVIEW for a human check instead of DONE")
	cmd.Flags().StringVar(&note, "note", "", "closing note, kept on the task")
	cmd.Flags().StringVar(&result, "result", "", "the task's result as JSON, or @FILE to read it from a file; handed to the tasks that depend on it")
	cmd.Flags().Int64Var(&token, "fencing-token", 0, "fencing token, instead of the one in the state file")
	return cmd
}

func newTaskFailCommand(a *app) *cobra.Command {
	var (
		af        agentFlags
		errText   string
		permanent bool
		token     int64
	)
	cmd := &cobra.Command{
		Use:   "fail [ID] --agent A --error TEXT [--permanent]",
		Short: "Report a held task as failed",
		Long: `Fail reports that the agent could not do a task. A retryable failure goes
back to READY after a backoff while attempts remain, then to FAILED (the
dead letter); --permanent sends it to FAILED at once (use it when a retry
cannot help: bad input, missing permission). The error text is kept as the
task's last error. The lease is dropped from the state file. ID may be
left out while the agent holds one lease, or shortened to a prefix only
one held id starts with.`,
		Example: `  factory task fail --agent builder-1 --error "rate limited by provider"
  factory task fail 0193a2b4-... --agent builder-1 --error "payload has no repo" --permanent`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: af.completeHeldIDs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := af.check(); err != nil {
				return err
			}
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				l, err := af.leaseFor(ctx, q, args, token)
				if err != nil {
					return err
				}
				resp, err := q.FailTask(ctx, &factoryv1.FailTaskRequest{
					TaskId: l.taskID, Agent: af.agent, FencingToken: l.token, Error: errText, Permanent: permanent,
				})
				if err := af.settle(l, err, true); err != nil {
					return err
				}
				t := resp.GetTask()
				if a.jsonOutput() {
					return writeProto(a.stdout(), t)
				}
				line := fmt.Sprintf("%s → %s (attempt %s)", t.GetId(), stateLabel(t.GetState()), attemptText(t))
				if ra := t.GetRunAfter(); t.GetState() == factoryv1.TaskState_TASK_STATE_READY && ra != nil && ra.AsTime().After(time.Now()) {
					line += ", retry " + humanAge(ra, time.Now())
				}
				_, err = fmt.Fprintln(a.stdout(), line)
				return err
			})
		},
	}
	af.register(cmd)
	cmd.Flags().StringVar(&errText, "error", "", "what went wrong (required)")
	cmd.Flags().BoolVar(&permanent, "permanent", false, "no retry: straight to FAILED")
	cmd.Flags().Int64Var(&token, "fencing-token", 0, "fencing token, instead of the one in the state file")
	_ = cmd.MarkFlagRequired("error")
	return cmd
}
