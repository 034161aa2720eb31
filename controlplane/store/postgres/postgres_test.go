package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/factory/factory/controlplane/store"
)

var t0 = time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)

func TestConfigValidation(t *testing.T) {
	ctx := context.Background()
	for _, c := range []Config{
		{},
		{URL: "postgres://%zz"},
		{URL: "postgres://localhost/db", Schema: "has-dash"},
		{URL: "postgres://localhost/db", Schema: `quo"te`},
		{URL: "postgres://localhost/db", Schema: strings.Repeat("s", 64)},
		{URL: "postgres://localhost/db", MaxConns: -1},
		{URL: "postgres://localhost/db", ReplicaID: strings.Repeat("r", 201)},
	} {
		if s, err := Open(ctx, c); err == nil {
			s.Close()
			t.Errorf("Open(%+v): want an error", c)
		}
	}
	d := Config{URL: "postgres://localhost/db"}.WithDefaults()
	if d.Schema != "public" || d.Logger == nil || d.TracerProvider == nil || d.ReplicaID == "" || d.MaxConns < 8 {
		t.Fatalf("defaults: %+v", d)
	}
	if err := d.validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if other := (Config{URL: d.URL}).WithDefaults(); other.ReplicaID == d.ReplicaID {
		t.Fatalf("two stores got the same default replica id %q", d.ReplicaID)
	}
}

func TestNotifyPayloads(t *testing.T) {
	var changes []store.RemoteChange
	for i := range 400 {
		changes = append(changes, store.RemoteChange{
			TaskID:        fmt.Sprintf("%s-%04d-\"quoted\"-\u00e9", strings.Repeat("x", 40), i),
			PreviousState: store.StateReady, State: store.StateInProgress,
		})
	}
	// An id too long for any notification becomes a resync.
	changes = append(changes, store.RemoteChange{TaskID: strings.Repeat("y", 9000), State: store.StateReady})
	payloads := notifyPayloads("replica \"one\"", changes)
	if len(payloads) < 3 {
		t.Fatalf("%d payloads for %d changes", len(payloads), len(changes))
	}
	var got []store.RemoteChange
	resync := false
	for i, p := range payloads {
		if len(p) >= 8000 {
			t.Fatalf("payload %d is %d bytes", i, len(p))
		}
		var n notification
		if err := json.Unmarshal([]byte(p), &n); err != nil {
			t.Fatalf("payload %d: %v\n%s", i, err, p)
		}
		if n.Replica != "replica \"one\"" {
			t.Fatalf("payload %d names replica %q", i, n.Replica)
		}
		if last := i == len(payloads)-1; (n.More == 0) != last {
			t.Fatalf("payload %d of %d: more=%d", i, len(payloads), n.More)
		}
		resync = resync || n.Resync != 0
		for _, raw := range n.Changes {
			c, err := decodeChange(raw)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, c)
		}
	}
	if !resync {
		t.Fatal("the oversized change was not turned into a resync")
	}
	if len(got) != 400 {
		t.Fatalf("decoded %d changes, want 400", len(got))
	}
	for i, c := range got {
		if c != changes[i] {
			t.Fatalf("change %d: %+v, want %+v", i, c, changes[i])
		}
	}
}

// withParam returns url with a query parameter set.
func withParam(t testing.TB, raw, key, value string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// admin runs one statement on a connection of the test's own.
func admin(t testing.TB, url, sql string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return tag.RowsAffected()
}

func createReady(t testing.TB, s store.Store, ids ...string) {
	t.Helper()
	tasks := make([]*store.TaskCreate, len(ids))
	for i, id := range ids {
		tasks[i] = &store.TaskCreate{ID: id, Title: id}
	}
	if _, err := s.TaskCreate(context.Background(), &store.TaskCreateParams{Tasks: tasks, Now: t0}); err != nil {
		t.Fatalf("TaskCreate: %v", err)
	}
}

func TestMigrateConcurrently(t *testing.T) {
	url := testURL(t)
	schema := testSchema(t, url)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			s, err := Open(context.Background(), Config{URL: url, Schema: schema, MaxConns: 2, ReplicaID: fmt.Sprint("r", i)})
			if err != nil {
				t.Errorf("replica %d: Open: %v", i, err)
				return
			}
			defer s.Close()
			createReady(t, s, fmt.Sprint("task-", i))
		})
	}
	wg.Wait()
	files, err := fs.Glob(migrationsFS, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if n := admin(t, url, "SELECT FROM "+pgx.Identifier{schema, "goose_db_version"}.Sanitize()+" WHERE version_id > 0"); n != int64(len(files)) {
		t.Fatalf("%d applied migration rows, want one per file (%d)", n, len(files))
	}
}

