package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func newMaintenanceCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "maintenance",
		Short: "Put the factory into maintenance and take it out again",
		Long: `Maintenance mode (runbook §11.2) quiesces the factory for work on its
hosts or its database: READY work is paused, new claims are refused
("maintenance since T: reason"), and tasks already IN_PROGRESS may finish.
The state is stored: a control plane restarted in maintenance stays in it.`,
		Example: `  factory maintenance start --reason "disk swap on gpu-1" --wait 10m
  factory maintenance status
  factory maintenance end`,
	}
	cmd.AddCommand(newMaintenanceStartCommand(a), newMaintenanceEndCommand(a), newMaintenanceStatusCommand(a))
	return cmd
}

// maintenanceStartJSON is what `maintenance start -o json` prints.
type maintenanceStartJSON struct {
	Start        *factoryv1.StartMaintenanceResponse `json:"start"`
	StillRunning []*factoryv1.Task                   `json:"still_running"`
}

func newMaintenanceStartCommand(a *app) *cobra.Command {
	var (
		reason string
		wait   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "start --reason TEXT [--wait 5m]",
		Short: "Pause READY work, refuse claims, wait for tasks in flight",
		Long: `Start pauses READY work (unless the queue is paused already; then the end
leaves it paused), refuses new claims, and waits up to --wait for the
IN_PROGRESS tasks to finish, showing how many are left. It then lists the
tasks still running: kill or requeue them, or wait longer with "maintenance
status". Starting again while in maintenance keeps the first reason.

When --wait runs out with tasks still running, start exits 1 (a drain that
timed out did not do what it says) after listing them; maintenance stays
on. --wait 0 only starts maintenance and exits 0.`,
		Example: `  factory maintenance start --reason "PostgreSQL minor upgrade" --wait 10m`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return usageErrorf("--reason is required: it is what refused agents and status show")
			}
			if wait < 0 {
				return usageErrorf("--wait must not be negative")
			}
			return a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				start, err := c.StartMaintenance(ctx, &factoryv1.StartMaintenanceRequest{Reason: reason, Wait: durationpb.New(0)})
				if err != nil {
					return err
				}
				m := start.GetMaintenance()
				if !a.jsonOutput() {
					fmt.Fprintf(a.stdout(), "maintenance since %s: %s\n", m.GetStartedAt().AsTime().Format(time.RFC3339), m.GetReason())
					if m.GetPausedQueue() {
						fmt.Fprintf(a.stdout(), "queue paused: %d READY task(s) moved to PAUSED; claims are refused\n", start.GetPausedTasks())
					} else {
						fmt.Fprintln(a.stdout(), "the queue was paused already (it stays paused after the end); claims are refused")
					}
				}
				running, err := a.drainWait(ctx, c, wait)
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					err = writeJSON(a.stdout(), maintenanceStartJSON{Start: start, StillRunning: running})
				} else if len(running) == 0 {
					_, err = fmt.Fprintln(a.stdout(), "no task is IN_PROGRESS: the factory is quiet")
				} else {
					fmt.Fprintf(a.stdout(), "%d task(s) still IN_PROGRESS:\n", len(running))
					err = writeTaskTable(a.stdout(), running, time.Now())
				}
				// --wait 0 asked only to start maintenance, not to wait for
				// the drain; a wait that ran out is a failure.
				if err == nil && wait > 0 && len(running) > 0 {
					err = drainTimedOut(wait, running)
				}
				return err
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (required): refused claims and status show it")
	cmd.Flags().DurationVar(&wait, "wait", 5*time.Minute, "how long to wait for IN_PROGRESS tasks to finish; 0 does not wait")
	return cmd
}

// drainWait polls the maintenance state once a second until no task is
// IN_PROGRESS or wait has passed, showing progress on stderr, and returns
// the tasks still running.
func (a *app) drainWait(ctx context.Context, c factoryv1.OpsServiceClient, wait time.Duration) ([]*factoryv1.Task, error) {
	deadline := time.Now().Add(wait)
	p := a.newDrainProgress()
	defer p.done()
	for {
		st, err := c.GetMaintenance(ctx, &factoryv1.GetMaintenanceRequest{})
		if err != nil {
			return nil, err
		}
		n := st.GetInProgressCount()
		if n == 0 {
			return nil, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return st.GetInProgress(), nil
		}
		p.show(n, left)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(time.Second, left)):
		}
	}
}

