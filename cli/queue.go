package cli

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func newQueueCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "Steer the whole queue: stats, pause, resume, rescue, export, import",
		Long: `Queue commands act on the queue as a whole: its shape (stats), an
emergency brake (pause and resume), rescuing work from agents that went
silent (requeue-stuck), and moving the queue to and from the runbook's
folder layout (export and import).`,
		Example: `  factory queue stats
  factory queue pause --reason "provider outage"
  factory queue requeue-stuck --older-than 2h --dry-run`,
	}
	cmd.AddCommand(
		newQueueStatsCommand(a),
		newQueuePauseCommand(a),
		newQueueResumeCommand(a),
		newQueueRequeueStuckCommand(a),
		newQueueExportCommand(a),
		newQueueImportCommand(a),
	)
	return cmd
}

func newQueueStatsCommand(a *app) *cobra.Command {
	var wf *watchFlags
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show the queue's shape",
		Long: `Stats shows how many tasks are in each state, whether the queue is
paused (and why), how long the oldest READY task has waited to be claimed,
how long the oldest IN_PROGRESS claim has run, and how many unfinished
tasks are on a retry (attempt > 1). A growing READY age means too few
agents; a growing IN_PROGRESS age means a stuck agent (see requeue-stuck).
With --watch the stats are shown again every --interval.`,
		Example: `  factory queue stats
  factory queue stats --watch
  factory queue stats -o json | jq '.counts[] | select(.state=="TASK_STATE_READY").count'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				return a.view(ctx, cmd, wf, paintStats, func(ctx context.Context, w io.Writer) error {
					resp, err := q.GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{})
					if err != nil {
						return err
					}
					if a.jsonOutput() {
						return writeProto(w, resp)
					}
					return writeStatsTable(w, resp)
				})
			})
		},
	}
	wf = addWatchFlags(cmd, defaultWatchInterval)
	return cmd
}

// statsRow is a row of the stats table: a state and its count.
var statsRow = regexp.MustCompile(`(?m)^([A-Z_]+)( +)([0-9]+)$`)

// paintStats colours the states that hold tasks (a FAILED 0 is no
// news) and the queue's running or PAUSED.
func paintStats(text string) string {
	text = statsRow.ReplaceAllStringFunc(text, func(row string) string {
		m := statsRow.FindStringSubmatch(row)
		if m[3] == "0" {
			return row
		}
		return stateColour(m[1]).paint(m[1]) + m[2] + m[3]
	})
	return paintStatus(text)
}

// countOf returns the count for one state (0 when missing).
func countOf(s *factoryv1.GetQueueStatsResponse, state factoryv1.TaskState) int64 {
	for _, c := range s.GetCounts() {
		if c.GetState() == state {
			return c.GetCount()
		}
	}
	return 0
}

func writeStatsTable(w io.Writer, s *factoryv1.GetQueueStatsResponse) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "STATE\tTASKS")
	var total int64
	for _, st := range allStates {
		n := countOf(s, st)
		total += n
		fmt.Fprintf(tw, "%s\t%d\n", stateLabel(st), n)
	}
	fmt.Fprintf(tw, "total\t%d\n", total)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintf(tw, "Queue:\t%s\n", pausedText(s))
	fmt.Fprintf(tw, "Oldest READY:\t%s\n", humanSpan(s.GetOldestReadyAge()))
	fmt.Fprintf(tw, "Oldest IN_PROGRESS:\t%s\n", humanSpan(s.GetOldestInProgressAge()))
	fmt.Fprintf(tw, "Retrying:\t%d\n", s.GetRetrying())
	for _, p := range s.GetPauses() {
		fmt.Fprintf(tw, "Pause %s:\tholds %d, %s", p.GetId(), p.GetHeld(), escapeTerminal(formatFilter(p.GetFilter())))
		if r := p.GetReason(); r != "" {
			fmt.Fprintf(tw, " (%s)", escapeTerminal(r))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func pausedText(s *factoryv1.GetQueueStatsResponse) string {
	if !s.GetPaused() {
		return "running"
	}
	if r := s.GetPauseReason(); r != "" {
		return "PAUSED (" + escapeTerminal(r) + ")"
	}
	return "PAUSED"
}

func newStatusCommand(a *app) *cobra.Command {
	var wf *watchFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "One-screen summary of the factory",
		Long: `Status is the first command to run when something looks wrong: one
screen with the queue (whether it is paused, tasks per state, the oldest
READY and IN_PROGRESS ages, retries), today's spend against the total
target, the emergency stop, approvals pending, agents online and offline,
firing alerts, maintenance mode and the last good backup (with a
warning when it is older than twice the backup interval). The sections
are fetched in parallel; one the control plane does not serve (or this
caller may not read) shows n/a. With -o json each section is a field
(null when n/a).

With --watch the screen is redrawn every --interval on a terminal, under a
header with the time; into a pipe each snapshot follows the last after a
blank line (-o json: one document per line). Ctrl-C ends it. Colour is for
terminals only: NO_COLOR turns it off, FACTORY_COLOR=always|never forces
it.`,
		Example: `  factory status
  factory status --watch --interval 10s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runStatus(cmd, wf)
		},
	}
	wf = addWatchFlags(cmd, defaultWatchInterval)
	return cmd
}

