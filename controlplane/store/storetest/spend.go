package storetest

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// spendDay is the day the spend cases record against; the suite passes
// days as the domain would, already computed in its zone.
const spendDay = "2031-03-14"

func spendEvent(id, agent, tier string, cost int64) *store.SpendEvent {
	return &store.SpendEvent{
		ID: id, Agent: agent, Host: "ws-1", Model: "claude-sonnet-4", Provider: "anthropic", Tier: tier,
		InputTokens: 1000, OutputTokens: 100, CostMicros: cost, TaskID: "task-" + agent,
		OccurredAt: baseTime, Day: spendDay,
	}
}

func (h *harness) record(events ...*store.SpendEvent) *store.SpendRecordResult {
	h.t.Helper()
	res, err := h.s.SpendRecord(h.ctx, &store.SpendRecordParams{Events: events, Now: h.now()})
	if err != nil {
		h.t.Fatalf("SpendRecord: %v", err)
	}
	return res
}

func (h *harness) rollup(p store.SpendRollupQueryParams) *store.SpendRollupResult {
	h.t.Helper()
	if p.FromDay == "" {
		p.FromDay, p.ToDay = spendDay, spendDay
	}
	res, err := h.s.SpendRollupQuery(h.ctx, &p)
	if err != nil {
		h.t.Fatalf("SpendRollupQuery: %v", err)
	}
	return res
}

func (h *harness) totalCost(day string) int64 {
	h.t.Helper()
	return h.rollup(store.SpendRollupQueryParams{Dimension: store.DimTotal, FromDay: day, ToDay: day}).Rows[0].CostMicros
}

func (h *harness) reserve(id, agent, tier string, estimate int64, ttl time.Duration, caps ...store.SpendCap) error {
	h.t.Helper()
	_, err := h.s.SpendReserve(h.ctx, &store.SpendReserveParams{
		Reservation: &store.SpendReservation{ID: id, Agent: agent, Tier: tier, EstimateMicros: estimate, Day: spendDay,
			ExpiresAt: h.now().Add(ttl)},
		Caps: caps,
		Now:  h.now(),
	})
	return err
}

func totalCap(c int64) store.SpendCap {
	return store.SpendCap{Scope: store.ScopeTotal, CapMicros: c, Subject: "budget:total"}
}

