package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func newTaskCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "task",
		Short: "Create, inspect, move and work on tasks",
		Long: `Tasks are the factory's units of work. A task waits in BACKLOG until its
dependencies are DONE, is READY to be claimed by an agent with its role,
is IN_PROGRESS under the claiming agent's lease, and ends in REVIEW, DONE or
FAILED (the dead letter). PAUSED holds READY work while the queue is paused.

Operator verbs: create, show, ls, move, kill, requeue, prioritize, watch.
Agent verbs: claim, renew, done, fail.`,
		Example: `  factory task create --title "Index the docs" --role researcher
  factory task ls --state ready
  factory task watch --state failed`,
	}
	cmd.AddCommand(
		newTaskCreateCommand(a),
		newTaskShowCommand(a),
		newTaskListCommand(a),
		newTaskMoveCommand(a),
		newTaskKillCommand(a),
		newTaskRequeueCommand(a),
		newTaskPrioritizeCommand(a),
		newTaskWatchCommand(a),
		newTaskClaimCommand(a),
		newTaskRenewCommand(a),
		newTaskDoneCommand(a),
		newTaskFailCommand(a),
	)
	return cmd
}

// printTask prints one task: details for people, an object for scripts.
func (a *app) printTask(t *factoryv1.Task) error {
	if a.jsonOutput() {
		return writeProto(a.stdout(), t)
	}
	return writeTaskDetail(a.stdout(), t, time.Now())
}

// printTasks prints a task list: a table for people, an array for scripts.
func (a *app) printTasks(tasks []*factoryv1.Task) error {
	if a.jsonOutput() {
		return writeProtoList(a.stdout(), tasks)
	}
	return writeTaskTable(a.stdout(), tasks, time.Now())
}

// completeStates offers state names for --state and --to.
func completeStates(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return stateNames, cobra.ShellCompDirectiveNoFileComp
}