// feed collects what a ListenChanges call delivers.
type feed struct {
	ch     chan store.ChangeBatch
	cancel context.CancelFunc
	done   chan error
}

func listen(t *testing.T, s *Store) *feed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &feed{ch: make(chan store.ChangeBatch, 100), cancel: cancel, done: make(chan error, 1)}
	go func() {
		f.done <- s.ListenChanges(ctx, func(b store.ChangeBatch) { f.ch <- b })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-f.done; err != nil {
			t.Errorf("ListenChanges returned %v, want nil after its context ended", err)
		}
	})
	return f
}

func (f *feed) next(t *testing.T) store.ChangeBatch {
	t.Helper()
	select {
	case b := <-f.ch:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no change batch within 10s")
		return store.ChangeBatch{}
	}
}

func (f *feed) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case b := <-f.ch:
		t.Fatalf("unexpected change batch %+v", b)
	case <-time.After(d):
	}
}

// waitListening waits until n sessions listen on s's channel.
func waitListening(t *testing.T, url string, s *Store, n int) {
	t.Helper()
	query := "LISTEN " + pgx.Identifier{s.channel}.Sanitize()
	deadline := time.Now().Add(10 * time.Second)
	for admin(t, url, "SELECT FROM pg_stat_activity WHERE query = $1", query) != int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d listeners on %s after 10s", n, s.channel)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestChangeFeedAcrossReplicas(t *testing.T) {
	url := testURL(t)
	schema := testSchema(t, url)
	a := openTest(t, url, schema, Config{ReplicaID: "replica-a"})
	b := openTest(t, url, schema, Config{ReplicaID: "replica-b"})
	// A store in another schema must not hear these changes.
	other := openTest(t, url, testSchema(t, url), Config{ReplicaID: "replica-other"})
	fa, fb, fo := listen(t, a), listen(t, b), listen(t, other)
	waitListening(t, url, a, 2)
	waitListening(t, url, other, 1)
	ctx := context.Background()
	// A feed starts with a resync: what was announced before it listened
	// is lost to it, and a claimer already waiting must look again.
	for name, f := range map[string]*feed{"a": fa, "b": fb, "other": fo} {
		if got := f.next(t); !got.Resync || len(got.Changes) != 0 {
			t.Fatalf("%s first heard %+v, want a resync", name, got)
		}
	}

	createReady(t, a, "t1")
	got := fb.next(t)
	want := []store.RemoteChange{{TaskID: "t1", PreviousState: store.StateUnspecified, State: store.StateReady}}
	if got.Resync || fmt.Sprint(got.Changes) != fmt.Sprint(want) {
		t.Fatalf("b heard %+v, want %+v", got, want)
	}

	claimed, err := b.TaskClaim(ctx, &store.TaskClaimParams{Agent: "agent-1", Max: 1, LeaseDuration: time.Minute, Now: t0})
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	got = fa.next(t)
	want = []store.RemoteChange{{TaskID: "t1", PreviousState: store.StateReady, State: store.StateInProgress}}
	if fmt.Sprint(got.Changes) != fmt.Sprint(want) {
		t.Fatalf("a heard %+v, want %+v", got, want)
	}

	// A transaction that rolls back announces nothing: the next batch b
	// hears is the one after it.
	_, err = a.TaskCreate(ctx, &store.TaskCreateParams{Now: t0, Tasks: []*store.TaskCreate{{ID: "doomed"}, {ID: "t1"}}})
	if !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("duplicate create: %v", err)
	}
	createReady(t, a, "t2")
	if got := fb.next(t); len(got.Changes) != 1 || got.Changes[0].TaskID != "t2" {
		t.Fatalf("b heard %+v, want only t2", got)
	}

	// A large transaction arrives as one batch, though it needed several
	// notifications.
	var ids []string
	for i := range 300 {
		ids = append(ids, fmt.Sprintf("%s-%03d", strings.Repeat("long-task-id-", 5), i))
	}
	createReady(t, a, ids...)
	got = fb.next(t)
	if len(got.Changes) != 300 || got.Changes[0].TaskID != ids[0] || got.Changes[299].TaskID != ids[299] {
		t.Fatalf("b heard %d changes in one batch, want all 300 in order", len(got.Changes))
	}

	// Nobody hears their own changes, nor another schema's.
	fa.quiet(t, 300*time.Millisecond)
	fb.quiet(t, 0)
	fo.quiet(t, 0)
}

