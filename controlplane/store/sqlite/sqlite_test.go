package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/factory/factory/controlplane/store"
)

var t0 = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// quiet drops the migration logs every Open writes.
var quiet = slog.New(slog.DiscardHandler)

func openAt(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{Path: path, Logger: quiet})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return s
}

func openTemp(t *testing.T) *Store {
	t.Helper()
	s := openAt(t, filepath.Join(t.TempDir(), "factory.db"))
	t.Cleanup(func() { s.Close() })
	return s
}

func mustCreate(t *testing.T, s store.Store, tasks ...*store.TaskCreate) {
	t.Helper()
	if _, err := s.TaskCreate(t.Context(), &store.TaskCreateParams{Tasks: tasks, Now: t0}); err != nil {
		t.Fatalf("TaskCreate: %v", err)
	}
}

func mustClaim(t *testing.T, s store.Store, agent string, max int, now time.Time) []store.TaskChange {
	t.Helper()
	got, err := s.TaskClaim(t.Context(), &store.TaskClaimParams{Agent: agent, Max: max, LeaseDuration: time.Minute, Now: now})
	if err != nil {
		t.Fatalf("TaskClaim: %v", err)
	}
	return got
}

func lease(t *store.Task) store.LeaseRef {
	return store.LeaseRef{TaskID: t.ID, Agent: t.LeaseHolder, FencingToken: t.FencingToken}
}

func TestOpenValidatesConfig(t *testing.T) {
	for _, path := range []string{"", "  ", ":memory:", "file:x.db?mode=memory"} {
		if s, err := Open(t.Context(), Config{Path: path, Logger: quiet}); err == nil {
			s.Close()
			t.Errorf("Open(%q): want an error", path)
		}
	}
}

func TestOpenCreatesParentDirectory(t *testing.T) {
	// Characters that mean something in a URI must reach the file system
	// as they are.
	path := filepath.Join(t.TempDir(), "a b", "c#d%20?", "factory.db")
	s := openAt(t, path)
	defer s.Close()
	mustCreate(t, s, &store.TaskCreate{ID: "t1", Title: "one"})
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file: %v", err)
	}
}