func newQueuePauseCommand(a *app) *cobra.Command {
	var (
		reason string
		ff     *filterFlags
	)
	cmd := &cobra.Command{
		Use:   "pause [--filter EXPR] [--reason TEXT]",
		Short: "Pause the queue, or with --filter some of its READY work",
		Long: `Pause is the queue's brake. Every READY task moves to PAUSED, and work
that would become READY (new tasks, promoted dependents, retries) is
paused too, until "queue resume". Tasks already IN_PROGRESS carry on;
kill them separately if they must stop. The reason shows in stats.

With --filter the pause is selective: only the READY tasks the filter
selects move to PAUSED, held by a new pause whose id is printed; the rest
of the queue runs on. Tasks that become READY later are NOT held by it
(pause again, or pause the whole queue). "queue resume --pause ID" ends
that pause, "queue resume" ends every pause; either way only the tasks the
pause moved and that are still PAUSED go back to READY: tasks paused by
hand, or by another pause, stay. "queue stats" lists the active pauses.
An empty filter is refused. ` + "`task ls --filter state=ready,...`" + ` shows the tasks a
pause would take.

` + filterHelp,
		Example: `  factory queue pause --reason "frontier provider outage"
  factory queue pause --filter role=deployer --reason "prod freeze"
  factory queue pause --filter 'label:team=web,priority<=0' --reason "web low priority off"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &factoryv1.PauseQueueRequest{Reason: reason}
			if ff.set() {
				f, err := ff.required("a selective pause")
				if err != nil {
					return err
				}
				req.Filter = f
			}
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				resp, err := q.PauseQueue(ctx, req)
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				if id := resp.GetPauseId(); id != "" {
					_, err = fmt.Fprintf(a.stdout(), "pause %s: %d READY task(s) matching %s moved to PAUSED\n", id, resp.GetPaused(), formatFilter(req.GetFilter()))
					return err
				}
				_, err = fmt.Fprintf(a.stdout(), "queue paused: %d READY task(s) moved to PAUSED\n", resp.GetPaused())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why; shown in stats")
	ff = addFilterFlags(cmd)
	return cmd
}

func newQueueResumeCommand(a *app) *cobra.Command {
	var pauseID string
	cmd := &cobra.Command{
		Use:   "resume [--pause ID]",
		Short: "Resume the queue: paused work goes back to READY",
		Long: `Resume undoes "queue pause": the tasks the pause held move back to READY
and new work is READY again. Tasks an operator paused by hand with
"task move --to paused" stay paused.

Without --pause it ends the queue's pause and every selective pause
("queue pause --filter"). With --pause ID it ends only that selective
pause: the tasks it moved that are still PAUSED go back to READY (into the
queue's pause, if the whole queue is paused meanwhile); the queue's pause
and other pauses stay.`,
		Example: `  factory queue resume
  factory queue resume --pause 0193a2b4-...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				resp, err := q.ResumeQueue(ctx, &factoryv1.ResumeQueueRequest{PauseId: pauseID})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				what := "queue resumed"
				if pauseID != "" {
					what = "pause " + pauseID + " ended"
				} else if n := len(resp.GetEndedPauses()); n > 0 {
					what = fmt.Sprintf("queue resumed and %d selective pause(s) ended", n)
				}
				_, err = fmt.Fprintf(a.stdout(), "%s: %d task(s) back to READY\n", what, resp.GetResumed())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&pauseID, "pause", "", "end only this selective pause (its id, as queue pause and queue stats show it)")
	return cmd
}

func newQueueRequeueStuckCommand(a *app) *cobra.Command {
	var (
		olderThan time.Duration
		dryRun    bool
	)
	cmd := &cobra.Command{
		Use:   "requeue-stuck --older-than DURATION [--dry-run]",
		Short: "Put IN_PROGRESS tasks with no sign of life back to READY",
		Long: `Requeue-stuck rescues work from agents that went silent: every
IN_PROGRESS task not claimed or renewed for longer than --older-than goes
back to READY and its lease ends (the silent holder's token goes stale).
Leases also expire on their own; this is for leases taken far too long.

--dry-run lists what would move without moving it.`,
		Example: `  factory queue requeue-stuck --older-than 2h --dry-run
  factory queue requeue-stuck --older-than 2h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if olderThan < time.Second {
				return usageErrorf("--older-than must be at least 1s")
			}
			return a.withQueue(cmd, func(ctx context.Context, q factoryv1.QueueServiceClient) error {
				resp, err := q.RequeueStuck(ctx, &factoryv1.RequeueStuckRequest{OlderThan: durationpb.New(olderThan), DryRun: dryRun})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProtoList(a.stdout(), resp.GetTasks())
				}
				verb := "requeued"
				if dryRun {
					verb = "would requeue"
				}
				fmt.Fprintf(a.stderr(), "%s %d task(s)\n", verb, len(resp.GetTasks()))
				if len(resp.GetTasks()) == 0 {
					return nil
				}
				return writeTaskTable(a.stdout(), resp.GetTasks(), time.Now())
			})
		},
	}
	cmd.Flags().DurationVar(&olderThan, "older-than", 0, "no claim or renewal for this long (required)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only list what would move")
	_ = cmd.MarkFlagRequired("older-than")
	return cmd
}
