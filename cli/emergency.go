package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func newEmergencyStopCommand(a *app) *cobra.Command {
	var (
		reason, note, threshold string
		rearm                   bool
	)
	cmd := &cobra.Command{
		Use:   "emergency-stop (--reason R | --rearm [--threshold $] [--note N] | status)",
		Short: "Halt the whole fleet now, or lift the halt (operators only)",
		Long: `Emergency-stop is the runbook's big red button (10.2). With --reason it
halts the fleet: every READY task goes PAUSED, every claim is refused and
every sidecar is told over its stream. Stopping a stopped fleet keeps the
first reason. The control plane also pulls it by itself when the day's
total spend crosses the total budget's emergency threshold.

Nothing lifts it but --rearm: not a restart, not the next day. Rearming
resumes exactly the tasks the stop paused. 'status' shows the state.
'factory queue resume' is refused while the stop holds the queue.

A rearm is refused while today's total is still at or over the emergency
threshold: the next report would stop the fleet again. Raise the threshold
in the same command with --threshold (dollars, above today's total): it is
stored together with the rearm, all or nothing, and audited.

A stop pulled by a bogus spend event: void the event first (factory spend
void ID --agent A --reason R), then rearm. The threshold reads the net, so
the next report does not pull the stop again while the day's net stays
under it.`,
		Example: `  factory emergency-stop --reason "runaway loop in planner-01"
  factory emergency-stop status
  factory emergency-stop --rearm --note "planner-01 fixed, budget raised"
  factory emergency-stop --rearm --threshold 150 --note "launch day: raised to $150"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case rearm && reason != "":
				return usageErrorf("give --reason to stop or --rearm to lift, not both")
			case !rearm && reason == "":
				return usageErrorf("give --reason R to stop the fleet, --rearm to lift the stop, or 'status'")
			case !rearm && note != "":
				return usageErrorf("--note goes with --rearm")
			case !rearm && threshold != "":
				return usageErrorf("--threshold goes with --rearm")
			}
			var thresholdMicros int64
			if threshold != "" {
				v, err := parseDollars(threshold)
				if err != nil {
					return usageErrorf("--threshold: %v", err)
				}
				if v <= 0 {
					return usageErrorf("--threshold: must be more than $0")
				}
				thresholdMicros = v
			}
			return a.withBudget(cmd, func(ctx context.Context, c factoryv1.BudgetServiceClient) error {
				if rearm {
					resp, err := c.RearmEmergencyStop(ctx, &factoryv1.RearmEmergencyStopRequest{Note: note, ThresholdMicros: thresholdMicros})
					if err != nil {
						return err
					}
					if a.jsonOutput() {
						return writeProto(a.stdout(), resp)
					}
					_, err = fmt.Fprintf(a.stdout(), "emergency stop lifted: %d task(s) resumed\n", resp.GetResumedTasks())
					if err == nil && thresholdMicros > 0 {
						_, err = fmt.Fprintf(a.stdout(), "emergency threshold now %s a day\n", formatMoney(thresholdMicros))
					}
					return err
				}
				resp, err := c.EmergencyStop(ctx, &factoryv1.EmergencyStopRequest{Reason: reason})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				return writeStopState(a.stdout(), resp.GetState())
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&reason, "reason", "", "why the fleet is stopped (shown to everyone, kept in the audit log)")
	f.BoolVar(&rearm, "rearm", false, "lift the stop and resume the tasks it paused")
	f.StringVar(&note, "note", "", "with --rearm: a note for the audit log")
	f.StringVar(&threshold, "threshold", "", "with --rearm: the total's new emergency threshold in dollars, above today's total, set together with the rearm")
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show whether the fleet is stopped, why and since when",
		Long: `Status shows the emergency stop: whether the fleet is halted, the reason,
who pulled it (an operator, or "budget" when the day's spend crossed the
emergency threshold), since when, and how many tasks it paused.`,
		Example: `  factory emergency-stop status
  factory emergency-stop status -o json | jq .state.stopped`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withBudget(cmd, func(ctx context.Context, c factoryv1.BudgetServiceClient) error {
				resp, err := c.GetEmergencyStop(ctx, &factoryv1.GetEmergencyStopRequest{})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				return writeStopState(a.stdout(), resp.GetState())
			})
		},
	})
	return cmd
}

func writeStopState(w io.Writer, s *factoryv1.EmergencyStopState) error {
	if !s.GetStopped() {
		_, err := fmt.Fprintln(w, "not stopped: the fleet runs")
		return err
	}
	_, err := fmt.Fprintf(w, "STOPPED since %s by %s: %s\n%d task(s) paused; lift with: factory emergency-stop --rearm\n",
		s.GetStoppedAt().AsTime().Local().Format(time.DateTime), orDash(s.GetStoppedBy()), orDash(s.GetReason()), s.GetPausedTasks())
	return err
}
