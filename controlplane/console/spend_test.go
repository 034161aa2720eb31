package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func TestSpendChartFillsDaysAndScales(t *testing.T) {
	r := &factoryv1.GetSpendResponse{
		FromDay: "2026-02-26", ToDay: "2026-03-01", // across a month end
		Rolling_7DayAverageMicros: 2_000_000,
		Groups: []*factoryv1.SpendGroup{
			{Key: "2026-02-26", Totals: &factoryv1.SpendTotals{CostMicros: 4_000_000}},
			{Key: "2026-02-28", Totals: &factoryv1.SpendTotals{CostMicros: 1}},
			{Key: "2026-03-01", Totals: &factoryv1.SpendTotals{CostMicros: 8_000_000}},
		},
	}
	c := newSpendChart(r)
	var days []string
	for _, b := range c.Bars {
		days = append(days, b.Day)
	}
	if got, want := strings.Join(days, ","), "2026-02-26,2026-02-27,2026-02-28,2026-03-01"; got != want {
		t.Fatalf("days = %s, want %s (missing days filled with empty bars)", got, want)
	}
	plot := chartHeight - chartPlotTop
	if b := c.Bars[3]; b.H != plot || b.Y != chartPlotTop || !b.Today || !b.Max {
		t.Errorf("largest day: h=%d y=%d today=%v, want the full plot height %d at y=%d, marked today and max", b.H, b.Y, b.Today, plot, chartPlotTop)
	}
	if b := c.Bars[0]; b.H != plot/2 {
		t.Errorf("half day: h=%d, want %d", b.H, plot/2)
	}
	if b := c.Bars[1]; b.H != 0 || b.Y != chartHeight {
		t.Errorf("empty day: h=%d y=%d, want no bar at the baseline", b.H, b.Y)
	}
	if b := c.Bars[2]; b.H != 1 {
		t.Errorf("one micro-dollar: h=%d, want 1 so it shows", b.H)
	}
	if c.Max != 8_000_000 || c.MaxDay != "2026-03-01" {
		t.Errorf("max = %d on %s, want 8000000 on 2026-03-01", c.Max, c.MaxDay)
	}
	if want := chartHeight - plot/4; c.AvgY != want {
		t.Errorf("average line at y=%d, want %d", c.AvgY, want)
	}
	for i, b := range c.Bars {
		if b.X < 0 || b.X+b.W > chartWidth || (i > 0 && b.X <= c.Bars[i-1].X+c.Bars[i-1].W-1) {
			t.Errorf("bar %d at x=%d w=%d overlaps or leaves the box", i, b.X, b.W)
		}
	}
}

func TestBudgetLineMeter(t *testing.T) {
	cases := []struct {
		name            string
		b               *factoryv1.Budget
		spent           int64
		max, low, high  int64
		overTarget, any bool
	}{
		{"total", &factoryv1.Budget{Scope: factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL, TargetMicros: 30e6, AlertMicros: 50e6, EmergencyMicros: 100e6},
			40e6, 100e6, 30e6, 50e6, true, true},
		{"alert only, over it", &factoryv1.Budget{Scope: factoryv1.BudgetScope_BUDGET_SCOPE_TIER, Key: "frontier", AlertMicros: 25e6},
			30e6, 30e6, 25e6, 25e6, false, true},
		{"cap only", &factoryv1.Budget{Scope: factoryv1.BudgetScope_BUDGET_SCOPE_AGENT, Key: "a", CapMicros: 10e6},
			1e6, 10e6, 10e6, 10e6, false, true},
		{"target above alert", &factoryv1.Budget{Scope: factoryv1.BudgetScope_BUDGET_SCOPE_AGENT, TargetMicros: 20e6, AlertMicros: 10e6},
			0, 20e6, 10e6, 10e6, false, true},
		{"no limits", &factoryv1.Budget{Scope: factoryv1.BudgetScope_BUDGET_SCOPE_TIER, Key: "local"},
			5, 0, 0, 0, false, false},
	}
	for _, c := range cases {
		l := newBudgetLine(&factoryv1.BudgetStatus{Budget: c.b, SpentMicros: c.spent})
		if l.MeterMax != c.max || l.MeterLow != c.low || l.MeterHigh != c.high || l.OverTarget != c.overTarget || l.HasLimits != c.any {
			t.Errorf("%s: meter max=%d low=%d high=%d overTarget=%v limits=%v, want %d %d %d %v %v", c.name,
				l.MeterMax, l.MeterLow, l.MeterHigh, l.OverTarget, l.HasLimits, c.max, c.low, c.high, c.overTarget, c.any)
		}
	}
}

func TestCountString(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 18650000: "18,650,000", -1234: "−1,234"} {
		if got := count(n).String(); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}

// fakeBudget answers the spend page's reads and counts them.
type fakeBudget struct {
	factoryv1.BudgetServiceClient
	mu    sync.Mutex
	calls []string
	stop  *factoryv1.EmergencyStopState
}