// drainProgress shows how the drain goes. On a terminal one line is
// redrawn every poll, so the countdown moves; anywhere else (a log, a
// pipe) a line is written only when the count changes, so a long drain
// does not fill the log with one line a second.
type drainProgress struct {
	w      io.Writer
	redraw bool
	last   int64
	drawn  bool
}

func (a *app) newDrainProgress() *drainProgress {
	if a.stderrTerminal() {
		// Raw stderr: the escaping writer would print \r and ESC as
		// text, and this line holds nothing from the server.
		return &drainProgress{w: a.opts.Stderr, redraw: true, last: -1}
	}
	return &drainProgress{w: a.stderr(), last: -1}
}

func (p *drainProgress) show(running int64, left time.Duration) {
	line := fmt.Sprintf("draining: %d task(s) still running (%s left)", running, left.Round(time.Second))
	switch {
	case p.redraw:
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
		p.drawn = true
	case running != p.last:
		fmt.Fprintln(p.w, line)
	}
	p.last = running
}

// done clears the redrawn line: the summary that follows says the rest.
func (p *drainProgress) done() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

// drainTimedOut is the error of a drain whose --wait ran out with tasks
// still running: the command did not leave the factory quiet, so it must
// not exit 0 (as kubectl drain fails on its timeout).
func drainTimedOut(wait time.Duration, running []*factoryv1.Task) error {
	const shown = 5
	ids := make([]string, 0, shown)
	for _, t := range running[:min(len(running), shown)] {
		ids = append(ids, t.GetId())
	}
	list := strings.Join(ids, ", ")
	if len(running) > shown {
		list += fmt.Sprintf(" and %d more", len(running)-shown)
	}
	return fmt.Errorf("drain timed out after %s: %d task(s) still running: %s; maintenance stays on (\"factory maintenance status\" shows the drain, \"factory maintenance end\" ends it)",
		wait, len(running), list)
}

func newMaintenanceEndCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "end",
		Short: "End maintenance: restore exactly what the start paused",
		Long: `End resumes the queue if, and only if, the start paused it, and admits
claims again. Ending when not in maintenance changes nothing.`,
		Example: `  factory maintenance end`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				resp, err := c.EndMaintenance(ctx, &factoryv1.EndMaintenanceRequest{})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				switch {
				case !resp.GetEnded().GetActive():
					_, err = fmt.Fprintln(a.stdout(), "not in maintenance: nothing changed")
				case resp.GetResumedQueue():
					_, err = fmt.Fprintf(a.stdout(), "maintenance ended: queue resumed, %d task(s) back to READY; claims admitted\n", resp.GetResumedTasks())
				default:
					_, err = fmt.Fprintln(a.stdout(), "maintenance ended: claims admitted; the queue stays paused as it was before the start (\"queue resume\" resumes it)")
				}
				return err
			})
		},
	}
}

func newMaintenanceStatusCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Whether the factory is in maintenance, and what still runs",
		Long: `Status shows whether the factory is in maintenance (since when, by whom
and why) and the tasks still IN_PROGRESS, so an operator can see the
factory drain after "maintenance start".`,
		Example: `  factory maintenance status -o json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				resp, err := c.GetMaintenance(ctx, &factoryv1.GetMaintenanceRequest{})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				fmt.Fprintln(a.stdout(), maintenanceText(resp.GetMaintenance()))
				fmt.Fprintf(a.stdout(), "%d task(s) IN_PROGRESS\n", resp.GetInProgressCount())
				if len(resp.GetInProgress()) > 0 {
					return writeTaskTable(a.stdout(), resp.GetInProgress(), time.Now())
				}
				return nil
			})
		},
	}
}

// maintenanceText is one line: "off", or since when, why and by whom.
func maintenanceText(m *factoryv1.Maintenance) string {
	if !m.GetActive() {
		return "Maintenance: off"
	}
	return fmt.Sprintf("Maintenance: ON since %s (%s ago) by %s: %s", m.GetStartedAt().AsTime().Format(time.RFC3339),
		time.Since(m.GetStartedAt().AsTime()).Round(time.Second), m.GetStartedBy(), m.GetReason())
}
