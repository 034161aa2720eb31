package alert

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// backup_stale fires once the last good backup, as recorded in the store,
// is older than twice the interval; a failed run does not count, and a
// good one resolves it.
func TestBackupStaleFiresPastTwiceTheInterval(t *testing.T) {
	const every = 6 * time.Hour
	f := newFixture(t, Config{GroupWait: -1}, "backup_stale")
	f.svc.cfg.Sources.Backup = StoreBackups(f.st, every)
	record := func(id string, good bool) {
		t.Helper()
		r := &store.BackupRun{ID: id, StartedAt: f.clock.Now(), FinishedAt: f.clock.Now(), Path: "/b/" + id, Verified: good}
		if !good {
			r.Error = "verify: checksum dump.jsonl"
		}
		if err := f.st.BackupRecord(context.Background(), &store.BackupRecordParams{Run: r}); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing attempted yet: no series, no alert.
	if res := f.eval(); res.Firing+res.Pending != 0 {
		t.Fatalf("no backups yet: %+v", res)
	}
	record("good", true)
	f.clock.Advance(every)
	record("bad1", false)
	f.clock.Advance(every)
	record("bad2", false)
	// Exactly two intervals: not above the threshold yet.
	if res := f.eval(); res.Firing != 0 {
		t.Fatalf("at twice the interval: %+v", res)
	}
	f.requireEvents()
	f.clock.Advance(time.Minute)
	if res := f.eval(); res.Firing != 1 {
		t.Fatalf("past twice the interval: %+v, want FIRING", res)
	}
	ev := f.requireEvents("[FIRING:1] backup_stale")[0]
	if !strings.Contains(ev.Text, "no good backup for 2.0 backup intervals") {
		t.Errorf("event text %q", ev.Text)
	}
	record("good2", true)
	f.clock.Advance(time.Minute)
	if res := f.eval(); res.Firing != 0 {
		t.Fatalf("after a good backup: %+v", res)
	}
	f.requireEvents("[RESOLVED:1] backup_stale")

	// Without a schedule the rule has nothing to measure.
	f.svc.cfg.Sources.Backup = StoreBackups(f.st, 0)
	f.clock.Advance(100 * every)
	if res := f.eval(); res.Firing != 0 {
		t.Fatalf("no schedule: %+v", res)
	}
}
