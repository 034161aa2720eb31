package fleet

import (
	"slices"
	"time"
)

// Waker is a Clock that can also wake a waiter when it reaches a time: a
// fake clock in tests fires it when moved past t. A Clock that is not a
// Waker is woken by a real timer.
type Waker interface {
	WakeAt(t time.Time) (<-chan struct{}, func())
}

// nextCrossing is the earliest moment after now at which something last
// seen at seen changes state by the clock alone, or zero when it never
// will again (it is OFFLINE already, or was never seen).
func (c Config) nextCrossing(now, seen time.Time) time.Time {
	if seen.IsZero() {
		return time.Time{}
	}
	// state() is STALE strictly past staleAfter, OFFLINE at OfflineAfter.
	for _, t := range []time.Time{seen.Add(c.staleAfter() + time.Nanosecond), seen.Add(c.OfflineAfter)} {
		if t.After(now) {
			return t
		}
	}
	return time.Time{}
}

// NextLivenessChange is the earliest moment at which any node or agent
// crosses its STALE or OFFLINE threshold by the clock alone, and false
// when none will (all are OFFLINE, or there are none).
func (r *Registry) NextLivenessChange() (time.Time, bool) {
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var next time.Time
	consider := func(seen time.Time) {
		if t := r.cfg.nextCrossing(now, seen); !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for _, n := range r.nodes {
		consider(n.LastSeen)
	}
	for _, a := range r.agents {
		seen := a.ownSeen
		if n, ok := r.nodes[a.Host]; ok && n.LastSeen.After(seen) {
			seen = n.LastSeen
		}
		consider(seen)
	}
	return next, !next.IsZero()
}

// LivenessTimer returns a channel that receives when the next liveness
// change by the clock is due (NextLivenessChange), and a stop func. The
// channel is nil, so never ready, when no change is due. A watcher waits
// on it beside Subscribe's channel and so hears STALE and OFFLINE as they
// happen instead of on a polling tick.
func (r *Registry) LivenessTimer() (<-chan struct{}, func()) {
	at, ok := r.NextLivenessChange()
	if !ok {
		return nil, func() {}
	}
	if w, ok := r.clock.(Waker); ok {
		return w.WakeAt(at)
	}
	ch := make(chan struct{})
	t := time.AfterFunc(at.Sub(r.clock.Now()), func() { close(ch) })
	return ch, func() { t.Stop() }
}

// forgetNode removes host and the agents it declared from the registry,
// with its latest readings, and returns the node as it was; false when
// the host is not registered.
func (r *Registry) forgetNode(host string) (Node, bool) {
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[host]
	if !ok {
		return Node{}, false
	}
	out := r.view(n, now)
	delete(r.nodes, host)
	for name, a := range r.agents {
		if a.Host == host {
			delete(r.agents, name)
		}
	}
	r.notifyLocked()
	return out, true
}

// Node returns host's node with its liveness now, and false when the host
// is not registered.
func (r *Registry) Node(host string) (Node, bool) {
	now := r.clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.nodes[host]
	if !ok {
		return Node{}, false
	}
	return r.view(n, now), true
}

// view is a copy of n for callers, with its liveness at now.
func (r *Registry) view(n *node, now time.Time) Node {
	v := n.Node
	v.State = r.cfg.state(now, v.LastSeen)
	v.Agents = slices.Clone(v.Agents)
	return v
}
