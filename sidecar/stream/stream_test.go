package stream

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// fakeFleet accepts Connect streams and counts what arrives.
type fakeFleet struct {
	factoryv1.UnimplementedFleetServiceServer
	hellos, heartbeats, telemetry atomic.Int32
}

func (f *fakeFleet) Connect(s factoryv1.FleetService_ConnectServer) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	f.hellos.Add(1)
	if err := s.Send(&factoryv1.ConnectResponse{Config: &factoryv1.SidecarConfig{
		HeartbeatInterval: durationpb.New(10 * time.Millisecond), TelemetryInterval: durationpb.New(10 * time.Millisecond)}}); err != nil {
		return err
	}
	for {
		m, err := s.Recv()
		if err != nil {
			return nil
		}
		switch m.GetMsg().(type) {
		case *factoryv1.ConnectRequest_Heartbeat:
			f.heartbeats.Add(1)
		case *factoryv1.ConnectRequest_Telemetry:
			f.telemetry.Add(1)
		}
	}
}

func TestHeartbeatsAtTheServersIntervalAndSurvivesAPanickingCollector(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	fake := &fakeFleet{}
	factoryv1.RegisterFleetServiceServer(srv, fake)
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var calls atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Conn: conn, Hello: &factoryv1.Hello{Host: "h"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Collect: func(context.Context) *factoryv1.Telemetry {
				if calls.Add(1)%2 == 1 {
					panic("collector broke")
				}
				return &factoryv1.Telemetry{}
			}})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for fake.heartbeats.Load() < 3 || fake.telemetry.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("heartbeats %d, telemetry %d after 10s", fake.heartbeats.Load(), fake.telemetry.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if fake.hellos.Load() != 1 {
		t.Errorf("%d hellos on a stream that never broke", fake.hellos.Load())
	}
}

func TestJitterStaysWithinHalfEitherSide(t *testing.T) {
	for range 1000 {
		if d := jitter(time.Second); d < 500*time.Millisecond || d > 1500*time.Millisecond {
			t.Fatalf("jitter(1s) = %v", d)
		}
	}
}

func TestFitAttributesKeepsEventsWithinTheAPIsLimits(t *testing.T) {
	in := map[string]string{"line": "\xff" + strings.Repeat("é", 3000)}
	for i := range 70 {
		in[fmt.Sprint("k", i)] = "v"
	}
	out := fitAttributes(in)
	if len(out) != 64 {
		t.Errorf("%d pairs, want 64", len(out))
	}
	for k, v := range out {
		if !utf8.ValidString(k) || !utf8.ValidString(v) || len(v) > 4096 || len(k) > 128 {
			t.Errorf("%q: %d bytes, valid %v", k, len(v), utf8.ValidString(v))
		}
	}
}