// A held lease, its fencing token and the rest of a task survive a restart,
// and the holder can finish its work against the reopened store.
func TestReopenKeepsTasksAndLeases(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "factory.db")
	s := openAt(t, path)
	mustCreate(t, s,
		&store.TaskCreate{ID: "a", Title: "first", Kind: "build", PayloadJSON: `{"x":1}`, Priority: 5,
			Labels: map[string]string{"team": "infra"}, MaxAttempts: 4, RunAfter: t0.Add(-time.Second)},
		&store.TaskCreate{ID: "b", Title: "second", DependsOn: []string{"a"}},
	)
	claimed := mustClaim(t, s, "agent-1", 1, t0)
	if len(claimed) != 1 || claimed[0].Task.ID != "a" {
		t.Fatalf("claimed %v, want a", claimed)
	}
	held := claimed[0].Task
	if _, err := s.QueuePause(ctx, &store.QueuePauseParams{Reason: "maintenance", Now: t0}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openAt(t, path)
	defer s.Close()
	got, err := s.TaskGet(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != store.StateInProgress || got.LeaseHolder != "agent-1" || got.FencingToken != held.FencingToken ||
		!got.LeaseExpiresAt.Equal(t0.Add(time.Minute)) || !got.ClaimedAt.Equal(t0) || got.Attempt != 1 {
		t.Fatalf("after reopen: %+v, want the lease of %+v", got, held)
	}
	if got.Labels["team"] != "infra" || got.PayloadJSON != `{"x":1}` || got.MaxAttempts != 4 || got.Priority != 5 {
		t.Fatalf("after reopen: fields lost: %+v", got)
	}
	stats, err := s.QueueStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !stats.Paused || stats.PauseReason != "maintenance" {
		t.Fatalf("pause lost on reopen: %+v", stats)
	}
	if _, err := s.QueueResume(ctx, &store.QueueResumeParams{Now: t0}); err != nil {
		t.Fatal(err)
	}

	res, err := s.TaskComplete(ctx, &store.TaskCompleteParams{Items: []store.TaskCompleteItem{{Lease: lease(held)}}, Now: t0.Add(time.Second)})
	if err != nil || res.Results[0].Err != nil {
		t.Fatalf("complete after reopen: %v %v", err, res.Results[0].Err)
	}
	b, err := s.TaskGet(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if b.State != store.StateReady || len(b.DependsOn) != 1 || b.DependsOn[0] != "a" {
		t.Fatalf("dependent after reopen: %+v", b)
	}
}

// The fencing token keeps growing across a restart.
func TestReopenFencingTokenGrows(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "factory.db")
	s := openAt(t, path)
	mustCreate(t, s, &store.TaskCreate{ID: "a"})
	first := mustClaim(t, s, "agent-1", 1, t0)[0].Task
	if _, err := s.TaskFail(ctx, &store.TaskFailParams{Lease: lease(first), Error: "boom", Now: t0}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openAt(t, path)
	defer s.Close()
	second := mustClaim(t, s, "agent-2", 1, t0.Add(time.Hour))
	if len(second) != 1 || second[0].Task.FencingToken <= first.FencingToken {
		t.Fatalf("second claim %+v: want a token above %d", second, first.FencingToken)
	}
	// The first holder is fenced off.
	_, err := s.TaskRenew(ctx, &store.TaskRenewParams{Lease: lease(first), LeaseDuration: time.Minute, Now: t0.Add(time.Hour)})
	if !errors.Is(err, store.ErrStaleLease) {
		t.Fatalf("stale renew: %v, want ErrStaleLease", err)
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "factory.db")
	for range 3 {
		s := openAt(t, path)
		mustCreate(t, s, &store.TaskCreate{ID: fmt.Sprint("t", time.Now().UnixNano())})
		s.Close()
	}

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fsys, _ := fs.Sub(migrationsFS, "migrations")
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	current, target, err := p.GetVersions(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if current != target || current < 1 {
		t.Fatalf("schema version %d, latest %d", current, target)
	}
	var applied int
	if err := db.QueryRow(`SELECT COUNT(*) FROM goose_db_version WHERE version_id > 0`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied != len(p.ListSources()) {
		t.Fatalf("%d migrations recorded after three opens, want %d", applied, len(p.ListSources()))
	}
	var tasks int
	if err := db.QueryRow(`SELECT COUNT(*) FROM tasks`).Scan(&tasks); err != nil || tasks != 3 {
		t.Fatalf("tasks after three opens: %d (%v), want 3", tasks, err)
	}
}

// Every migration can be undone and redone.
func TestMigrationsDownUp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "factory.db")
	s := openAt(t, path)
	s.Close()

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fsys, _ := fs.Sub(migrationsFS, "migrations")
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(t.Context(), 0); err != nil {
		t.Fatalf("down: %v", err)
	}
	var tables int
	if err := db.QueryRow(`SELECT COUNT(*) FROM sqlite_schema WHERE type IN ('table', 'index', 'trigger') AND name NOT LIKE 'goose%' AND name NOT LIKE 'sqlite%'`).Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("%d schema objects left after down (%v)", tables, err)
	}
	if _, err := p.Up(t.Context()); err != nil {
		t.Fatalf("up again: %v", err)
	}
	db.Close()
	s = openAt(t, path)
	defer s.Close()
	mustCreate(t, s, &store.TaskCreate{ID: "a"})
}

func TestPragmas(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	check := func(who, name, want string, get func(q string) (string, error)) {
		t.Helper()
		got, err := get("PRAGMA " + name)
		if err != nil {
			t.Fatalf("%s PRAGMA %s: %v", who, name, err)
		}
		if got != want {
			t.Errorf("%s %s = %q, want %q", who, name, got, want)
		}
	}
	writer := func(q string) (v string, err error) {
		err = s.writeTx(ctx, "test", func(w *wtx) error {
			rs, err := w.query(q)
			if err != nil {
				return err
			}
			defer rs.Close()
			rs.Next()
			return rs.Scan(&v)
		})
		return v, err
	}
	reader := func(q string) (v string, err error) {
		err = s.r.QueryRowContext(ctx, q).Scan(&v)
		return v, err
	}
	check("writer", "journal_mode", "wal", writer)
	check("writer", "busy_timeout", "5000", writer)
	check("writer", "synchronous", "1", writer)
	check("writer", "foreign_keys", "1", writer)
	check("reader", "journal_mode", "wal", reader)
	check("reader", "busy_timeout", "5000", reader)
	check("reader", "query_only", "1", reader)
}

// blockWriter occupies the writer until the returned func is called, so
// that calls made meanwhile queue up and run as one group.
func blockWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	started, unblock := make(chan struct{}), make(chan struct{})
	go s.writeTx(context.Background(), "block", func(*wtx) error {
		close(started)
		<-unblock
		return nil
	})
	<-started
	return sync.OnceFunc(func() { close(unblock) })
}

