package access_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

func newAuditService(t *testing.T, window time.Duration) (*access.Service, store.Store, *fakeClock) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "factory.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	svc, err := access.New(access.Config{Store: st, Clock: clock, Logger: log, AuditWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	return svc, st, clock
}

func pauseRefusal() *store.AuditEntry {
	return &store.AuditEntry{Who: "hammer", Role: store.RoleAgent, TokenID: "tok-hammer", RPC: "/factory.v1.QueueService/PauseQueue",
		Target: "queue", Outcome: "PERMISSION_DENIED", Detail: "operators only"}
}

func allAudit(t *testing.T, st store.Store) []*store.AuditEntry {
	t.Helper()
	res, err := st.AuditList(context.Background(), &store.AuditListParams{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Entries
}

func TestRepeatedRefusalsShareOneEntry(t *testing.T) {
	svc, st, clock := newAuditService(t, time.Minute)
	ctx := context.Background()
	start := clock.Now()
	for range 1000 {
		if err := svc.Append(ctx, []*store.AuditEntry{pauseRefusal()}); err != nil {
			t.Fatal(err)
		}
		clock.Advance(10 * time.Millisecond)
	}
	// The first refusal is in the store at once, before any flush.
	entries := allAudit(t, st)
	if len(entries) != 1 || entries[0].Count != 1 {
		t.Fatalf("before a flush: %d entries (first count %d), want the first refusal alone", len(entries), entries[0].Count)
	}
	svc.FlushAudit(ctx)
	entries = allAudit(t, st)
	if len(entries) != 1 {
		t.Fatalf("1000 identical refusals in 10 s made %d entries, want 1", len(entries))
	}
	e := entries[0]
	if e.Count != 1000 {
		t.Fatalf("Count = %d, want 1000", e.Count)
	}
	if !e.Time.Equal(start) || !e.LastSeen.Equal(start.Add(999*10*time.Millisecond)) {
		t.Fatalf("first/last seen = %s/%s, want %s/%s", e.Time, e.LastSeen, start, start.Add(9990*time.Millisecond))
	}
}

func TestRefusalsDifferingInAnyPartAreSeparate(t *testing.T) {
	svc, st, _ := newAuditService(t, time.Minute)
	ctx := context.Background()
	variants := []func(e *store.AuditEntry){
		func(e *store.AuditEntry) {},
		func(e *store.AuditEntry) { e.TokenID = "tok-other" },
		func(e *store.AuditEntry) { e.RPC = "/factory.v1.QueueService/ResumeQueue" },
		func(e *store.AuditEntry) { e.Target = "task-1" },
		func(e *store.AuditEntry) { e.Detail = "another reason" },
	}
	for range 3 {
		for _, v := range variants {
			e := pauseRefusal()
			v(e)
			if err := svc.Append(ctx, []*store.AuditEntry{e}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Successful calls are never coalesced: each is a change.
	for range 3 {
		ok := pauseRefusal()
		ok.Outcome, ok.Detail = "OK", ""
		if err := svc.Append(ctx, []*store.AuditEntry{ok}); err != nil {
			t.Fatal(err)
		}
	}
	svc.FlushAudit(ctx)
	entries := allAudit(t, st)
	if len(entries) != len(variants)+3 {
		t.Fatalf("%d entries, want %d (one per distinct refusal, one per success)", len(entries), len(variants)+3)
	}
	var total int64
	for _, e := range entries {
		total += e.Count
	}
	if total != int64(3*len(variants)+3) {
		t.Fatalf("counts add up to %d, want %d", total, 3*len(variants)+3)
	}
}

func TestANewWindowStartsANewEntry(t *testing.T) {
	svc, st, clock := newAuditService(t, time.Minute)
	ctx := context.Background()
	for range 3 {
		for range 5 {
			if err := svc.Append(ctx, []*store.AuditEntry{pauseRefusal()}); err != nil {
				t.Fatal(err)
			}
			clock.Advance(5 * time.Second)
		}
		// Repeats still in memory when the window ends are not lost.
		clock.Advance(time.Minute)
	}
	svc.FlushAudit(ctx)
	entries := allAudit(t, st)
	if len(entries) != 3 {
		t.Fatalf("three windows made %d entries, want 3", len(entries))
	}
	for _, e := range entries {
		if e.Count != 5 {
			t.Fatalf("entry %d has Count %d, want 5", e.ID, e.Count)
		}
	}
}

func TestFlushAfterEntryPrunedKeepsCount(t *testing.T) {
	svc, st, clock := newAuditService(t, time.Minute)
	ctx := context.Background()
	for range 4 {
		if err := svc.Append(ctx, []*store.AuditEntry{pauseRefusal()}); err != nil {
			t.Fatal(err)
		}
	}
	// The entry vanishes (an import replaced the log) before the flush:
	// the three repeats become an entry of their own.
	if _, err := st.AuditPrune(ctx, &store.AuditPruneParams{Before: clock.Now().Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	svc.FlushAudit(ctx)
	entries := allAudit(t, st)
	if len(entries) != 1 || entries[0].Count != 3 {
		t.Fatalf("after the entry was pruned: %+v, want one entry with Count 3", entries)
	}
}

func TestRetentionPrunesByLastSeen(t *testing.T) {
	svc, st, clock := newAuditService(t, time.Minute)
	ctx := context.Background()
	if err := svc.Append(ctx, []*store.AuditEntry{pauseRefusal()}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(91 * 24 * time.Hour)
	fresh := pauseRefusal()
	fresh.Target = "fresh"
	if err := svc.Append(ctx, []*store.AuditEntry{fresh}); err != nil {
		t.Fatal(err)
	}
	if n, err := svc.PruneAudit(ctx, 0); err != nil || n != 0 {
		t.Fatalf("retention 0 pruned %d (%v), want it to keep everything", n, err)
	}
	n, err := svc.PruneAudit(ctx, access.DefaultAuditRetention)
	if err != nil || n != 1 {
		t.Fatalf("PruneAudit = %d, %v; want the 91-day-old entry deleted", n, err)
	}
	if entries := allAudit(t, st); len(entries) != 1 || entries[0].Target != "fresh" {
		t.Fatalf("left: %+v, want the fresh entry", entries)
	}
}

func TestCoalescingOff(t *testing.T) {
	svc, st, _ := newAuditService(t, -1)
	ctx := context.Background()
	for range 3 {
		if err := svc.Append(ctx, []*store.AuditEntry{pauseRefusal()}); err != nil {
			t.Fatal(err)
		}
	}
	if entries := allAudit(t, st); len(entries) != 3 {
		t.Fatalf("with coalescing off: %d entries, want 3", len(entries))
	}
}

func TestAppendRefusalSaysWhetherItRepeats(t *testing.T) {
	svc, st, clock := newAuditService(t, time.Minute)
	ctx := context.Background()
	for i, want := range []bool{false, true, true} {
		repeat, err := svc.AppendRefusal(ctx, pauseRefusal())
		if err != nil || repeat != want {
			t.Fatalf("refusal %d: repeat %v (%v), want %v", i, repeat, err, want)
		}
	}
	clock.Advance(time.Minute)
	if repeat, _ := svc.AppendRefusal(ctx, pauseRefusal()); repeat {
		t.Fatal("the first refusal of a new window counts as a repeat")
	}
	// A normal stop flushes: every call is in the log.
	svc.FlushAudit(ctx)
	var total int64
	for _, e := range allAudit(t, st) {
		total += e.Count
	}
	if total != 4 {
		t.Fatalf("counts add up to %d after the final flush, want 4", total)
	}
}
