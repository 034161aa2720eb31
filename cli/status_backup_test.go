package cli_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/server"
	"github.com/factory/factory/controlplane/store"
)

// TestStatusShowsLastGoodBackup runs the factory binary's status against a
// control plane that schedules backups every 6 hours on a fake clock: the
// backup taken at start shows as the last good one, with its path; past
// twice the interval without another, status warns that it is stale.
func TestStatusShowsLastGoodBackup(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the factory binary; skipped under -short")
	}
	bin := factoryBinary(t)

	clock := &handClock{now: time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)}
	ran := make(chan *store.BackupRun, 4)
	dataDir, backupDir := t.TempDir(), t.TempDir()
	addr := startControlPlaneWith(t, server.Config{
		DataDir: dataDir,
		Queue:   queue.Config{Clock: clock},
		Backup: server.BackupConfig{Dir: backupDir, Every: 6 * time.Hour,
			// The schedule's next wait never ends: the test moves the clock.
			After: func(time.Duration) <-chan time.Time { return nil },
			OnRun: func(r *store.BackupRun) { ran <- r }},
	})
	token := operatorToken(t, dataDir)
	var run *store.BackupRun
	select {
	case run = <-ran:
	case <-time.After(30 * time.Second):
		t.Fatal("no backup was taken at start")
	}
	if !run.Verified || filepath.Dir(run.Path) != backupDir {
		t.Fatalf("the backup at start: %+v", run)
	}

	status := func(args ...string) string {
		t.Helper()
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		cmd := exec.CommandContext(cctx, bin, append([]string{"--addr", addr, "--token", token, "status"}, args...)...)
		cmd.Env = append(cleanEnv(), "XDG_CONFIG_HOME="+t.TempDir(), "NO_COLOR=1")
		cmd.Dir = t.TempDir()
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("factory status %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return stdout.String()
	}

	clock.Advance(90 * time.Minute)
	out := status()
	line := lineWith(out, "Last good backup:")
	if !strings.Contains(line, "1h30m") || !strings.Contains(line, run.Path) || !strings.Contains(line, "every 6h00m") || !strings.Contains(line, "keep 30d") {
		t.Errorf("status backup line %q\nwant its age (1h30m), path %s and the schedule; full output:\n%s", line, run.Path, out)
	}
	if strings.Contains(out, "WARNING") {
		t.Errorf("a 90-minute-old backup is called stale:\n%s", out)
	}
	if js := status("-o", "json"); !strings.Contains(js, `"backup"`) || !strings.Contains(js, run.Path) {
		t.Errorf("status -o json has no backup section with the path:\n%s", js)
	}

	// Twelve hours and a bit since the last good backup, at 6h intervals.
	clock.Advance(10*time.Hour + 31*time.Minute)
	out = status()
	if !strings.Contains(out, "WARNING: stale: no good backup for 12h01m, over twice the 6h00m interval") {
		t.Errorf("past twice the interval, status does not warn:\n%s", out)
	}
}

func lineWith(out, prefix string) string {
	for l := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// doctor --vacuum runs the vacuum as one more check and reports the sizes;
// plain doctor does not vacuum.
func TestDoctorVacuumThroughTheCLI(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--title", "a")
	if out := sh.ok("doctor"); strings.Contains(out, "vacuum") {
		t.Errorf("plain doctor vacuumed:\n%s", out)
	}
	out := sh.ok("doctor", "--vacuum")
	line := lineWith(out, "vacuum")
	if !strings.Contains(line, "ok") || !strings.Contains(line, "sqlite: VACUUM, ANALYZE, PRAGMA optimize") || !strings.Contains(line, "→") {
		t.Errorf("doctor --vacuum: %q\n%s", line, out)
	}
	// The store works afterwards.
	sh.ok("task", "create", "--title", "b")
}
