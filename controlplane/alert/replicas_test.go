package alert

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/postgres"
)

// pgSchema returns a fresh schema name on FACTORY_TEST_POSTGRES_URL,
// dropped when the test ends, or skips.
func pgSchema(t *testing.T) (url, schema string) {
	t.Helper()
	url = os.Getenv("FACTORY_TEST_POSTGRES_URL")
	if url == "" {
		t.Skip("FACTORY_TEST_POSTGRES_URL is not set; to run the replica tests, point it at a database they may " +
			"create schemas in, e.g. FACTORY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema = "factory_alert_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return url, schema
}

// Two control-plane replicas share one PostgreSQL database; each runs the
// evaluator the way server.Run does, under the elector. Only the elected
// one evaluates; when it goes, the other takes over from the stored state
// without notifying again what was already notified.
func TestOneEvaluatorAmongReplicas(t *testing.T) {
	url, schema := pgSchema(t)
	clock := &fakeClock{now: t0}
	fl := &fakeFleet{}
	fl.setOffline(t0, "forge")
	pub := &recorder{}
	type replica struct {
		st     *postgres.Store
		svc    *Service
		cancel context.CancelFunc
		done   chan struct{}
	}
	start := func(id string) *replica {
		st, err := postgres.Open(context.Background(), postgres.Config{URL: url, Schema: schema, ReplicaID: id, MaxConns: 4, Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		svc, err := New(Config{Store: st, Clock: clock, Publisher: pub, Logger: quiet(), GroupWait: -1,
			Interval: 5 * time.Millisecond, Sources: Sources{Fleet: fl}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := &replica{st: st, svc: svc, cancel: cancel, done: make(chan struct{})}
		var el store.Elector = st
		go func() {
			defer close(r.done)
			_ = el.RunElected(ctx, "alerts", svc.Run)
		}()
		t.Cleanup(func() { cancel(); <-r.done })
		return r
	}
	a, b := start("a"), start("b")

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (evaluations: a=%d b=%d)", what, a.svc.Evaluations(), b.svc.Evaluations())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("one replica to evaluate 20 times", func() bool { return max(a.svc.Evaluations(), b.svc.Evaluations()) >= 20 })
	leader, other := a, b
	if b.svc.Evaluations() > a.svc.Evaluations() {
		leader, other = b, a
	}
	if n := other.svc.Evaluations(); n != 0 {
		t.Fatalf("both replicas evaluated: leader %d times, the other %d", leader.svc.Evaluations(), n)
	}
	if evs := pub.take(); len(evs) != 1 || evs[0].Title != "[FIRING:1] agent_offline" {
		t.Fatalf("events from the leader: %v", evs)
	}

	// The leader goes away; the other replica takes the duty over.
	leader.cancel()
	<-leader.done
	leader.st.Close()
	waitFor("the other replica to take over", func() bool { return other.svc.Evaluations() >= 5 })
	if evs := pub.take(); len(evs) != 0 {
		t.Errorf("the new leader notified again what was notified: %v", evs)
	}
}
