package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

var scopeNames = []string{"total", "tier", "agent"}

func parseScope(s string) (factoryv1.BudgetScope, error) {
	v, ok := factoryv1.BudgetScope_value["BUDGET_SCOPE_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, fmt.Errorf("--scope %q: want total, tier or agent", s)
	}
	return factoryv1.BudgetScope(v), nil
}

func scopeName(s factoryv1.BudgetScope) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "BUDGET_SCOPE_"))
}

// budgetKeyText shows a budget's key; an agent budget without one is the
// default for every agent without its own.
func budgetKeyText(b *factoryv1.Budget) string {
	if b.GetKey() != "" {
		return b.GetKey()
	}
	if b.GetScope() == factoryv1.BudgetScope_BUDGET_SCOPE_AGENT {
		return "(each agent)"
	}
	return "-"
}

func newBudgetCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "budget",
		Short: "Show the daily budgets and where today stands against them",
		Long: `Budget lists every daily budget: the whole factory's, each tier's and the
agents' (an agent budget without a key applies to each agent without one
of its own), with today's spend, open reservations and what is left under
the cap.

A budget has up to four limits, each optional (0 means none):
  target     what a good day costs (reports only)
  alert      crossing it raises an alert, once a day
  cap        reaching it: the total's refuses every claim, an agent's that
             agent's claims; a tier's leaves that tier's tasks unclaimed
             (tasks of other tiers and without a tier are still claimed)
  emergency  total only: crossing it pulls the emergency stop
A tier can also be turned off: its tasks are not claimed whatever the spend.

STATUS is ALERT past the alert threshold, CAPPED at the cap (until the day
ends or the cap is raised) and OFF for a tier turned off. Change a budget
with 'factory budget set'.`,
		Example: `  factory budget
  factory budget -o json | jq '.budgets[] | select(.capped)'
  factory budget set --scope tier --key frontier --alert 25 --cap 40`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withBudget(cmd, func(ctx context.Context, c factoryv1.BudgetServiceClient) error {
				resp, err := c.GetBudget(ctx, &factoryv1.GetBudgetRequest{})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				return writeBudgets(a.stdout(), resp)
			})
		},
	}
	cmd.AddCommand(newBudgetSetCommand(a))
	return cmd
}

func writeBudgets(w io.Writer, r *factoryv1.GetBudgetResponse) error {
	fmt.Fprintf(w, "Budgets for %s (%s)\n", r.GetDay(), r.GetTimeZone())
	if es := r.GetEmergencyStop(); es.GetStopped() {
		fmt.Fprintf(w, "EMERGENCY STOP since %s by %s: %s\n", es.GetStoppedAt().AsTime().Local().Format(time.DateTime),
			orDash(es.GetStoppedBy()), orDash(es.GetReason()))
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "SCOPE\tKEY\tSPENT\tRESERVED\tTARGET\tALERT\tCAP\tREMAINING\tEMERGENCY\tSTATUS")
	for _, s := range r.GetBudgets() {
		b := s.GetBudget()
		remaining := "-"
		if s.GetRemainingMicros() >= 0 && b.GetCapMicros() > 0 {
			remaining = formatMoney(s.GetRemainingMicros())
		}
		st := "ok"
		switch {
		case b.GetOff():
			st = "OFF"
		case s.GetCapped():
			st = "CAPPED"
		case s.GetAlerting():
			st = "ALERT"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", scopeName(b.GetScope()), budgetKeyText(b),
			formatMoney(s.GetSpentMicros()), formatMoney(s.GetReservedMicros()), formatLimit(b.GetTargetMicros()),
			formatLimit(b.GetAlertMicros()), formatLimit(b.GetCapMicros()), remaining, formatLimit(b.GetEmergencyMicros()), st)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.GetAlerts()) > 0 {
		fmt.Fprintln(w, "\nAlerts today:")
		for _, al := range r.GetAlerts() {
			key := al.GetKey()
			if key != "" {
				key = " " + key
			}
			fmt.Fprintf(w, "  %s %s%s crossed %s (spent %s)\n", al.GetRaisedAt().AsTime().Local().Format(time.TimeOnly),
				scopeName(al.GetScope()), key, formatMoney(al.GetThresholdMicros()), formatMoney(al.GetSpentMicros()))
		}
	}
	return nil
}