// Reads answer from the last committed state while a write transaction is
// open: they neither wait for it nor see its uncommitted changes.
func TestReadersDoNotWaitForWriter(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	mustCreate(t, s, &store.TaskCreate{ID: "a"})

	wrote, release := make(chan struct{}), make(chan struct{})
	errDiscard := errors.New("discard")
	result := make(chan error, 1)
	go func() {
		result <- s.writeTx(ctx, "test", func(w *wtx) error {
			if _, err := w.exec(`UPDATE tasks SET title = 'uncommitted' WHERE id = 'a'`); err != nil {
				return err
			}
			close(wrote)
			<-release
			return errDiscard
		})
	}()
	<-wrote

	readCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	got, err := s.TaskGet(readCtx, "a")
	if err != nil {
		t.Fatalf("TaskGet during a write transaction: %v", err)
	}
	if got.Title != "" {
		t.Fatalf("read saw uncommitted title %q", got.Title)
	}
	if _, err := s.QueueStats(readCtx); err != nil {
		t.Fatalf("QueueStats during a write transaction: %v", err)
	}
	if _, err := s.TaskList(readCtx, &store.TaskListParams{}); err != nil {
		t.Fatalf("TaskList during a write transaction: %v", err)
	}
	close(release)
	if err := <-result; !errors.Is(err, errDiscard) {
		t.Fatalf("write call: %v, want its own error", err)
	}
	if got, _ := s.TaskGet(ctx, "a"); got.Title != "" {
		t.Fatalf("a failed call's write landed: title %q", got.Title)
	}
}

// Calls committed in one group stay independent: a failing call's writes
// are undone, its neighbours' land.
func TestGroupCommitIsolatesCalls(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	release := blockWriter(t, s)

	errBoom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range 3 {
		wg.Go(func() {
			errs[i] = s.writeTx(ctx, "test", func(w *wtx) error {
				if _, err := w.exec(`INSERT INTO tasks (id, state, max_attempts, created_at, updated_at, state_changed_at)
					VALUES (?, 2, 3, 1, 1, 1)`, fmt.Sprint("t", i)); err != nil {
					return err
				}
				if i == 1 {
					return errBoom
				}
				return nil
			})
		})
	}
	// Let all three queue behind the blocker.
	for len(s.wr.reqs) < 3 {
		time.Sleep(time.Millisecond)
	}
	release()
	wg.Wait()

	if errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], errBoom) {
		t.Fatalf("call errors %v, want nil, boom, nil", errs)
	}
	for i, want := range []bool{true, false, true} {
		_, err := s.TaskGet(ctx, fmt.Sprint("t", i))
		if got := err == nil; got != want {
			t.Errorf("t%d stored = %v, want %v (%v)", i, got, want, err)
		}
	}
}

