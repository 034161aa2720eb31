package storetest

import (
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// testDumpRows covers the tables that travel as rows (store.DumpTables):
// every table of the description is read, loaded into an empty store and
// read back the same, and the merge rules hold.
func (s *suite) testDumpRows(t *testing.T) {
	s.runCases(t, []testCase{
		{"RoundTripKeepsEveryTable", func(t *testing.T, h *harness) {
			fillRows(t, h, "src")
			recs := h.fullDump()
			perTable := map[string]int{}
			for _, r := range recs {
				if r.Row != nil {
					perTable[r.Row.Table]++
				}
			}
			for _, tbl := range store.DumpTables {
				if perTable[tbl.Name] == 0 {
					t.Errorf("the dump holds no row of %s: fill it in fillRows", tbl.Name)
				}
			}
			dst := s.setup(t)
			n, err := dst.s.DumpLoad(dst.ctx, &store.DumpLoadParams{Records: store.DumpRecords(recs...)})
			if err != nil {
				t.Fatalf("DumpLoad into an empty store: %v", err)
			}
			requireCounts(t, n, countRecords(recs))
			requireSameRecords(t, "the loaded store's dump", dst.fullDump(), recs)
			// What the domain reads back.
			stop, err := dst.s.EmergencyStopGet(dst.ctx)
			if err != nil || !stop.Stopped || stop.Reason != "src stop" {
				t.Fatalf("emergency stop after the load: %+v, %v", stop, err)
			}
			gated, err := dst.s.TaskGet(dst.ctx, "src-gated")
			if err != nil || !gated.ApprovalPending || gated.ApprovalID != "src-approval" || gated.State != store.StateBacklog {
				t.Fatalf("gated task after the load: %+v, %v", gated, err)
			}
			if a, err := dst.s.ApprovalGet(dst.ctx, "src-approval"); err != nil || a.State != store.ApprovalPending || a.TaskID != "src-gated" {
				t.Fatalf("approval after the load: %+v, %v", a, err)
			}
			ev, err := dst.s.SpendGet(dst.ctx, "forge", "src-1")
			if err != nil || ev.CostMicros != 1500 || ev.Day != "2026-11-26" {
				t.Fatalf("spend event after the load: %+v, %v", ev, err)
			}
			if st, err := dst.s.QueueStats(dst.ctx); err != nil || len(st.Pauses) != 1 || st.Pauses[0].ID != "src-pause" || st.Pauses[0].Held != 1 {
				t.Fatalf("selective pauses after the load: %+v, %v", st, err)
			}
			voided, err := dst.s.SpendGet(dst.ctx, "forge", "src-0")
			if err != nil || voided.Void == nil || voided.Void.Reason != "src bogus" {
				t.Fatalf("voided spend event after the load: %+v, %v", voided, err)
			}
		}},
		{"SpendMakesAStoreNotEmpty", func(t *testing.T, h *harness) {
			src := s.setup(t)
			fillRows(t, src, "src")
			recordSpend(t, h, "mine", 1)
			before := h.fullDump()
			_, err := h.s.DumpLoad(h.ctx, &store.DumpLoadParams{Records: store.DumpRecords(src.fullDump()...)})
			requireIs(t, err, store.ErrLoadRefused, "plain load into a store holding spend")
			requireSameRecords(t, "after the refused load", h.fullDump(), before)
		}},
		{"SpendLedgersDoNotMerge", func(t *testing.T, h *harness) {
			src := s.setup(t)
			fillRows(t, src, "src")
			recordSpend(t, h, "mine", 1)
			before := h.fullDump()
			_, err := h.s.DumpLoad(h.ctx, &store.DumpLoadParams{Records: store.DumpRecords(src.fullDump()...), Merge: true})
			requireIs(t, err, store.ErrLoadRefused, "merge of a spend ledger into a store holding one")
			requireSameRecords(t, "after the refused merge", h.fullDump(), before)
		}},
		{"MergeKeepsTheStoresRows", func(t *testing.T, h *harness) {
			src := s.setup(t)
			fillRows(t, src, "src")
			// The destination holds a task (so it is not empty), its own
			// budget for the same scope, and its own emergency stop.
			h.createReady("mine")
			if _, err := h.s.BudgetSet(h.ctx, &store.Budget{Scope: "total", Key: "", AlertMicros: 7, UpdatedAt: h.now()}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := h.s.EmergencyStopStart(h.ctx, &store.EmergencyStopStartParams{Reason: "dst stop", StoppedBy: "ops", Now: h.now()}); err != nil {
				t.Fatal(err)
			}
			if _, err := h.s.DumpLoad(h.ctx, &store.DumpLoadParams{Records: store.DumpRecords(src.fullDump()...), Merge: true}); err != nil {
				t.Fatalf("merge: %v", err)
			}
			stop, _ := h.s.EmergencyStopGet(h.ctx)
			if stop.Reason != "dst stop" {
				t.Errorf("a merge replaced the store's emergency stop: %+v", stop)
			}
			budgets, _ := h.s.BudgetList(h.ctx)
			for _, b := range budgets {
				if b.Scope == "total" && b.Key == "" && b.AlertMicros != 7 {
					t.Errorf("a merge overwrote the store's total budget: %+v", b)
				}
			}
			if _, err := h.s.SpendGet(h.ctx, "forge", "src-1"); err != nil {
				t.Errorf("the merged spend event: %v", err)
			}
		}},
	})
}

// fullDump is the store's whole dump, singleton rows included.
func (h *harness) fullDump() []*store.DumpRecord {
	h.t.Helper()
	var out []*store.DumpRecord
	if err := h.s.DumpRead(h.ctx, func(r *store.DumpRecord) error {
		out = append(out, r)
		return nil
	}); err != nil {
		h.t.Fatalf("DumpRead: %v", err)
	}
	return out
}

func recordSpend(t *testing.T, h *harness, prefix string, n int) {
	t.Helper()
	var events []*store.SpendEvent
	for i := range n {
		events = append(events, &store.SpendEvent{
			ID: prefix + "-" + string(rune('0'+i)), Agent: "forge", Host: "gpu-1", Model: "claude-sonnet-4", Provider: "anthropic",
			Tier: "mid", InputTokens: 1000, OutputTokens: 200, CostMicros: 1500, TaskID: "t1",
			OccurredAt: h.now().Add(-time.Hour), Day: "2026-11-26", RecordedAt: h.now(),
		})
	}
	if _, err := h.s.SpendRecord(h.ctx, &store.SpendRecordParams{Events: events, Now: h.now()}); err != nil {
		t.Fatalf("SpendRecord: %v", err)
	}
}

// fillRows puts at least one row into every table of store.DumpTables.
func fillRows(t *testing.T, h *harness, prefix string) {
	t.Helper()
	recordSpend(t, h, prefix, 3)
	if _, err := h.s.SpendVoid(h.ctx, &store.SpendVoidParams{Agent: "forge", ID: prefix + "-0", Reason: prefix + " bogus", VoidedBy: "ops", Now: h.now()}); err != nil {
		t.Fatalf("SpendVoid: %v", err)
	}
	for _, b := range []*store.Budget{
		{Scope: "total", TargetMicros: 30_000_000, AlertMicros: 50_000_000, CapMicros: 80_000_000, EmergencyMicros: 100_000_000, UpdatedAt: h.now()},
		{Scope: "agent", Key: "forge", AlertMicros: 10_000_000, UpdatedAt: h.now()},
		{Scope: "tier", Key: "frontier", AlertMicros: 25_000_000, Off: true, UpdatedAt: h.now()},
	} {
		if _, err := h.s.BudgetSet(h.ctx, b); err != nil {
			t.Fatalf("BudgetSet: %v", err)
		}
	}
	if _, err := h.s.SpendAlertRaise(h.ctx, &store.SpendAlert{Day: "2026-11-26", Scope: "total", ThresholdMicros: 50_000_000, SpentMicros: 51_000_000, RaisedAt: h.now()}); err != nil {
		t.Fatalf("SpendAlertRaise: %v", err)
	}
	if _, err := h.s.SpendReserve(h.ctx, &store.SpendReserveParams{Reservation: &store.SpendReservation{
		ID: prefix + "-res", Agent: "forge", Tier: "frontier", Model: "claude-opus-4", EstimateMicros: 2_000_000, Day: "2026-11-26",
		CreatedAt: h.now(), ExpiresAt: h.now().Add(10 * time.Minute)}, Now: h.now()}); err != nil {
		t.Fatalf("SpendReserve: %v", err)
	}
	// A selective pause holding one task.
	h.create(&store.TaskCreate{ID: prefix + "-held", Role: prefix + "-held-role"})
	if _, err := h.s.QueuePauseTasks(h.ctx, &store.QueuePauseTasksParams{ID: prefix + "-pause", Reason: "freeze", FilterText: `{"role":"x"}`,
		Filter: store.TaskFilter{Role: prefix + "-held-role"}, Now: h.now()}); err != nil {
		t.Fatalf("QueuePauseTasks: %v", err)
	}
	if _, _, err := h.s.EmergencyStopStart(h.ctx, &store.EmergencyStopStartParams{Reason: prefix + " stop", StoppedBy: "ops", Now: h.now()}); err != nil {
		t.Fatalf("EmergencyStopStart: %v", err)
	}
	if _, err := h.s.SilenceCreate(h.ctx, &store.SilenceCreateParams{Now: h.now(), Silence: &store.Silence{
		ID: prefix + "-silence", Rule: "disk_usage", Matchers: map[string]string{"host": "gpu-1"}, CreatedBy: "ops",
		Reason: "disk swap", StartsAt: h.now(), EndsAt: h.now().Add(2 * time.Hour), CreatedAt: h.now()}}); err != nil {
		t.Fatalf("SilenceCreate: %v", err)
	}
	// A gated task: its request travels as an approvals row, the gate
	// with the task.
	h.create(&store.TaskCreate{ID: prefix + "-gated", Title: "deploy to production", Kind: "production_deploy",
		RequiresApproval: true, Approval: &store.ApprovalCreate{
			ID: prefix + "-approval", What: "deploy to production", Why: "release 1.2", Agent: "deployer",
			Risk: store.RiskHigh, Tier: 3, Kind: "production_deploy", PayloadJSON: `{"v":"1.2"}`, PayloadSHA256: "abc",
			Deadline: h.now().Add(time.Hour), DefaultOnTimeout: store.DecisionReject, TaskID: prefix + "-gated",
			ReminderAt: h.now().Add(30 * time.Minute), State: store.ApprovalPending}})
	if err := h.s.MaintenanceSet(h.ctx, &store.MaintenanceState{Active: true, Reason: prefix + " upgrade", StartedAt: h.now(), StartedBy: "ops", PausedQueue: true}); err != nil {
		t.Fatalf("MaintenanceSet: %v", err)
	}
	if _, _, err := h.s.PlacementSet(h.ctx, &store.PlacementSetParams{Agent: prefix + "-forge", Host: "gpu-1", PlacedBy: "ops", Now: h.now()}); err != nil {
		t.Fatalf("PlacementSet: %v", err)
	}
}
