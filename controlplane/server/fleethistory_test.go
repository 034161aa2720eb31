package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

func TestTelemetryHistoryIsDownsampledAndReadBack(t *testing.T) {
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	start := clock.Now()
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
	send := func(used uint64) {
		t.Helper()
		tel := &factoryv1.Telemetry{Gpus: []*factoryv1.GpuDevice{{Name: "H100", MemoryTotalBytes: 80 << 30, MemoryUsedBytes: used}}}
		if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: tel}}); err != nil {
			t.Fatal(err)
		}
		// The stream is handled in order: once the live reading shows the
		// new value, the history write for it has been decided.
		waitFor(t, func() bool {
			n, _ := ops.ListNodes(ctx, &factoryv1.ListNodesRequest{})
			return len(n.GetNodes()) == 1 && len(n.GetNodes()[0].GetTelemetry().GetGpus()) == 1 &&
				n.GetNodes()[0].GetTelemetry().GetGpus()[0].GetMemoryUsedBytes() == used
		})
	}
	history := func(req *factoryv1.GetNodeHistoryRequest) *factoryv1.GetNodeHistoryResponse {
		t.Helper()
		resp, err := ops.GetNodeHistory(ctx, req)
		if err != nil {
			t.Fatalf("GetNodeHistory: %v", err)
		}
		return resp
	}

	// Three readings, two within the first minute: two are stored.
	send(1)
	clock.Advance(20 * time.Second)
	send(2)
	clock.Advance(50 * time.Second)
	send(3)

	got := history(&factoryv1.GetNodeHistoryRequest{Host: "gpu-1"})
	if len(got.GetReadings()) != 2 || got.GetTruncated() {
		t.Fatalf("history: %d readings (truncated %v), want 2", len(got.GetReadings()), got.GetTruncated())
	}
	for i, want := range []struct {
		used uint64
		at   time.Time
	}{{1, start}, {3, start.Add(70 * time.Second)}} {
		r := got.GetReadings()[i]
		if u := r.GetTelemetry().GetGpus()[0].GetMemoryUsedBytes(); u != want.used || !r.GetTime().AsTime().Equal(want.at) {
			t.Errorf("reading %d: used %d at %v, want %d at %v", i, u, r.GetTime().AsTime(), want.used, want.at)
		}
	}

	// The window and the page size narrow it.
	got = history(&factoryv1.GetNodeHistoryRequest{Host: "gpu-1", Since: timestamppb.New(start.Add(time.Second))})
	if len(got.GetReadings()) != 1 || got.GetReadings()[0].GetTelemetry().GetGpus()[0].GetMemoryUsedBytes() != 3 {
		t.Errorf("since: %v", got.GetReadings())
	}
	got = history(&factoryv1.GetNodeHistoryRequest{Host: "gpu-1", PageSize: 1})
	if len(got.GetReadings()) != 1 || !got.GetTruncated() {
		t.Errorf("page of 1: %d readings, truncated %v; want 1, true", len(got.GetReadings()), got.GetTruncated())
	}
	if got := history(&factoryv1.GetNodeHistoryRequest{Host: "gpu-9"}); len(got.GetReadings()) != 0 {
		t.Errorf("unknown host: %v, want none", got.GetReadings())
	}
	if _, err := ops.GetNodeHistory(ctx, &factoryv1.GetNodeHistoryRequest{Host: "no spaces"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad host: %v, want INVALID_ARGUMENT", err)
	}
}