func newTaskCreateCommand(a *app) *cobra.Command {
	var (
		req         factoryv1.CreateTaskRequest
		payload     string
		payloadFile string
		labels      []string
		initial     string
		quiet       bool
	)
	cmd := &cobra.Command{
		Use:     "create --title TITLE [flags]",
		Aliases: []string{"add"},
		Short:   "Add a task to the queue",
		Long: `Create adds one task. It starts READY, or BACKLOG while any task it
depends on is not DONE, or PAUSED while the queue is paused. --state parks
it somewhere else from the start (backlog, paused, review, done or failed).

The payload is the work itself, as JSON: inline with --payload or from a
file with --payload-file (- reads standard input). Labels are key=value
pairs for filtering. --id picks the id (letters, digits, '.', '_', ':',
'-'); without it the server assigns a UUIDv7. Creating an id that exists
fails with ALREADY_EXISTS, so a retried script cannot add a task twice.

--tier names the spend tier the task's model calls use (frontier, mid,
local, infra): while that tier is at its daily cap or turned off (factory
budget set --scope tier --key K --cap $ | --off), the task waits READY and
every other task is still claimed.

--quiet prints only the new id, for scripts.`,
		Example: `  factory task create --title "Summarise RFC 9110" --role researcher --priority 10
  factory task create --title "Deploy" --role deployer --depends-on 0193a2b4-... \
      --label env=prod --payload '{"service":"api","version":"1.4.2"}'
  id=$(factory task create --title "Build" --payload-file job.json --quiet)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if payload != "" && payloadFile != "" {
				return usageErrorf("--payload and --payload-file are mutually exclusive")
			}
			if payloadFile != "" {
				b, err := readPayloadFile(cmd.InOrStdin(), payloadFile)
				if err != nil {
					return err
				}
				payload = string(b)
			}
			if payload != "" && !json.Valid([]byte(payload)) {
				return usageErrorf("payload is not valid JSON")
			}
			req.PayloadJson = payload
			var err error
			if req.Labels, err = parseLabels(labels); err != nil {
				return usageErrorf("%v", err)
			}
			if initial != "" {
				if req.InitialState, err = parseState(initial); err != nil {
					return usageErrorf("--state: %v", err)
				}
			}
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				if err := resolveTaskIDs(ctx, q, req.DependsOn); err != nil {
					return fmt.Errorf("--depends-on: %w", err)
				}
				resp, err := q.CreateTask(ctx, &req)
				if err != nil {
					return err
				}
				if quiet && !a.jsonOutput() {
					_, err := fmt.Fprintln(a.stdout(), resp.GetTask().GetId())
					return err
				}
				return a.printTask(resp.GetTask())
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Title, "title", "", "short human title (required)")
	f.StringVar(&req.Kind, "kind", "", `free-form kind, such as "research" or "deploy"`)
	f.StringVar(&req.Role, "role", "", "role an agent needs to claim it; empty means any agent")
	f.StringVar(&req.Assignee, "assignee", "", "only this agent may claim it")
	f.Int32Var(&req.Priority, "priority", 0, "-1000 to 1000; higher is claimed first")
	f.StringVar(&payload, "payload", "", "the work, as JSON text")
	f.StringVar(&payloadFile, "payload-file", "", "read the payload JSON from this file (- for standard input)")
	f.StringSliceVar(&req.DependsOn, "depends-on", nil, "id (or unique id prefix) of a task that must be DONE first (repeatable)")
	f.StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	f.Int32Var(&req.MaxAttempts, "max-attempts", 0, "claims allowed before the dead letter (server default 3)")
	f.Int32Var(&req.ApprovalTier, "approval-tier", 0, "approval tier 0-3 (2 and up wait for an operator)")
	f.StringVar(&req.Tier, "tier", "", "spend tier the task's model calls use: frontier, mid, local or infra; while that tier is capped or turned off (factory budget set --scope tier) the task is not claimed")
	f.BoolVar(&req.RequiresApproval, "requires-approval", false, "hold the task in BACKLOG until an operator approves it (factory approve)")
	f.StringVar(&initial, "state", "", "start in this state: backlog, paused, review, done or failed")
	f.StringVar(&req.TaskId, "id", "", "choose the task id instead of a server-assigned UUIDv7")
	f.BoolVarP(&quiet, "quiet", "q", false, "print only the new task's id")
	_ = cmd.MarkFlagRequired("title")
	_ = cmd.RegisterFlagCompletionFunc("tier", cobra.FixedCompletions(tierNames, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("state", cobra.FixedCompletions([]string{"backlog", "paused", "review", "done", "failed"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func readPayloadFile(stdin io.Reader, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(stdin)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("payload file: %w", err)
	}
	return b, nil
}

func newTaskShowCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one task in full",
		Long: `Show prints everything the queue knows about a task: state and since
when, attempts, the current lease (holder, fencing token, expiry),
dependencies, labels, the last error, the holder's progress note, operator
notes and the payload.

Wherever a task id is taken, a unique prefix of it will do (0193a2b4 for
0193a2b4-7c1e-...); a prefix that several ids start with is refused with
those ids listed.`,
		Example: `  factory task show 0193a2b4-7c1e-7d3f-9a4b-2f6c1e0d9b8a
  factory task show 0193a2b4
  factory task show deploy-api -o json | jq .state`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				id, err := resolveTaskID(ctx, q, args[0])
				if err != nil {
					return err
				}
				resp, err := q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: id})
				if err != nil {
					return err
				}
				return a.printTask(resp.GetTask())
			})
		},
	}
}

func newTaskListCommand(a *app) *cobra.Command {
	var (
		states []string
		labels []string
		req    factoryv1.ListTasksRequest
		all    bool
		full   bool
		ff     *filterFlags
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List tasks, filtered",
		Long: `Ls lists tasks oldest first, or with --newest-first the most recently
created first (the latest work, without paging through the history).
Filters combine: --state (repeatable or
comma-separated), --role, --kind, --assignee (tasks assigned to or held by
that agent), --label key=value (repeatable; a task must carry all of them)
and --min-attempt N (tasks claimed at least N times: retry loops).

One page of --limit tasks is shown; --all pages through everything. When
more tasks match than were shown, a hint goes to standard error.

Tasks are listed as summaries, without payload, last error, progress and
note (-o json shows each payload's size as payload_bytes), so listing
works whatever the payloads weigh; --full asks for every field. The
server ends a page early rather than send more than 3 MiB of tasks; ls
then fetches the rest of --limit from the next pages.

Columns: HOLDER is the lease holder, or →agent for an assignee; ATTEMPT is
claims so far over claims allowed; SINCE is when the task entered its state.

--filter takes the filter syntax the bulk verbs (kill, requeue, move,
prioritize) and "queue pause" take, and lists exactly the tasks they would
change; it replaces --state, --role, --kind, --assignee, --label and
--min-attempt.

` + filterHelp,
		Example: `  factory task ls
  factory task ls --state ready,in-progress --role builder
  factory task ls --kind build --min-attempt 2
  factory task ls --newest-first --limit 20
  factory task ls --state failed --all -o json | jq -r '.[].id'
  factory task ls --state ready --full -o json | jq '.[].payload_json'
  factory task ls --filter 'state=in_progress,role=builder,attempt>=3,age>1h'
  factory task ls --filter 'label:team=web,priority<=0' --filter 'state=ready|paused'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ff.set() {
				for _, name := range []string{"state", "role", "kind", "assignee", "label", "min-attempt"} {
					if cmd.Flags().Changed(name) {
						return usageErrorf("--%s and --filter: use one (--filter takes every term, e.g. --filter %s=...)", name, name)
					}
				}
				f, err := ff.filter()
				if err != nil {
					return err
				}
				req.Filter = f
			}
			var err error
			if req.States, err = parseStates(states); err != nil {
				return usageErrorf("--state: %v", err)
			}
			if req.MinAttempt < 0 {
				return usageErrorf("--min-attempt must not be negative")
			}
			if _, err := parseLabels(labels); err != nil {
				return usageErrorf("%v", err)
			}
			req.Labels = labels
			if full {
				req.View = factoryv1.TaskView_TASK_VIEW_FULL
			}
			limit := int(req.PageSize)
			if limit <= 0 {
				limit = 100
			}
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				var tasks []*factoryv1.Task
				for {
					resp, err := q.ListTasks(ctx, &req)
					if err != nil {
						return err
					}
					tasks = append(tasks, resp.GetTasks()...)
					req.PageToken = resp.GetNextPageToken()
					if req.PageToken == "" {
						break
					}
					if !all && len(tasks) < limit {
						// The page ended early at the server's byte bound:
						// the rest of --limit comes from the next pages.
						req.PageSize = int32(limit - len(tasks))
						continue
					}
					if !all {
						fmt.Fprintf(a.stderr(), "more tasks match: use --all, or a larger --limit\n")
						break
					}
				}
				return a.printTasks(tasks)
			})
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&states, "state", nil, "only tasks in this state (repeatable, comma-separated)")
	f.StringVar(&req.Role, "role", "", "only tasks needing this role")
	f.StringVar(&req.Kind, "kind", "", "only tasks of this kind")
	f.StringVar(&req.Assignee, "assignee", "", "only tasks assigned to or held by this agent")
	f.StringArrayVar(&labels, "label", nil, "only tasks with label key=value (repeatable)")
	f.Int32Var(&req.MinAttempt, "min-attempt", 0, "only tasks claimed at least this many times")
	f.Int32Var(&req.PageSize, "limit", 100, "tasks per page (at most 1000)")
	f.BoolVar(&all, "all", false, "page through every matching task")
	f.BoolVar(&full, "full", false, "every field of each task, payload included (default: summaries)")
	f.BoolVar(&req.NewestFirst, "newest-first", false, "the most recently created task first (default: oldest first)")
	ff = addFilterFlags(cmd)
	_ = cmd.RegisterFlagCompletionFunc("state", completeStates)
	return cmd
}

