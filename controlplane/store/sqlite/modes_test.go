package sqlite

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/factory/factory/controlplane/store"
)

// TestFilesAreTheOwnersOnly: the database, its WAL and its shared-memory
// file are 0600 in a 0700 directory, whatever the umask; one left wider is
// tightened on open.
func TestFilesAreTheOwnersOnly(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "factory.db")
	s := openAt(t, path)
	mustCreate(t, s, &store.TaskCreate{ID: "t1", Title: "one"})
	check := func(when string) {
		t.Helper()
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: directory %v (%v), want 0700", when, fi.Mode().Perm(), err)
		}
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(p)
			if os.IsNotExist(err) && p != path {
				continue
			}
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %s is %v (%v), want 0600", when, filepath.Base(p), fi.Mode().Perm(), err)
			}
		}
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Fatalf("an open WAL database has a -wal file: %v", err)
	}
	check("fresh")
	s.Close()

	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o644); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	s = openAt(t, path)
	defer s.Close()
	mustCreate(t, s, &store.TaskCreate{ID: "t2", Title: "two"})
	check("reopened")
}
