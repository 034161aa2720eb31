package sqlite_test

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
	"github.com/factory/factory/controlplane/store/storetest"
)

// TestConformance runs the shared store suite on a fresh database file per
// subtest, so parallel subtests never share a writer or a row.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		t.Helper()
		s, err := sqlite.Open(t.Context(), sqlite.Config{
			Path: filepath.Join(t.TempDir(), "factory.db"),
			// Hundreds of stores migrate here; their logs would bury
			// the failures.
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatalf("sqlite.Open: %v", err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	})
}
