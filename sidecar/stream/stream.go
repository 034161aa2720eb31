// Package stream is the sidecar's connection to the control plane: one
// FleetService.Connect stream that says Hello, then sends heartbeats and
// telemetry at the intervals the server chooses, and reopens the stream
// with jittered exponential backoff whenever it breaks (a control plane
// restart, a network cut), for as long as the sidecar runs.
//
// While disconnected, heartbeats are dropped: a heartbeat is only worth
// anything now, and the node's liveness says it was silent. Events that
// must not be lost (model swaps, log-watch counts) go through the on-disk
// spool instead: they are sent on every stream until the server acks
// their ids, so a stream that breaks before the ack replays them on the
// next one, with the same ids, and the server stores each id once.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
	"github.com/factory/factory/sidecar/spool"
)

// maxEventBatch is the most events one message carries (the API's limit).
const maxEventBatch = 500

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
	// Spool holds the events to deliver; nil sends none. Events are
	// dropped from it only when the server acks them.
	Spool *spool.Spool
	// OnConnected, when set, is called each time the server accepts a
	// Hello, with the config it sent.
	OnConnected func(*factoryv1.SidecarConfig)
	// OnCommand runs a restart command the server sent and says what came
	// of it; nil answers every restart with "not supported". Drain is
	// handled here: the stream marks itself drained, in every later Hello
	// too. Commands run beside the stream, so a slow restart never delays
	// a heartbeat.
	OnCommand func(ctx context.Context, cmd *factoryv1.SidecarCommand) *factoryv1.CommandResult
	// OnEmergencyStop, when set, hears the fleet's emergency stop each
	// time the server sends it (on connect while it is on, and whenever it
	// starts or is rearmed). It runs on the receiving goroutine: it must
	// not block.
	OnEmergencyStop func(*factoryv1.EmergencyStop)
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
	// drained outlives each stream: a drained host says so on reconnect.
	var drained atomic.Bool
	backoff := cfg.MinBackoff
	failing := false
	for {
		connected, err := session(ctx, client, cfg, &drained)
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
func session(ctx context.Context, client factoryv1.FleetServiceClient, cfg Config, drained *atomic.Bool) (connected bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Connect(ctx, cfg.CallOptions...)
	if err != nil {
		return false, err
	}
	hello := cfg.Hello
	if drained.Load() {
		hello = proto.CloneOf(hello)
		hello.Drained = true
	}
	if err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
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
	// Agents the control plane would not register (not placed on this
	// host): their spend is refused until an operator places them.
	for _, r := range sc.GetRefusedAgents() {
		cfg.Logger.Warn("the control plane refused an agent this host declares", "host", cfg.Hello.GetHost(),
			"agent", r.GetName(), "reason", r.GetReason())
	}
	if cfg.OnConnected != nil {
		cfg.OnConnected(sc)
	}
	if es := first.GetEmergencyStop(); es != nil {
		heardStop(cfg, es)
	}
	heartbeat := positiveOr(sc.GetHeartbeatInterval().AsDuration(), 10*time.Second)
	telemetryEvery := positiveOr(sc.GetTelemetryInterval().AsDuration(), heartbeat)

	// The server's later messages (config, event acks) and the stream's
	// end arrive here.
	recvErr := make(chan error, 1)
	// Command results come back to the loop below, the stream's only sender.
	results := make(chan *factoryv1.CommandResult, 8)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if c := m.GetCommand(); c != nil {
				go func() {
					r := runCommand(ctx, cfg, c, drained)
					select {
					case results <- r:
					case <-ctx.Done():
					}
				}()
			}
			if es := m.GetEmergencyStop(); es != nil {
				heardStop(cfg, es)
			}
			if ack := m.GetEventAck(); ack != nil && cfg.Spool != nil {
				if err := cfg.Spool.Ack(ack.GetIds()); err != nil {
					// The events stay spooled and are replayed on the
					// next stream; the server deduplicates them.
					cfg.Logger.Warn("recording an event ack failed", "err", err)
				}
			}
		}
	}()
	// sent holds the ids sent on this stream, so each spooled event goes
	// once per stream; a new stream sends every unacked one again.
	sent := map[string]bool{}
	var spoolNotify <-chan struct{}
	if cfg.Spool != nil {
		spoolNotify = cfg.Spool.Notify()
	}
	sendEvents := func() error {
		if cfg.Spool == nil {
			return nil
		}
		pending := cfg.Spool.Pending()
		// Forget acked ids, so a long stream's set stays the size of the
		// spool.
		live := make(map[string]bool, len(pending))
		for _, e := range pending {
			live[e.ID] = true
		}
		for id := range sent {
			if !live[id] {
				delete(sent, id)
			}
		}
		var batch []*factoryv1.FleetEvent
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			err := stream.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Events{Events: &factoryv1.FleetEvents{Events: batch}}})
			batch = nil
			return err
		}
		for _, e := range pending {
			if sent[e.ID] {
				continue
			}
			sent[e.ID] = true
			batch = append(batch, &factoryv1.FleetEvent{Id: e.ID, Kind: e.Kind, Time: timestamppb.New(e.Time), Attributes: fitAttributes(e.Attributes)})
			if len(batch) == maxEventBatch {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return flush()
	}
	sendFailed := func(err error) (bool, error) {
		select {
		case err = <-recvErr:
		case <-time.After(time.Second):
		}
		return true, err
	}
	// Replay whatever the last stream left unacked before anything new.
	if err := sendEvents(); err != nil {
		return sendFailed(err)
	}
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
		case <-spoolNotify:
			if err := sendEvents(); err != nil {
				return sendFailed(err)
			}
			continue
		case r := <-results:
			msg = &factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_CommandResult{CommandResult: r}}
		case t := <-readings:
			collecting = false
			if t == nil {
				continue
			}
			msg = &factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Telemetry{Telemetry: t}}
		}
		if err := stream.Send(msg); err != nil {
			return sendFailed(err)
		}
	}
}

