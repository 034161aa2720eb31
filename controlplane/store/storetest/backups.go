package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (s *suite) testBackups(t *testing.T) {
	s.runCases(t, []testCase{
		{"RecordListAndSummary", func(t *testing.T, h *harness) {
			sum, err := h.s.BackupSummary(h.ctx)
			if err != nil {
				t.Fatalf("BackupSummary: %v", err)
			}
			if sum.LastGood != nil || sum.Last != nil || sum.Failures != 0 || !sum.FirstStartedAt.IsZero() {
				t.Fatalf("a fresh store has backups: %+v", sum)
			}
			t0 := h.now()
			runs := []*store.BackupRun{
				{ID: "b1", StartedAt: t0, FinishedAt: t0.Add(time.Second), Path: "/srv/b/1", Bytes: 100, Verified: true},
				{ID: "b2", StartedAt: t0.Add(6 * time.Hour), FinishedAt: t0.Add(6*time.Hour + time.Second), Path: "/srv/b/2", Bytes: 120, Verified: true},
				// The newest failed: it must not count as the last good one.
				{ID: "b3", StartedAt: t0.Add(12 * time.Hour), FinishedAt: t0.Add(12*time.Hour + time.Second), Path: "/srv/b/3", Bytes: 7, Error: "checksum dump.jsonl: mismatch"},
			}
			for _, r := range runs {
				if err := h.s.BackupRecord(h.ctx, &store.BackupRecordParams{Run: r}); err != nil {
					t.Fatalf("BackupRecord %s: %v", r.ID, err)
				}
			}
			if err := h.s.BackupRecord(h.ctx, &store.BackupRecordParams{Run: runs[0]}); !errors.Is(err, store.ErrAlreadyExists) {
				t.Errorf("recording b1 twice: %v, want already exists", err)
			}
			if err := h.s.BackupRecord(h.ctx, &store.BackupRecordParams{Run: &store.BackupRun{ID: "x"}}); !errors.Is(err, store.ErrInvalidArgument) {
				t.Errorf("a run without a start: %v, want invalid argument", err)
			}
			sum, err = h.s.BackupSummary(h.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if sum.LastGood == nil || sum.LastGood.ID != "b2" || !sum.LastGood.StartedAt.Equal(t0.Add(6*time.Hour)) || sum.LastGood.Path != "/srv/b/2" || sum.LastGood.Bytes != 120 {
				t.Errorf("last good: %+v, want b2", sum.LastGood)
			}
			if sum.Last == nil || sum.Last.ID != "b3" || sum.Last.Verified || sum.Last.Error == "" {
				t.Errorf("last: %+v, want the failed b3", sum.Last)
			}
			if sum.Failures != 1 || !sum.FirstStartedAt.Equal(t0) {
				t.Errorf("failures %d first %v, want 1 and %v", sum.Failures, sum.FirstStartedAt, t0)
			}

			list, err := h.s.BackupList(h.ctx, &store.BackupListParams{})
			if err != nil {
				t.Fatal(err)
			}
			if ids := backupIDs(list); ids != "b3 b2 b1" {
				t.Errorf("list: %s, want newest first b3 b2 b1", ids)
			}
			if err := h.s.BackupMarkRemoved(h.ctx, &store.BackupMarkRemovedParams{IDs: []string{"b1", "nope"}, Now: t0.Add(24 * time.Hour)}); err != nil {
				t.Fatalf("BackupMarkRemoved: %v", err)
			}
			list, err = h.s.BackupList(h.ctx, &store.BackupListParams{Present: true})
			if err != nil {
				t.Fatal(err)
			}
			if ids := backupIDs(list); ids != "b3 b2" {
				t.Errorf("present: %s, want b3 b2", ids)
			}
			list, err = h.s.BackupList(h.ctx, &store.BackupListParams{Limit: 1})
			if err != nil {
				t.Fatal(err)
			}
			if ids := backupIDs(list); ids != "b3" {
				t.Errorf("limit 1: %s, want b3", ids)
			}
			all, err := h.s.BackupList(h.ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 3 || !all[2].RemovedAt.Equal(t0.Add(24*time.Hour)) || !all[1].RemovedAt.IsZero() {
				t.Errorf("removed_at after marking b1: %+v", all)
			}
			// Marking again keeps the first time.
			if err := h.s.BackupMarkRemoved(h.ctx, &store.BackupMarkRemovedParams{IDs: []string{"b1"}, Now: t0.Add(48 * time.Hour)}); err != nil {
				t.Fatal(err)
			}
			all, _ = h.s.BackupList(h.ctx, nil)
			if !all[2].RemovedAt.Equal(t0.Add(24 * time.Hour)) {
				t.Errorf("a second mark moved removed_at to %v", all[2].RemovedAt)
			}
		}},
		{"VacuumReportsSizes", func(t *testing.T, h *harness) {
			h.createReady("a", "b", "c")
			rep, err := h.s.Vacuum(h.ctx)
			if err != nil {
				t.Fatalf("Vacuum: %v", err)
			}
			if rep.Driver == "" || rep.BytesBefore <= 0 || rep.BytesAfter <= 0 || rep.Took <= 0 {
				t.Errorf("vacuum report: %+v", rep)
			}
			// The store keeps working afterwards.
			h.createReady("d")
			if st := h.stats(); st.Counts[store.StateReady] != 4 {
				t.Errorf("READY after a vacuum: %d, want 4", st.Counts[store.StateReady])
			}
		}},
	})
}

func backupIDs(runs []*store.BackupRun) string {
	out := ""
	for i, r := range runs {
		if i > 0 {
			out += " "
		}
		out += r.ID
	}
	return out
}