func TestChangeFeedResyncsAfterReconnect(t *testing.T) {
	url := testURL(t)
	schema := testSchema(t, url)
	a := openTest(t, url, schema, Config{ReplicaID: "replica-a"})
	b := openTest(t, url, schema, Config{ReplicaID: "replica-b"})
	fb := listen(t, b)
	waitListening(t, url, b, 1)
	if got := fb.next(t); !got.Resync {
		t.Fatalf("first heard %+v, want the resync a feed starts with", got)
	}

	if n := admin(t, url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1",
		"LISTEN "+pgx.Identifier{b.channel}.Sanitize()); n != 1 {
		t.Fatalf("terminated %d listeners, want 1", n)
	}
	if got := fb.next(t); !got.Resync {
		t.Fatalf("after the listener's connection died, heard %+v, want a resync", got)
	}
	waitListening(t, url, b, 1)
	createReady(t, a, "after-reconnect")
	if got := fb.next(t); len(got.Changes) != 1 || got.Changes[0].TaskID != "after-reconnect" {
		t.Fatalf("heard %+v after reconnecting", got)
	}
}

// electionRun runs RunElected on a store until stopped.
type electionRun struct {
	id      string
	running atomic.Bool
	started chan struct{}
	stopped chan struct{}
	cancel  context.CancelFunc
	done    chan error
}

func runElection(t *testing.T, s *Store, id string, live *atomic.Int32, overlap *atomic.Bool) *electionRun {
	ctx, cancel := context.WithCancel(context.Background())
	e := &electionRun{id: id, started: make(chan struct{}, 10), stopped: make(chan struct{}, 10), cancel: cancel, done: make(chan error, 1)}
	go func() {
		e.done <- s.RunElected(ctx, "sweeper", func(ctx context.Context) error {
			if live.Add(1) > 1 {
				overlap.Store(true)
			}
			e.running.Store(true)
			e.started <- struct{}{}
			<-ctx.Done()
			e.running.Store(false)
			live.Add(-1)
			e.stopped <- struct{}{}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-e.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: RunElected did not return after its context ended", id)
		}
	})
	return e
}

func waitFor(t *testing.T, what string, ch <-chan struct{}, d time.Duration) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s: not within %s", what, d)
	}
}

func TestElectionMovesWhenLeaderSessionDies(t *testing.T) {
	url := testURL(t)
	schema := testSchema(t, url)
	a := openTest(t, url, schema, Config{ReplicaID: "replica-a"})
	b := openTest(t, url, schema, Config{ReplicaID: "replica-b"})
	var live atomic.Int32
	var overlap atomic.Bool
	ea := runElection(t, a, "a", &live, &overlap)
	waitFor(t, "a elected", ea.started, 5*time.Second)
	eb := runElection(t, b, "b", &live, &overlap)

	// b keeps trying but never runs alongside a.
	time.Sleep(2500 * time.Millisecond)
	if eb.running.Load() || overlap.Load() {
		t.Fatal("two replicas ran the duty at once")
	}

	// The leader's session ends (its process died, say): the server drops
	// the lock, b takes over within seconds, and a stands down.
	start := time.Now()
	n := admin(t, url, `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND objsubid = 2 AND granted
			AND classid = hashtext($1)::oid AND objid = hashtext($2)::oid`, schema, "sweeper")
	if n != 1 {
		t.Fatalf("terminated %d lock holders, want 1", n)
	}
	waitFor(t, "b takes over", eb.started, 5*time.Second)
	waitFor(t, "a stands down", ea.stopped, 5*time.Second)
	t.Logf("duty moved in %s", time.Since(start).Round(time.Millisecond))

	// Closing the leader's store hands the duty back.
	b.Close()
	waitFor(t, "b stops on close", eb.stopped, 5*time.Second)
	waitFor(t, "a takes over again", ea.started, 5*time.Second)
	if err := <-eb.done; !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("RunElected on a closed store returned %v, want ErrUnavailable", err)
	}
	eb.done <- nil // for the cleanup
}

