package stream

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// stoppingFleet sends the config, then the emergency stop, then its rearm.
type stoppingFleet struct {
	factoryv1.UnimplementedFleetServiceServer
}

func (stoppingFleet) Connect(s factoryv1.FleetService_ConnectServer) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	for _, m := range []*factoryv1.ConnectResponse{
		{Config: &factoryv1.SidecarConfig{HeartbeatInterval: durationpb.New(time.Second)}},
		{EmergencyStop: &factoryv1.EmergencyStop{Stopped: true, Reason: "spend crossed $100"}},
		{EmergencyStop: &factoryv1.EmergencyStop{}},
	} {
		if err := s.Send(m); err != nil {
			return err
		}
	}
	<-s.Context().Done()
	return nil
}

// TestEmergencyStopReachesTheSidecar: the stop and its rearm, as the
// server sends them on the stream, reach OnEmergencyStop in order.
func TestEmergencyStopReachesTheSidecar(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	factoryv1.RegisterFleetServiceServer(srv, stoppingFleet{})
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := make(chan *factoryv1.EmergencyStop, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Conn: conn, Hello: &factoryv1.Hello{Host: "h"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			OnEmergencyStop: func(es *factoryv1.EmergencyStop) { got <- es }})
	}()
	for i, want := range []bool{true, false} {
		select {
		case es := <-got:
			if es.GetStopped() != want || (want && es.GetReason() != "spend crossed $100") {
				t.Errorf("message %d: %v, want stopped=%v", i, es, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d never arrived", i)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
