package queue

import (
	"context"

	"github.com/factory/factory/controlplane/store"
)

// ApplyRemote takes in what other replicas committed (from a
// store.ChangeFeed): claimers here wake when a task became READY there, and
// watchers here see the change. Tasks travel by id, so they are read back
// from the store; a task changed again since reads in its newer state, which
// a watcher would see next anyway.
func (s *Service) ApplyRemote(ctx context.Context, batch store.ChangeBatch) error {
	s.claims.forgetRemote(batch.Changes)
	if batch.Resync {
		// Notifications may have been lost while the feed reconnected: any
		// waiting claimer may have missed work, so let them all look again.
		s.ready.notify()
	}
	for _, c := range batch.Changes {
		if c.State == store.StateReady && c.PreviousState != store.StateReady {
			s.ready.notify()
			break
		}
	}
	// Reading the tasks back costs a query; only watchers need them.
	if len(batch.Changes) == 0 || !s.events.hasSubscribers() {
		return nil
	}
	ids := make([]string, 0, len(batch.Changes))
	prev := make(map[string]store.TaskState, len(batch.Changes))
	for _, c := range batch.Changes {
		if _, seen := prev[c.TaskID]; !seen {
			ids = append(ids, c.TaskID)
			prev[c.TaskID] = c.PreviousState
		}
	}
	changes := make([]store.TaskChange, 0, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), MaxPageSize)
		page, err := s.store.TaskList(ctx, &store.TaskListParams{IDs: ids[:n], Limit: n})
		if err != nil {
			return err
		}
		for _, t := range page.Tasks {
			changes = append(changes, store.TaskChange{Task: t, PreviousState: prev[t.ID]})
		}
		ids = ids[n:]
	}
	s.events.publish(eventsOf(changes, s.clock.Now()))
	return nil
}