// moveTask runs MoveTask on the task arg names and prints the result.
func (a *app) moveTask(cmd *cobra.Command, arg string, to factoryv1.TaskState, reason string) error {
	return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
		id, err := resolveTaskID(ctx, q, arg)
		if err != nil {
			return err
		}
		resp, err := q.MoveTask(ctx, &factoryv1.MoveTaskRequest{TaskId: id, To: to, Reason: reason})
		if err != nil {
			return err
		}
		if a.jsonOutput() {
			return writeProto(a.stdout(), resp.GetTask())
		}
		_, err = fmt.Fprintf(a.stdout(), "%s → %s\n", resp.GetTask().GetId(), stateLabel(resp.GetTask().GetState()))
		return err
	})
}

func newTaskMoveCommand(a *app) *cobra.Command {
	var (
		to, reason string
		dryRun     bool
		ff         *filterFlags
	)
	cmd := &cobra.Command{
		Use:   "move (ID | --filter EXPR [--dry-run]) --to STATE --reason TEXT",
		Short: "Move a task to another state (operator)",
		Long: `Move is the operator's hand on a task. Only the transition table's moves
are allowed; an illegal one is refused with FAILED_PRECONDITION naming
the states allowed from where the task is:

  BACKLOG     → READY, PAUSED, FAILED
  READY       → BACKLOG, PAUSED, FAILED
  IN_PROGRESS → READY, FAILED          (ends the holder's lease)
  REVIEW      → READY (send back), DONE (approve), FAILED
  FAILED      → READY (requeue), BACKLOG
  PAUSED      → READY, BACKLOG, FAILED
  DONE is final.

The reason is required and kept in the task's note. kill and requeue are
shorthands for the two most common moves.` + bulkHelp,
		Example: `  factory task move 0193a2b4-... --to done --reason "reviewed, looks good"
  factory task move 0193a2b4 --to ready --reason "tests missing, see PR comment"
  factory task move --filter state=review,label:team=web --to done --reason "batch approved" --dry-run`,
		RunE: func(cmd *cobra.Command, args []string) error {
			state, err := parseState(to)
			if err != nil {
				return usageErrorf("--to: %v", err)
			}
			if ff.set() {
				return a.bulkUpdate(cmd, ff, "move", bulkMove(state, reason, dryRun))
			}
			return a.moveTask(cmd, args[0], state, reason)
		},
	}
	ff = addFilterFlags(cmd)
	cmd.Args = bulkArgs(ff, cobra.ExactArgs(1))
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "with --filter: show what would change, change nothing")
	cmd.Flags().StringVar(&to, "to", "", "target state (required)")
	cmd.Flags().StringVar(&reason, "reason", "", "why; kept in the task's note (required)")
	_ = cmd.MarkFlagRequired("to")
	_ = cmd.MarkFlagRequired("reason")
	_ = cmd.RegisterFlagCompletionFunc("to", completeStates)
	return cmd
}

