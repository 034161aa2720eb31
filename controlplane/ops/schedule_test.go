package ops_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/ops"
	"github.com/factory/factory/controlplane/store"
)

// clock is a fake clock tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func bothStores(t *testing.T, fn func(t *testing.T, st store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		fn(t, openSQLite(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, openPostgres(t))
	})
}

func newScheduler(t *testing.T, st store.Store, clk *clock, cfg ops.ScheduleConfig) *ops.Scheduler {
	t.Helper()
	cfg.Clock = clk
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Every == 0 {
		cfg.Every = 6 * time.Hour
	}
	b, err := newService(t, st).NewScheduler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func summary(t *testing.T, st store.Store) *store.BackupSummary {
	t.Helper()
	s, err := st.BackupSummary(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A scheduled backup is written, verified, recorded, and deleted once past
// retention; the runs' record outlives the files.
func TestScheduledBackupVerifiesAndExpires(t *testing.T) {
	bothStores(t, func(t *testing.T, st store.Store) {
		fill(t, st)
		clk := newClock()
		dir := t.TempDir()
		b := newScheduler(t, st, clk, ops.ScheduleConfig{Dir: dir, Keep: ops.Retention{MaxAge: 24 * time.Hour}})
		t0 := clk.Now()
		if due, err := b.Due(t.Context()); err != nil || !due.Equal(t0) {
			t.Fatalf("due with no backup: %v %v, want now", due, err)
		}
		first, err := b.RunOnce(t.Context())
		if err != nil {
			t.Fatalf("RunOnce: %v", err)
		}
		if !first.Verified || first.Error != "" || first.Bytes <= 0 || filepath.Dir(first.Path) != dir {
			t.Fatalf("first run: %+v", first)
		}
		// What the scheduler wrote is what `factory backup verify` accepts.
		if _, err := ops.VerifyBackup(t.Context(), first.Path, nil); err != nil {
			t.Fatalf("the scheduled backup does not verify: %v", err)
		}
		if s := summary(t, st); s.LastGood == nil || s.LastGood.ID != first.ID || s.LastGood.Path != first.Path {
			t.Fatalf("last good after the first run: %+v", s.LastGood)
		}
		if due, _ := b.Due(t.Context()); !due.Equal(t0.Add(6 * time.Hour)) {
			t.Errorf("next due %v, want an interval after the first", due)
		}
		// Five more runs, six hours apart: 30 hours in, the first is 30h old
		// and goes; the second, 24h old, is still within retention.
		var runs []*store.BackupRun
		for range 5 {
			clk.Add(6 * time.Hour)
			r, err := b.RunOnce(t.Context())
			if err != nil {
				t.Fatalf("RunOnce: %v", err)
			}
			runs = append(runs, r)
		}
		if _, err := os.Stat(first.Path); !os.IsNotExist(err) {
			t.Errorf("a 30h-old backup survived a 24h retention: %v", err)
		}
		for _, r := range runs[1:] {
			if _, err := os.Stat(filepath.Join(r.Path, ops.ManifestName)); err != nil {
				t.Errorf("a backup within retention is gone: %v", err)
			}
		}
		present, err := st.BackupList(t.Context(), &store.BackupListParams{Present: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(present) != 5 {
			t.Errorf("%d backups present, want 5 (24h back at 6h intervals, the 24h-old one included)", len(present))
		}
		all, _ := st.BackupList(t.Context(), nil)
		if len(all) != 6 || all[5].RemovedAt.IsZero() {
			t.Errorf("the expired run should stay recorded as removed: %d runs, oldest %+v", len(all), all[len(all)-1])
		}
	})
}

// A backup that does not verify is recorded as failed, is not the last
// good one, and retention never deletes the last good one.
func TestCorruptBackupIsRecordedAsFailed(t *testing.T) {
	bothStores(t, func(t *testing.T, st store.Store) {
		fill(t, st)
		clk := newClock()
		corrupt := false
		b := newScheduler(t, st, clk, ops.ScheduleConfig{Keep: ops.Retention{Count: 1}, AfterWrite: func(dir string) error {
			if !corrupt {
				return nil
			}
			f, err := os.OpenFile(filepath.Join(dir, ops.DumpFile), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteString(`{"kind":"junk"}` + "\n")
			return err
		}})
		good, err := b.RunOnce(t.Context())
		if err != nil || !good.Verified {
			t.Fatalf("good run: %+v %v", good, err)
		}
		corrupt = true
		for range 3 {
			clk.Add(6 * time.Hour)
			bad, err := b.RunOnce(t.Context())
			if err == nil || bad.Verified || !strings.Contains(bad.Error, "checksum "+ops.DumpFile) {
				t.Fatalf("corrupt run: %+v %v, want a failed verification naming the dump", bad, err)
			}
		}
		s := summary(t, st)
		if s.LastGood == nil || s.LastGood.ID != good.ID {
			t.Errorf("last good: %+v, want the first run", s.LastGood)
		}
		if s.Last == nil || s.Last.Verified || s.Failures != 3 {
			t.Errorf("last run %+v, failures %d: want the failed one, 3", s.Last, s.Failures)
		}
		// Keep 1: the newest (failed) run stays, and the last good one, older
		// than it, stays too.
		if _, err := os.Stat(filepath.Join(good.Path, ops.ManifestName)); err != nil {
			t.Errorf("retention deleted the last good backup: %v", err)
		}
		present, _ := st.BackupList(t.Context(), &store.BackupListParams{Present: true})
		if len(present) != 2 {
			t.Errorf("%d backups present, want the newest and the last good", len(present))
		}
		// Twelve hours after the last good backup with 6h backups: stale.
		st1, err := newService(t, st).BackupStatusAt(t.Context(), clk.Now(), 6*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if !st1.Stale || st1.Age != 18*time.Hour {
			t.Errorf("status 18h after the last good backup: stale %v age %v", st1.Stale, st1.Age)
		}
	})
}

// Run takes the first backup at once, then waits an interval on the
// injected clock: no sleeping.
func TestScheduleRunsOnTheClock(t *testing.T) {
	st := openSQLite(t)
	clk := newClock()
	waits := make(chan time.Duration, 1)
	fire := make(chan time.Time)
	ran := make(chan *store.BackupRun, 1)
	b := newScheduler(t, st, clk, ops.ScheduleConfig{
		After: func(d time.Duration) <-chan time.Time { waits <- d; return fire },
		OnRun: func(r *store.BackupRun) { ran <- r },
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	timeout := time.After(30 * time.Second)
	next := func() *store.BackupRun {
		select {
		case r := <-ran:
			return r
		case <-timeout:
			t.Fatal("no backup ran")
		}
		return nil
	}
	if r := next(); !r.Verified || !r.StartedAt.Equal(clk.Now()) {
		t.Fatalf("first run: %+v", r)
	}
	select {
	case d := <-waits:
		if d != 6*time.Hour {
			t.Fatalf("waits %s, want the interval", d)
		}
	case <-timeout:
		t.Fatal("the schedule did not wait")
	}
	clk.Add(6 * time.Hour)
	fire <- clk.Now()
	if r := next(); !r.StartedAt.Equal(clk.Now()) {
		t.Fatalf("second run at %v, want %v", r.StartedAt, clk.Now())
	}
	<-waits
}

func TestParseRetention(t *testing.T) {
	for in, want := range map[string]ops.Retention{
		"":         ops.DefaultRetention,
		"720h":     {MaxAge: 720 * time.Hour},
		"30d":      {MaxAge: 720 * time.Hour},
		"120":      {Count: 120},
		"30d, 120": {MaxAge: 720 * time.Hour, Count: 120},
	} {
		got, err := ops.ParseRetention(in)
		if err != nil || got != want {
			t.Errorf("ParseRetention(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"0", "-3", "soon", "1h,2h", "3,4", "0h"} {
		if _, err := ops.ParseRetention(bad); err == nil {
			t.Errorf("ParseRetention(%q) accepted", bad)
		}
	}
}

func TestVacuumCheck(t *testing.T) {
	bothStores(t, func(t *testing.T, st store.Store) {
		fill(t, st)
		c := newService(t, st).Vacuum(t.Context())
		if c.Name != "vacuum" || c.Verdict != ops.OK || !strings.Contains(c.Detail, "→") {
			t.Errorf("vacuum check: %+v", c)
		}
	})
}

// syncBuffer is a log sink tests read while the logger writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// --vacuum-every: the vacuum runs each time the injected wait ends.
func TestScheduledVacuum(t *testing.T) {
	st := openSQLite(t)
	fill(t, st)
	var logs syncBuffer
	svc, err := ops.New(ops.Config{Store: st, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	waits := make(chan time.Duration)
	fire := make(chan time.Time)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- svc.RunVacuum(ctx, 720*time.Hour, func(d time.Duration) <-chan time.Time { waits <- d; return fire })
	}()
	if d := <-waits; d != 720*time.Hour {
		t.Fatalf("waits %s, want the interval", d)
	}
	if strings.Contains(logs.String(), "scheduled vacuum") {
		t.Fatal("vacuumed before the interval")
	}
	fire <- time.Time{}
	<-waits // the vacuum ran and the next wait began
	if out := logs.String(); !strings.Contains(out, "scheduled vacuum") || !strings.Contains(out, "VACUUM, ANALYZE") {
		t.Errorf("no vacuum logged: %s", out)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
