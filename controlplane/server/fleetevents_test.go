package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/fleet"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// sendSwaps sends a batch of model swaps and waits for the ack.
func sendSwaps(t *testing.T, stream factoryv1.FleetService_ConnectClient, at time.Time, ids ...string) []string {
	t.Helper()
	var batch []*factoryv1.FleetEvent
	for _, id := range ids {
		batch = append(batch, &factoryv1.FleetEvent{Id: id, Kind: fleet.KindModelSwap, Time: timestamppb.New(at),
			Attributes: map[string]string{"to": "qwen3-8b.gguf"}})
	}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Events{Events: &factoryv1.FleetEvents{Events: batch}}}); err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return m.GetEventAck().GetIds()
}

// Events are acked after they are stored, a replayed id is acked again
// but stored once, and more than 20 swaps in the last hour fail the host's
// health check.
func TestFleetEventsAreAckedStoredOnceAndFeedTheSwapCheck(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	b := setup(t, clock)
	secret, _ := b.mintToken(t, store.RoleSidecar, "gpu-1")
	side := b.clientsAs(t, secret).f
	ops := b.clientsAs(t, b.operator).f
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, _, err := connect(ctx, t, side, "gpu-1")
	if err != nil {
		t.Fatal(err)
	}
	// An old swap, outside the hour, does not count.
	sendSwaps(t, stream, clock.Now().Add(-2*time.Hour), "old")
	var ids []string
	for i := range fleet.MaxSwapsPerHour - 1 {
		ids = append(ids, fmt.Sprint("swap-", i))
	}
	if acked := sendSwaps(t, stream, clock.Now(), ids...); strings.Join(acked, ",") != strings.Join(ids, ",") {
		t.Fatalf("acked %v", acked)
	}
	// A replay after a reconnect: acked again, stored once.
	if acked := sendSwaps(t, stream, clock.Now(), ids[:3]...); len(acked) != 3 {
		t.Fatalf("replay acked %v", acked)
	}
	evs, err := b.store.FleetEventsList(ctx, &store.FleetEventsListParams{Host: "gpu-1"})
	if err != nil || len(evs) != len(ids)+1 {
		t.Fatalf("stored %d events (%v), want %d", len(evs), err, len(ids)+1)
	}
	swapCheck := func() *factoryv1.HealthCheck {
		h, err := ops.GetHealth(ctx, &factoryv1.GetHealthRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range h.GetChecks() {
			if c.GetName() == "model swaps gpu-1" {
				return c
			}
		}
		t.Fatal("no model swap check for gpu-1")
		return nil
	}
	if c := swapCheck(); !c.GetOk() || !strings.HasPrefix(c.GetDetail(), "19 ") {
		t.Errorf("19 swaps: %v", c)
	}
	sendSwaps(t, stream, clock.Now(), "swap-20")
	if c := swapCheck(); c.GetOk() {
		t.Errorf("20 swaps in the hour pass: %v", c)
	}
	nodes, err := ops.ListNodes(ctx, &factoryv1.ListNodesRequest{})
	if err != nil || len(nodes.GetNodes()) != 1 || nodes.GetNodes()[0].GetModelSwapsLastHour() != 20 {
		t.Errorf("ListNodes: %v, %v; want 20 swaps in the last hour", nodes, err)
	}
	// An hour on, they age out.
	clock.Advance(time.Hour + time.Second)
	if c := swapCheck(); !c.GetOk() {
		t.Errorf("an hour later: %v", c)
	}
}