func newTaskKillCommand(a *app) *cobra.Command {
	var (
		reason string
		dryRun bool
		ff     *filterFlags
	)
	cmd := &cobra.Command{
		Use:   "kill (ID | --filter EXPR [--dry-run]) --reason TEXT",
		Short: "Send tasks to FAILED, the dead letter (operator)",
		Long: `Kill moves a task to FAILED at once, from any state but DONE. A task in
progress loses its lease: the holder's next renew or done is refused with
FAILED_PRECONDITION. Requeue brings it back.` + bulkHelp,
		Example: `  factory task kill 0193a2b4-... --reason "runaway spend"
  factory task ls --filter 'state=in_progress,role=builder,attempt>=3'
  factory task kill --filter 'state=in_progress,role=builder,attempt>=3' --reason "retry loop" --dry-run
  factory task kill --filter 'state=in_progress,role=builder,attempt>=3' --reason "retry loop"`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ff.set() {
				return a.bulkUpdate(cmd, ff, "kill", bulkMove(factoryv1.TaskState_TASK_STATE_FAILED, reason, dryRun))
			}
			return a.moveTask(cmd, args[0], factoryv1.TaskState_TASK_STATE_FAILED, reason)
		},
	}
	ff = addFilterFlags(cmd)
	cmd.Args = bulkArgs(ff, cobra.ExactArgs(1))
	cmd.Flags().StringVar(&reason, "reason", "", "why; kept in the task's note (required)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "with --filter: show what would change, change nothing")
	_ = cmd.MarkFlagRequired("reason")
	return cmd
}

