package queue

import (
	"sync"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// Observer is told what the queue did, for counters that a snapshot of the
// store cannot give (how many claims were made, how many leases ran out).
// Its methods are called on the request path after the store committed, so
// they must be cheap and must not block.
type Observer interface {
	// Claimed: agent was handed n tasks (n > 0).
	Claimed(agent string, n int)
	// Finished: agent completed or failed a task it held; to is the state
	// the task went to (DONE, REVIEW, READY for a retry, FAILED).
	Finished(agent string, to store.TaskState)
	// Rescued: n expired leases put their tasks into state to (READY for a
	// retry, FAILED once the attempts were used up).
	Rescued(to store.TaskState, n int)
}

// AttemptObserver is an Observer that also hears how each attempt ended
// and how long it took. Its method is called on the request path after
// the store committed, so it must be cheap and must not block.
type AttemptObserver interface {
	Observer
	// AttemptEnded: an agent's attempt at a task ended by its holder's
	// completion or failure.
	AttemptEnded(a Attempt)
}

// Attempt is one ended attempt at a task.
type Attempt struct {
	Agent string
	// Role is the role the task asked for; empty for any.
	Role string
	// To is the state the task went to: DONE, REVIEW, READY (a failure
	// with attempts left) or FAILED.
	To store.TaskState
	// Took is the time from the claim to the completion or failure, as
	// the queue's clock tells it; Timed is false when this replica did
	// not see the claim (another replica made it, or this one restarted
	// since), and Took is then 0.
	Took  time.Duration
	Timed bool
}

// observerBox lets SetObserver swap the observer while calls are running
// (an atomic.Pointer needs a concrete type, not an interface).
type observerBox struct{ o Observer }

// SetObserver installs o; nil removes it. The metrics package installs one
// at startup.
func (s *Service) SetObserver(o Observer) { s.obs.Store(&observerBox{o: o}) }

func (s *Service) currentObserver() Observer {
	if b := s.obs.Load(); b != nil {
		return b.o
	}
	return nil
}

func (s *Service) observeClaimed(agent string, changes []store.TaskChange) {
	if o := s.currentObserver(); o != nil && len(changes) > 0 {
		o.Claimed(agent, len(changes))
	}
}

func (s *Service) observeCompleted(items []store.TaskCompleteItem, results []store.TaskCompleteItemResult) {
	o := s.currentObserver()
	for i, r := range results {
		if r.Err == nil && r.Task != nil && !r.Replay && i < len(items) {
			s.attemptEnded(o, items[i].Lease, r.Task)
		}
	}
}

func (s *Service) observeFailed(ref store.LeaseRef, t *store.Task) {
	if t != nil {
		s.attemptEnded(s.currentObserver(), ref, t)
	}
}

// attemptEnded tells o (when there is one) that the lease ref ended with
// t in its new state, and forgets the lease's claim time.
func (s *Service) attemptEnded(o Observer, ref store.LeaseRef, t *store.Task) {
	claimedAt, timed := s.claims.take(ref.TaskID, ref.FencingToken)
	if o == nil {
		return
	}
	o.Finished(ref.Agent, t.State)
	if ao, ok := o.(AttemptObserver); ok {
		a := Attempt{Agent: ref.Agent, Role: t.Role, To: t.State, Timed: timed}
		if timed {
			a.Took = max(s.clock.Now().Sub(claimedAt), 0)
		}
		ao.AttemptEnded(a)
	}
}

// maxClaimTimes bounds the claim times a replica remembers. When it is
// reached, claims older than maxClaimAge are forgotten (a lease that long
// is past every bucket of the duration histogram); if none is, new claims
// go untimed (their attempts still count, without a duration).
const (
	maxClaimTimes = 1 << 17
	maxClaimAge   = 24 * time.Hour
)

// claimTimes remembers when each lease this replica handed out was
// claimed, by task and fencing token, so that the attempt's duration is
// known when it ends: the store ends the lease, and its claim time with
// it, in the same statement that completes the task. An entry leaves when
// its task leaves IN_PROGRESS by any path this replica sees (completion,
// failure, rescue, release, an operator's move).
type claimTimes struct {
	mu sync.Mutex
	m  map[string]claimTime
}

type claimTime struct {
	token int64
	at    time.Time
}

// note records the claims among changes and forgets the leases that
// ended without a completion or failure (a rescue, a release, a move).
func (c *claimTimes) note(changes []store.TaskChange) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range changes {
		t := ch.Task
		switch {
		case t.State == store.StateInProgress && ch.PreviousState != store.StateInProgress && !t.ClaimedAt.IsZero():
			if c.m == nil {
				c.m = map[string]claimTime{}
			}
			if _, ok := c.m[t.ID]; !ok && len(c.m) >= maxClaimTimes {
				c.evict(t.ClaimedAt.Add(-maxClaimAge))
			}
			if _, ok := c.m[t.ID]; ok || len(c.m) < maxClaimTimes {
				c.m[t.ID] = claimTime{token: t.FencingToken, at: t.ClaimedAt}
			}
		case ch.PreviousState == store.StateInProgress && t.State != store.StateInProgress:
			// A completion or failure took its entry already; this is a
			// lease that ended otherwise.
			delete(c.m, t.ID)
		}
	}
}

// evict forgets the claims made before cutoff.
func (c *claimTimes) evict(cutoff time.Time) {
	for id, ct := range c.m {
		if ct.at.Before(cutoff) {
			delete(c.m, id)
		}
	}
}

// forgetRemote forgets the leases another replica ended (a completion
// there of a task claimed here, a rescue, a move).
func (c *claimTimes) forgetRemote(changes []store.RemoteChange) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range changes {
		if ch.PreviousState == store.StateInProgress && ch.State != store.StateInProgress {
			delete(c.m, ch.TaskID)
		}
	}
}

// take returns and forgets the claim time of the lease (id, token).
func (c *claimTimes) take(id string, token int64) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ct, ok := c.m[id]
	if !ok || ct.token != token {
		return time.Time{}, false
	}
	delete(c.m, id)
	return ct.at, true
}

func (s *Service) observeRescued(changes []store.TaskChange) {
	o := s.currentObserver()
	if o == nil || len(changes) == 0 {
		return
	}
	by := map[store.TaskState]int{}
	for _, c := range changes {
		by[c.Task.State]++
	}
	for st, n := range by {
		o.Rescued(st, n)
	}
}