// A call whose context ends while it waits in the queue never runs.
func TestQueuedCallCanceled(t *testing.T) {
	s := openTemp(t)
	release := blockWriter(t, s)
	defer release()

	ctx, cancel := context.WithCancel(t.Context())
	var ran atomic.Bool
	result := make(chan error, 1)
	go func() {
		result <- s.writeTx(ctx, "test", func(*wtx) error { ran.Store(true); return nil })
	}()
	for len(s.wr.reqs) < 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-result; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled call: %v, want context.Canceled", err)
	}
	release()
	// Any later call runs after the abandoned one would have.
	if err := s.writeTx(t.Context(), "test", func(*wtx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if ran.Load() {
		t.Fatal("the abandoned call ran")
	}
}

// Many claimers at once: every task is handed out exactly once, each
// claim's tokens are fresh, and no claimer sees a busy error.
func TestConcurrentClaims(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	const n = 600
	batch := make([]*store.TaskCreate, n)
	for i := range batch {
		batch[i] = &store.TaskCreate{ID: fmt.Sprintf("t%04d", i), Priority: int32(i % 3)}
	}
	mustCreate(t, s, batch...)

	var (
		mu    sync.Mutex
		owner = make(map[string]string, n)
		wg    sync.WaitGroup
		errs  = make(chan error, 16)
	)
	for a := range 16 {
		agent := fmt.Sprintf("agent-%d", a)
		wg.Go(func() {
			for {
				got, err := s.TaskClaim(ctx, &store.TaskClaimParams{Agent: agent, Max: 1 + a%4, LeaseDuration: time.Minute, Now: t0})
				if err != nil {
					errs <- err
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, c := range got {
					if prev, dup := owner[c.Task.ID]; dup {
						errs <- fmt.Errorf("task %s claimed by %s and %s", c.Task.ID, prev, agent)
					}
					owner[c.Task.ID] = agent
				}
				mu.Unlock()
				// Complete half of them so writes of both kinds interleave.
				var items []store.TaskCompleteItem
				for i, c := range got {
					if i%2 == 0 {
						items = append(items, store.TaskCompleteItem{Lease: lease(c.Task)})
					}
				}
				res, err := s.TaskComplete(ctx, &store.TaskCompleteParams{Items: items, Now: t0})
				if err != nil {
					errs <- err
					return
				}
				for _, r := range res.Results {
					if r.Err != nil {
						errs <- r.Err
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(owner) != n {
		t.Fatalf("%d tasks claimed, want %d", len(owner), n)
	}
	stats, err := s.QueueStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Counts[store.StateReady] != 0 || stats.Counts[store.StateDone]+stats.Counts[store.StateInProgress] != n {
		t.Fatalf("counts after the run: %v", stats.Counts)
	}
}

// Claim order and batch claims follow priority, then creation.
func TestClaimOrder(t *testing.T) {
	s := openTemp(t)
	mustCreate(t, s,
		&store.TaskCreate{ID: "low1", Priority: 1},
		&store.TaskCreate{ID: "high1", Priority: 9},
		&store.TaskCreate{ID: "low2", Priority: 1},
		&store.TaskCreate{ID: "high2", Priority: 9},
		&store.TaskCreate{ID: "mid", Priority: 5},
	)
	got := mustClaim(t, s, "a", 4, t0)
	var ids []string
	for _, c := range got {
		ids = append(ids, c.Task.ID)
	}
	if fmt.Sprint(ids) != "[high1 high2 mid low1]" {
		t.Fatalf("claim order %v", ids)
	}
}

// Label keys that a JSON path could not quote still filter.
func TestListLabelKeys(t *testing.T) {
	s := openTemp(t)
	odd := `a"b.c[0]`
	mustCreate(t, s,
		&store.TaskCreate{ID: "x", Labels: map[string]string{odd: "1", "env": "prod"}},
		&store.TaskCreate{ID: "y", Labels: map[string]string{odd: "2", "env": "prod"}},
		&store.TaskCreate{ID: "z"},
	)
	res, err := s.TaskList(t.Context(), &store.TaskListParams{Labels: map[string]string{odd: "1", "env": "prod"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tasks) != 1 || res.Tasks[0].ID != "x" {
		t.Fatalf("label filter: %v", res.Tasks)
	}
}

func TestListPages(t *testing.T) {
	s := openTemp(t)
	for i := range 7 {
		mustCreate(t, s, &store.TaskCreate{ID: fmt.Sprint("t", i)})
	}
	var ids []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 4 {
			t.Fatal("too many pages")
		}
		res, err := s.TaskList(t.Context(), &store.TaskListParams{Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, tk := range res.Tasks {
			ids = append(ids, tk.ID)
		}
		if res.NextCursor == "" {
			break
		}
		cursor = res.NextCursor
	}
	if fmt.Sprint(ids) != "[t0 t1 t2 t3 t4 t5 t6]" {
		t.Fatalf("pages: %v", ids)
	}
	for _, bad := range []string{"x", "-1", "1.5"} {
		_, err := s.TaskList(t.Context(), &store.TaskListParams{Cursor: bad})
		var fe *store.FieldError
		if !errors.As(err, &fe) || fe.Field != "page_token" {
			t.Errorf("cursor %q: %v, want a page_token FieldError", bad, err)
		}
	}
}

func TestClosedStoreIsUnavailable(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "factory.db"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.TaskGet(t.Context(), "a"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("TaskGet after Close: %v, want ErrUnavailable", err)
	}
	if _, err := s.TaskClaim(t.Context(), &store.TaskClaimParams{Agent: "a", Max: 1, LeaseDuration: time.Second, Now: t0}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("TaskClaim after Close: %v, want ErrUnavailable", err)
	}
}

// Calls racing Close either run or get ErrUnavailable; none hangs.
func TestCloseWhileWriting(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "factory.db"))
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			_, err := s.TaskCreate(context.Background(), &store.TaskCreateParams{
				Tasks: []*store.TaskCreate{{ID: fmt.Sprint("t", i)}}, Now: t0})
			if err != nil && !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("create during Close: %v", err)
			}
		})
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
}

// Batches bigger than one VALUES list (maxBatchRows) are split across
// statements without losing or reordering anything; a task named twice in
// one completion completes once.
func TestBatchesSpanStatements(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	const n = 2*maxBatchRows + 7
	batch := make([]*store.TaskCreate, n)
	for i := range batch {
		batch[i] = &store.TaskCreate{ID: fmt.Sprintf("t%03d", i), Labels: map[string]string{"i": fmt.Sprint(i)}}
		if i > 0 {
			batch[i].DependsOn = []string{"t000"}
		}
	}
	// t000 is done up front so that its dependents start READY.
	batch[0].InitialState = store.StateDone
	created, err := s.TaskCreate(ctx, &store.TaskCreateParams{Tasks: batch, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range created {
		if c.Task.ID != batch[i].ID || c.Task.Labels["i"] != fmt.Sprint(i) {
			t.Fatalf("created[%d] = %s %v", i, c.Task.ID, c.Task.Labels)
		}
	}

	got := mustClaim(t, s, "agent-1", n, t0)
	if len(got) != n-1 {
		t.Fatalf("claimed %d, want %d", len(got), n-1)
	}
	var items []store.TaskCompleteItem
	for i, c := range got {
		if want := fmt.Sprintf("t%03d", i+1); c.Task.ID != want {
			t.Fatalf("claim %d is %s, want %s", i, c.Task.ID, want)
		}
		items = append(items, store.TaskCompleteItem{Lease: lease(c.Task), Review: i%2 == 0, Note: fmt.Sprint("note ", i)})
	}
	// The first task again, after everything else: it is done by then, so
	// the identical item is a repeat of that completion.
	items = append(items, items[0])
	res, err := s.TaskComplete(ctx, &store.TaskCompleteParams{Items: items, Now: t0.Add(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res.Results[:len(got)] {
		want := store.StateDone
		if i%2 == 0 {
			want = store.StateReview
		}
		if r.Err != nil || r.Task.State != want || r.Task.Note != fmt.Sprint("note ", i) || r.Task.LeaseHolder != "" {
			t.Fatalf("result %d: %+v %v", i, r.Task, r.Err)
		}
	}
	if last := res.Results[len(got)]; last.Err != nil || !last.Replay || last.Task.State != store.StateReview {
		t.Fatalf("repeated item: %+v, want a replay of the first completion", last)
	}
	if len(res.Changes) != len(got) {
		t.Fatalf("%d changes, want %d", len(res.Changes), len(got))
	}
}

// The per-state counts QueueStats reads are kept by triggers; after a mixed
// run they must equal a count of the rows themselves.
func TestStatsMatchRows(t *testing.T) {
	s := openTemp(t)
	ctx := t.Context()
	now := t0
	var tasks []*store.TaskCreate
	for i := range 120 {
		c := &store.TaskCreate{ID: fmt.Sprintf("t%03d", i), Priority: int32(i % 5), MaxAttempts: int32(1 + i%3)}
		if i%7 == 3 {
			c.DependsOn = []string{fmt.Sprintf("t%03d", i-1)}
		}
		if i%11 == 0 {
			c.InitialState = store.StateBacklog
		}
		tasks = append(tasks, c)
	}
	mustCreate(t, s, tasks...)
	flaky := func(int32) time.Duration { return time.Second }

	for round := range 12 {
		now = now.Add(2 * time.Second)
		if round == 5 {
			if _, err := s.QueuePause(ctx, &store.QueuePauseParams{Reason: "r", Now: now}); err != nil {
				t.Fatal(err)
			}
		}
		if round == 7 {
			if _, err := s.QueueResume(ctx, &store.QueueResumeParams{Now: now}); err != nil {
				t.Fatal(err)
			}
		}
		got := mustClaim(t, s, "agent", 15, now)
		var items []store.TaskCompleteItem
		for i, c := range got {
			switch i % 4 {
			case 0:
				if _, err := s.TaskFail(ctx, &store.TaskFailParams{Lease: lease(c.Task), Error: "x", Backoff: flaky, Now: now}); err != nil {
					t.Fatal(err)
				}
			case 1:
				items = append(items, store.TaskCompleteItem{Lease: lease(c.Task), Review: true})
			case 2:
				items = append(items, store.TaskCompleteItem{Lease: lease(c.Task)})
			}
			// case 3 keeps its lease and expires below.
		}
		if _, err := s.TaskComplete(ctx, &store.TaskCompleteParams{Items: items, Now: now}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.TaskRescueExpired(ctx, &store.TaskRescueExpiredParams{Backoff: flaky, Now: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if round%3 == 0 {
			if _, err := s.TaskMove(ctx, &store.TaskMoveParams{TaskID: fmt.Sprintf("t%03d", round*11), To: store.StateReady, Now: now}); err != nil &&
				!errors.Is(err, store.ErrIllegalTransition) {
				t.Fatal(err)
			}
		}
	}

	stats, err := s.QueueStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.TaskList(ctx, &store.TaskListParams{})
	if err != nil {
		t.Fatal(err)
	}
	want := make(map[store.TaskState]int64)
	var retrying int64
	for _, tk := range all.Tasks {
		want[tk.State]++
		if tk.State != store.StateDone && tk.Attempt > 1 {
			retrying++
		}
	}
	for _, st := range store.AllStates {
		if stats.Counts[st] != want[st] {
			t.Errorf("%s: stats say %d, rows say %d", st, stats.Counts[st], want[st])
		}
	}
	if stats.Retrying != retrying {
		t.Errorf("Retrying: stats say %d, rows say %d", stats.Retrying, retrying)
	}
	if want[store.StateDone] == 0 || want[store.StateFailed] == 0 || retrying == 0 {
		t.Fatalf("the run did not reach every case: %v, retrying %d", want, retrying)
	}
}