func newTaskRequeueCommand(a *app) *cobra.Command {
	var (
		reason string
		dryRun bool
		ff     *filterFlags
	)
	cmd := &cobra.Command{
		Use:   "requeue (ID | --filter EXPR [--dry-run]) [--reason TEXT]",
		Short: "Put tasks back to READY (operator)",
		Long: `Requeue moves a task back to READY: a FAILED task gets a fresh set of
attempts, a stuck IN_PROGRESS task loses its lease, and a REVIEW task is
sent back for another go.` + bulkHelp,
		Example: `  factory task requeue 0193a2b4-... --reason "API key rotated, retry"
  factory task requeue --filter 'state=failed,kind=build,age>2h' --reason "provider back" --dry-run`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ff.set() {
				return a.bulkUpdate(cmd, ff, "requeue", bulkMove(factoryv1.TaskState_TASK_STATE_READY, reason, dryRun))
			}
			return a.moveTask(cmd, args[0], factoryv1.TaskState_TASK_STATE_READY, reason)
		},
	}
	ff = addFilterFlags(cmd)
	cmd.Args = bulkArgs(ff, cobra.ExactArgs(1))
	cmd.Flags().StringVar(&reason, "reason", "requeued by operator", "why; kept in the task's note")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "with --filter: show what would change, change nothing")
	return cmd
}

func newTaskPrioritizeCommand(a *app) *cobra.Command {
	var (
		priority int32
		dryRun   bool
		ff       *filterFlags
	)
	cmd := &cobra.Command{
		Use:     "prioritize [flags] (ID PRIORITY | --filter EXPR --priority N [--dry-run])",
		Aliases: []string{"prioritise"},
		Short:   "Change a task's priority",
		Long: `Prioritize sets a task's priority, -1000 to 1000. Higher is claimed first;
tasks of equal priority are claimed oldest first.

Flags go before the id, so that a negative priority is read as a number.` + bulkHelp,
		Example: `  factory task prioritize 0193a2b4-... 100
  factory task prioritize -o json 0193a2b4-... -50
  factory task prioritize --filter 'state=ready,label:team=web,priority<=0' --priority 50`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ff.set() {
				if !cmd.Flags().Changed("priority") {
					return usageErrorf("--filter needs --priority N")
				}
				if priority < -1000 || priority > 1000 {
					return usageErrorf("--priority %d is outside -1000..1000", priority)
				}
				return a.bulkUpdate(cmd, ff, "prioritize", &factoryv1.BulkUpdateTasksRequest{
					Change: &factoryv1.BulkUpdateTasksRequest_Priority{Priority: priority}, DryRun: dryRun})
			}
			n, err := strconv.ParseInt(args[1], 10, 32)
			if err != nil {
				return usageErrorf("priority %q is not a whole number", args[1])
			}
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				id, err := resolveTaskID(ctx, q, args[0])
				if err != nil {
					return err
				}
				resp, err := q.SetPriority(ctx, &factoryv1.SetPriorityRequest{TaskId: id, Priority: int32(n)})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp.GetTask())
				}
				_, err = fmt.Fprintf(a.stdout(), "%s priority %d\n", resp.GetTask().GetId(), resp.GetTask().GetPriority())
				return err
			})
		},
	}
	ff = addFilterFlags(cmd)
	cmd.Args = bulkArgs(ff, cobra.ExactArgs(2))
	cmd.Flags().Int32Var(&priority, "priority", 0, "with --filter: the new priority, -1000 to 1000")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "with --filter: show what would change, change nothing")
	// Everything after the id is an argument, so "-50" is a priority.
	cmd.Flags().SetInterspersed(false)
	return cmd
}

