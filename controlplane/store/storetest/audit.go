package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// testAuditCoalesce proves what keeps the audit log bounded: a coalesced
// entry's count and last-seen time, and retention by last-seen time; and
// how one target's history is read out of it.
func (s *suite) testAuditCoalesce(t *testing.T) {
	refusal := func(h *harness) *store.AuditEntry {
		return &store.AuditEntry{Time: h.now(), Who: "hammer", Role: store.RoleAgent, TokenID: "tok-hammer",
			RPC: "/factory.v1.QueueService/PauseQueue", Target: "queue", Outcome: "PERMISSION_DENIED", Detail: "operators only"}
	}
	s.runCases(t, []testCase{
		{"AppendDefaultsToOneCall", func(t *testing.T, h *harness) {
			e := refusal(h)
			h.appendAudit(e)
			got := h.auditList(nil).Entries[0]
			if got.Count != 1 {
				t.Fatalf("Count = %d, want 1 for an entry appended without one", got.Count)
			}
			requireTime(t, "LastSeen", got.LastSeen, e.Time)
		}},
		{"AppendKeepsCountAndLastSeen", func(t *testing.T, h *harness) {
			e := refusal(h)
			e.Count, e.LastSeen = 42, h.now().Add(50*time.Second)
			h.appendAudit(e)
			got := h.auditList(nil).Entries[0]
			if got.Count != 42 {
				t.Fatalf("Count = %d, want 42", got.Count)
			}
			requireTime(t, "Time", got.Time, e.Time)
			requireTime(t, "LastSeen", got.LastSeen, e.LastSeen)
		}},
		{"BumpAddsAndNeverMovesLastSeenBack", func(t *testing.T, h *harness) {
			e := refusal(h)
			first := e.Time
			h.appendAudit(e)
			late := first.Add(40 * time.Second)
			h.bumpAudit(&store.AuditBumpParams{ID: e.ID, Add: 9, LastSeen: late})
			// A flush that arrives late (another replica's) adds its calls
			// but keeps the later last-seen time.
			h.bumpAudit(&store.AuditBumpParams{ID: e.ID, Add: 5, LastSeen: first.Add(10 * time.Second)})
			res := h.auditList(nil)
			if len(res.Entries) != 1 {
				t.Fatalf("bumps made %d entries, want 1", len(res.Entries))
			}
			got := res.Entries[0]
			if got.Count != 15 {
				t.Fatalf("Count = %d, want 1+9+5", got.Count)
			}
			requireTime(t, "Time (first seen)", got.Time, first)
			requireTime(t, "LastSeen", got.LastSeen, late)
		}},
		{"BumpRefusesUnknownOrEmpty", func(t *testing.T, h *harness) {
			err := h.s.AuditBump(h.ctx, &store.AuditBumpParams{ID: 987654, Add: 1, LastSeen: h.now()})
			if !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("bump of an unknown entry: %v, want ErrNotFound", err)
			}
			e := refusal(h)
			h.appendAudit(e)
			err = h.s.AuditBump(h.ctx, &store.AuditBumpParams{ID: e.ID, Add: 0, LastSeen: h.now()})
			requireFieldError(t, err, "add")
			if got := h.auditList(nil).Entries[0].Count; got != 1 {
				t.Fatalf("a refused bump changed Count to %d", got)
			}
		}},
		{"PruneByLastSeen", func(t *testing.T, h *harness) {
			old := refusal(h)
			old.Target = "old"
			// Seen first long ago but again recently: it stays.
			longRun := refusal(h)
			longRun.Target = "long-run"
			h.appendAudit(old, longRun)
			h.clock.Advance(48 * time.Hour)
			h.bumpAudit(&store.AuditBumpParams{ID: longRun.ID, Add: 1, LastSeen: h.now()})
			fresh := refusal(h)
			fresh.Target = "fresh"
			h.appendAudit(fresh)

			n, err := h.s.AuditPrune(h.ctx, &store.AuditPruneParams{Before: h.now().Add(-24 * time.Hour)})
			if err != nil {
				t.Fatalf("AuditPrune: %v", err)
			}
			if n != 1 {
				t.Fatalf("AuditPrune deleted %d, want 1", n)
			}
			requireIDs(t, "left after prune", auditTargets(h.auditList(nil).Entries), []string{"fresh", "long-run"})
			if n, err := h.s.AuditPrune(h.ctx, &store.AuditPruneParams{}); err != nil || n != 0 {
				t.Fatalf("AuditPrune with no cutoff = %d, %v; want nothing deleted", n, err)
			}
		}},
		{"ListByTargetFiltersAndPages", func(t *testing.T, h *harness) {
			targets := []string{"task-a", "queue", "task-a", "agent forge", "task-a", "task-b", "task-a", "task-a"}
			var (
				want  []string // task-a's entries, newest first
				first int64    // task-a's first entry
			)
			for i, target := range targets {
				e := refusal(h)
				e.Target, e.Detail = target, fmt.Sprintf("call %d", i)
				if i%2 == 1 {
					e.Who, e.TokenID = "ops", "tok-ops"
				}
				h.appendAudit(e)
				if target == "task-a" {
					want = append([]string{e.Detail}, want...)
					if first == 0 {
						first = e.ID
					}
				}
				h.clock.Advance(time.Hour)
			}
			// A coalesced refusal on task-a, seen again later, still lists
			// once and in its place.
			h.bumpAudit(&store.AuditBumpParams{ID: first, Add: 2, LastSeen: h.now()})

			details := func(p *store.AuditListParams) []string {
				var out []string
				for _, e := range h.auditList(p).Entries {
					out = append(out, e.Detail)
				}
				return out
			}
			requireIDs(t, "task-a", details(&store.AuditListParams{Target: "task-a"}), want)
			requireIDs(t, "a target with a space", details(&store.AuditListParams{Target: "agent forge"}), []string{"call 3"})
			requireIDs(t, "an unknown target", details(&store.AuditListParams{Target: "task-c"}), nil)
			requireIDs(t, "a prefix is not the target", details(&store.AuditListParams{Target: "task"}), nil)
			requireIDs(t, "target and who", details(&store.AuditListParams{Target: "task-a", Who: "tok-ops"}), []string{"call 7"})
			requireIDs(t, "other target and who", details(&store.AuditListParams{Target: "task-b", Who: "ops"}), []string{"call 5"})
			// Seen at or after hour 5: calls 6 and 7, and call 0 by its bump.
			requireIDs(t, "target and since", details(&store.AuditListParams{Target: "task-a", Since: baseTime.Add(5 * time.Hour)}), []string{"call 7", "call 6", "call 0"})

			var got []string
			cursor := ""
			for pages := 0; ; pages++ {
				if pages > 5 {
					t.Fatalf("paging does not end: %v", got)
				}
				res := h.auditList(&store.AuditListParams{Target: "task-a", Limit: 2, Cursor: cursor})
				if len(res.Entries) > 2 {
					t.Fatalf("page of %d entries with limit 2", len(res.Entries))
				}
				for _, e := range res.Entries {
					got = append(got, e.Detail)
				}
				if cursor = res.NextCursor; cursor == "" {
					break
				}
			}
			requireIDs(t, "task-a paged", got, want)
		}},
		{"DumpCarriesCounts", func(t *testing.T, h *harness) {
			e := refusal(h)
			h.appendAudit(e)
			h.bumpAudit(&store.AuditBumpParams{ID: e.ID, Add: 6, LastSeen: h.now().Add(time.Minute)})
			recs := h.dump()
			dst := s.setup(t)
			if _, err := dst.s.DumpLoad(dst.ctx, &store.DumpLoadParams{Records: func(yield func(*store.DumpRecord) error) error {
				for _, r := range recs {
					if err := yield(r); err != nil {
						return err
					}
				}
				return nil
			}}); err != nil {
				t.Fatalf("DumpLoad: %v", err)
			}
			got := dst.auditList(nil).Entries
			if len(got) != 1 || got[0].Count != 7 {
				t.Fatalf("after export and import: %+v, want one entry with Count 7", got)
			}
			requireTime(t, "imported LastSeen", got[0].LastSeen, e.Time.Add(time.Minute))
		}},
	})
}

func (h *harness) bumpAudit(p *store.AuditBumpParams) {
	h.t.Helper()
	if err := h.s.AuditBump(h.ctx, p); err != nil {
		h.t.Fatalf("AuditBump(%+v): %v", p, err)
	}
}
