package storetest

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (s *suite) testMaintenance(t *testing.T) {
	s.runCases(t, []testCase{
		{"IntegrityCheckOnAFreshStore", func(t *testing.T, h *harness) {
			rep, err := h.s.IntegrityCheck(h.ctx)
			if err != nil {
				t.Fatalf("IntegrityCheck: %v", err)
			}
			if !rep.OK || len(rep.Problems) > 0 {
				t.Errorf("a fresh store reports damage: %+v", rep)
			}
			if rep.LatestMigration < 8 || rep.MigrationVersion != rep.LatestMigration {
				t.Errorf("migration version %d, latest %d: a fresh store is at the latest", rep.MigrationVersion, rep.LatestMigration)
			}
			if rep.Driver == "" {
				t.Error("no driver named")
			}
		}},
		{"SwitchStartsOffAndRoundTrips", func(t *testing.T, h *harness) {
			m, err := h.s.MaintenanceGet(h.ctx)
			if err != nil {
				t.Fatalf("MaintenanceGet: %v", err)
			}
			if m.Active {
				t.Fatalf("a fresh store is in maintenance: %+v", m)
			}
			want := store.MaintenanceState{Active: true, Reason: "upgrade: disk swap", StartedAt: h.now().Add(-time.Minute), StartedBy: "ops", PausedQueue: true}
			if err := h.s.MaintenanceSet(h.ctx, &want); err != nil {
				t.Fatalf("MaintenanceSet: %v", err)
			}
			got, err := h.s.MaintenanceGet(h.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got.Active != want.Active || got.Reason != want.Reason || !got.StartedAt.Equal(want.StartedAt) || got.StartedBy != want.StartedBy || got.PausedQueue != want.PausedQueue {
				t.Errorf("round trip: got %+v, want %+v", got, want)
			}
			// Switching off clears everything, whatever else is passed.
			if err := h.s.MaintenanceSet(h.ctx, &store.MaintenanceState{Reason: "left over", PausedQueue: true}); err != nil {
				t.Fatal(err)
			}
			got, err = h.s.MaintenanceGet(h.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if *got != (store.MaintenanceState{}) {
				t.Errorf("after switching off: %+v", got)
			}
		}},
		{"SnapshotIsAFileOrUnsupported", func(t *testing.T, h *harness) {
			h.createReady("a", "b")
			path := filepath.Join(t.TempDir(), "snap.db")
			err := h.s.SnapshotTo(h.ctx, path)
			if errors.Is(err, store.ErrSnapshotUnsupported) {
				return
			}
			if err != nil {
				t.Fatalf("SnapshotTo: %v", err)
			}
			// A second snapshot to the same file is refused, not an overwrite.
			if err := h.s.SnapshotTo(h.ctx, path); !errors.Is(err, store.ErrInvalidArgument) {
				t.Errorf("snapshot onto an existing file: %v, want invalid argument", err)
			}
			// The store keeps working afterwards (the reader is read-only again).
			h.createReady("c")
			if st := h.stats(); st.Counts[store.StateReady] != 3 {
				t.Errorf("READY after a snapshot: %d, want 3", st.Counts[store.StateReady])
			}
		}},
	})
}