func (s *suite) testSpend(t *testing.T) {
	s.runCases(t, []testCase{
		{"RecordRoundTripsAndRollsUp", func(t *testing.T, h *harness) {
			e := spendEvent("e1", "forge", store.TierFrontier, 1_250_000)
			e.PricedByServer = true
			res := h.record(e)
			if res.Recorded != 1 || len(res.Duplicates) != 1 || res.Duplicates[0] {
				t.Fatalf("record: %+v", res)
			}
			got, err := h.s.SpendGet(h.ctx, "forge", "e1")
			if err != nil {
				t.Fatal(err)
			}
			if got.Agent != "forge" || got.CostMicros != 1_250_000 || !got.PricedByServer || got.Day != spendDay ||
				!got.OccurredAt.Equal(baseTime) || !got.RecordedAt.Equal(h.now()) || got.InputTokens != 1000 || got.TaskID != "task-forge" {
				t.Errorf("stored %+v", got)
			}
			if _, err := h.s.SpendGet(h.ctx, "forge", "nope"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("SpendGet(unknown) = %v, want ErrNotFound", err)
			}
			tot := h.rollup(store.SpendRollupQueryParams{Dimension: store.DimTotal}).Rows[0]
			if tot.CostMicros != 1_250_000 || tot.Events != 1 || tot.InputTokens != 1000 || tot.OutputTokens != 100 {
				t.Errorf("total rollup %+v", tot)
			}
		}},
		{"DuplicateIDsCountOnce", func(t *testing.T, h *harness) {
			h.record(spendEvent("a", "forge", store.TierMid, 100))
			res := h.record(spendEvent("a", "forge", store.TierMid, 100), spendEvent("b", "forge", store.TierMid, 10),
				spendEvent("b", "forge", store.TierMid, 10))
			if res.Recorded != 1 || !res.Duplicates[0] || res.Duplicates[1] || !res.Duplicates[2] {
				t.Fatalf("record: %+v", res)
			}
			if got := h.totalCost(spendDay); got != 110 {
				t.Errorf("total = %d, want 110", got)
			}
		}},
		{"IDsArePerAgent", func(t *testing.T, h *harness) {
			// hammer's real call, sent with an id forge already used, is
			// hammer's own event: counted, and forge's left as it was.
			h.record(spendEvent("shared", "forge", store.TierMid, 0))
			res := h.record(spendEvent("shared", "hammer", store.TierMid, 50_000_000))
			if res.Recorded != 1 || res.Duplicates[0] || len(res.Conflicts) != 0 {
				t.Fatalf("hammer's event with forge's id: %+v", res)
			}
			forge, err := h.s.SpendGet(h.ctx, "forge", "shared")
			if err != nil || forge.CostMicros != 0 {
				t.Fatalf("forge's event: %+v, %v", forge, err)
			}
			hammer, err := h.s.SpendGet(h.ctx, "hammer", "shared")
			if err != nil || hammer.CostMicros != 50_000_000 {
				t.Fatalf("hammer's event: %+v, %v", hammer, err)
			}
			if got := h.totalCost(spendDay); got != 50_000_000 {
				t.Errorf("total = %d, want hammer's 50000000", got)
			}
		}},
		{"DifferingResendIsAConflict", func(t *testing.T, h *harness) {
			h.record(spendEvent("a", "forge", store.TierMid, 100))
			same := spendEvent("a", "forge", store.TierMid, 100)
			same.OccurredAt = baseTime.Add(time.Minute) // a retry stamped later, the same day
			dearer := spendEvent("a", "forge", store.TierMid, 9_000_000)
			dearer.InputTokens = 5
			inBatch := spendEvent("b", "forge", store.TierMid, 10)
			inBatchAgain := spendEvent("b", "forge", store.TierFrontier, 10)
			res := h.record(same, dearer, spendEvent("c", "forge", store.TierMid, 1), inBatch, inBatchAgain)
			if res.Recorded != 2 || !res.Duplicates[0] || res.Duplicates[1] || res.Duplicates[4] {
				t.Fatalf("record: %+v", res)
			}
			if len(res.Conflicts) != 2 {
				t.Fatalf("conflicts %+v, want events 1 and 4", res.Conflicts)
			}
			c := res.Conflicts[0]
			if c.Index != 1 || c.Agent != "forge" || c.ID != "a" || fmt.Sprint(c.Fields) != "[input_tokens cost_micros]" {
				t.Errorf("conflict of the stored id: %+v", c)
			}
			if c := res.Conflicts[1]; c.Index != 4 || fmt.Sprint(c.Fields) != "[tier]" {
				t.Errorf("conflict within the batch: %+v", c)
			}
			if got := h.totalCost(spendDay); got != 111 {
				t.Errorf("total = %d, want 111: a rewrite must change nothing", got)
			}
			if got, _ := h.s.SpendGet(h.ctx, "forge", "a"); got == nil || got.CostMicros != 100 {
				t.Errorf("stored event after the rewrite: %+v", got)
			}
		}},
		{"ConcurrentDuplicatesCountOnce", func(t *testing.T, h *harness) {
			var wg sync.WaitGroup
			recorded := make([]int, 16)
			for w := range 16 {
				wg.Go(func() {
					var evs []*store.SpendEvent
					for i := range 20 {
						evs = append(evs, spendEvent(fmt.Sprintf("ev-%d", (i+w)%20), "forge", store.TierMid, 1000))
					}
					res, err := h.s.SpendRecord(h.ctx, &store.SpendRecordParams{Events: evs, Now: h.now()})
					if err != nil {
						t.Errorf("SpendRecord: %v", err)
						return
					}
					recorded[w] = res.Recorded
				})
			}
			wg.Wait()
			sum := 0
			for _, n := range recorded {
				sum += n
			}
			if sum != 20 {
				t.Errorf("recorded %d in all, want 20", sum)
			}
			tot := h.rollup(store.SpendRollupQueryParams{Dimension: store.DimTotal}).Rows[0]
			if tot.CostMicros != 20_000 || tot.Events != 20 {
				t.Errorf("total %+v, want 20 events costing 20000", tot)
			}
		}},
		{"BadEventChangesNothing", func(t *testing.T, h *harness) {
			bad := spendEvent("x", "forge", "premium", 1)
			_, err := h.s.SpendRecord(h.ctx, &store.SpendRecordParams{Events: []*store.SpendEvent{spendEvent("ok", "forge", store.TierMid, 5), bad}, Now: h.now()})
			var fe *store.FieldError
			if !errors.As(err, &fe) || fe.Field != "event.tier" {
				t.Fatalf("err = %v, want a FieldError on event.tier", err)
			}
			if got := h.totalCost(spendDay); got != 0 {
				t.Errorf("total = %d after a refused batch", got)
			}
		}},
		{"ReportsByDimensionAndRange", func(t *testing.T, h *harness) {
			mk := func(id, agent, model, provider, tier, task, day string, cost int64) *store.SpendEvent {
				return &store.SpendEvent{ID: id, Agent: agent, Model: model, Provider: provider, Tier: tier, TaskID: task,
					CostMicros: cost, InputTokens: 1, OutputTokens: 2, OccurredAt: baseTime, Day: day}
			}
			h.record(
				mk("1", "forge", "opus", "anthropic", store.TierFrontier, "t1", "2031-03-12", 5_000_000),
				mk("2", "forge", "haiku", "anthropic", store.TierMid, "t1", "2031-03-13", 1_000_000),
				mk("3", "hammer", "opus", "anthropic", store.TierFrontier, "t2", "2031-03-13", 3_000_000),
				mk("4", "hammer", "gpt-4o", "openai", store.TierMid, "t2", "2031-03-14", 2_000_000),
				mk("5", "scout", "qwen", "ollama", store.TierLocal, "", "2031-03-14", 0),
			)
			all := store.SpendRollupQueryParams{FromDay: "2031-03-12", ToDay: "2031-03-14"}
			keys := func(res *store.SpendRollupResult) map[string]int64 {
				m := map[string]int64{}
				for _, r := range res.Rows {
					m[r.Key] = r.CostMicros
				}
				return m
			}
			check := func(name string, p store.SpendRollupQueryParams, want map[string]int64) {
				t.Helper()
				got := keys(h.rollup(p))
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s: got %v, want %v", name, got, want)
				}
			}
			by := func(dim string) store.SpendRollupQueryParams {
				p := all
				p.Dimension, p.Group = dim, store.GroupKey
				return p
			}
			check("agent", by(store.DimAgent), map[string]int64{"forge": 6_000_000, "hammer": 5_000_000, "scout": 0})
			check("model", by(store.DimModel), map[string]int64{"opus": 8_000_000, "haiku": 1_000_000, "gpt-4o": 2_000_000, "qwen": 0})
			check("provider", by(store.DimProvider), map[string]int64{"anthropic": 9_000_000, "openai": 2_000_000, "ollama": 0})
			check("tier", by(store.DimTier), map[string]int64{"frontier": 8_000_000, "mid": 3_000_000, "local": 0})
			check("task", by(store.DimTask), map[string]int64{"t1": 6_000_000, "t2": 5_000_000, "": 0})
			day := all
			day.Dimension, day.Group = store.DimTotal, store.GroupDay
			got := h.rollup(day)
			if len(got.Rows) != 3 || got.Rows[0].Key != "2031-03-12" || got.Rows[2].Key != "2031-03-14" || got.Rows[1].CostMicros != 4_000_000 {
				t.Errorf("by day: %+v", got.Rows)
			}
			// A range of one day, and an agent's breakdown by model.
			one := by(store.DimAgent)
			one.FromDay, one.ToDay = "2031-03-13", "2031-03-13"
			check("agent on one day", one, map[string]int64{"forge": 1_000_000, "hammer": 3_000_000})
			am := by(store.CompositeDim(store.DimAgent, store.DimModel))
			am.KeyPrefix = "hammer" + store.RollupSep
			check("hammer by model", am, map[string]int64{"opus": 3_000_000, "gpt-4o": 2_000_000})
			ag := all
			ag.Dimension, ag.Key = store.DimAgent, "forge"
			if r := h.rollup(ag).Rows[0]; r.CostMicros != 6_000_000 || r.Events != 2 || r.InputTokens != 2 || r.OutputTokens != 4 {
				t.Errorf("forge's totals %+v", r)
			}
			// Largest first, limited.
			lim := by(store.DimModel)
			lim.Limit = 2
			res := h.rollup(lim)
			if len(res.Rows) != 2 || res.Rows[0].Key != "opus" || res.Rows[1].Key != "gpt-4o" || res.LeftOut != 2 {
				t.Errorf("limited: %+v left out %d", res.Rows, res.LeftOut)
			}
			// An empty range sums to zeros.
			empty := store.SpendRollupQueryParams{Dimension: store.DimTotal, FromDay: "2031-01-01", ToDay: "2031-01-31"}
			if r := h.rollup(empty); len(r.Rows) != 1 || r.Rows[0].CostMicros != 0 {
				t.Errorf("empty range: %+v", r.Rows)
			}
		}},
		{"VoidNetsOutEverywhere", func(t *testing.T, h *harness) {
			h.record(spendEvent("real", "forge", store.TierFrontier, 2_000_000), spendEvent("bogus", "forge", store.TierFrontier, 50_000_000_000),
				spendEvent("other", "hammer", store.TierMid, 1_000_000))
			if _, err := h.s.SpendReserve(h.ctx, &store.SpendReserveParams{
				Reservation: &store.SpendReservation{ID: "r1", Agent: "forge", Tier: store.TierFrontier, EstimateMicros: 1_000_000, Day: spendDay, ExpiresAt: h.now().Add(time.Hour)},
				Caps:        []store.SpendCap{{Scope: store.ScopeAgent, Key: "forge", CapMicros: 10_000_000, Subject: "budget:agent:forge"}},
				Now:         h.now(),
			}); !errors.Is(err, store.ErrQuotaExceeded) {
				t.Fatalf("reserve before the void = %v, want the agent cap to refuse it", err)
			}
			ev, err := h.s.SpendVoid(h.ctx, &store.SpendVoidParams{Agent: "forge", ID: "bogus", Reason: "test event", VoidedBy: "ops", Now: h.now()})
			if err != nil {
				t.Fatalf("SpendVoid: %v", err)
			}
			if ev.CostMicros != 50_000_000_000 || ev.Void == nil || ev.Void.VoidedBy != "ops" || !ev.Void.VoidedAt.Equal(h.now()) {
				t.Errorf("voided event %+v (void %+v)", ev, ev.Void)
			}
			// The ledger keeps both: the event and its reversal.
			got, err := h.s.SpendGet(h.ctx, "forge", "bogus")
			if err != nil || got.CostMicros != 50_000_000_000 || got.Void == nil || got.Void.Reason != "test event" {
				t.Fatalf("the voided event as stored: %+v, %v", got, err)
			}
			if real, _ := h.s.SpendGet(h.ctx, "forge", "real"); real == nil || real.Void != nil {
				t.Errorf("an event not voided reads as voided: %+v", real)
			}
			// Reports (the rollups, every dimension).
			tot := h.rollup(store.SpendRollupQueryParams{Dimension: store.DimTotal}).Rows[0]
			if tot.CostMicros != 3_000_000 || tot.Events != 2 || tot.InputTokens != 2000 {
				t.Errorf("total after the void %+v, want 2 events costing 3000000", tot)
			}
			byAgent := map[string]int64{}
			for _, r := range h.rollup(store.SpendRollupQueryParams{Dimension: store.DimAgent, Group: store.GroupKey}).Rows {
				byAgent[r.Key] = r.CostMicros
			}
			if byAgent["forge"] != 2_000_000 || byAgent["hammer"] != 1_000_000 {
				t.Errorf("by agent after the void %v", byAgent)
			}
			am := h.rollup(store.SpendRollupQueryParams{Dimension: store.CompositeDim(store.DimAgent, store.DimTier), Key: "forge" + store.RollupSep + store.TierFrontier}).Rows[0]
			if am.CostMicros != 2_000_000 {
				t.Errorf("forge/frontier after the void %+v", am)
			}
			// Budgets (the standing the gate and thresholds read).
			st, err := h.s.SpendStanding(h.ctx, &store.SpendStandingParams{Day: spendDay, Now: h.now()})
			if err != nil {
				t.Fatal(err)
			}
			if st.Spent[store.DimTotal][""] != 3_000_000 || st.Spent[store.DimAgent]["forge"] != 2_000_000 || st.Spent[store.DimTier][store.TierFrontier] != 2_000_000 {
				t.Errorf("standing after the void %v", st.Spent)
			}
			if err := h.reserve("r2", "forge", store.TierFrontier, 1_000_000, time.Hour,
				store.SpendCap{Scope: store.ScopeAgent, Key: "forge", CapMicros: 10_000_000, Subject: "budget:agent:forge"}); err != nil {
				t.Errorf("reserve after the void: %v", err)
			}
			// Twice is refused, and changes nothing.
			_, err = h.s.SpendVoid(h.ctx, &store.SpendVoidParams{Agent: "forge", ID: "bogus", Reason: "again", VoidedBy: "ops", Now: h.now()})
			requireIs(t, err, store.ErrAlreadyExists, "a second void")
			if got := h.totalCost(spendDay); got != 3_000_000 {
				t.Errorf("total after a refused second void = %d", got)
			}
			_, err = h.s.SpendVoid(h.ctx, &store.SpendVoidParams{Agent: "hammer", ID: "bogus", Reason: "wrong agent", VoidedBy: "ops", Now: h.now()})
			requireIs(t, err, store.ErrNotFound, "a void of another agent's id")
			// A resend of the voided event is a duplicate: it does not
			// come back.
			if res := h.record(spendEvent("bogus", "forge", store.TierFrontier, 50_000_000_000)); res.Recorded != 0 || !res.Duplicates[0] {
				t.Errorf("resend of a voided event: %+v", res)
			}
			if got := h.totalCost(spendDay); got != 3_000_000 {
				t.Errorf("total after resending a voided event = %d", got)
			}
		}},
		{"SumsAtTheInt64EdgeAreRefused", func(t *testing.T, h *harness) {
			const edge = math.MaxInt64 - 1_000
			// The day's total sits at the edge (thousands of agents at
			// their ceiling would be needed to get here by reports).
			if err := h.s.SpendRollupAdd(h.ctx, []store.SpendRollup{{Day: spendDay, Dimension: store.DimTotal, SpendTotals: store.SpendTotals{CostMicros: edge, Events: 1}}}); err != nil {
				t.Fatalf("seeding the edge: %v", err)
			}
			_, err := h.s.SpendRecord(h.ctx, &store.SpendRecordParams{Events: []*store.SpendEvent{spendEvent("over", "forge", store.TierMid, 5_000)}, Now: h.now()})
			var fe *store.FieldError
			if !errors.As(err, &fe) || fe.Field != "event.cost_micros" {
				t.Fatalf("an event past the edge = %v, want a FieldError on event.cost_micros", err)
			}
			if got := h.totalCost(spendDay); got != edge {
				t.Errorf("total = %d after a refused event, want %d (not wrapped, not changed)", got, int64(edge))
			}
			if _, err := h.s.SpendGet(h.ctx, "forge", "over"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the refused event was stored: %v", err)
			}
			// Under the edge still records.
			h.record(spendEvent("under", "forge", store.TierMid, 1_000))
			if got := h.totalCost(spendDay); got != math.MaxInt64 {
				t.Errorf("total = %d, want exactly MaxInt64", got)
			}
			// A sum over days that would pass the range is refused.
			next := "2031-03-15"
			if err := h.s.SpendRollupAdd(h.ctx, []store.SpendRollup{{Day: next, Dimension: store.DimTotal, SpendTotals: store.SpendTotals{CostMicros: 10, Events: 1}}}); err != nil {
				t.Fatal(err)
			}
			_, err = h.s.SpendRollupQuery(h.ctx, &store.SpendRollupQueryParams{Dimension: store.DimTotal, FromDay: spendDay, ToDay: next})
			if !errors.As(err, &fe) {
				t.Errorf("a range summing past int64 = %v, want a FieldError", err)
			}
			// The day on its own still reads.
			if got := h.totalCost(next); got != 10 {
				t.Errorf("the next day = %d", got)
			}
		}},
		{"OneAgentCannotFillTheDay", func(t *testing.T, h *harness) {
			// forge at its ceiling: its next event is refused, hammer's is
			// recorded and every read still answers.
			if err := h.s.SpendRollupAdd(h.ctx, []store.SpendRollup{
				{Day: spendDay, Dimension: store.DimAgent, Key: "forge", SpendTotals: store.SpendTotals{CostMicros: store.MaxAgentDayMicros - 10, Events: 1}},
				{Day: spendDay, Dimension: store.DimTotal, SpendTotals: store.SpendTotals{CostMicros: store.MaxAgentDayMicros - 10, Events: 1}},
			}); err != nil {
				t.Fatal(err)
			}
			_, err := h.s.SpendRecord(h.ctx, &store.SpendRecordParams{Events: []*store.SpendEvent{spendEvent("f1", "forge", store.TierMid, 11)}, Now: h.now()})
			var fe *store.FieldError
			if !errors.As(err, &fe) || fe.Field != "event.cost_micros" {
				t.Fatalf("forge past its ceiling = %v, want a FieldError on event.cost_micros", err)
			}
			h.record(spendEvent("h1", "hammer", store.TierMid, 1_000_000))
			h.record(spendEvent("f2", "forge", store.TierMid, 10))
			if got, want := h.totalCost(spendDay), int64(store.MaxAgentDayMicros+1_000_000); got != want {
				t.Errorf("total = %d, want %d", got, want)
			}
			if _, err := h.s.SpendStanding(h.ctx, &store.SpendStandingParams{Day: spendDay, Now: h.now()}); err != nil {
				t.Errorf("standing: %v", err)
			}
		}},
		{"RollupAddSeedsReports", func(t *testing.T, h *harness) {
			err := h.s.SpendRollupAdd(h.ctx, []store.SpendRollup{
				{Day: spendDay, Dimension: store.DimTotal, SpendTotals: store.SpendTotals{CostMicros: 7, Events: 3}},
			})
			if err != nil {
				t.Fatal(err)
			}
			h.record(spendEvent("e", "forge", store.TierMid, 3))
			if got := h.totalCost(spendDay); got != 10 {
				t.Errorf("total = %d, want 10", got)
			}
		}},
		{"BudgetsUpsertAndList", func(t *testing.T, h *harness) {
			set := func(b store.Budget) {
				t.Helper()
				b.UpdatedAt = h.now()
				if _, err := h.s.BudgetSet(h.ctx, &b); err != nil {
					t.Fatalf("BudgetSet %+v: %v", b, err)
				}
			}
			set(store.Budget{Scope: store.ScopeTotal, TargetMicros: 30_000_000, AlertMicros: 50_000_000, EmergencyMicros: 100_000_000})
			set(store.Budget{Scope: store.ScopeAgent, Key: "forge", CapMicros: 10_000_000})
			set(store.Budget{Scope: store.ScopeAgent, Key: "forge", CapMicros: 12_000_000})
			set(store.Budget{Scope: store.ScopeTier, Key: store.TierFrontier, AlertMicros: 25_000_000})
			list, err := h.s.BudgetList(h.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 3 || list[0].Scope != store.ScopeAgent || list[0].CapMicros != 12_000_000 ||
				list[1].Scope != store.ScopeTier || list[2].EmergencyMicros != 100_000_000 || !list[2].UpdatedAt.Equal(h.now()) {
				for _, b := range list {
					t.Logf("%+v", b)
				}
				t.Errorf("listed %d budgets, not as set", len(list))
			}
			for _, bad := range []store.Budget{
				{Scope: "galaxy"},
				{Scope: store.ScopeTier, Key: "premium"},
				{Scope: store.ScopeTotal, Key: "x"},
				{Scope: store.ScopeAgent, Key: "a", CapMicros: -1},
				{Scope: store.ScopeAgent, Key: "a", EmergencyMicros: 1},
			} {
				if _, err := h.s.BudgetSet(h.ctx, &bad); !errors.Is(err, store.ErrInvalidArgument) {
					t.Errorf("BudgetSet(%+v) = %v, want invalid", bad, err)
				}
			}
		}},
		{"ReservationsHoldAgainstCaps", func(t *testing.T, h *harness) {
			h.record(spendEvent("spent", "forge", store.TierFrontier, 6_000_000))
			caps := []store.SpendCap{totalCap(10_000_000), {Scope: store.ScopeAgent, Key: "forge", CapMicros: 8_000_000, Subject: "budget:agent:forge"}}
			if err := h.reserve("r1", "forge", store.TierFrontier, 1_500_000, time.Minute, caps...); err != nil {
				t.Fatalf("first reservation: %v", err)
			}
			// forge: 6 spent + 1.5 reserved + 1 > 8.
			err := h.reserve("r2", "forge", store.TierFrontier, 1_000_000, time.Minute, caps...)
			var qe *store.QuotaError
			if !errors.As(err, &qe) || qe.Subject != "budget:agent:forge" {
				t.Fatalf("over the agent cap: %v, want a QuotaError on budget:agent:forge", err)
			}
			// Another agent fits under the total: 6 + 1.5 + 2.5 = 10.
			if err := h.reserve("r3", "hammer", store.TierMid, 2_500_000, time.Minute, caps[0]); err != nil {
				t.Fatalf("hammer: %v", err)
			}
			err = h.reserve("r4", "hammer", store.TierMid, 1, time.Minute, caps[0])
			if !errors.As(err, &qe) || qe.Subject != "budget:total" {
				t.Fatalf("over the total cap: %v", err)
			}
			st, err := h.s.SpendStanding(h.ctx, &store.SpendStandingParams{Day: spendDay, Now: h.now()})
			if err != nil {
				t.Fatal(err)
			}
			if st.Reserved[store.ScopeTotal][""] != 4_000_000 || st.Reserved[store.ScopeAgent]["forge"] != 1_500_000 ||
				st.Reserved[store.ScopeTier][store.TierMid] != 2_500_000 || st.Spent[store.DimTotal][""] != 6_000_000 ||
				st.Spent[store.DimAgent]["forge"] != 6_000_000 || st.Spent[store.DimTier][store.TierFrontier] != 6_000_000 ||
				st.Spent[store.DimModel]["claude-sonnet-4"] != 6_000_000 {
				t.Errorf("standing %+v", st)
			}
			// Releasing r3 makes room; an unknown release is not found.
			if _, err := h.s.SpendRelease(h.ctx, &store.SpendReleaseParams{ID: "r3", Now: h.now()}); err != nil {
				t.Fatal(err)
			}
			if _, err := h.s.SpendRelease(h.ctx, &store.SpendReleaseParams{ID: "r3", Now: h.now()}); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("second release: %v", err)
			}
			if err := h.reserve("r4", "hammer", store.TierMid, 1, time.Minute, caps[0]); err != nil {
				t.Errorf("after the release: %v", err)
			}
			// A duplicate reservation id is refused.
			if err := h.reserve("r4", "hammer", store.TierMid, 1, time.Minute); !errors.Is(err, store.ErrAlreadyExists) {
				t.Errorf("same id again: %v", err)
			}
		}},
		{"SettleRecordsAndReleasesTogether", func(t *testing.T, h *harness) {
			if err := h.reserve("r", "forge", store.TierFrontier, 5_000_000, time.Minute, totalCap(10_000_000)); err != nil {
				t.Fatal(err)
			}
			_, err := h.s.SpendRecord(h.ctx, &store.SpendRecordParams{
				Events: []*store.SpendEvent{spendEvent("actual", "forge", store.TierFrontier, 4_000_000)}, ReleaseReservation: "r", Now: h.now(),
			})
			if err != nil {
				t.Fatal(err)
			}
			st, _ := h.s.SpendStanding(h.ctx, &store.SpendStandingParams{Day: spendDay, Now: h.now()})
			if st.Reserved[store.ScopeTotal][""] != 0 || st.Spent[store.DimTotal][""] != 4_000_000 {
				t.Errorf("standing after settle: %+v", st)
			}
			if _, err := h.s.SpendReservationGet(h.ctx, "r"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("settled reservation still there: %v", err)
			}
			// Settling with a rewrite of a recorded id settles nothing.
			if err := h.reserve("r2", "forge", store.TierFrontier, 1_000_000, time.Minute); err != nil {
				t.Fatal(err)
			}
			res, err := h.s.SpendRecord(h.ctx, &store.SpendRecordParams{
				Events: []*store.SpendEvent{spendEvent("actual", "forge", store.TierFrontier, 9)}, ReleaseReservation: "r2", Now: h.now(),
			})
			if err != nil || len(res.Conflicts) != 1 || res.Recorded != 0 {
				t.Fatalf("settle with a rewrite: %+v, %v", res, err)
			}
			if _, err := h.s.SpendReservationGet(h.ctx, "r2"); err != nil {
				t.Errorf("a refused settle released the reservation: %v", err)
			}
			// A duplicate (a retried settle) still releases.
			if _, err := h.s.SpendRecord(h.ctx, &store.SpendRecordParams{
				Events: []*store.SpendEvent{spendEvent("actual", "forge", store.TierFrontier, 4_000_000)}, ReleaseReservation: "r2", Now: h.now(),
			}); err != nil {
				t.Fatal(err)
			}
			if _, err := h.s.SpendReservationGet(h.ctx, "r2"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("a retried settle kept the reservation: %v", err)
			}
		}},
		{"ReservationsExpire", func(t *testing.T, h *harness) {
			if err := h.reserve("r", "forge", store.TierFrontier, 9_000_000, 10*time.Minute, totalCap(10_000_000)); err != nil {
				t.Fatal(err)
			}
			if err := h.reserve("r2", "forge", store.TierFrontier, 2_000_000, time.Minute, totalCap(10_000_000)); !errors.Is(err, store.ErrQuotaExceeded) {
				t.Fatalf("while held: %v", err)
			}
			h.clock.Advance(10 * time.Minute)
			st, _ := h.s.SpendStanding(h.ctx, &store.SpendStandingParams{Day: spendDay, Now: h.now()})
			if st.Reserved[store.ScopeTotal][""] != 0 {
				t.Errorf("an expired reservation still counts: %+v", st.Reserved)
			}
			if err := h.reserve("r2", "forge", store.TierFrontier, 2_000_000, time.Minute, totalCap(10_000_000)); err != nil {
				t.Fatalf("after expiry: %v", err)
			}
		}},
		{"ConcurrentReservationsNeverOvershoot", func(t *testing.T, h *harness) {
			const cap, each = 10_000_000, 700_000
			var wg sync.WaitGroup
			var mu sync.Mutex
			granted := 0
			for w := range 32 {
				wg.Go(func() {
					err := h.reserve(fmt.Sprintf("r%d", w), fmt.Sprintf("agent-%d", w%4), store.TierFrontier, each, time.Minute, totalCap(cap))
					switch {
					case err == nil:
						mu.Lock()
						granted++
						mu.Unlock()
					case !errors.Is(err, store.ErrQuotaExceeded):
						t.Errorf("reserve: %v", err)
					}
				})
			}
			wg.Wait()
			if granted != cap/each {
				t.Errorf("granted %d reservations of %d under a cap of %d, want exactly %d", granted, each, cap, cap/each)
			}
		}},
		{"AlertsOncePerDayPerScope", func(t *testing.T, h *harness) {
			raise := func(day, scope, key string) bool {
				t.Helper()
				ok, err := h.s.SpendAlertRaise(h.ctx, &store.SpendAlert{Day: day, Scope: scope, Key: key, ThresholdMicros: 5, SpentMicros: 6, RaisedAt: h.now()})
				if err != nil {
					t.Fatal(err)
				}
				return ok
			}
			if !raise(spendDay, store.ScopeTotal, "") || raise(spendDay, store.ScopeTotal, "") {
				t.Error("total: want raised once")
			}
			if !raise(spendDay, store.ScopeAgent, "forge") || !raise(spendDay, store.ScopeAgent, "hammer") || !raise("2031-03-15", store.ScopeTotal, "") {
				t.Error("other scopes and days raise on their own")
			}
			list, err := h.s.SpendAlertList(h.ctx, spendDay)
			if err != nil || len(list) != 3 || list[0].ThresholdMicros != 5 || !list[0].RaisedAt.Equal(h.now()) {
				t.Errorf("alerts on %s: %v %+v", spendDay, err, list)
			}
		}},
		{"EmergencyStopIsDurableState", func(t *testing.T, h *harness) {
			st, err := h.s.EmergencyStopGet(h.ctx)
			if err != nil || st.Stopped {
				t.Fatalf("fresh store: %+v %v", st, err)
			}
			st, started, err := h.s.EmergencyStopStart(h.ctx, &store.EmergencyStopStartParams{Reason: "runaway", StoppedBy: "budget", Now: h.now()})
			if err != nil || !started || !st.Stopped || st.Reason != "runaway" || !st.StoppedAt.Equal(h.now()) {
				t.Fatalf("start: %+v %v %v", st, started, err)
			}
			if err := h.s.EmergencyStopNotePaused(h.ctx, &store.EmergencyStopNotePausedParams{PausedQueue: true, PausedTasks: 4}); err != nil {
				t.Fatal(err)
			}
			h.clock.Advance(time.Minute)
			st, started, err = h.s.EmergencyStopStart(h.ctx, &store.EmergencyStopStartParams{Reason: "again", StoppedBy: "op", Now: h.now()})
			if err != nil || started || st.Reason != "runaway" || !st.PausedQueue || st.PausedTasks != 4 {
				t.Fatalf("second start keeps the first: %+v %v %v", st, started, err)
			}
			prev, err := h.s.EmergencyStopRearm(h.ctx, &store.EmergencyStopRearmParams{Now: h.now()})
			if err != nil || !prev.Stopped || !prev.PausedQueue || prev.PausedTasks != 4 {
				t.Fatalf("rearm: %+v %v", prev, err)
			}
			prev, err = h.s.EmergencyStopRearm(h.ctx, &store.EmergencyStopRearmParams{Now: h.now()})
			if err != nil || prev.Stopped {
				t.Fatalf("second rearm saw %+v %v", prev, err)
			}
			if st, _ := h.s.EmergencyStopGet(h.ctx); st.Stopped || st.PausedQueue {
				t.Errorf("after rearm: %+v", st)
			}
		}},
	})
}
