package server

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/metrics"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
)

// On PostgreSQL (claims and completions grouped into shared statements)
// an attempt is timed from its claim to its completion all the same.
func TestAttemptDurationsOnPostgres(t *testing.T) {
	st := postgresStore(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	q, err := queue.New(queue.Config{Store: st, Clock: clock, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	m, err := metrics.New(metrics.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(ctx)
	q.SetObserver(m)
	if _, err := q.Create(ctx, []*queue.CreateParams{{Title: "t", Role: "builder"}}); err != nil {
		t.Fatal(err)
	}
	got, err := q.Claim(ctx, queue.ClaimParams{Agent: "forge", Roles: []string{"builder"}, LeaseDuration: time.Hour})
	if err != nil || len(got) != 1 {
		t.Fatalf("claim: %v %v", got, err)
	}
	clock.Advance(90 * time.Second)
	res, err := q.Complete(ctx, []store.TaskCompleteItem{{Lease: store.LeaseRef{TaskID: got[0].ID, Agent: "forge", FencingToken: got[0].FencingToken}}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("complete: %v %v", res, err)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "factory_task_duration_seconds_sum{") && strings.Contains(line, `outcome="done"`) {
			if !strings.HasSuffix(line, " 90") {
				t.Fatalf("%s, want 90", line)
			}
			return
		}
	}
	t.Fatalf("no duration in\n%s", rec.Body.String())
}