func newTaskWatchCommand(a *app) *cobra.Command {
	var (
		states []string
		req    factoryv1.WatchTasksRequest
	)
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Stream task events until Ctrl-C",
		Long: `Watch first prints the matching tasks as they are now, then every change
as it happens: creations, state changes (with the state before) and
updates such as lease renewals and priority changes.

With -o json each event is one JSON object per line (type, task,
previous_state, time), ready for jq or a relay. --changes-only skips the
initial snapshot.`,
		Example: `  factory task watch
  factory task watch --state failed --role deployer
  factory task watch --id 0193a2b4-... -o json | jq -c '{type, state: .task.state}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if req.States, err = parseStates(states); err != nil {
				return usageErrorf("--state: %v", err)
			}
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				if err := resolveTaskIDs(ctx, q, req.TaskIds); err != nil {
					return fmt.Errorf("--id: %w", err)
				}
				stream, err := q.WatchTasks(ctx, &req)
				if err != nil {
					return err
				}
				for {
					ev, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						return nil
					}
					if err != nil {
						if ctx.Err() != nil {
							return nil // Ctrl-C is how a watch ends
						}
						return err
					}
					if err := a.printEvent(ev); err != nil {
						return err
					}
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&states, "state", nil, "only tasks in or entering this state (repeatable, comma-separated)")
	f.StringVar(&req.Role, "role", "", "only tasks needing this role")
	f.StringSliceVar(&req.TaskIds, "id", nil, "only this task, by id or unique id prefix (repeatable)")
	f.BoolVar(&req.ChangesOnly, "changes-only", false, "skip the initial snapshot")
	_ = cmd.RegisterFlagCompletionFunc("state", completeStates)
	return cmd
}

// printEvent prints one watch event as a line.
func (a *app) printEvent(ev *factoryv1.WatchTasksResponse) error {
	if a.jsonOutput() {
		return writeProtoLine(a.stdout(), ev)
	}
	if ev.GetType() == factoryv1.TaskEventType_TASK_EVENT_TYPE_SYNCED {
		_, err := fmt.Fprintln(a.stderr(), "-- watching for changes (Ctrl-C to stop) --")
		return err
	}
	when := time.Now()
	if ev.GetTime() != nil {
		when = ev.GetTime().AsTime()
	}
	t := ev.GetTask()
	state := stateLabel(t.GetState())
	if ev.GetType() == factoryv1.TaskEventType_TASK_EVENT_TYPE_STATE_CHANGED && ev.GetPreviousState() != 0 {
		state = stateLabel(ev.GetPreviousState()) + "→" + state
	}
	kind := map[factoryv1.TaskEventType]string{
		factoryv1.TaskEventType_TASK_EVENT_TYPE_SNAPSHOT:      "now",
		factoryv1.TaskEventType_TASK_EVENT_TYPE_CREATED:       "created",
		factoryv1.TaskEventType_TASK_EVENT_TYPE_STATE_CHANGED: "moved",
		factoryv1.TaskEventType_TASK_EVENT_TYPE_UPDATED:       "updated",
	}[ev.GetType()]
	if kind == "" {
		kind = ev.GetType().String()
	}
	_, err := fmt.Fprintf(a.stdout(), "%s  %-7s  %-36s  %-22s  %-12s  %s\n",
		when.Local().Format("15:04:05"), kind, t.GetId(), state, holderText(t), truncate(t.GetTitle(), 60))
	return err
}