// heardStop logs the fleet's emergency stop (a stop at WARN: the host's
// agents are to stop spending) and hands it on.
func heardStop(cfg Config, es *factoryv1.EmergencyStop) {
	if es.GetStopped() {
		cfg.Logger.Warn("the control plane reports the fleet's emergency stop: agents must stop spending", "host", cfg.Hello.GetHost(), "reason", es.GetReason())
	} else {
		cfg.Logger.Info("the fleet's emergency stop is rearmed", "host", cfg.Hello.GetHost())
	}
	if cfg.OnEmergencyStop != nil {
		cfg.OnEmergencyStop(es)
	}
}

// runCommand carries out one server command and says what came of it.
func runCommand(ctx context.Context, cfg Config, c *factoryv1.SidecarCommand, drained *atomic.Bool) (r *factoryv1.CommandResult) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			r = &factoryv1.CommandResult{Error: fmt.Sprintf("command handler panicked: %v", p)}
		}
		r.Id = c.GetId()
		if !r.GetOk() && r.GetError() == "" {
			// The API wants a reason for every failure.
			r.Error = "failed"
		}
		if r.GetTook() == nil {
			r.Took = durationpb.New(time.Since(start))
		}
	}()
	switch {
	case c.GetDrain() != nil:
		drained.Store(true)
		cfg.Logger.Info("drained by the control plane: agents are to claim no new work", "host", cfg.Hello.GetHost())
		return &factoryv1.CommandResult{Ok: true, Output: "drained"}
	case c.GetUndrain() != nil:
		drained.Store(false)
		cfg.Logger.Info("undrained by the control plane: agents may claim work again", "host", cfg.Hello.GetHost())
		return &factoryv1.CommandResult{Ok: true, Output: "undrained"}
	case c.GetRestartAgent() != nil && cfg.OnCommand != nil:
		if r := cfg.OnCommand(ctx, c); r != nil {
			return r
		}
		return &factoryv1.CommandResult{Error: "the command handler gave no result"}
	}
	return &factoryv1.CommandResult{Error: "this sidecar does not support the command"}
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

// fitAttributes cuts attributes to valid UTF-8 within the API's limits
// (64 pairs, keys of 128 bytes, values of 4096): an event the server refuses would end every
// stream and, replayed on the next, hold back every event after it.
func fitAttributes(in map[string]string) map[string]string {
	if len(in) == 0 {
		return in
	}
	out := make(map[string]string, min(len(in), 64))
	for k, v := range in {
		if len(out) == 64 {
			break
		}
		// Broken UTF-8 (a log line) would fail the message's marshalling.
		out[cut(strings.ToValidUTF8(k, "\uFFFD"), 128)] = cut(strings.ToValidUTF8(v, "\uFFFD"), 4096)
	}
	return out
}

// cut shortens s to at most n bytes without splitting a UTF-8 sequence.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
