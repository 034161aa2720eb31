package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func newAlertsCommand(a *app) *cobra.Command {
	var all bool
	var wf *watchFlags
	cmd := &cobra.Command{
		Use:   "alerts [--all]",
		Short: "List the alerts: firing, pending, and with --all resolved",
		Long: `Alerts lists the control plane's alerts, FIRING first, then PENDING, and with
--all those RESOLVED in the last 24 hours. The rules are the runbook's (§5.1,
§8.1); deploy/alerts.yaml documents each and how to change them.

An alert nobody acked is notified again every repeat interval (4h); ack it
to stop that until it resolves, or silence its rule for a while.

With --watch the list is shown again every --interval (see ` + "`factory status --help`" + `).`,
		Example: `  factory alerts
  factory alerts --watch
  factory alerts --all -o json
  factory alerts ack 0193b4c2-...
  factory alerts silence --rule agent_offline --match agent=forge --for 2h --reason "rebuilding gpu-1"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				return a.view(ctx, cmd, wf, paintAlerts, func(ctx context.Context, w io.Writer) error {
					resp, err := c.ListAlerts(ctx, &factoryv1.ListAlertsRequest{IncludeResolved: all})
					if err != nil {
						return err
					}
					if a.jsonOutput() {
						return writeProtoList(w, resp.GetAlerts())
					}
					return writeAlerts(w, resp.GetAlerts())
				})
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "also list the alerts resolved in the last 24 hours")
	wf = addWatchFlags(cmd, defaultWatchInterval)
	cmd.AddCommand(newAlertsAckCommand(a), newAlertsSilenceCommand(a), newAlertsSilencesCommand(a), newAlertsUnsilenceCommand(a))
	return cmd
}

func newAlertsAckCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "ack ID",
		Short: "Acknowledge an alert: no repeated notifications until it resolves",
		Long: `Ack records that you have seen a FIRING or PENDING alert: it is not notified
again (every repeat interval) until it resolves; its resolution still is.
The ack is stored and audited; a second ack keeps the first. A resolved
alert cannot be acked.`,
		Example: `  factory alerts ack 0193b4c2-7d1e-7c3a-9f00-5b2d1c0e4a11`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				resp, err := c.AckAlert(ctx, &factoryv1.AckAlertRequest{AlertId: args[0]})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp.GetAlert())
				}
				al := resp.GetAlert()
				_, err = fmt.Fprintf(a.stdout(), "acked %s (%s) by %s\n", al.GetId(), al.GetRule(), al.GetAckedBy())
				return err
			})
		},
	}
}

func newAlertsSilenceCommand(a *app) *cobra.Command {
	var (
		rule, reason string
		matches      []string
		dur          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "silence --rule RULE --for DURATION [--match LABEL=VALUE]... [--reason TEXT]",
		Short: "Mute a rule's notifications for a while",
		Long: `Silence mutes the notifications of a rule's alerts from now for --for (at most
30 days); with --match, only the alerts carrying every label given. Muted
alerts still change state and are listed, marked with the silence.`,
		Example: `  factory alerts silence --rule gpu_memory_high --for 2h --reason "loading a bigger model"
  factory alerts silence --rule agent_offline --match agent=forge --for 30m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rule == "" {
				return usageErrorf("--rule is required")
			}
			if dur <= 0 {
				return usageErrorf("--for is required: how long, such as 2h")
			}
			matchers := map[string]string{}
			for _, m := range matches {
				k, v, ok := strings.Cut(m, "=")
				if !ok || k == "" {
					return usageErrorf("--match %q: want LABEL=VALUE", m)
				}
				matchers[k] = v
			}
			return a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				resp, err := c.SilenceAlert(ctx, &factoryv1.SilenceAlertRequest{Rule: rule, Matchers: matchers,
					Duration: durationpb.New(dur), Reason: reason})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp.GetSilence())
				}
				s := resp.GetSilence()
				_, err = fmt.Fprintf(a.stdout(), "silenced %s%s until %s (silence %s)\n", s.GetRule(), matcherText(s.GetMatchers()),
					stamp(s.GetEndsAt()), s.GetId())
				return err
			})
		},
	}
	cmd.Flags().StringVar(&rule, "rule", "", "the rule to mute (see `factory alerts`, deploy/alerts.yaml)")
	cmd.Flags().StringArrayVar(&matches, "match", nil, "mute only alerts with this label (LABEL=VALUE; repeatable)")
	cmd.Flags().DurationVar(&dur, "for", 0, "how long, from now (e.g. 2h; at most 720h)")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the next operator")
	return cmd
}

