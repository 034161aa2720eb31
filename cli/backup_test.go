package cli_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/ops"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// queueClient dials the shell's control plane as its operator.
func queueClient(t *testing.T, s *shell) factoryv1.QueueServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(access.Bearer{Secret: s.token, Plaintext: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return factoryv1.NewQueueServiceClient(conn)
}

// writeLoad runs writers that create, claim and complete tasks until stop
// is called, and counts the writes that landed.
func writeLoad(t *testing.T, q factoryv1.QueueServiceClient, writers int) (writes *atomic.Int64, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	writes = &atomic.Int64{}
	var wg sync.WaitGroup
	for w := range writers {
		agent := fmt.Sprintf("writer-%d", w)
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if _, err := q.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: fmt.Sprintf("%s task %d", agent, i), Role: "builder",
					Labels: map[string]string{"writer": agent}}); err != nil {
					continue
				}
				writes.Add(1)
				// Every third task is left READY, every third IN_PROGRESS, the
				// rest DONE, so the snapshot catches every kind.
				if i%3 == 0 {
					continue
				}
				res, err := q.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: agent, Roles: []string{"builder"}})
				if err != nil || len(res.GetTasks()) == 0 {
					continue
				}
				writes.Add(1)
				if i%3 == 1 {
					continue
				}
				tk := res.GetTasks()[0]
				if _, err := q.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: tk.GetId(), Agent: agent, FencingToken: tk.GetLease().GetToken()}); err == nil {
					writes.Add(1)
				}
			}
		})
	}
	return writes, func() {
		cancel()
		wg.Wait()
	}
}

