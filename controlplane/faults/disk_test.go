//go:build faults

package faults_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	_ "modernc.org/sqlite"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// limitFileSize sets the largest file pid may write (RLIMIT_FSIZE): a write
// past it fails with EFBIG, as on a full disk. 0 lifts the limit.
func limitFileSize(t *testing.T, pid int, bytes uint64) {
	t.Helper()
	lim := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if bytes > 0 {
		lim = unix.Rlimit{Cur: bytes, Max: unix.RLIM_INFINITY}
	}
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, &lim, nil); err != nil {
		t.Skipf("cannot set RLIMIT_FSIZE of pid %d (%v): the full-disk test needs prlimit(2) on its own children", pid, err)
	}
}

func largestFile(t *testing.T, dir, prefix string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		if info, err := e.Info(); err == nil {
			n = max(n, info.Size())
		}
	}
	return n
}

// TestSQLiteFullDisk fills the SQLite file's "disk" (a file-size limit on
// the control plane): writes fail with a clear RESOURCE_EXHAUSTED, reads
// keep working, nothing acknowledged is lost, the database passes its
// integrity check, and writes succeed again once space returns — without a
// restart.
func TestSQLiteFullDisk(t *testing.T) {
	dataDir := t.TempDir()
	cp := startControlPlane(t, "controlplane", dataDir, "")
	q := factoryv1.NewQueueServiceClient(dial(t, cp.addr, cp.operatorToken(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	payload := `"` + strings.Repeat("p", 16<<10) + `"`
	var acked []string
	create := func(id string) error {
		_, err := q.CreateTask(ctx, &factoryv1.CreateTaskRequest{TaskId: id, Title: "disk", PayloadJson: payload})
		if err == nil {
			acked = append(acked, id)
		}
		return err
	}
	for i := range 20 {
		if err := create(fmt.Sprintf("before-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}

	limitFileSize(t, cp.Pid(), uint64(largestFile(t, dataDir, "factory.db")+256<<10))
	var full error
	for i := 0; i < 2000 && full == nil; i++ {
		full = create(fmt.Sprintf("filling-%04d", i))
	}
	if full == nil {
		t.Fatal("2000 writes of 16 KiB past a file-size limit all succeeded")
	}
	st := status.Convert(full)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "full") {
		t.Errorf("a write on a full disk: got %v, want RESOURCE_EXHAUSTED saying the disk is full", full)
	}
	// Still full: refused again, the same way, and reads are served.
	if err := create("while-full"); status.Code(err) != st.Code() {
		t.Errorf("second write on a full disk: %v", err)
	}
	if _, err := q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: acked[0]}); err != nil {
		t.Errorf("read while the disk is full: %v", err)
	}

	// Space returns: writes work again, with no restart.
	limitFileSize(t, cp.Pid(), 0)
	eventually(t, "a write after space returned", 10*time.Second, func() bool { return create("after-space") == nil })
	for _, id := range acked {
		if _, err := q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: id}); err != nil {
			t.Errorf("acknowledged task %s: %v", id, err)
		}
	}
	cp.Stop()

	db, err := sql.Open("sqlite", "file:"+filepath.Join(dataDir, "factory.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var integrity string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
		t.Fatalf("integrity_check after the full disk: %q, %v", integrity, err)
	}
	var n int
	if err := db.QueryRow("SELECT count(*) FROM tasks").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(acked) {
		t.Errorf("%d tasks in the database, %d acknowledged", n, len(acked))
	}
	t.Logf("%d writes acknowledged; the first refused: %v", len(acked), full)
}