func newAlertsSilencesCommand(a *app) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "silences [--all]",
		Short: "List the active silences, and with --all those ended in the last 24 hours",
		Long: `Silences lists the silences in force: the rule each mutes, its label
matchers, when it ends, who made it and why. With --all it adds those that
ended (or were ended with unsilence) in the last 24 hours.`,
		Example: `  factory alerts silences
  factory alerts silences --all -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				resp, err := c.ListSilences(ctx, &factoryv1.ListSilencesRequest{IncludeExpired: all})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProtoList(a.stdout(), resp.GetSilences())
				}
				return writeSilences(a.stdout(), resp.GetSilences())
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "also list silences that ended")
	return cmd
}

func newAlertsUnsilenceCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "unsilence ID",
		Short: "End a silence now",
		Long: `Unsilence ends a silence at once: the alerts it muted are notified at the
next evaluation if they still fire. Audited.`,
		Example: `  factory alerts unsilence 0193b4c2-7d1e-7c3a-9f00-5b2d1c0e4a11`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				resp, err := c.ExpireSilence(ctx, &factoryv1.ExpireSilenceRequest{SilenceId: args[0]})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp.GetSilence())
				}
				_, err = fmt.Fprintf(a.stdout(), "silence %s ended at %s\n", resp.GetSilence().GetId(), stamp(resp.GetSilence().GetEndsAt()))
				return err
			})
		},
	}
}

func newEventsCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Operator-facing events: alerts, approvals, digests, the emergency stop",
		Long: `Events are what the control plane tells its operators: alerts, spend alerts,
approval requests and decisions, the morning digest, the emergency stop and
maintenance. They go to the configured webhooks and to every watch.`,
		Example: `  factory events watch -o json`,
		Args:    cobra.NoArgs,
	}
	var kinds []string
	watch := &cobra.Command{
		Use:   "watch [--kind KIND]...",
		Short: "Print events as they happen (-o json: one JSON object per line)",
		Long: `Watch prints the events the control plane sends its webhooks, as they happen:
alerts, spend alerts, approvals, the digest, the emergency stop and
maintenance. It starts with the alerts firing now (marked current), then
prints new events until interrupted. An orchestrator agent relays these to
chat.`,
		Example: `  factory events watch
  factory events watch --kind alert --kind emergency_stop -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				stream, err := c.WatchEvents(ctx, &factoryv1.WatchEventsRequest{Kinds: kinds})
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
		},
	}
	watch.Flags().StringArrayVar(&kinds, "kind", nil, "only this kind (alert, spend_alert, approval, digest, emergency_stop, maintenance; repeatable)")
	cmd.AddCommand(watch)
	return cmd
}

func writeAlerts(w io.Writer, alerts []*factoryv1.Alert) error {
	if len(alerts) == 0 {
		_, err := fmt.Fprintln(w, "no alerts")
		return err
	}
	t := newTable(w)
	fmt.Fprintln(t, "ID\tSTATE\tSEVERITY\tRULE\tLABELS\tSINCE\tNOTE\tSUMMARY")
	for _, al := range alerts {
		state := strings.TrimPrefix(al.GetState().String(), "ALERT_STATE_")
		var note []string
		if al.GetAckedBy() != "" {
			note = append(note, "acked by "+al.GetAckedBy())
		}
		if al.GetSilencedBy() != "" {
			note = append(note, "silenced")
		}
		since := stamp(al.GetActiveSince())
		if al.GetResolvedAt() != nil {
			since = "resolved " + stamp(al.GetResolvedAt())
		}
		// Cells are escaped whole: a newline in a label or a summary
		// would otherwise start a row of its own.
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", al.GetId(), state, escapeTerminal(al.GetSeverity()), escapeTerminal(al.GetRule()),
			orDash(escapeTerminal(formatLabels(al.GetLabels()))), since, orDash(escapeTerminal(strings.Join(note, ", "))), escapeTerminal(al.GetSummary()))
	}
	return t.Flush()
}

// paintAlerts colours the alerts' states (FIRING red, PENDING yellow,
// RESOLVED green) and severities.
func paintAlerts(text string) string {
	return paintColumns(text, columnPainters{"STATE": paintStates, "SEVERITY": paintStates})
}

func writeSilences(w io.Writer, silences []*factoryv1.Silence) error {
	if len(silences) == 0 {
		_, err := fmt.Fprintln(w, "no silences")
		return err
	}
	t := newTable(w)
	fmt.Fprintln(t, "ID\tRULE\tMATCH\tUNTIL\tACTIVE\tBY\tREASON")
	for _, s := range silences {
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%t\t%s\t%s\n", s.GetId(), s.GetRule(), orDash(formatLabels(s.GetMatchers())),
			stamp(s.GetEndsAt()), s.GetActive(), s.GetCreatedBy(), orDash(s.GetReason()))
	}
	return t.Flush()
}

func writeEvent(w io.Writer, e *factoryv1.Event) error {
	current := ""
	if e.GetCurrent() {
		current = " (current)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s%s: %s\n", stamp(e.GetTime()), e.GetKind(), current, e.GetTitle())
	for line := range strings.SplitSeq(strings.TrimRight(e.GetText(), "\n"), "\n") {
		if line != "" {
			fmt.Fprintf(&b, "  %s\n", line)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func matcherText(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	return " {" + formatLabels(m) + "}"
}

func stamp(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}
