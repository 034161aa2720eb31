package fleet

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

func newHistory(t *testing.T, cfg Config) (*History, *fakeClock, *sqlite.Store) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: t.TempDir() + "/factory.db", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &fakeClock{now: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)}
	return NewHistory(st, clk, cfg), clk, st
}

func reading(body string) func() (string, error) {
	return func() (string, error) { return body, nil }
}

func TestHistoryKeepsOneReadingPerHostPerInterval(t *testing.T) {
	ctx := context.Background()
	h, clk, _ := newHistory(t, Config{})
	start := clk.Now()
	record := func(host, body string) bool {
		t.Helper()
		stored, err := h.Record(ctx, host, reading(body))
		if err != nil {
			t.Fatalf("Record(%s): %v", host, err)
		}
		return stored
	}
	if !record("gpu-1", `{"n":1}`) {
		t.Fatal("the first reading of a host was not stored")
	}
	clk.Advance(30 * time.Second)
	if record("gpu-1", `{"n":2}`) {
		t.Error("a second reading within the minute was stored")
	}
	// Other hosts sample on their own.
	if !record("gpu-2", `{"n":1}`) {
		t.Error("another host's first reading was not stored")
	}
	clk.Advance(30 * time.Second)
	if !record("gpu-1", `{"n":3}`) {
		t.Error("a reading a minute after the last stored one was not stored")
	}
	got, err := h.List(ctx, &store.TelemetryListParams{Host: "gpu-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].JSON != `{"n":1}` || !got[0].Time.Equal(start) ||
		got[1].JSON != `{"n":3}` || !got[1].Time.Equal(start.Add(time.Minute)) {
		t.Errorf("stored %d readings: %+v; want n=1 at start and n=3 a minute later", len(got), got)
	}
}

func TestHistoryRendersOnlyStoredReadings(t *testing.T) {
	h, _, _ := newHistory(t, Config{HistoryEvery: time.Hour})
	calls := 0
	render := func() (string, error) { calls++; return "{}", nil }
	for range 5 {
		if _, err := h.Record(context.Background(), "gpu-1", render); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 1 {
		t.Errorf("rendered %d readings, want 1: dropped readings must not be marshalled", calls)
	}
}

func TestHistoryRetriesAfterAFailedRender(t *testing.T) {
	ctx := context.Background()
	h, _, _ := newHistory(t, Config{})
	boom := errors.New("boom")
	if _, err := h.Record(ctx, "gpu-1", func() (string, error) { return "", boom }); !errors.Is(err, boom) {
		t.Fatalf("Record: %v, want boom", err)
	}
	stored, err := h.Record(ctx, "gpu-1", reading("{}"))
	if err != nil || !stored {
		t.Errorf("Record after a failure: stored=%v err=%v; want the reading stored", stored, err)
	}
}

func TestHistoryPrunesReadingsOlderThanTheRetention(t *testing.T) {
	ctx := context.Background()
	h, clk, _ := newHistory(t, Config{})
	if _, err := h.Record(ctx, "gpu-1", reading(`{"old":true}`)); err != nil {
		t.Fatal(err)
	}
	clk.Advance(6 * 24 * time.Hour)
	if _, err := h.Record(ctx, "gpu-1", reading(`{"old":false}`)); err != nil {
		t.Fatal(err)
	}
	// Six days on, both are inside the default seven-day retention.
	if n, err := h.Prune(ctx); err != nil || n != 0 {
		t.Fatalf("Prune at 6 days: %d, %v; want 0, nil", n, err)
	}
	clk.Advance(24*time.Hour + time.Second)
	if n, err := h.Prune(ctx); err != nil || n != 1 {
		t.Fatalf("Prune past 7 days: %d, %v; want 1, nil", n, err)
	}
	got, err := h.List(ctx, &store.TelemetryListParams{Host: "gpu-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].JSON != `{"old":false}` {
		t.Errorf("after prune: %+v; want only the newer reading", got)
	}
}

func TestHistoryConfigurableRetention(t *testing.T) {
	ctx := context.Background()
	h, clk, _ := newHistory(t, Config{HistoryRetention: time.Hour})
	if _, err := h.Record(ctx, "gpu-1", reading("{}")); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour + time.Second)
	if n, err := h.Prune(ctx); err != nil || n != 1 {
		t.Errorf("Prune: %d, %v; want 1, nil", n, err)
	}
}