func newBudgetSetCommand(a *app) *cobra.Command {
	var (
		scope, key, target, alert, capText, emergency string
		off, on                                       bool
	)
	cmd := &cobra.Command{
		Use:   "set --scope total|tier|agent [--key K] [--target $] [--alert $] [--cap $] [--emergency $] [--off|--on]",
		Short: "Set a daily budget's limits, or turn a tier off (operators only)",
		Long: `Set changes one budget. Amounts are dollars per day (30, 12.50, $0.50),
converted exactly to micro-dollars; 0 removes a limit: '--cap 0' means no
cap, not a cap of $0. Limits not given keep their current values, so
'--alert 60' leaves the cap alone.

--key is the tier (frontier, mid, local, infra) for --scope tier, and the
agent for --scope agent; an agent budget without --key is the default for
every agent without a budget of its own. The total budget has no key and
is the only one with --emergency: crossing it stops the whole fleet.

A cap reached refuses claims for the total and for an agent. A tier's cap
only leaves the tasks created with that tier (factory task add --tier)
unclaimed: the rest of the fleet works on. To force cheaper models (runbook
8.3), turn a tier off with --off: its tasks are not claimed whatever the
spend, until --on turns it on again.`,
		Example: `  factory budget set --scope total --target 30 --alert 50 --emergency 100
  factory budget set --scope tier --key frontier --alert 25
  factory budget set --scope agent --alert 10          # every agent's default
  factory budget set --scope agent --key planner-01 --cap 15
  factory budget set --scope tier --key infra --cap 0  # remove the cap (0 is no cap)
  factory budget set --scope tier --key frontier --off # no frontier tasks are claimed
  factory budget set --scope tier --key frontier --on  # they are again`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			sc, err := parseScope(scope)
			if err != nil {
				return usageErrorf("%v", err)
			}
			switch sc {
			case factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL:
				if key != "" {
					return usageErrorf("--key: the total budget has none")
				}
			case factoryv1.BudgetScope_BUDGET_SCOPE_TIER:
				t, err := parseTier(key)
				if err != nil {
					return usageErrorf("--key: %v", err)
				}
				key = tierName(t)
			}
			if cmd.Flags().Changed("emergency") && sc != factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL {
				return usageErrorf("--emergency applies to --scope total only")
			}
			switch {
			case off && on:
				return usageErrorf("give --off or --on, not both")
			case (off || on) && sc != factoryv1.BudgetScope_BUDGET_SCOPE_TIER:
				return usageErrorf("--off and --on apply to --scope tier only")
			}
			set := map[string]*int64{}
			for _, f := range []struct {
				name, text string
			}{{"target", target}, {"alert", alert}, {"cap", capText}, {"emergency", emergency}} {
				if !cmd.Flags().Changed(f.name) {
					continue
				}
				v, err := parseDollars(f.text)
				if err != nil {
					return usageErrorf("--%s: %v", f.name, err)
				}
				set[f.name] = &v
			}
			if len(set) == 0 && !off && !on {
				return usageErrorf("%v", errNoChange)
			}
			return a.withBudget(cmd, func(ctx context.Context, c factoryv1.BudgetServiceClient) error {
				cur, err := c.GetBudget(ctx, &factoryv1.GetBudgetRequest{})
				if err != nil {
					return err
				}
				// Start from the budget in force: this one's, else (a first
				// budget for one agent) every agent's default, so setting a
				// cap does not drop the default alert.
				b := &factoryv1.Budget{Scope: sc, Key: key}
				for _, want := range []string{"", key} {
					for _, s := range cur.GetBudgets() {
						if s.GetBudget().GetScope() == sc && s.GetBudget().GetKey() == want && (want == key || sc == factoryv1.BudgetScope_BUDGET_SCOPE_AGENT) {
							b = s.GetBudget()
							b.Key = key
						}
					}
				}
				if v := set["target"]; v != nil {
					b.TargetMicros = *v
				}
				if v := set["alert"]; v != nil {
					b.AlertMicros = *v
				}
				if v := set["cap"]; v != nil {
					b.CapMicros = *v
				}
				if v := set["emergency"]; v != nil {
					b.EmergencyMicros = *v
				}
				switch {
				case off:
					b.Off = true
				case on:
					b.Off = false
				}
				resp, err := c.SetBudget(ctx, &factoryv1.SetBudgetRequest{Budget: b})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				nb := resp.GetBudget()
				_, err = fmt.Fprintf(a.stdout(), "budget %s %s: target %s, alert %s, cap %s, emergency %s\n",
					scopeName(nb.GetScope()), budgetKeyText(nb), formatLimit(nb.GetTargetMicros()), formatLimit(nb.GetAlertMicros()),
					formatLimit(nb.GetCapMicros()), formatLimit(nb.GetEmergencyMicros()))
				if err == nil && nb.GetScope() == factoryv1.BudgetScope_BUDGET_SCOPE_TIER {
					state := "on: its tasks are claimed while under its cap"
					if nb.GetOff() {
						state = "OFF: its tasks are not claimed until --on"
					}
					_, err = fmt.Fprintf(a.stdout(), "tier %s is %s\n", nb.GetKey(), state)
				}
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&scope, "scope", "", "total, tier or agent (required)")
	f.StringVar(&key, "key", "", "the tier or agent; empty for the total, or for every agent's default")
	f.StringVar(&target, "target", "", "what a good day costs, in dollars (reports only)")
	f.StringVar(&alert, "alert", "", "alert threshold in dollars, raised once a day")
	f.StringVar(&capText, "cap", "", "hard cap in dollars (0 = no cap): the total's and an agent's refuse claims once reached, a tier's leaves that tier's tasks unclaimed")
	f.BoolVar(&off, "off", false, "tier only: turn the tier off; its tasks are not claimed whatever the spend")
	f.BoolVar(&on, "on", false, "tier only: turn a tier turned off on again")
	f.StringVar(&emergency, "emergency", "", "total only: dollars that pull the emergency stop")
	_ = cmd.RegisterFlagCompletionFunc("scope", cobra.FixedCompletions(scopeNames, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}
