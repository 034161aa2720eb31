package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
	"github.com/factory/factory/sidecar/spool"
	"github.com/factory/factory/sidecar/stream"
)

// eventRig is a control plane on a SQLite data dir and a sidecar token
// for host edge-1.
type eventRig struct {
	addr, dataDir string
	stop          func()
	sidecarSecret string
}

func newEventRig(t *testing.T) *eventRig {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &eventRig{addr: lis.Addr().String(), dataDir: t.TempDir()}
	lis.Close()
	r.stop = controlPlane(t, r.addr, r.dataDir)
	raw, err := os.ReadFile(filepath.Join(r.dataDir, access.OperatorTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	op := r.dial(t, strings.TrimSpace(string(raw)))
	tok, err := factoryv1.NewAccessServiceClient(op).CreateToken(context.Background(),
		&factoryv1.CreateTokenRequest{Role: factoryv1.Role_ROLE_SIDECAR, Subject: "edge-1"})
	if err != nil {
		t.Fatal(err)
	}
	r.sidecarSecret = tok.GetSecret()
	// The operator places the host's agents, as a sidecar token speaks only
	// for agents placed on its host.
	for _, agent := range []string{"planner-01", "coder-03"} {
		if _, err := factoryv1.NewFleetServiceClient(op).PlaceAgent(context.Background(),
			&factoryv1.PlaceAgentRequest{Agent: agent, Host: "edge-1"}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func (r *eventRig) dial(t *testing.T, secret string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(r.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(access.Bearer{Secret: secret, Plaintext: true}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// sidecar runs the real stream client on sp until the returned stop.
func (r *eventRig) sidecar(t *testing.T, sp *spool.Spool) (stop func()) {
	t.Helper()
	conn := r.dial(t, r.sidecarSecret)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- stream.Run(ctx, stream.Config{Conn: conn, Hello: &factoryv1.Hello{Host: "edge-1"}, Spool: sp,
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stream.Run: %v", err)
		}
	}
}

// stored stops the control plane and reads what its store holds.
func (r *eventRig) stored(t *testing.T) []*store.FleetEvent {
	t.Helper()
	r.stop()
	r.stop = func() {}
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(r.dataDir, "factory.db"),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	evs, err := st.FleetEventsList(context.Background(), &store.FleetEventsListParams{Host: "edge-1"})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// exactlyOnce checks that the store holds each produced id once and
// nothing else.
func exactlyOnce(t *testing.T, produced []string, stored []*store.FleetEvent) {
	t.Helper()
	count := map[string]int{}
	for _, e := range stored {
		count[e.ID]++
		if e.Host != "edge-1" || e.Kind != "model_swap" {
			t.Errorf("stored %+v", e)
		}
	}
	for _, id := range produced {
		if count[id] != 1 {
			t.Errorf("event %s stored %d times", id, count[id])
		}
		delete(count, id)
	}
	for id := range count {
		t.Errorf("event %s stored but never produced", id)
	}
	if len(stored) != len(produced) {
		t.Errorf("stored %d events for %d produced", len(stored), len(produced))
	}
}

// Events produced before, during and after a control plane restart under
// a connected sidecar all reach the store exactly once.
func TestSpooledEventsSurviveAControlPlaneRestart(t *testing.T) {
	r := newEventRig(t)
	defer func() { r.stop() }()
	sp, err := spool.Open(filepath.Join(t.TempDir(), "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	stopSidecar := r.sidecar(t, sp)

	var (
		mu       sync.Mutex
		produced []string
	)
	produce := func(n int, phase string) {
		for i := range n {
			ev, err := sp.Append(spool.Event{Kind: "model_swap", Attributes: map[string]string{"phase": phase, "n": fmt.Sprint(i)}})
			if err != nil {
				t.Errorf("Append: %v", err)
				return
			}
			mu.Lock()
			produced = append(produced, ev.ID)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}
	produce(20, "before")
	waitUntil(t, "events acked before the restart", func() bool { return sp.Len() == 0 })

	// Events keep coming while the control plane is down and starting.
	r.stop()
	produce(20, "during")
	if sp.Len() == 0 {
		t.Fatal("events were acked while the control plane was down")
	}
	r.stop = controlPlane(t, r.addr, r.dataDir)
	produce(20, "after")
	waitUntil(t, "every event acked after the restart", func() bool { return sp.Len() == 0 })
	stopSidecar()
	exactlyOnce(t, produced, r.stored(t))
}

// A sidecar killed after the server stored its events but before it
// recorded the ack replays them from its spool on restart; the store
// keeps one copy per id.
func TestKilledSidecarReplaysAndTheServerDeduplicates(t *testing.T) {
	r := newEventRig(t)
	defer func() { r.stop() }()
	path := filepath.Join(t.TempDir(), "events.jsonl")
	sp, err := spool.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var produced []string
	for i := range 5 {
		ev, err := sp.Append(spool.Event{Kind: "model_swap", Attributes: map[string]string{"n": fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		produced = append(produced, ev.ID)
	}
	// The first life: it sends the events, the server stores and acks
	// them, and the sidecar dies before the ack reaches its spool.
	conn := r.dial(t, r.sidecarSecret)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := factoryv1.NewFleetServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Hello{Hello: &factoryv1.Hello{Host: "edge-1"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Recv(); err != nil {
		t.Fatal(err)
	}
	var batch []*factoryv1.FleetEvent
	for _, e := range sp.Pending() {
		batch = append(batch, &factoryv1.FleetEvent{Id: e.ID, Kind: e.Kind, Time: timestamppb.New(e.Time), Attributes: e.Attributes})
	}
	if err := c.Send(&factoryv1.ConnectRequest{Msg: &factoryv1.ConnectRequest_Events{Events: &factoryv1.FleetEvents{Events: batch}}}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := c.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.GetEventAck().GetIds()) == len(produced) {
			break
		}
	}
	cancel() // killed: the ack is never recorded
	sp.Close()

	// The second life reopens the spool: all five are still pending and
	// are replayed with their ids, plus one new event.
	sp2, err := spool.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer sp2.Close()
	if sp2.Len() != len(produced) {
		t.Fatalf("reopened spool holds %d events, want %d", sp2.Len(), len(produced))
	}
	ev, err := sp2.Append(spool.Event{Kind: "model_swap"})
	if err != nil {
		t.Fatal(err)
	}
	produced = append(produced, ev.ID)
	stopSidecar := r.sidecar(t, sp2)
	waitUntil(t, "replayed events acked", func() bool { return sp2.Len() == 0 })
	stopSidecar()
	exactlyOnce(t, produced, r.stored(t))
}

// The sidecar binary with a log watcher on llama.cpp's log: each model
// load it appends is one model_swap event in the store, and GetHealth
// reports the host's swap rate.
func TestSidecarLogWatchReportsSwapsToTheControlPlane(t *testing.T) {
	log, err := os.ReadFile("../../../../shared/fixtures/services/llamacpp-model-load.log")
	if err != nil {
		t.Skipf("fixture: %v", err)
	}
	r := newEventRig(t)
	defer func() { r.stop() }()
	dir := t.TempDir()
	logPath := filepath.Join(dir, "llama.log")
	if err := os.WriteFile(logPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "sidecar.yaml")
	cfg := "host: edge-1\ngpu: {disabled: true}\ndisk: {paths: [" + dir + "]}\n" +
		"spool: {path: " + filepath.Join(dir, "spool", "events.jsonl") + "}\n" +
		"log_watch: [{name: llama, path: " + logPath + ", window: 1h, model_swap: true}]\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--addr", r.addr, "--token", r.sidecarSecret, "--config", cfgPath}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sidecar: %v", err)
		}
	}()
	raw, err := os.ReadFile(filepath.Join(r.dataDir, access.OperatorTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	fleet := factoryv1.NewFleetServiceClient(r.dial(t, strings.TrimSpace(string(raw))))
	swapCheck := func() string {
		h, err := fleet.GetHealth(context.Background(), &factoryv1.GetHealthRequest{})
		if err != nil {
			return err.Error()
		}
		for _, c := range h.GetChecks() {
			if c.GetName() == "model swaps edge-1" {
				return c.GetDetail()
			}
		}
		return ""
	}
	waitUntil(t, "node edge-1 registered", func() bool { return swapCheck() != "" })
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(log)
	f.Close()
	waitUntil(t, "two swaps in GetHealth", func() bool { return strings.HasPrefix(swapCheck(), "2 in the last hour") })
}

// The shipped config's event sources parse: a misspelt key would fail
// the sidecar at start (KnownFields).
func TestDeployConfigEventSourcesParse(t *testing.T) {
	cfg, err := loadSidecarConfig("../../../deploy/sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.SwapWatch) != 2 || cfg.SwapWatch[0].Every != 15*time.Second || cfg.SwapWatch[1].Kind != "ollama" {
		t.Errorf("swap_watch: %+v", cfg.SwapWatch)
	}
}
