package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// An agent token cannot hoard the queue: past the default lease cap its
// claims take only the room left, then are refused with
// RESOURCE_EXHAUSTED saying what it holds and what to do, waiting or not;
// another agent still claims, and completing one lease frees one slot.
func TestAgentAtTheLeaseCapIsRefusedAndOthersStillClaim(t *testing.T) {
	b := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const limit = queue.DefaultMaxLeasesPerAgent
	reqs := make([]*factoryv1.CreateTaskRequest, limit+20)
	for i := range reqs {
		reqs[i] = &factoryv1.CreateTaskRequest{Title: "work"}
	}
	if _, err := b.client.CreateTasks(ctx, &factoryv1.CreateTasksRequest{Tasks: reqs}); err != nil {
		t.Fatal(err)
	}
	hoarderSecret, _ := b.mintToken(t, store.RoleAgent, "hoarder")
	workerSecret, _ := b.mintToken(t, store.RoleAgent, "worker")
	hoarder, worker := b.clientsAs(t, hoarderSecret).q, b.clientsAs(t, workerSecret).q

	var held []*factoryv1.Task
	for len(held) < limit {
		res, err := hoarder.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "hoarder", MaxTasks: 100})
		if err != nil {
			t.Fatalf("claim with %d held: %v", len(held), err)
		}
		if want := min(100, limit-len(held)); len(res.GetTasks()) != want {
			t.Fatalf("claim of 100 with %d held got %d tasks, want %d", len(held), len(res.GetTasks()), want)
		}
		held = append(held, res.GetTasks()...)
	}

	refused := func(req *factoryv1.ClaimTaskRequest) {
		t.Helper()
		start := time.Now()
		_, err := hoarder.ClaimTask(ctx, req)
		st := wantCode(t, err, codes.ResourceExhausted)
		for _, want := range []string{"holds 256 leases", "the cap is 256", "complete, fail or let some expire"} {
			if !strings.Contains(st.Message(), want) {
				t.Fatalf("refusal %q does not say %q", st.Message(), want)
			}
		}
		var subject string
		for _, d := range st.Details() {
			if qf, ok := d.(*errdetails.QuotaFailure); ok && len(qf.GetViolations()) > 0 {
				subject = qf.GetViolations()[0].GetSubject()
			}
		}
		if subject != "queue:leases:hoarder" {
			t.Fatalf("QuotaFailure subject %q, want queue:leases:hoarder", subject)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("the refusal took %s: a claim at the cap must not wait", d)
		}
	}
	refused(&factoryv1.ClaimTaskRequest{Agent: "hoarder", MaxTasks: 1})
	// A waiting claim is refused at once instead of waiting for work it
	// may not take.
	refused(&factoryv1.ClaimTaskRequest{Agent: "hoarder", MaxTasks: 1, Wait: durationpb.New(time.Minute)})

	res, err := worker.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "worker", MaxTasks: 5})
	if err != nil || len(res.GetTasks()) != 5 {
		t.Fatalf("another agent's claim: %v tasks, %v; want 5", len(res.GetTasks()), err)
	}

	if _, err := hoarder.CompleteTask(ctx, &factoryv1.CompleteTaskRequest{TaskId: held[0].GetId(), Agent: "hoarder", FencingToken: held[0].GetLease().GetToken()}); err != nil {
		t.Fatal(err)
	}
	res, err = hoarder.ClaimTask(ctx, &factoryv1.ClaimTaskRequest{Agent: "hoarder", MaxTasks: 10})
	if err != nil || len(res.GetTasks()) != 1 {
		t.Fatalf("claim after completing one: %d tasks, %v; want 1", len(res.GetTasks()), err)
	}
	refused(&factoryv1.ClaimTaskRequest{Agent: "hoarder", MaxTasks: 1})
}