func TestConnectionLossIsUnavailable(t *testing.T) {
	url := testURL(t)
	app := "factory-test-" + strings.TrimPrefix(testSchema(t, url), "factory_test_")
	s := openTest(t, withParam(t, url, "application_name", app), testSchema(t, url), Config{})
	ctx := context.Background()
	var ids []string
	for i := range 40 {
		ids = append(ids, fmt.Sprint("t-", i))
	}
	createReady(t, s, ids...)

	claimed := map[string]string{}
	for round := range 20 {
		if round%4 == 0 {
			// Every connection of the store dies at once, as in a
			// server restart.
			admin(t, url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", app)
		}
		agent := fmt.Sprint("agent-", round)
		got, err := s.TaskClaim(ctx, &store.TaskClaimParams{Agent: agent, Max: 1, LeaseDuration: time.Hour, Now: t0})
		if err != nil {
			if !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("round %d: claim failed with %v, want success or ErrUnavailable", round, err)
			}
			continue
		}
		for _, c := range got {
			if prev, ok := claimed[c.Task.ID]; ok {
				t.Fatalf("%s claimed twice (by %s and %s)", c.Task.ID, prev, agent)
			}
			claimed[c.Task.ID] = agent
		}
		if _, err := s.TaskGet(ctx, "t-0"); err != nil && !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("round %d: get failed with %v", round, err)
		}
	}
	if len(claimed) == 0 {
		t.Fatal("no claim succeeded after the connections were restored")
	}
	// Every task a claim reported is held by that claimer.
	for id, agent := range claimed {
		got, err := s.TaskGet(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != store.StateInProgress || got.LeaseHolder != agent {
			t.Fatalf("%s: %s held by %q, want IN_PROGRESS held by %s", id, got.State, got.LeaseHolder, agent)
		}
	}
}

// tcpProxy forwards to a PostgreSQL server and can drop everything, like a
// server going away, without touching the server other tests share.
type tcpProxy struct {
	t      *testing.T
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{t: t, target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.down)
	return p
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
}

// down refuses new connections and cuts the open ones.
func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// up accepts connections again on the same address.
func (p *tcpProxy) up() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serve(ln)
}

func TestServerDownIsUnavailable(t *testing.T) {
	raw := testURL(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5432")
	}
	p := startProxy(t, target)
	u.Host = p.addr
	s := openTest(t, u.String(), testSchema(t, raw), Config{})
	ctx := context.Background()
	createReady(t, s, "a", "b", "c")
	fs := listen(t, s)
	waitListening(t, raw, s, 1)

	p.down()
	start := time.Now()
	calls := map[string]func() error{
		"TaskGet": func() error { _, err := s.TaskGet(ctx, "a"); return err },
		"TaskClaim": func() error {
			_, err := s.TaskClaim(ctx, &store.TaskClaimParams{Agent: "x", Max: 1, LeaseDuration: time.Minute, Now: t0})
			return err
		},
		"TaskCreate": func() error {
			_, err := s.TaskCreate(ctx, &store.TaskCreateParams{Tasks: []*store.TaskCreate{{ID: "d"}}, Now: t0})
			return err
		},
		"QueueStats": func() error { _, err := s.QueueStats(ctx); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("%s with the server down: %v, want ErrUnavailable", name, err)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("failing took %s", d)
	}

	// The server comes back: the pool reconnects by itself, and the
	// change feed says it may have missed something.
	p.up()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.TaskGet(ctx, "a")
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("after the server came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for {
		if b := fs.next(t); b.Resync {
			break
		}
	}
	if _, err := s.TaskCreate(ctx, &store.TaskCreateParams{Tasks: []*store.TaskCreate{{ID: "d"}}, Now: t0}); err != nil {
		t.Fatalf("create after the server came back: %v", err)
	}
}

func TestOpenUnreachableIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = Open(context.Background(), Config{URL: "postgres://postgres@" + addr + "/test?sslmode=disable&connect_timeout=2"})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open against a closed port: %v, want ErrUnavailable", err)
	}
}