// waitWrites waits until at least n writes landed.
func waitWrites(t *testing.T, writes *atomic.Int64, n int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for writes.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d writes in 60s", writes.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// backupLines reads a dump's lines of one kind ("task", "token", ...).
func backupLines(t *testing.T, path, kind string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	prefix := `{"kind":"` + kind + `"`
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			out = append(out, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// backupRoundTrip takes a backup of a control plane under write load,
// verifies it, restores it into a fresh control plane and checks that the
// restored state is the manifest's and holds together.
func backupRoundTrip(t *testing.T, start func(t *testing.T) *shell, wantDriver string) {
	src := start(t)
	q := queueClient(t, src)
	writes, stop := writeLoad(t, q, 3)
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	waitWrites(t, writes, 60)

	dir := filepath.Join(t.TempDir(), "backup")
	var m ops.Manifest
	before := writes.Load()
	out := src.ok("backup", dir, "-o", "json")
	during := writes.Load() - before
	var sum struct {
		Manifest *ops.Manifest `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Manifest == nil {
		t.Fatalf("backup -o json: %v\n%s", err, out)
	}
	m = *sum.Manifest
	// The writers kept writing through the backup.
	after := writes.Load()
	waitWrites(t, writes, after+30)
	stop()
	stopped = true

	// The backup was taken under load: writes landed while it ran.
	if during == 0 {
		t.Errorf("no write landed while the backup ran: it was not taken under load")
	}
	if m.Driver != wantDriver || m.MigrationVersion < 8 || m.Counts.Tasks < 20 || m.Counts.Queue != 1 {
		t.Errorf("manifest: %+v", m)
	}
	_, hasDB := m.Files[ops.DatabaseFile]
	if hasDB != (wantDriver == "sqlite") {
		t.Errorf("database file in the backup: %v, want it for sqlite only (%v)", hasDB, m.Files)
	}
	live := len(backupLines(t, filepath.Join(dir, ops.DumpFile), "task"))
	if int64(live) != m.Counts.Tasks {
		t.Errorf("dump holds %d tasks, the manifest counts %d", live, m.Counts.Tasks)
	}

	if out := src.ok("backup", "verify", dir); !strings.Contains(out, "is good") {
		t.Errorf("verify: %s", out)
	}

	dst := start(t)
	out = dst.ok("restore", dir, "-o", "json")
	var restored struct {
		Loaded struct {
			Tasks, Tokens, FleetEvents int64
			Audit                      int64 `json:"audit_entries"`
		} `json:"loaded"`
	}
	if err := json.Unmarshal([]byte(out), &restored); err != nil {
		t.Fatalf("restore -o json: %v\n%s", err, out)
	}
	if restored.Loaded.Tasks != m.Counts.Tasks || restored.Loaded.Tokens != m.Counts.Tokens || restored.Loaded.Audit != m.Counts.Audit {
		t.Errorf("restore loaded %+v; the manifest counts %+v", restored.Loaded, m.Counts)
	}

	// The restored state: its tasks are the backup's, line for line (a
	// dump is canonical), its tokens include every one backed up, and the
	// queue's counters agree with its tasks.
	export := filepath.Join(t.TempDir(), "restored.jsonl")
	dst.ok("export", export)
	if got, want := backupLines(t, export, "task"), backupLines(t, filepath.Join(dir, ops.DumpFile), "task"); !slices.Equal(got, want) {
		t.Errorf("restored tasks differ from the backup's: %d lines vs %d", len(got), len(want))
	}
	gotTokens := backupLines(t, export, "token")
	for _, tok := range backupLines(t, filepath.Join(dir, ops.DumpFile), "token") {
		if !slices.Contains(gotTokens, tok) {
			t.Errorf("token missing after restore: %s", tok)
		}
	}
	var stats struct {
		Counts []struct {
			State string `json:"state"`
			Count int64  `json:"count,string"`
		} `json:"counts"`
	}
	if err := json.Unmarshal([]byte(dst.ok("queue", "stats", "-o", "json")), &stats); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, c := range stats.Counts {
		total += c.Count
	}
	if total != m.Counts.Tasks {
		t.Errorf("restored queue counts %d tasks (%+v); the manifest %d", total, stats.Counts, m.Counts.Tasks)
	}
	if out := dst.ok("doctor"); !strings.Contains(out, "queue_sanity") {
		t.Errorf("doctor on the restored store: %s", out)
	}
}

func TestBackupVerifyRestoreUnderLoadSQLite(t *testing.T) {
	backupRoundTrip(t, newShell, "sqlite")
}

func TestBackupVerifyRestoreUnderLoadPostgres(t *testing.T) {
	url := os.Getenv("FACTORY_TEST_POSTGRES_URL")
	if url == "" {
		t.Skip("FACTORY_TEST_POSTGRES_URL is not set; point it at a database the test may create schemas in, " +
			"e.g. FACTORY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	backupRoundTrip(t, func(t *testing.T) *shell {
		addr, token := startControlPlaneOn(t, url, freshSchema(t, url))
		return &shell{t: t, addr: addr, token: token, stateFile: filepath.Join(t.TempDir(), "leases.json")}
	}, "postgres")
}

func TestBackupVerifyCatchesDamage(t *testing.T) {
	sh := newShell(t)
	sh.ok("task", "create", "--id", "a", "--title", "A")
	sh.ok("task", "create", "--id", "b", "--title", "B")
	dir := filepath.Join(t.TempDir(), "backup")
	sh.ok("backup", dir)

	// A second backup into the same directory is refused.
	if r := sh.run("backup", dir); r.code == 0 {
		t.Error("a backup over an existing one succeeded")
	}

	// One flipped byte in the dump fails its checksum.
	path := filepath.Join(dir, ops.DumpFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r := sh.run("backup", "verify", dir)
	if r.code != 1 || !strings.Contains(r.stdout, "FAILED") {
		t.Errorf("verify of a damaged dump: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// And restore refuses it, changing nothing.
	other := newShell(t)
	if r := other.run("restore", dir); r.code != 1 || !strings.Contains(r.stderr, "nothing was restored") {
		t.Errorf("restore of a damaged backup: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if out := other.ok("task", "ls", "-o", "json"); strings.Contains(out, `"a"`) {
		t.Errorf("a refused restore loaded tasks: %s", out)
	}
}
