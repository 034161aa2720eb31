package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/factory/factory/controlplane/store"
)

// TestClaimWalksOnlyItsRoles reads the claim statements' plans, under the
// settings a claim runs with: tasks_ready_role searched by role, and no
// walk of the READY tasks of every role (which made a backlog of one
// role slow every other role's claims).
func TestClaimWalksOnlyItsRoles(t *testing.T) {
	url := testURL(t)
	s := openTest(t, url, testSchema(t, url), Config{})
	ctx := context.Background()
	now := time.Now()
	for _, c := range []struct {
		name  string
		query string
		args  []any
	}{
		{"TaskClaim", qClaim, []any{"agent-1", now, now.Add(time.Minute), claimRoles([]string{"a", "b"}), 1, int64(1 << 20), true, []string{"frontier"}}},
		{"TaskClaimPick", qClaimPick, []any{now, claimRoles([]string{"a", "b"}), []string{"agent-1", "agent-2"}, 2, []string{"frontier"}}},
	} {
		var plan []string
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, qIndexPlans); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, "EXPLAIN "+c.query, c.args...)
			if err != nil {
				return err
			}
			plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		text := strings.Join(plan, "\n")
		if !strings.Contains(text, "Index Scan using tasks_ready_role") || !strings.Contains(text, "(role = r.role)") ||
			strings.Contains(text, "Seq Scan on tasks") {
			t.Errorf("%s: want tasks_ready_role searched by role; plan:\n%s", c.name, text)
		}
	}
}

// TestQueueStatsProbeTheOldest: the oldest READY and IN_PROGRESS times come
// from the partial indexes of migration 00017, not from reading every
// such task.
func TestQueueStatsProbeTheOldest(t *testing.T) {
	url := testURL(t)
	s := openTest(t, url, testSchema(t, url), Config{})
	ctx := context.Background()
	var plan []string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, qIndexPlans); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "EXPLAIN "+qStats)
		if err != nil {
			return err
		}
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	for _, idx := range []string{"tasks_ready_since", "tasks_claimed_since"} {
		if !strings.Contains(text, idx) {
			t.Errorf("the queue stats do not use %s; plan:\n%s", idx, text)
		}
	}
}

// TestLeaseCapCountsOnItsIndex: a capped claim counts its agents' leases
// on the partial index of migration 00022, not by reading every
// IN_PROGRESS task.
func TestLeaseCapCountsOnItsIndex(t *testing.T) {
	url := testURL(t)
	s := openTest(t, url, testSchema(t, url), Config{})
	ctx := context.Background()
	// Some agents holding leases, as on a working queue.
	now := time.Now()
	tasks := make([]*store.TaskCreate, 200)
	for i := range tasks {
		tasks[i] = &store.TaskCreate{ID: fmt.Sprintf("t-%03d", i), Title: "work"}
	}
	if _, err := s.TaskCreate(ctx, &store.TaskCreateParams{Tasks: tasks, Now: now}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := s.TaskClaim(ctx, &store.TaskClaimParams{Agent: fmt.Sprintf("agent-%d", i), Max: 10, LeaseDuration: time.Hour, Now: now}); err != nil {
			t.Fatal(err)
		}
	}
	var plan []string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, qIndexPlans); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "EXPLAIN "+qHeldBy, []string{"agent-1", "agent-2"})
		if err != nil {
			return err
		}
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	if !strings.Contains(text, "tasks_held_by") || strings.Contains(text, "Seq Scan on tasks") {
		t.Errorf("the lease count does not search tasks_held_by; plan:\n%s", text)
	}
}
