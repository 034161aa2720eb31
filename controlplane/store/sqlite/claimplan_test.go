package sqlite

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestClaimWalksOnlyItsRoles reads the claim statement's plan: one search
// of tasks_ready_role per role, each bounded by the role, and no walk of
// READY tasks of every role (which made a backlog of one role slow every
// other role's claims).
func TestClaimWalksOnlyItsRoles(t *testing.T) {
	s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "plan.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		roles []string
		sql   func(int) string
	}{{nil, claimSQL}, {[]string{"a"}, claimSQL}, {[]string{"a", "b", "c"}, claimSQL}, {[]string{"a"}, claimOneSQL}, {[]string{"a", "b", "c"}, claimOneSQL}} {
		roles := c.roles
		slots := claimRoleSlots(roles)
		args := append([]any{"agent-1", int64(1), int64(2), 1, int64(1 << 20)}, slots...)
		args = append(args, `["frontier"]`)
		rows, err := s.r.Query("EXPLAIN QUERY PLAN "+c.sql(len(slots)), args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		text := strings.Join(plan, "\n")
		searches := strings.Count(text, "USING INDEX tasks_ready_role (role=?)")
		if searches != len(slots) || strings.Contains(text, "SCAN tasks") {
			t.Errorf("roles %v: want %d searches of tasks_ready_role by role and no scan of tasks; plan:\n%s", roles, len(slots), text)
		}
	}
}

func TestClaimRoleSlots(t *testing.T) {
	for _, c := range []struct {
		roles []string
		want  int
	}{{nil, 1}, {[]string{""}, 1}, {[]string{"a"}, 2}, {[]string{"a", "a", ""}, 2}, {[]string{"a", "b"}, 4}, {make64(), 65}} {
		got := claimRoleSlots(c.roles)
		if len(got) != c.want || got[0] != "" {
			t.Errorf("claimRoleSlots(%q) = %q, want %d slots starting with the empty role", c.roles, got, c.want)
		}
	}
}

func make64() []string {
	out := make([]string, 64)
	for i := range out {
		out[i] = "r" + string(rune('A'+i))
	}
	return out
}

// TestNextRunAfterUsesItsIndex: the next backoff to end is read from the
// partial index of READY tasks that wait, not from every READY task.
func TestNextRunAfterUsesItsIndex(t *testing.T) {
	s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "plan.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var id, parent, unused int
	var detail string
	if err := s.r.QueryRow("EXPLAIN QUERY PLAN "+qNextRunAfter, int64(1)).Scan(&id, &parent, &unused, &detail); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(detail, "tasks_ready_run_after") {
		t.Errorf("plan of TaskNextRunAfter: %s, want a search of tasks_ready_run_after", detail)
	}
}

// TestQueueStatsProbeTheOldest: the oldest READY and IN_PROGRESS times come
// from an index probe each, not from reading every such task (30 ms at
// 25,000 READY tasks, on every status call and console page).
func TestQueueStatsProbeTheOldest(t *testing.T) {
	s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "plan.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rows, err := s.r.Query("EXPLAIN QUERY PLAN " + qQueueOldest)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	text := strings.Join(plan, "\n")
	for _, idx := range []string{"tasks_ready_since", "tasks_claimed_since"} {
		if !strings.Contains(text, idx) {
			t.Errorf("the queue stats do not probe %s; plan:\n%s", idx, text)
		}
	}
	if strings.Contains(text, "SCAN tasks") {
		t.Errorf("the queue stats scan tasks; plan:\n%s", text)
	}
}

// TestLeaseCapCountsOnItsIndex: a capped claim counts its agent's leases
// on the partial tasks_held_by, not by reading every IN_PROGRESS task.
func TestLeaseCapCountsOnItsIndex(t *testing.T) {
	s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "plan.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var id, parent, unused int
	var detail string
	if err := s.r.QueryRow("EXPLAIN QUERY PLAN "+qHeldBy, "agent-1").Scan(&id, &parent, &unused, &detail); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(detail, "SEARCH tasks USING COVERING INDEX tasks_held_by (lease_holder=?)") {
		t.Errorf("plan of the lease count: %s, want a search of tasks_held_by", detail)
	}
}
