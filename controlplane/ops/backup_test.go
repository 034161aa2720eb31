package ops_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/ops"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

// writeBackupDir copies a snapshot into dir with a manifest, as the CLI
// does from the stream.
func writeBackupDir(t testing.TB, snap *ops.Snapshot, dir string) *ops.Manifest {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	m := &ops.Manifest{Format: ops.ManifestFormat, Version: ops.ManifestVersion, CreatedAt: snap.CreatedAt, Driver: snap.Driver,
		MigrationVersion: snap.MigrationVersion, Counts: ops.ManifestCountsOf(snap.Counts), Files: map[string]ops.ManifestFile{}}
	files := map[string]string{ops.DumpFile: snap.Dump}
	if snap.Database != "" {
		files[ops.DatabaseFile] = snap.Database
	}
	for name, from := range files {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		to := filepath.Join(dir, name)
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if m.Files[name], err = ops.HashFile(to); err != nil {
			t.Fatal(err)
		}
	}
	if err := ops.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func seedTasks(t testing.TB, st store.Store, n int) {
	t.Helper()
	now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	var batch []*store.TaskCreate
	for i := range n {
		batch = append(batch, &store.TaskCreate{ID: fmt.Sprintf("task-%06d", i), Title: fmt.Sprintf("task %d", i), PayloadJSON: `{"n":1}`, Labels: map[string]string{"k": "v"}})
		if len(batch) == 500 || i == n-1 {
			if _, err := st.TaskCreate(context.Background(), &store.TaskCreateParams{Tasks: batch, Now: now}); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
	if _, err := st.TaskClaim(context.Background(), &store.TaskClaimParams{Agent: "forge", Max: n / 3, LeaseDuration: time.Hour, Now: now}); err != nil {
		t.Fatal(err)
	}
}

func TestBackupThenVerify(t *testing.T) {
	for name, open := range map[string]func(*testing.T) store.Store{"sqlite": openSQLite, "postgres": openPostgres} {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			seedTasks(t, st, 30)
			svc, err := ops.New(ops.Config{Store: st, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			snap, err := svc.Backup(t.Context(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			defer snap.Close()
			if snap.Driver != name || snap.Counts.Tasks != 30 || (snap.Database != "") != (name == "sqlite") {
				t.Errorf("snapshot: %+v", snap)
			}
			dir := filepath.Join(t.TempDir(), "b")
			writeBackupDir(t, snap, dir)
			rep, err := ops.VerifyBackup(t.Context(), dir, quiet)
			if err != nil {
				t.Fatalf("verify: %v %+v", err, rep)
			}
			want := 3 // checksum, load, re-export
			if name == "sqlite" {
				want = 6 // and the database's checksum, integrity and export
			}
			if len(rep.Checks) != want || !rep.OK() {
				t.Errorf("checks: %+v", rep.Checks)
			}
			// The temporary files go with Close.
			snap.Close()
			if _, err := os.Stat(snap.Dump); !os.IsNotExist(err) {
				t.Errorf("the dump outlived Close: %v", err)
			}
		})
	}
}

func TestVerifyCatchesACountThatDisagrees(t *testing.T) {
	st := openSQLite(t)
	seedTasks(t, st, 5)
	svc, _ := ops.New(ops.Config{Store: st, Logger: quiet})
	snap, err := svc.Backup(t.Context(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	dir := t.TempDir()
	m := writeBackupDir(t, snap, dir)
	m.Counts.Tasks++
	if err := ops.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	rep, err := ops.VerifyBackup(t.Context(), dir, quiet)
	if err == nil || rep.OK() {
		t.Fatalf("a manifest counting one task too many verified: %+v", rep)
	}
	var failed []string
	for _, c := range rep.Checks {
		if !c.OK {
			failed = append(failed, c.Name+": "+c.Detail)
		}
	}
	if len(failed) != 1 || !strings.HasPrefix(failed[0], "load dump.jsonl") {
		t.Errorf("failed checks: %v", failed)
	}
}

func TestDoctorFindsUnrescuedLeases(t *testing.T) {
	st := openSQLite(t)
	seedTasks(t, st, 3) // one claimed with an hour's lease
	svc, _ := ops.New(ops.Config{Store: st, Logger: quiet})
	at := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	verdicts := func(now time.Time) map[string]ops.Check {
		out := map[string]ops.Check{}
		for _, c := range svc.Doctor(t.Context(), now) {
			out[c.Name] = c
		}
		return out
	}
	v := verdicts(at)
	for _, name := range []string{"store_integrity", "migration_version", "queue_sanity"} {
		if v[name].Verdict != ops.OK {
			t.Errorf("%s: %+v", name, v[name])
		}
	}
	if v := verdicts(at.Add(2 * time.Hour))["queue_sanity"]; v.Verdict != ops.Warn || !strings.Contains(v.Detail, "task-000000") {
		t.Errorf("queue sanity with a lease an hour overdue: %+v", v)
	}
}

// BenchmarkBackupSQLite measures a whole online backup (VACUUM INTO, the
// copy's integrity check, and its dump) of a store holding 10,000 tasks.
func BenchmarkBackupSQLite(b *testing.B) {
	st, err := sqlite.Open(b.Context(), sqlite.Config{Path: filepath.Join(b.TempDir(), "factory.db"), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	seedTasks(b, st, 10_000)
	svc, _ := ops.New(ops.Config{Store: st, Logger: quiet})
	b.ResetTimer()
	for b.Loop() {
		snap, err := svc.Backup(b.Context(), time.Now())
		if err != nil {
			b.Fatal(err)
		}
		snap.Close()
	}
}

// BenchmarkVerifyBackupSQLite measures verifying that backup offline.
func BenchmarkVerifyBackupSQLite(b *testing.B) {
	st, err := sqlite.Open(b.Context(), sqlite.Config{Path: filepath.Join(b.TempDir(), "factory.db"), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	seedTasks(b, st, 10_000)
	svc, _ := ops.New(ops.Config{Store: st, Logger: quiet})
	snap, err := svc.Backup(b.Context(), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	defer snap.Close()
	dir := filepath.Join(b.TempDir(), "b")
	writeBackupDir(b, snap, dir)
	b.ResetTimer()
	for b.Loop() {
		if _, err := ops.VerifyBackup(b.Context(), dir, quiet); err != nil {
			b.Fatal(err)
		}
	}
}

// A manifest whose count of table rows disagrees fails verification, and
// the detail shows the two counts apart.
func TestVerifyNamesARowCountThatDisagrees(t *testing.T) {
	st := openSQLite(t)
	seedTasks(t, st, 3)
	svc, _ := ops.New(ops.Config{Store: st, Logger: quiet})
	snap, err := svc.Backup(t.Context(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	dir := t.TempDir()
	m := writeBackupDir(t, snap, dir)
	m.Counts.Rows++
	if err := ops.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	rep, err := ops.VerifyBackup(t.Context(), dir, quiet)
	if err == nil || rep.OK() {
		t.Fatalf("a manifest counting one row too many verified: %+v", rep)
	}
	want := fmt.Sprintf("%d other rows", m.Counts.Rows)
	for _, c := range rep.Checks {
		if !c.OK && (!strings.HasPrefix(c.Name, "load ") || !strings.Contains(c.Detail, want)) {
			t.Errorf("failed check %s: %q, want the load naming the manifest's %q", c.Name, c.Detail, want)
		}
	}
}
