package approval

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/postgres"
)

// TestDecisionOnAnotherReplicaReachesTheWaiter runs two replicas on one
// PostgreSQL schema, each relaying its cards to the other's hub as the
// server's event relay does: the agent waits on one, the operator decides
// on the other, and the relayed card delivers the decision by push.
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
		hub := notify.NewHub(0)
		relay := notify.PublisherFunc(func(ctx context.Context, e notify.Event) {
			p, err := json.Marshal(notify.Body{ID: e.ID, Kind: e.Kind, Time: e.Time, Title: e.Title, Attributes: e.Attributes})
			if err == nil {
				err = st.RelayEvent(ctx, p)
			}
			if err != nil {
				t.Errorf("relay: %v", err)
			}
		})
		ctx, cancel := context.WithCancel(t.Context())
		listening := make(chan error, 1)
		go func() {
			listening <- st.ListenEvents(ctx, func(p []byte) {
				var b notify.Body
				if err := json.Unmarshal(p, &b); err != nil {
					t.Errorf("relayed event: %v", err)
					return
				}
				hub.Publish(ctx, notify.Event{ID: b.ID, Kind: b.Kind, Time: b.Time, Title: b.Title, Attributes: b.Attributes})
			})
		}()
		t.Cleanup(func() { cancel(); <-listening })
		svc, err := New(Config{Store: st, Publisher: notify.Fanout{hub, relay}, Decisions: hub})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	a, bSvc := replica("a"), replica("b")
	// a's LISTEN starts in the background: relay probes from b until one
	// arrives, so that the decision below can only be missed by a bug.
	probe := a.cfg.Decisions.Subscribe(notify.KindApproval)
	for heard := false; !heard; {
		bSvc.cfg.Publisher.Publish(t.Context(), notify.Event{Kind: notify.KindApproval, Attributes: map[string]string{"id": "probe"}})
		select {
		case <-probe.Events():
			heard = true
		case <-time.After(100 * time.Millisecond):
		case <-t.Context().Done():
			t.Fatal("b's events never reached a")
		}
	}
	probe.Close()
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
	case <-time.After(time.Second):
		// The deadline is an hour off: only the relayed card can deliver
		// the decision in time.
		t.Fatal("a decision on another replica did not reach the waiter within 1s")
	}
	if err := <-done; err != nil && err != context.Canceled {
		t.Fatal(err)
	}
}
