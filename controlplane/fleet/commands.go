package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Command is an operator's command for one host's sidecar.
type Command struct {
	ID string
	// RestartAgent names the agent to restart; empty for a drain or an
	// undrain.
	RestartAgent string
	// Drain marks the host drained.
	Drain bool
	// Undrain clears the host's drain mark.
	Undrain bool
}

// CommandResult is the sidecar's answer to a Command.
type CommandResult struct {
	ID     string
	OK     bool
	Output string
	Error  string
	Took   time.Duration
}

// ErrNotConnected is a command for a host whose sidecar has no stream to
// this process (with replicas it may be connected to another one).
var ErrNotConnected = errors.New("the host's sidecar is not connected to this control plane")

// Commands hands commands to the Connect streams of the hosts they are
// for and results back to whoever waits for them. Commands live only as
// long as the call that sent them: nothing is queued for a host that is
// not connected, so an operator learns at once that nothing will run.
type Commands struct {
	mu      sync.Mutex
	streams map[string]chan Command
	waiting map[string]chan CommandResult
}

// NewCommands returns an empty dispatcher.
func NewCommands() *Commands {
	return &Commands{streams: map[string]chan Command{}, waiting: map[string]chan CommandResult{}}
}

// Attach is called by host's Connect stream: it receives the host's
// commands until detach. A newer stream of the same host takes over.
func (c *Commands) Attach(host string) (cmds <-chan Command, detach func()) {
	ch := make(chan Command, 8)
	c.mu.Lock()
	c.streams[host] = ch
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		if c.streams[host] == ch {
			delete(c.streams, host)
		}
		c.mu.Unlock()
	}
}

// Send gives cmd an id, hands it to host's stream and waits for its
// result until ctx ends.
func (c *Commands) Send(ctx context.Context, host string, cmd Command) (CommandResult, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return CommandResult{}, err
	}
	cmd.ID = id.String()
	res := make(chan CommandResult, 1)
	c.mu.Lock()
	stream, ok := c.streams[host]
	if ok {
		select {
		case stream <- cmd:
			c.waiting[cmd.ID] = res
		default:
			c.mu.Unlock()
			return CommandResult{}, fmt.Errorf("%w: host %s has too many commands in flight", ErrInvalid, host)
		}
	}
	c.mu.Unlock()
	if !ok {
		return CommandResult{}, fmt.Errorf("%w: %s", ErrNotConnected, host)
	}
	defer func() {
		c.mu.Lock()
		delete(c.waiting, cmd.ID)
		c.mu.Unlock()
	}()
	select {
	case r := <-res:
		return r, nil
	case <-ctx.Done():
		return CommandResult{ID: cmd.ID}, ctx.Err()
	}
}

// Deliver hands a sidecar's result to the call waiting for it; a result
// nobody waits for any more (the call timed out) is dropped.
func (c *Commands) Deliver(r CommandResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch, ok := c.waiting[r.ID]; ok {
		select {
		case ch <- r:
		default:
		}
		delete(c.waiting, r.ID)
	}
}

// SetDrained marks host drained (or not). It reports whether the host is
// known.
func (r *Registry) SetDrained(host string, drained bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[host]
	if ok && n.Drained != drained {
		n.Drained = drained
		r.notifyLocked()
	}
	return ok
}