func (f *fakeBudget) note(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

func (f *fakeBudget) GetBudget(context.Context, *factoryv1.GetBudgetRequest, ...grpc.CallOption) (*factoryv1.GetBudgetResponse, error) {
	f.note("GetBudget")
	return &factoryv1.GetBudgetResponse{
		Day: "2026-03-01", TimeZone: "Pacific/Auckland", EmergencyStop: f.stop,
		Budgets: []*factoryv1.BudgetStatus{
			{Budget: &factoryv1.Budget{Scope: factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL, TargetMicros: 30e6, AlertMicros: 50e6, EmergencyMicros: 100e6}, SpentMicros: 55e6, Alerting: true, RemainingMicros: -1},
			{Budget: &factoryv1.Budget{Scope: factoryv1.BudgetScope_BUDGET_SCOPE_AGENT, Key: "planner-01", CapMicros: 10e6}, SpentMicros: 10e6, Capped: true},
		},
		Alerts: []*factoryv1.SpendAlert{{Scope: factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL, Day: "2026-03-01", ThresholdMicros: 50e6, SpentMicros: 51e6, RaisedAt: timestamppb.Now()}},
	}, nil
}

func (f *fakeBudget) GetSpend(_ context.Context, r *factoryv1.GetSpendRequest, _ ...grpc.CallOption) (*factoryv1.GetSpendResponse, error) {
	f.note("GetSpend " + enumName(r.GetGroupBy()))
	out := &factoryv1.GetSpendResponse{TimeZone: "Pacific/Auckland", FromDay: "2026-03-01", ToDay: "2026-03-01",
		Totals: &factoryv1.SpendTotals{CostMicros: 55e6, Events: 1234, InputTokens: 18650000, OutputTokens: 120400}}
	switch r.GetGroupBy() {
	case factoryv1.SpendGroupBy_SPEND_GROUP_BY_DAY:
		out.FromDay, out.Rolling_7DayAverageMicros = "2026-01-31", 20e6
		out.Groups = []*factoryv1.SpendGroup{
			{Key: "2026-02-28", Totals: &factoryv1.SpendTotals{CostMicros: 12e6}},
			{Key: "2026-03-01", Totals: &factoryv1.SpendTotals{CostMicros: 55e6}},
		}
	case factoryv1.SpendGroupBy_SPEND_GROUP_BY_AGENT:
		out.Groups = []*factoryv1.SpendGroup{{Key: "planner-01", Totals: &factoryv1.SpendTotals{CostMicros: 40e6, Events: 1000}}}
		out.GroupsLeftOut = 7
	default:
		out.Groups = []*factoryv1.SpendGroup{{Key: "frontier", Totals: out.Totals}}
	}
	return out, nil
}

func renderSpendPage(t *testing.T, fb *fakeBudget) string {
	t.Helper()
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{Now: time.Now}.WithDefaults(), pages: pages, budget: fb}
	s.log = s.cfg.Logger
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/spend", nil)
	if err := s.spendPage(&request{w: w, r: r, ctx: r.Context(), csrf: "tok"}); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	return w.Body.String()
}

func TestSpendPageRenders(t *testing.T) {
	fb := &fakeBudget{stop: &factoryv1.EmergencyStopState{}}
	page := renderSpendPage(t, fb)
	if len(fb.calls) != 5 {
		t.Errorf("%d reads (%v), want 5: the page's cost must not grow with the data", len(fb.calls), fb.calls)
	}
	for _, want := range []string{
		`<div class="big">$55.00</div>`, `<div class="big">$12.00</div>`, `<div class="big">$20.00</div>`, // today, yesterday, 7-day average
		"1,234 call(s)", "18,650,000 in", "planner-01", "7 more not shown",
		`<svg class="chart" viewBox="0 0 600 120"`, "<title>2026-03-01: $55.00</title>", "max $55.00 on 2026-03-01",
		`id="emergency"`, `action="/emergency/stop"`, `data-confirm="Stop the whole fleet?"`, `name="reason"`,
		`<span class="chip bad">capped</span>`, `<span class="chip bad">alerting</span>`, "<meter", "crossed $50.00",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if n := strings.Count(page, "<rect "); n != 30 {
		t.Errorf("%d bars, want 30 (2026-01-31 to 2026-03-01)", n)
	}
	if regexp.MustCompile(`(?i)\sstyle=|<script>|<style`).MatchString(page) {
		t.Error("page has a style attribute, a style element or an inline script; the CSP refuses them")
	}
	if strings.Contains(page, "/emergency/rearm") {
		t.Error("a running fleet offers a re-arm")
	}

	fb = &fakeBudget{stop: &factoryv1.EmergencyStopState{Stopped: true, Reason: "runaway loop", StoppedBy: "budget", StoppedAt: timestamppb.Now(), PausedTasks: 4}}
	page = renderSpendPage(t, fb)
	for _, want := range []string{`action="/emergency/rearm"`, "resume the 4 task(s)", "runaway loop", `class="banner bad"`, `name="note"`} {
		if !strings.Contains(page, want) {
			t.Errorf("stopped page lacks %q", want)
		}
	}
	if strings.Contains(page, `action="/emergency/stop"`) {
		t.Error("a stopped fleet offers another stop")
	}
}
