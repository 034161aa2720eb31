package console

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// spendChartDays is how many days the daily bars cover, today included.
const spendChartDays = 30

// spendBreakdownLimit bounds each of today's breakdowns: the biggest
// spenders are what the operator looks for; the rest is counted, and
// `factory spend --by …` lists it.
const spendBreakdownLimit = 20

func (s *Server) routeSpend(mux *http.ServeMux) {
	mux.Handle("GET /spend", s.page(s.spendPage))
	mux.Handle("POST /emergency/stop", s.action(s.stopFleet))
	mux.Handle("POST /emergency/rearm", s.action(s.rearmFleet))
}

// spendData is runbook 3.1 as a page: today against yesterday and the
// week, who spent it, the budgets and the emergency stop.
type spendData struct {
	// Today is the last day of the daily series, in TimeZone.
	Today, TimeZone string
	TodayCost       int64
	TodayCalls      count
	TodayIn         count
	TodayOut        count
	YesterdayCost   int64
	Avg7Cost        int64 // the 7 days before today

	ByAgent, ByModel, ByTier spendTable
	Chart                    spendChart

	Budgets []budgetLine
	Alerts  []*factoryv1.SpendAlert // raised today
	Stop    *factoryv1.EmergencyStopState
	// EmergencyMicros is the total budget's emergency threshold, 0 when
	// none is set: shown next to the stop button.
	EmergencyMicros int64
}

// spendTable is one of today's breakdowns.
type spendTable struct {
	Name    string // the breakdown's column heading
	Rows    []spendRow
	LeftOut int32
	Total   int64 // the day's cost, for each row's share
}

type spendRow struct {
	Key            string
	Cost           int64
	Calls, In, Out count
	SharePercent   int
}

// count is a number of events or tokens, printed with thousands
// separators so 18650000 reads as 18,650,000.
type count int64

func (c count) String() string {
	n := int64(c)
	sign := ""
	if n < 0 {
		sign, n = "−", -n
	}
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return sign + s
}

// The daily chart's geometry in viewBox units. The box is stretched to
// the page's width at a fixed height (preserveAspectRatio="none"), so a
// phone shows the same 30 bars, narrower; the labels are HTML beside it,
// so their size does not scale with the box.
const (
	chartWidth   = 600
	chartHeight  = 120
	chartPlotTop = 4 // headroom over the tallest bar
	chartBarGap  = 4
)

// spendChart is the daily bars with every coordinate worked out here, so
// the template only copies numbers into attributes (the CSP forbids style
// attributes; SVG's presentation attributes are markup).
type spendChart struct {
	Width, Height int
	Bars          []spendBar
	From, To      string
	Max           int64 // the largest day's cost; 0: nothing spent
	MaxDay        string
	// AvgY is where the 7-day average's line goes; 0: not drawn.
	AvgY int
	Avg  int64
}

type spendBar struct {
	Day        string
	Cost       int64
	X, Y, W, H int
	Today, Max bool
}

// budgetLine is one budget against today's spend.
type budgetLine struct {
	Scope, Label                  string
	Spent, Reserved, Remaining    int64
	Target, Alert, Cap, Emergency int64
	Alerting, Capped, OverTarget  bool
	// Off is a tier turned off: its tasks wait whatever the spend.
	Off                           bool
	MeterMax, MeterLow, MeterHigh int64 // 0 low/high: attribute left out
	HasLimits                     bool
}

