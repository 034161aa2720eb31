package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// withBudget is withQueue for the BudgetService.
func (a *app) withBudget(cmd *cobra.Command, fn func(ctx context.Context, c factoryv1.BudgetServiceClient) error) error {
	ctx, span := a.opts.TracerProvider.Tracer("github.com/factory/factory/cli").Start(cmd.Context(), spanName(cmd))
	defer span.End()
	conn, err := a.dial()
	if err == nil {
		defer conn.Close()
		err = fn(ctx, factoryv1.NewBudgetServiceClient(conn))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// parseDollars reads a dollar amount typed by a person ("30", "12.50",
// "$0.000125") as micro-dollars, exactly: the decimal text is split at the
// point, never parsed as a float, and more than six decimals (a fraction
// of a micro-dollar) is refused rather than rounded.
func parseDollars(s string) (int64, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimPrefix(t, "$")
	t = strings.ReplaceAll(t, "_", "")
	whole, frac, hasPoint := strings.Cut(t, ".")
	if whole == "" && (!hasPoint || frac == "") {
		return 0, fmt.Errorf("%q is not a dollar amount (like 30 or 12.50)", s)
	}
	if whole == "" {
		whole = "0"
	}
	for _, part := range []string{whole, frac} {
		for _, r := range part {
			if r < '0' || r > '9' {
				return 0, fmt.Errorf("%q is not a dollar amount (like 30 or 12.50)", s)
			}
		}
	}
	if len(frac) > 6 {
		return 0, fmt.Errorf("%q: at most 6 decimal places (one micro-dollar)", s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w > 1_000_000_000 {
		return 0, fmt.Errorf("%q: too large", s)
	}
	f := int64(0)
	if frac != "" {
		f, _ = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
	}
	return w*1_000_000 + f, nil
}

// formatMoney prints micro-dollars as $12.34, rounded to the cent; a
// non-zero amount under half a cent prints as <$0.01, so it never reads
// as nothing.
func formatMoney(micros int64) string {
	sign := ""
	if micros < 0 {
		sign, micros = "-", -micros
	}
	if micros > 0 && micros < 5_000 {
		return sign + "<$0.01"
	}
	cents := (micros + 5_000) / 10_000
	s := strconv.FormatInt(cents/100, 10)
	// Thousands separators for the whole dollars.
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return fmt.Sprintf("%s$%s.%02d", sign, s, cents%100)
}

// formatLimit prints a budget limit; 0 means none.
func formatLimit(micros int64) string {
	if micros == 0 {
		return "-"
	}
	return formatMoney(micros)
}

var tierNames = []string{"frontier", "mid", "local", "infra"}

func parseTier(s string) (factoryv1.SpendTier, error) {
	v, ok := factoryv1.SpendTier_value["SPEND_TIER_"+strings.ToUpper(strings.TrimPrefix(strings.ToUpper(s), "SPEND_TIER_"))]
	if !ok || v == 0 {
		return 0, fmt.Errorf("tier %q: want one of %s", s, strings.Join(tierNames, ", "))
	}
	return factoryv1.SpendTier(v), nil
}

func tierName(t factoryv1.SpendTier) string {
	if t == factoryv1.SpendTier_SPEND_TIER_UNSPECIFIED {
		return "-"
	}
	return strings.ToLower(strings.TrimPrefix(t.String(), "SPEND_TIER_"))
}

var groupByNames = []string{"agent", "model", "provider", "tier", "task", "day"}

func parseGroupBy(s string) (factoryv1.SpendGroupBy, error) {
	v, ok := factoryv1.SpendGroupBy_value["SPEND_GROUP_BY_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, fmt.Errorf("--by %q: want one of %s", s, strings.Join(groupByNames, ", "))
	}
	return factoryv1.SpendGroupBy(v), nil
}

func isDay(s string) bool {
	_, err := time.Parse(time.DateOnly, s)
	return err == nil
}

// spendOptions are `factory spend`'s flags.
type spendOptions struct {
	by       string
	days     int
	from, to string
	agent    string
	tier     string
	limit    int
}

func newSpendCommand(a *app) *cobra.Command {
	var o spendOptions
	cmd := &cobra.Command{
		Use:   "spend",
		Short: "Show what the fleet spent on LLM calls: today against the budgets, or a report",
		Long: `Spend shows the spend ledger: every LLM call the agents made, reported
once (by the agents, their sidecars or the LiteLLM poller), priced in exact
micro-dollars and rolled up per day in the control plane's time zone.

With no flags it shows today: the total and each tier against its target
and alert threshold, and the average day of the past week. With --by it
breaks a range of days down by agent, model, provider, tier, task or day;
--days N reports the N days up to today (or up to --to), --from/--to a
range of days (YYYY-MM-DD, inclusive). A range without --by breaks down
by day.

Money prints as dollars rounded to the cent; -o json gives the exact
micro-dollars (cost_micros) for scripts.`,
		Example: `  factory spend
  factory spend --by agent
  factory spend --days 7
  factory spend --by model --from 2026-11-01 --to 2026-11-30
  factory spend --by task --agent planner-01 --days 3 -o json
  factory spend report --agent planner-01 --model claude-sonnet-4 --tier frontier \
    --input-tokens 18650 --output-tokens 1204 --cost 0.0353`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &factoryv1.GetSpendRequest{FromDay: o.from, ToDay: o.to, Agent: o.agent, Limit: int32(o.limit)}
			switch {
			case o.days < 0 || o.days > 366:
				return usageErrorf("--days must be 1 to 366")
			case o.days > 0 && o.from != "":
				return usageErrorf("give --days or --from, not both")
			case o.from != "" && !isDay(o.from):
				return usageErrorf("--from %q: want YYYY-MM-DD", o.from)
			case o.to != "" && !isDay(o.to):
				return usageErrorf("--to %q: want YYYY-MM-DD", o.to)
			case o.limit < 0 || o.limit > 10000:
				return usageErrorf("--limit must be 0 to 10000")
			}
			req.Days = int32(o.days)
			if o.tier != "" {
				t, err := parseTier(o.tier)
				if err != nil {
					return usageErrorf("--tier: %v", err)
				}
				req.Tier = t
			}
			ranged := o.days > 1 || o.from != "" || o.to != ""
			if o.by != "" {
				g, err := parseGroupBy(o.by)
				if err != nil {
					return usageErrorf("%v", err)
				}
				req.GroupBy = g
			} else if ranged || o.agent != "" || o.tier != "" {
				req.GroupBy = factoryv1.SpendGroupBy_SPEND_GROUP_BY_DAY
			} else {
				return a.withBudget(cmd, func(ctx context.Context, c factoryv1.BudgetServiceClient) error {
					return a.spendToday(ctx, c)
				})
			}
			return a.withBudget(cmd, func(ctx context.Context, c factoryv1.BudgetServiceClient) error {
				resp, err := c.GetSpend(ctx, req)
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				return writeSpendReport(a.stdout(), resp, o.by)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.by, "by", "", "break down by agent, model, provider, tier, task or day")
	f.IntVar(&o.days, "days", 0, "report this many days up to --to (default today)")
	f.StringVar(&o.from, "from", "", "first day of the report, YYYY-MM-DD")
	f.StringVar(&o.to, "to", "", "last day of the report, YYYY-MM-DD (default today)")
	f.StringVar(&o.agent, "agent", "", "only this agent's spend")
	f.StringVar(&o.tier, "tier", "", "only this tier's spend: frontier, mid, local or infra")
	f.IntVar(&o.limit, "limit", 0, "at most this many rows, largest first (default 100)")
	_ = cmd.RegisterFlagCompletionFunc("by", cobra.FixedCompletions(groupByNames, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("tier", cobra.FixedCompletions(tierNames, cobra.ShellCompDirectiveNoFileComp))
	cmd.AddCommand(newSpendReportCommand(a), newSpendVoidCommand(a))
	return cmd
}

// newSpendVoidCommand is `factory spend void`.
func newSpendVoidCommand(a *app) *cobra.Command {
	var agent, reason string
	cmd := &cobra.Command{
		Use:   "void ID --agent A --reason TEXT",
		Short: "Void a bogus spend event: append its reversal (operators; audited)",
		Long: `Void takes one recorded spend event off every sum: the ledger keeps the
event and appends its reversal with your reason, and from then on the
reports, the budgets and their claim gates, the live Redis counters and the
emergency stop's threshold all see the net. Ids are per agent, so --agent
names whose event it is. An event can be voided once; a second void is
refused.

A void does not lift an emergency stop by itself: once the net is under
the threshold, rearm it (factory emergency-stop --rearm) and it stays
rearmed.`,
		Example: `  factory spend void 0193f2c4-7d1e-7a55-b3a8-1f0e2d3c4b5a --agent forge --reason "test event sent to production"
  factory emergency-stop --rearm --note "bogus \$50,000 event voided"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if agent == "" {
				return usageErrorf("--agent is required: event ids are per agent")
			}
			if strings.TrimSpace(reason) == "" {
				return usageErrorf("--reason is required: a void is audited")
			}
			return a.withBudget(cmd, func(ctx context.Context, c factoryv1.BudgetServiceClient) error {
				resp, err := c.VoidSpend(ctx, &factoryv1.VoidSpendRequest{Agent: agent, Id: args[0], Reason: reason})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				ev := resp.GetRecord().GetEvent()
				_, err = fmt.Fprintf(a.stdout(), "voided %s of %s: %s off %s\n", ev.GetId(), ev.GetAgent(),
					formatMoney(ev.GetCostMicros()), resp.GetRecord().GetDay())
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&agent, "agent", "", "the agent that reported the event (required)")
	f.StringVar(&reason, "reason", "", "why the event is void, for the ledger and the audit log (required)")
	return cmd
}

// todayTier is one row of `factory spend` without flags.
type todayRow struct {
	Scope         string `json:"scope"`
	SpentMicros   int64  `json:"spent_micros"`
	Events        int64  `json:"events"`
	TargetMicros  int64  `json:"target_micros"`
	AlertMicros   int64  `json:"alert_micros"`
	CapMicros     int64  `json:"cap_micros"`
	ReservedMicro int64  `json:"reserved_micros"`
	Alerting      bool   `json:"alerting"`
	Capped        bool   `json:"capped"`
}

// todayView is `factory spend -o json` without flags.
type todayView struct {
	Day                string     `json:"day"`
	TimeZone           string     `json:"time_zone"`
	Rows               []todayRow `json:"rows"`
	Rolling7DayAverage int64      `json:"rolling_7day_average_micros"`
	EmergencyStopped   bool       `json:"emergency_stopped"`
	EmergencyReason    string     `json:"emergency_reason,omitempty"`
}

// spendToday is the default view: today's total and tiers against their
// budgets.
func (a *app) spendToday(ctx context.Context, c factoryv1.BudgetServiceClient) error {
	b, err := c.GetBudget(ctx, &factoryv1.GetBudgetRequest{})
	if err != nil {
		return err
	}
	s, err := c.GetSpend(ctx, &factoryv1.GetSpendRequest{ToDay: b.GetDay(), GroupBy: factoryv1.SpendGroupBy_SPEND_GROUP_BY_TIER})
	if err != nil {
		return err
	}
	v := todayView{Day: b.GetDay(), TimeZone: b.GetTimeZone(), Rolling7DayAverage: s.GetRolling_7DayAverageMicros(),
		EmergencyStopped: b.GetEmergencyStop().GetStopped(), EmergencyReason: b.GetEmergencyStop().GetReason()}
	budgets := map[string]*factoryv1.BudgetStatus{}
	for _, st := range b.GetBudgets() {
		switch st.GetBudget().GetScope() {
		case factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL:
			budgets["total"] = st
		case factoryv1.BudgetScope_BUDGET_SCOPE_TIER:
			budgets[strings.ToLower(st.GetBudget().GetKey())] = st
		}
	}
	row := func(scope string, t *factoryv1.SpendTotals) todayRow {
		r := todayRow{Scope: scope, SpentMicros: t.GetCostMicros(), Events: t.GetEvents()}
		if st := budgets[scope]; st != nil {
			r.TargetMicros, r.AlertMicros, r.CapMicros = st.GetBudget().GetTargetMicros(), st.GetBudget().GetAlertMicros(), st.GetBudget().GetCapMicros()
			r.ReservedMicro, r.Alerting, r.Capped = st.GetReservedMicros(), st.GetAlerting(), st.GetCapped()
		}
		return r
	}
	v.Rows = append(v.Rows, row("total", s.GetTotals()))
	byTier := map[string]*factoryv1.SpendTotals{}
	for _, g := range s.GetGroups() {
		byTier[strings.ToLower(strings.TrimPrefix(strings.ToUpper(g.GetKey()), "SPEND_TIER_"))] = g.GetTotals()
	}
	for _, t := range tierNames {
		v.Rows = append(v.Rows, row(t, byTier[t]))
	}
	if a.jsonOutput() {
		return writeJSON(a.stdout(), v)
	}
	return writeToday(a.stdout(), v)
}

func writeToday(w io.Writer, v todayView) error {
	fmt.Fprintf(w, "Spend on %s (%s)\n", v.Day, v.TimeZone)
	if v.EmergencyStopped {
		fmt.Fprintf(w, "EMERGENCY STOP: %s (lift with: factory emergency-stop --rearm)\n", orDash(v.EmergencyReason))
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "SCOPE\tSPENT\tCALLS\tTARGET\tALERT\tCAP\tSTATUS")
	for _, r := range v.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Scope, formatMoney(r.SpentMicros), r.Events,
			formatLimit(r.TargetMicros), formatLimit(r.AlertMicros), formatLimit(r.CapMicros), standing(r))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n7-day average: %s/day\n", formatMoney(v.Rolling7DayAverage))
	return err
}

// standing says where a scope stands, worst first.
func standing(r todayRow) string {
	switch {
	case r.Capped:
		return "CAPPED"
	case r.Alerting:
		return "ALERT"
	case r.TargetMicros > 0 && r.SpentMicros > r.TargetMicros:
		return "over target"
	case r.TargetMicros == 0 && r.AlertMicros == 0 && r.CapMicros == 0:
		return "-"
	}
	return "ok"
}

// spendBarWidth is the cost bar's width in cells; the largest row fills it.
const spendBarWidth = 24

// barEighths are the partial blocks, one to seven eighths of a cell.
var barEighths = [...]string{"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"}

// blockBar draws v against largest in width cells, to an eighth of a cell.
// Any v above zero gets at least an eighth, so a small amount never reads
// as none; zero is no bar at all.
func blockBar(v, largest int64, width int) string {
	if v <= 0 || largest <= 0 || width <= 0 {
		return ""
	}
	eighths := int(math.Round(float64(v) / float64(largest) * float64(width*8)))
	eighths = min(max(eighths, 1), width*8)
	return strings.Repeat("█", eighths/8) + barEighths[eighths%8]
}

// everyDay is a day report's groups with the days that had no spend put
// back as zero rows (the API lists only days with spend), so the bars read
// as a time line. A report cut short by --limit is left as it is: a day
// missing from it may have had spend.
func everyDay(r *factoryv1.GetSpendResponse) []*factoryv1.SpendGroup {
	from, err1 := time.Parse(time.DateOnly, r.GetFromDay())
	to, err2 := time.Parse(time.DateOnly, r.GetToDay())
	if err1 != nil || err2 != nil || to.Before(from) || r.GetGroupsLeftOut() > 0 {
		return r.GetGroups()
	}
	byDay := make(map[string]*factoryv1.SpendGroup, len(r.GetGroups()))
	for _, g := range r.GetGroups() {
		byDay[g.GetKey()] = g
	}
	var out []*factoryv1.SpendGroup
	matched := 0
	// Calendar arithmetic on dates read as UTC: no day is 23 or 25 hours.
	for d := from; !d.After(to) && len(out) < 366; d = d.AddDate(0, 0, 1) {
		day := d.Format(time.DateOnly)
		g := byDay[day]
		if g == nil {
			g = &factoryv1.SpendGroup{Key: day, Totals: &factoryv1.SpendTotals{}}
		} else {
			matched++
		}
		out = append(out, g)
	}
	if matched < len(r.GetGroups()) {
		// A row outside the range the response names: show what came
		// rather than drop it.
		return r.GetGroups()
	}
	return out
}

func writeSpendReport(w io.Writer, r *factoryv1.GetSpendResponse, by string) error {
	fmt.Fprintf(w, "Spend %s to %s (%s)\n\n", r.GetFromDay(), r.GetToDay(), r.GetTimeZone())
	if by == "" {
		by = "day"
	}
	total := r.GetTotals().GetCostMicros()
	groups := r.GetGroups()
	if by == "day" {
		groups = everyDay(r)
	}
	var largest int64
	for _, g := range groups {
		largest = max(largest, g.GetTotals().GetCostMicros())
	}
	tw := newTable(w)
	fmt.Fprintf(tw, "%s\tCOST\tSHARE\tCALLS\tIN TOKENS\tOUT TOKENS\tCOST BAR\n", strings.ToUpper(by))
	for _, g := range groups {
		t := g.GetTotals()
		share := "-"
		if total > 0 {
			share = fmt.Sprintf("%.1f%%", float64(t.GetCostMicros())*100/float64(total))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", orDash(g.GetKey()), formatMoney(t.GetCostMicros()), share,
			t.GetEvents(), t.GetInputTokens(), t.GetOutputTokens(), blockBar(t.GetCostMicros(), largest, spendBarWidth))
	}
	t := r.GetTotals()
	fmt.Fprintf(tw, "TOTAL\t%s\t\t%d\t%d\t%d\t\n", formatMoney(t.GetCostMicros()), t.GetEvents(), t.GetInputTokens(), t.GetOutputTokens())
	if err := tw.Flush(); err != nil {
		return err
	}
	if n := r.GetGroupsLeftOut(); n > 0 {
		fmt.Fprintf(w, "(%d more not shown: --limit)\n", n)
	}
	_, err := fmt.Fprintf(w, "\n7-day average before %s: %s/day\n", r.GetToDay(), formatMoney(r.GetRolling_7DayAverageMicros()))
	return err
}

func newSpendReportCommand(a *app) *cobra.Command {
	var (
		ev                  factoryv1.SpendEvent
		tier, costText, at  string
		inTokens, outTokens int64
	)
	cmd := &cobra.Command{
		Use:   "report --agent A --model M --tier T [--input-tokens N] [--output-tokens N] [--cost $]",
		Short: "Record one LLM call's spend (for agents written in shell)",
		Long: `Report records one call in the spend ledger. Without --cost the control
plane prices the tokens from its price table. --cost is in dollars (0.0353
or $12.50), converted exactly to micro-dollars.

The event id makes a report safe to retry: the same --id sent twice counts
once. Ids are per agent; the same --id with a different cost, tokens, model
or day is refused (ALREADY_EXISTS, naming what differs). Without --id a fresh one is made and printed; pass it back with --id
when retrying a report whose answer was lost. The id, the cost, and
whether the server priced it are printed (-o json for the record).`,
		Example: `  factory spend report --agent planner-01 --model claude-sonnet-4 --tier frontier \
    --input-tokens 18650 --output-tokens 1204 --cost 0.0353 --task T-20481
  factory spend report --agent coder-03 --model qwen2.5:7b --tier local --cost 0 --id run-7:call-12`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ev.Agent == "" || ev.Model == "" || tier == "" {
				return usageErrorf("--agent, --model and --tier are required")
			}
			t, err := parseTier(tier)
			if err != nil {
				return usageErrorf("--tier: %v", err)
			}
			ev.Tier = t
			if inTokens < 0 || outTokens < 0 {
				return usageErrorf("token counts must not be negative")
			}
			ev.InputTokens, ev.OutputTokens = inTokens, outTokens
			if cmd.Flags().Changed("cost") {
				c, err := parseDollars(costText)
				if err != nil {
					return usageErrorf("--cost: %v", err)
				}
				ev.CostMicros = &c
			}
			when := time.Now()
			if at != "" {
				if when, err = time.Parse(time.RFC3339Nano, at); err != nil {
					return usageErrorf("--at %q: want RFC 3339, like 2026-11-27T09:30:00Z", at)
				}
			}
			ev.OccurredAt = timestamppb.New(when)
			if ev.Id == "" {
				id, err := uuid.NewV7()
				if err != nil {
					return err
				}
				ev.Id = id.String()
			}
			return a.withBudget(cmd, func(ctx context.Context, c factoryv1.BudgetServiceClient) error {
				resp, err := c.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: &ev})
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeProto(a.stdout(), resp)
				}
				rec := resp.GetRecord()
				note := ""
				if rec.GetPricedByServer() {
					note = " (priced by the control plane)"
				}
				if resp.GetDuplicate() {
					note = " (already recorded: counted once)"
				}
				_, err = fmt.Fprintf(a.stdout(), "%s %s on %s%s\n", rec.GetEvent().GetId(),
					formatMoney(rec.GetEvent().GetCostMicros()), rec.GetDay(), note)
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&ev.Agent, "agent", envOr("FACTORY_AGENT", ""), "the agent that made the call (env FACTORY_AGENT)")
	f.StringVar(&ev.Model, "model", "", "the model, as the provider names it")
	f.StringVar(&ev.Provider, "provider", "", "the provider (anthropic, openai, ollama)")
	f.StringVar(&tier, "tier", "", "frontier, mid, local or infra")
	f.Int64Var(&inTokens, "input-tokens", 0, "input (prompt) tokens")
	f.Int64Var(&outTokens, "output-tokens", 0, "output (completion) tokens")
	f.StringVar(&costText, "cost", "", "the cost in dollars (0.0353, $12.50); unset: priced from the tokens")
	f.StringVar(&ev.TaskId, "task", "", "the task the call was for")
	f.StringVar(&ev.Id, "id", "", "the event's id, to make a retry count once (default: a fresh one, printed)")
	f.StringVar(&ev.Host, "host", "", "the host the agent runs on")
	f.StringVar(&at, "at", "", "when the call happened, RFC 3339 (default now)")
	_ = cmd.RegisterFlagCompletionFunc("tier", cobra.FixedCompletions(tierNames, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// errNoChange is returned when budget set is given nothing to set.
var errNoChange = errors.New("nothing to set: give --target, --alert, --cap or --emergency")