// Dependencies completed at the same moment on different replicas (so in
// different transactions) promote their dependent exactly once.
func TestDependentsAcrossReplicas(t *testing.T) {
	url := testURL(t)
	schema := testSchema(t, url)
	a := openTest(t, url, schema, Config{ReplicaID: "replica-a"})
	b := openTest(t, url, schema, Config{ReplicaID: "replica-b"})
	ctx := context.Background()
	for round := range 25 {
		d1, d2, c := fmt.Sprint("d1-", round), fmt.Sprint("d2-", round), fmt.Sprint("c-", round)
		if _, err := a.TaskCreate(ctx, &store.TaskCreateParams{Now: t0, Tasks: []*store.TaskCreate{
			{ID: d1, Priority: 2}, {ID: d2, Priority: 1}, {ID: c, DependsOn: []string{d1, d2}},
		}}); err != nil {
			t.Fatal(err)
		}
		h1, err := a.TaskClaim(ctx, &store.TaskClaimParams{Agent: "agent-a", Max: 1, LeaseDuration: time.Hour, Now: t0})
		if err != nil || len(h1) != 1 || h1[0].Task.ID != d1 {
			t.Fatalf("claim d1: %v %v", h1, err)
		}
		h2, err := b.TaskClaim(ctx, &store.TaskClaimParams{Agent: "agent-b", Max: 1, LeaseDuration: time.Hour, Now: t0})
		if err != nil || len(h2) != 1 || h2[0].Task.ID != d2 {
			t.Fatalf("claim d2: %v %v", h2, err)
		}
		var promotions atomic.Int32
		var wg sync.WaitGroup
		for _, x := range []struct {
			s store.Store
			h *store.Task
		}{{a, h1[0].Task}, {b, h2[0].Task}} {
			wg.Go(func() {
				res, err := x.s.TaskComplete(ctx, &store.TaskCompleteParams{Now: t0, Items: []store.TaskCompleteItem{
					{Lease: store.LeaseRef{TaskID: x.h.ID, Agent: x.h.LeaseHolder, FencingToken: x.h.FencingToken}},
				}})
				if err != nil || res.Results[0].Err != nil {
					t.Errorf("complete %s: %v %v", x.h.ID, err, res)
					return
				}
				for _, ch := range res.Changes {
					if ch.Task.ID == c && ch.PreviousState == store.StateBacklog {
						promotions.Add(1)
					}
				}
			})
		}
		wg.Wait()
		got, err := a.TaskGet(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != store.StateReady || promotions.Load() != 1 {
			t.Fatalf("round %d: dependent is %s, reported promoted %d times; want READY, once", round, got.State, promotions.Load())
		}
	}
}

// Claims that run as one transaction take exactly what they would have
// taken one after another, assigned tasks and roles included.
func TestGroupedClaimsMatchSequentialClaims(t *testing.T) {
	url := testURL(t)
	s := openTest(t, url, testSchema(t, url), Config{})
	ctx := context.Background()
	if _, err := s.TaskCreate(ctx, &store.TaskCreateParams{Now: t0, Tasks: []*store.TaskCreate{
		{ID: "for-b-1", Assignee: "agent-b", Priority: 9},
		{ID: "for-b-2", Assignee: "agent-b", Priority: 9},
		{ID: "builder", Role: "builder", Priority: 8},
		{ID: "later", Priority: 7, RunAfter: t0.Add(time.Second)},
		{ID: "any-1", Priority: 1},
		{ID: "any-2", Priority: 1},
		{ID: "any-3", Priority: 1},
	}}); err != nil {
		t.Fatal(err)
	}
	req := func(agent string, max int, now time.Time, roles ...string) *claimReq {
		return &claimReq{request: newRequest(ctx), now: now,
			p: &store.TaskClaimParams{Agent: agent, Roles: roles, Max: max, LeaseDuration: time.Minute, Now: now}}
	}
	a, b, c, d := req("agent-a", 1, t0), req("agent-b", 1, t0), req("agent-c", 2, t0.Add(time.Second), "builder"), req("agent-d", 5, t0)
	if err := s.runGroup(ctx, []groupRequest{a, b, c, d}); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		r    *claimReq
		want []string
	}{
		// The head is b's: a passes over it to the first task it may take.
		{a, []string{"any-1"}},
		{b, []string{"for-b-1"}},
		// c sees "later" (its Now is a second on) and has the role.
		{c, []string{"builder", "later"}},
		// d may take neither b's task nor the builder's nor "later".
		{d, []string{"any-2", "any-3"}},
	} {
		byClaimOrder(x.r.out)
		var got []string
		for _, r := range x.r.out {
			got = append(got, r.t.ID)
			if r.t.LeaseHolder != x.r.p.Agent || r.t.State != store.StateInProgress || !r.t.ClaimedAt.Equal(x.r.now) {
				t.Fatalf("%s: %s is %s held by %q claimed at %s", x.r.p.Agent, r.t.ID, r.t.State, r.t.LeaseHolder, r.t.ClaimedAt)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(x.want) {
			t.Fatalf("%s claimed %v, want %v", x.r.p.Agent, got, x.want)
		}
	}
	if got, _ := s.TaskGet(ctx, "for-b-2"); got.State != store.StateReady {
		t.Fatalf("for-b-2 is %s, want READY", got.State)
	}

	// The candidates run out on tasks a may not take: a's claim goes on
	// past them on its own.
	createReady(t, s, "any-4")
	e, f := req("agent-e", 1, t0), req("agent-b", 1, t0)
	if err := s.runGroup(ctx, []groupRequest{e, f}); err != nil {
		t.Fatal(err)
	}
	if len(e.out) != 1 || e.out[0].t.ID != "any-4" || len(f.out) != 1 || f.out[0].t.ID != "for-b-2" {
		t.Fatalf("e claimed %v, b claimed %v; want any-4 and for-b-2", e.out, f.out)
	}
}

func TestStatementSpans(t *testing.T) {
	url := testURL(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	s := openTest(t, url, testSchema(t, url), Config{TracerProvider: tp})
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	createReady(t, s, "a")
	if _, err := s.TaskClaim(ctx, &store.TaskClaimParams{Agent: "x", Max: 1, LeaseDuration: time.Minute, Now: t0}); err != nil {
		t.Fatal(err)
	}
	span.End()
	names := map[string]bool{}
	for _, sp := range rec.Ended() {
		names[sp.Name()] = true
	}
	for _, want := range []string{"TaskClaim", "COMMIT"} {
		if !names[want] {
			t.Fatalf("no %q span among %v", want, names)
		}
	}
	// Work outside any trace makes no spans of its own.
	if names["TaskInsert"] {
		t.Fatal("an untraced call made spans")
	}
}

// Text PostgreSQL cannot store (a NUL byte, invalid UTF-8) is refused as
// bad input naming its field, and fails only the item that carried it.
func TestUnstorableText(t *testing.T) {
	url := testURL(t)
	s := openTest(t, url, testSchema(t, url), Config{})
	ctx := context.Background()
	_, err := s.TaskCreate(ctx, &store.TaskCreateParams{Now: t0, Tasks: []*store.TaskCreate{{ID: "a", Title: "nul\x00byte"}}})
	var fe *store.FieldError
	if !errors.As(err, &fe) || fe.Field != "title" {
		t.Fatalf("create with a NUL in the title: %v, want a FieldError on title", err)
	}
	_, err = s.TaskCreate(ctx, &store.TaskCreateParams{Now: t0, Tasks: []*store.TaskCreate{{ID: "a", Labels: map[string]string{"k": "\xff"}}}})
	if !errors.As(err, &fe) || fe.Field != "labels" {
		t.Fatalf("create with invalid UTF-8 in a label: %v, want a FieldError on labels", err)
	}
	if _, err := s.TaskGet(ctx, "a\x00"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get of an id with a NUL: %v, want ErrNotFound", err)
	}

	createReady(t, s, "x", "y")
	got, err := s.TaskClaim(ctx, &store.TaskClaimParams{Agent: "agent-1", Max: 2, LeaseDuration: time.Minute, Now: t0})
	if err != nil || len(got) != 2 {
		t.Fatalf("claim: %v %v", got, err)
	}
	lease := func(c store.TaskChange) store.LeaseRef {
		return store.LeaseRef{TaskID: c.Task.ID, Agent: c.Task.LeaseHolder, FencingToken: c.Task.FencingToken}
	}
	res, err := s.TaskComplete(ctx, &store.TaskCompleteParams{Now: t0, Items: []store.TaskCompleteItem{
		{Lease: lease(got[0]), Note: "bad\x00note"},
		{Lease: lease(got[1]), Note: "fine"},
	}})
	if err != nil {
		t.Fatalf("complete failed as a whole: %v", err)
	}
	if !errors.As(res.Results[0].Err, &fe) || fe.Field != "note" || res.Results[1].Err != nil {
		t.Fatalf("item results: %v, %v; want a FieldError on note, then success", res.Results[0].Err, res.Results[1].Err)
	}
}