// spendPage makes a bounded number of reads, all at once, each answered
// from the day rollups: the page costs the same with ten events in the
// ledger or ten million.
func (s *Server) spendPage(rq *request) error {
	var d spendData
	r := newReads(rq.ctx)
	r.must(func(ctx context.Context) error {
		b, err := s.budget.GetBudget(ctx, &factoryv1.GetBudgetRequest{})
		if err != nil {
			return err
		}
		d.Alerts, d.Stop = b.GetAlerts(), b.GetEmergencyStop()
		for _, st := range b.GetBudgets() {
			line := newBudgetLine(st)
			if line.Scope == "total" {
				d.EmergencyMicros = line.Emergency
			}
			d.Budgets = append(d.Budgets, line)
		}
		return nil
	})
	r.must(func(ctx context.Context) error {
		r, err := s.budget.GetSpend(ctx, &factoryv1.GetSpendRequest{Days: spendChartDays, GroupBy: factoryv1.SpendGroupBy_SPEND_GROUP_BY_DAY})
		if err != nil {
			return err
		}
		d.Today, d.TimeZone, d.Avg7Cost = r.GetToDay(), r.GetTimeZone(), r.GetRolling_7DayAverageMicros()
		d.Chart = newSpendChart(r)
		for _, b := range d.Chart.Bars {
			switch b.Day {
			case r.GetToDay():
				d.TodayCost = b.Cost
			case previousDay(r.GetToDay()):
				d.YesterdayCost = b.Cost
			}
		}
		return nil
	})
	breakdown := func(by factoryv1.SpendGroupBy, name string, into *spendTable, todayTotals bool) {
		r.must(func(ctx context.Context) error {
			r, err := s.budget.GetSpend(ctx, &factoryv1.GetSpendRequest{GroupBy: by, Limit: spendBreakdownLimit})
			if err != nil {
				return err
			}
			*into = newSpendTable(r, name, by == factoryv1.SpendGroupBy_SPEND_GROUP_BY_TIER)
			if todayTotals {
				t := r.GetTotals()
				d.TodayCalls, d.TodayIn, d.TodayOut = count(t.GetEvents()), count(t.GetInputTokens()), count(t.GetOutputTokens())
			}
			return nil
		})
	}
	breakdown(factoryv1.SpendGroupBy_SPEND_GROUP_BY_AGENT, "Agent", &d.ByAgent, true)
	breakdown(factoryv1.SpendGroupBy_SPEND_GROUP_BY_MODEL, "Model", &d.ByModel, false)
	breakdown(factoryv1.SpendGroupBy_SPEND_GROUP_BY_TIER, "Tier", &d.ByTier, false)
	if err := r.wait(); err != nil {
		return err
	}
	return s.render(rq, http.StatusOK, "spend", view{Title: "Spend", Nav: "spend", Topics: "spend"}, d)
}

func newSpendTable(r *factoryv1.GetSpendResponse, name string, tiers bool) spendTable {
	t := spendTable{Name: name, LeftOut: r.GetGroupsLeftOut(), Total: r.GetTotals().GetCostMicros()}
	for _, g := range r.GetGroups() {
		tot := g.GetTotals()
		key := g.GetKey()
		if tiers {
			key = strings.TrimPrefix(strings.ToLower(key), "spend_tier_")
		}
		t.Rows = append(t.Rows, spendRow{Key: key, Cost: tot.GetCostMicros(), Calls: count(tot.GetEvents()),
			In: count(tot.GetInputTokens()), Out: count(tot.GetOutputTokens()), SharePercent: pct(tot.GetCostMicros(), t.Total)})
	}
	return t
}

// newSpendChart lays out one bar per day of the report's range. The API
// lists only days with spend; the days between get an empty bar so the
// x axis is time.
func newSpendChart(r *factoryv1.GetSpendResponse) spendChart {
	c := spendChart{Width: chartWidth, Height: chartHeight,
		From: r.GetFromDay(), To: r.GetToDay(), Avg: r.GetRolling_7DayAverageMicros()}
	cost := map[string]int64{}
	for _, g := range r.GetGroups() {
		cost[g.GetKey()] = g.GetTotals().GetCostMicros()
	}
	from, err1 := time.Parse(time.DateOnly, r.GetFromDay())
	to, err2 := time.Parse(time.DateOnly, r.GetToDay())
	if err1 != nil || err2 != nil || to.Before(from) {
		return c
	}
	var days []string
	// Calendar arithmetic on dates read as UTC: no day is 23 or 25 hours.
	for t := from; !t.After(to) && len(days) < 366; t = t.AddDate(0, 0, 1) {
		days = append(days, t.Format(time.DateOnly))
	}
	for _, day := range days {
		if v := cost[day]; v > c.Max {
			c.Max, c.MaxDay = v, day
		}
	}
	slot := chartWidth / len(days)
	width := max(slot-chartBarGap, 1)
	plot := chartHeight - chartPlotTop
	for i, day := range days {
		b := spendBar{Day: day, Cost: cost[day], X: i*slot + (slot-width)/2, W: width, Today: day == c.To}
		b.H = barHeight(b.Cost, c.Max, plot)
		b.Y = chartHeight - b.H
		b.Max = day == c.MaxDay
		c.Bars = append(c.Bars, b)
	}
	if c.Avg > 0 && c.Avg <= c.Max {
		c.AvgY = chartHeight - barHeight(c.Avg, c.Max, plot)
	}
	return c
}

