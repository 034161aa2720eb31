// Package stream is the sidecar's connection to the control plane: one
// FleetService.Connect stream that says Hello, then sends heartbeats and
// telemetry at the intervals the server chooses, and reopens the stream
// with jittered exponential backoff whenever it breaks (a control plane
// restart, a network cut), for as long as the sidecar runs.
//
// While disconnected, heartbeats are dropped: a heartbeat is only worth
// anything now, and the node's liveness says it was silent.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Config configures Run.
type Config struct {
	// Conn is the connection to the control plane; gRPC redials it on its
	// own, Run reopens the stream on it.
	Conn grpc.ClientConnInterface
	// Hello is sent first on every stream.
	Hello *factoryv1.Hello
	// Collect takes the host's readings; nil sends heartbeats only. A
	// panic in it is recovered and logged: a broken collector must not
	// take the host's liveness down with it.
	Collect func(ctx context.Context) *factoryv1.Telemetry
	// Logger gets connection changes and collector failures.
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the wait before reopening a broken
	// stream (defaults 500ms and 30s); the wait doubles per failure and
	// is jittered by ±50% so a fleet does not reconnect in lockstep after
	// a control plane restart.
	MinBackoff, MaxBackoff time.Duration
	// CallOptions go with every Connect call: the bearer token.
	CallOptions []grpc.CallOption
	// OnConnected, when set, is called each time the server accepts a
	// Hello, with the config it sent.
	OnConnected func(*factoryv1.SidecarConfig)
}

// Run keeps the stream open until ctx ends; it returns nil then.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Conn == nil || cfg.Hello == nil {
		return errors.New("stream: Conn and Hello are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	client := factoryv1.NewFleetServiceClient(cfg.Conn)
	backoff := cfg.MinBackoff
	failing := false
	for {
		connected, err := session(ctx, client, cfg)
		if ctx.Err() != nil {
			return nil
		}
		if connected {
			// The stream worked before it broke: start the backoff over.
			backoff = cfg.MinBackoff
		}
		if !failing || connected {
			cfg.Logger.Warn("control plane stream broke; reconnecting", "host", cfg.Hello.GetHost(), "err", err)
		}
		failing = true
		wait := jitter(backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, cfg.MaxBackoff)
	}
}

// jitter spreads d over [d/2, 3d/2).
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)+1))
}

// session runs one stream: connected reports that the server accepted the
// Hello.
func session(ctx context.Context, client factoryv1.FleetServiceClient, cfg Config) (connected bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Connect(ctx, cfg.CallOptions...)
	if err != nil {
		return false, err
	}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: cfg.Hello}}); err != nil {
		_, err = stream.Recv() // the server's reason, rather than io.EOF
		return false, err
	}
	first, err := stream.Recv()
	if err != nil {
		return false, err
	}
	sc := first.GetConfig()
	cfg.Logger.Info("connected to the control plane", "host", cfg.Hello.GetHost(),
		"heartbeat_interval", sc.GetHeartbeatInterval().AsDuration().String())
	if cfg.OnConnected != nil {
		cfg.OnConnected(sc)
	}
	heartbeat := positiveOr(sc.GetHeartbeatInterval().AsDuration(), 10*time.Second)
	telemetryEvery := positiveOr(sc.GetTelemetryInterval().AsDuration(), heartbeat)

	// The server's later messages (none yet but config) and the stream's
	// end arrive here.
	recvErr := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				recvErr <- err
				return
			}
		}
	}()
	// Collection runs beside the sends, so slow probes never delay a
	// heartbeat; one collection at a time.
	readings := make(chan *factoryv1.Telemetry, 1)
	collecting := false
	startCollect := func() {
		if cfg.Collect == nil || collecting {
			return
		}
		collecting = true
		go func() {
			readings <- safeCollect(ctx, cfg)
		}()
	}
	startCollect()
	hb := time.NewTicker(heartbeat)
	defer hb.Stop()
	tel := time.NewTicker(telemetryEvery)
	defer tel.Stop()
	for {
		var msg *factoryv1.ConnectRequest
		select {
		case <-ctx.Done():
			_ = stream.CloseSend()
			return true, ctx.Err()
		case err := <-recvErr:
			return true, err
		case <-hb.C:
			msg = &factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Heartbeat{Heartbeat: &factoryv1.Heartbeat{SentAt: timestamppb.Now()}}}
		case <-tel.C:
			startCollect()
			continue
		case t := <-readings:
			collecting = false
			if t == nil {
				continue
			}
			msg = &factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: t}}
		}
		if err := stream.Send(msg); err != nil {
			select {
			case err = <-recvErr:
			case <-time.After(time.Second):
			}
			return true, err
		}
	}
}

// safeCollect runs the collectors, turning a panic into a log line.
func safeCollect(ctx context.Context, cfg Config) (t *factoryv1.Telemetry) {
	defer func() {
		if p := recover(); p != nil {
			cfg.Logger.Error("collector panicked; this reading is skipped", "panic", fmt.Sprint(p))
			t = nil
		}
	}()
	return cfg.Collect(ctx)
}

func positiveOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
