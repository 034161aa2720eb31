package fleet

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestCommandsRoundTrip(t *testing.T) {
	c := NewCommands()
	ctx := context.Background()
	if _, err := c.Send(ctx, "gpu-1", Command{Drain: true}); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("no stream: %v, want ErrNotConnected", err)
	}
	cmds, detach := c.Attach("gpu-1")
	go func() {
		cmd := <-cmds
		c.Deliver(CommandResult{ID: "someone-else"}) // not waited for: dropped
		c.Deliver(CommandResult{ID: cmd.ID, OK: true, Output: cmd.RestartAgent})
	}()
	r, err := c.Send(ctx, "gpu-1", Command{RestartAgent: "forge"})
	if err != nil || !r.OK || r.Output != "forge" || r.ID == "" {
		t.Fatalf("result %+v, %v", r, err)
	}
	// Unanswered: the caller's deadline ends the wait, and a late result
	// finds nobody.
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	r, err = c.Send(tctx, "gpu-1", Command{Drain: true})
	if !errors.Is(err, context.DeadlineExceeded) || r.ID == "" {
		t.Fatalf("unanswered: %+v, %v", r, err)
	}
	c.Deliver(CommandResult{ID: r.ID})
	if len(c.waiting) != 0 {
		t.Errorf("%d results still awaited", len(c.waiting))
	}
	// A newer stream of the host takes over; the old one's detach leaves it.
	newer, detachNewer := c.Attach("gpu-1")
	detach()
	go func() {
		cmd := <-newer
		c.Deliver(CommandResult{ID: cmd.ID, OK: true})
	}()
	if r, err := c.Send(ctx, "gpu-1", Command{Drain: true}); err != nil || !r.OK {
		t.Errorf("after a reconnect: %+v, %v", r, err)
	}
	detachNewer()
	if _, err := c.Send(ctx, "gpu-1", Command{Drain: true}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("after the last detach: %v", err)
	}
}

func TestSetDrained(t *testing.T) {
	r := New(nil, Config{})
	if r.SetDrained("gpu-1", true) {
		t.Error("unknown host reported known")
	}
	if err := r.Register(Hello{Host: "gpu-1"}); err != nil {
		t.Fatal(err)
	}
	r.SetDrained("gpu-1", true)
	// A reconnect whose Hello does not say drained keeps the mark.
	if err := r.Register(Hello{Host: "gpu-1"}); err != nil {
		t.Fatal(err)
	}
	if n := r.Nodes(); len(n) != 1 || !n[0].Drained {
		t.Errorf("nodes %+v", n)
	}
}
