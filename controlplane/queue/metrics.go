package queue

import (
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
	if o == nil {
		return
	}
	for i, r := range results {
		if r.Err == nil && r.Task != nil && !r.Replay && i < len(items) {
			o.Finished(items[i].Lease.Agent, r.Task.State)
		}
	}
}

func (s *Service) observeFailed(agent string, t *store.Task) {
	if o := s.currentObserver(); o != nil && t != nil {
		o.Finished(agent, t.State)
	}
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
