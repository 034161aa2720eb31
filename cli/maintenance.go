package cli

import (
	"context"
	"fmt"
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
status". Starting again while in maintenance keeps the first reason.`,
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
					return writeJSON(a.stdout(), maintenanceStartJSON{Start: start, StillRunning: running})
				}
				if len(running) == 0 {
					_, err = fmt.Fprintln(a.stdout(), "no task is IN_PROGRESS: the factory is quiet")
					return err
				}
				fmt.Fprintf(a.stdout(), "%d task(s) still IN_PROGRESS:\n", len(running))
				return writeTaskTable(a.stdout(), running, time.Now())
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (required): refused claims and status show it")
	cmd.Flags().DurationVar(&wait, "wait", 5*time.Minute, "how long to wait for IN_PROGRESS tasks to finish; 0 does not wait")
	return cmd
}

// drainWait polls the maintenance state once a second until no task is
// IN_PROGRESS or wait has passed, printing the count on stderr when it
// changes, and returns the tasks still running.
func (a *app) drainWait(ctx context.Context, c factoryv1.OpsServiceClient, wait time.Duration) ([]*factoryv1.Task, error) {
	deadline := time.Now().Add(wait)
	last := int64(-1)
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
		if n != last {
			fmt.Fprintf(a.stderr(), "waiting up to %s: %d task(s) IN_PROGRESS\n", left.Round(time.Second), n)
			last = n
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(time.Second, left)):
		}
	}
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
