package queue

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

// Watchers see every task a bulk move or a selective pause changed, and
// nothing for a dry run.
func TestBulkAndSelectivePausesAreAnnounced(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "factory.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	q, err := New(Config{Store: st, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Create(ctx, []*CreateParams{{ID: "a", Title: "a", Role: "x"}, {ID: "b", Title: "b", Role: "x"}, {ID: "c", Title: "c", Role: "y"}}); err != nil {
		t.Fatal(err)
	}
	sub := q.Subscribe(Filter{})
	defer sub.Close()
	next := func() []string {
		t.Helper()
		wait, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		events, err := sub.Next(wait, nil)
		if errors.Is(err, context.DeadlineExceeded) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range events {
			out = append(out, e.Task.ID+":"+e.Task.State.String())
		}
		return out
	}

	if _, err := q.Bulk(ctx, BulkParams{Filter: store.TaskFilter{Role: "x"}, To: store.StateFailed, DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != nil {
		t.Fatalf("a dry run announced %v", got)
	}
	if _, err := q.Bulk(ctx, BulkParams{Filter: store.TaskFilter{Role: "x"}, To: store.StateFailed}); err != nil {
		t.Fatal(err)
	}
	if got := next(); !slices.Equal(got, []string{"a:FAILED", "b:FAILED"}) {
		t.Fatalf("bulk kill announced %v", got)
	}
	id, n, err := q.PauseTasks(ctx, "freeze", store.TaskFilter{Role: "y"}, "role=y")
	if err != nil || n != 1 {
		t.Fatalf("pause: %d, %v", n, err)
	}
	if got := next(); !slices.Equal(got, []string{"c:PAUSED"}) {
		t.Fatalf("selective pause announced %v", got)
	}
	if _, err := q.ResumePauses(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got := next(); !slices.Equal(got, []string{"c:READY"}) {
		t.Fatalf("resume announced %v", got)
	}
}
