package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/errgroup"

	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/postgres"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// With replicas on one PostgreSQL, an event published on one replica
// reaches the WatchEvents hub of another, and its own hub once.
func TestEventsReachEveryReplicasHub(t *testing.T) {
	a := postgresStore(t)
	b, err := postgres.Open(context.Background(), postgres.Config{URL: os.Getenv("FACTORY_TEST_POSTGRES_URL"),
		Schema: a.(*postgres.Store).Schema(), ReplicaID: "replica-b", MaxConns: 4, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	log := slog.New(slog.DiscardHandler)
	na, err := newNotifier(NotifyConfig{}, a, log)
	if err != nil {
		t.Fatal(err)
	}
	nb, err := newNotifier(NotifyConfig{}, b, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	na.run(gctx, g)
	nb.run(gctx, g)
	t.Cleanup(func() { cancel(); _ = g.Wait() })
	subA, subB := na.hub.Subscribe(), nb.hub.Subscribe()
	defer subA.Close()
	defer subB.Close()

	// B's listener connects in the background: publish until B hears.
	deadline := time.Now().Add(20 * time.Second)
	var got notify.Event
	for i := 0; got.ID == ""; i++ {
		if time.Now().After(deadline) {
			t.Fatal("replica b never heard replica a's event")
		}
		na.Notifier.Publish(ctx, notify.Event{Kind: notify.KindApproval, ID: "evt", Title: "approve deploy",
			Text: "deploy v2?", Attributes: map[string]string{"approval_id": "ap-1"}})
		if e := <-subA.Events(); e.ID != "evt" {
			t.Fatalf("a's own hub got %+v", e)
		}
		select {
		case got = <-subB.Events():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if got.Kind != notify.KindApproval || got.Title != "approve deploy" || got.Text != "deploy v2?" || got.Attributes["approval_id"] != "ap-1" || got.Time.IsZero() {
		t.Errorf("b heard %+v", got)
	}
	select {
	case e := <-subA.Events():
		t.Errorf("a heard its own event twice: %+v", e)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestRelayPayloadFitsANotification(t *testing.T) {
	e := notify.Event{ID: "d", Kind: notify.KindDigest, Title: "digest", Text: strings.Repeat("é", 10000)}
	p := relayPayload(e)
	if len(p) > store.MaxRelayPayload {
		t.Fatalf("payload of %d bytes", len(p))
	}
	var b notify.Body
	if err := json.Unmarshal(p, &b); err != nil || b.ID != "d" || !strings.HasSuffix(b.Text, "…") || !utf8.ValidString(b.Text) {
		t.Errorf("payload %.80s…: %v", p, err)
	}
	small := relayPayload(notify.Event{ID: "s", Text: "short"})
	if err := json.Unmarshal(small, &b); err != nil || b.Text != "short" {
		t.Errorf("small payload %s", small)
	}
}

// The alert rules read a sidecar's telemetry as the fleet keeps it.
func TestTelemetryReadingForAlerts(t *testing.T) {
	tel := &factoryv1.Telemetry{
		Gpus: []*factoryv1.GpuDevice{{Index: 1, MemoryUsedBytes: 23 << 30, MemoryTotalBytes: 24 << 30}},
		Disks: []*factoryv1.DiskUsage{{Path: "/", UsedBytes: 86, AvailableBytes: 9, TotalBytes: 100},
			{Path: "/gone", Error: "no such file or directory"}},
	}
	r := telemetryReading("gpu-1", tel)
	if r.Host != "gpu-1" || len(r.GPUs) != 1 || r.GPUs[0].Index != 1 || r.GPUs[0].UsedBytes != 23<<30 || r.GPUs[0].TotalBytes != 24<<30 {
		t.Errorf("GPUs %+v", r.GPUs)
	}
	if len(r.Disks) != 1 || r.Disks[0].Path != "/" || r.Disks[0].UsedBytes != 86 || r.Disks[0].AvailableBytes != 9 {
		t.Errorf("disks %+v (an unreadable disk must be left out, not read as empty)", r.Disks)
	}
	if r := telemetryReading("x", "not telemetry"); len(r.GPUs)+len(r.Disks) != 0 {
		t.Errorf("unknown telemetry read as %+v", r)
	}
}
