package approval

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

// TestDecisionOnAnotherReplicaReachesTheWaiter runs two replicas on one
// PostgreSQL schema: the agent waits on one, the operator decides on the
// other, and the waiter's store re-read delivers the decision.
func TestDecisionOnAnotherReplicaReachesTheWaiter(t *testing.T) {
	url := os.Getenv("FACTORY_TEST_POSTGRES_URL")
	if url == "" {
		t.Skip("FACTORY_TEST_POSTGRES_URL is not set; to run the replica test, point it at a database it may create schemas in")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "factory_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, url); err == nil {
			_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			conn.Close(ctx)
		}
	})
	replica := func(id string) *Service {
		st, err := postgres.Open(t.Context(), postgres.Config{URL: url, Schema: schema, MaxConns: 4, ReplicaID: id})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		svc, err := New(Config{Store: st, WaitRecheck: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	a, bSvc := replica("a"), replica("b")
	req, err := a.Request(t.Context(), RequestParams{What: "deploy", Agent: "forge", Risk: store.RiskHigh, Tier: 2})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *store.Approval, 2)
	done := make(chan error, 1)
	go func() {
		done <- a.Wait(t.Context(), req.ID, func(ap *store.Approval) error { got <- ap; return nil })
	}()
	<-got
	if _, err := bSvc.Decide(t.Context(), DecideParams{ID: req.ID, Decision: store.DecisionApprove, By: alice}); err != nil {
		t.Fatal(err)
	}
	select {
	case final := <-got:
		if final.State != store.ApprovalApproved || final.DecidedBy != "alice" {
			t.Fatalf("waiter heard %s by %s", final.State, final.DecidedBy)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a decision on another replica never reached the waiter")
	}
	if err := <-done; err != nil && err != context.Canceled {
		t.Fatal(err)
	}
}