// barHeight scales v against the largest value; a day with any spend gets
// at least one unit, so a cheap day does not read as a day with none.
func barHeight(v, largest int64, plot int) int {
	if v <= 0 || largest <= 0 {
		return 0
	}
	h := int(float64(v) / float64(largest) * float64(plot))
	return min(max(h, 1), plot)
}

func previousDay(day string) string {
	t, err := time.Parse(time.DateOnly, day)
	if err != nil {
		return ""
	}
	return t.AddDate(0, 0, -1).Format(time.DateOnly)
}

func newBudgetLine(st *factoryv1.BudgetStatus) budgetLine {
	b := st.GetBudget()
	l := budgetLine{
		Spent: st.GetSpentMicros(), Reserved: st.GetReservedMicros(), Remaining: st.GetRemainingMicros(),
		Target: b.GetTargetMicros(), Alert: b.GetAlertMicros(), Cap: b.GetCapMicros(), Emergency: b.GetEmergencyMicros(),
		Alerting: st.GetAlerting(), Capped: st.GetCapped(), Off: b.GetOff(),
	}
	l.OverTarget = l.Target > 0 && l.Spent > l.Target
	switch b.GetScope() {
	case factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL:
		l.Scope, l.Label = "total", "Total"
	case factoryv1.BudgetScope_BUDGET_SCOPE_TIER:
		l.Scope, l.Label = "tier", "Tier "+b.GetKey()
	case factoryv1.BudgetScope_BUDGET_SCOPE_AGENT:
		l.Scope, l.Label = "agent", "Agent "+b.GetKey()
		if b.GetKey() == "" {
			// Its spend is the biggest spender without a budget of its own.
			l.Label = "Each other agent"
		}
	default:
		l.Scope, l.Label = "?", enumName(b.GetScope())+" "+b.GetKey()
	}
	top := max(l.Target, l.Alert, l.Cap, l.Emergency)
	l.HasLimits = top > 0
	if !l.HasLimits {
		return l
	}
	// The meter runs to the highest limit, or past it to the spend, so a
	// day over every limit shows as over: green under the target, amber
	// to the alert (or the cap when no alert is set), red past it. With
	// optimum at 0, a browser colours a meter red past high only when low
	// is above 0: without a target, low is high (no amber band).
	l.MeterMax = max(top, l.Spent)
	l.MeterHigh = l.Alert
	if l.MeterHigh == 0 {
		l.MeterHigh = l.Cap
	}
	l.MeterLow = l.Target
	if l.MeterHigh > 0 && (l.MeterLow == 0 || l.MeterLow > l.MeterHigh) {
		l.MeterLow = l.MeterHigh
	}
	return l
}

// stopFleet pulls the emergency stop (runbook 10.2).
func (s *Server) stopFleet(rq *request) error {
	reason := rq.r.PostForm.Get("reason")
	r, err := s.budget.EmergencyStop(rq.ctx, &factoryv1.EmergencyStopRequest{Reason: reason})
	if err != nil {
		return err
	}
	st := r.GetState()
	if st.GetReason() != reason {
		// A stop already in force keeps its first reason.
		return done(rq, "/spend", fmt.Sprintf("Stopped already, by %s: %s", st.GetStoppedBy(), st.GetReason()))
	}
	return done(rq, "/spend", fmt.Sprintf("Stopped: %d task(s) paused, claims refused", st.GetPausedTasks()))
}

// rearmFleet lifts the emergency stop; the API resumes exactly the tasks
// it paused.
func (s *Server) rearmFleet(rq *request) error {
	r, err := s.budget.RearmEmergencyStop(rq.ctx, &factoryv1.RearmEmergencyStopRequest{Note: rq.r.PostForm.Get("note")})
	if err != nil {
		return err
	}
	return done(rq, "/spend", fmt.Sprintf("Re-armed: %d task(s) resumed", r.GetResumedTasks()))
}
