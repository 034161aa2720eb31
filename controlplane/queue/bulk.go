package queue

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/factory/factory/controlplane/store"
)

// MaxBulkTasks bounds the tasks one bulk call (BulkUpdateTasks, a
// selective pause) may change: more matching is refused, so that one call
// stays one bounded transaction.
const MaxBulkTasks = 10000

// FilterSpec is a task filter as the API gives it: ages are spans back
// from now, turned into times by Filter.
type FilterSpec struct {
	store.TaskFilter
	// MinAge keeps tasks created at least this long ago; 0 does not filter.
	MinAge time.Duration
	// MinStateAge keeps tasks in their current state at least this long.
	MinStateAge time.Duration
}

// Filter turns spec into the store's filter at the queue's clock.
func (s *Service) Filter(spec FilterSpec) store.TaskFilter {
	f := spec.TaskFilter
	now := s.clock.Now()
	if spec.MinAge > 0 {
		f.CreatedBefore = now.Add(-spec.MinAge)
	}
	if spec.MinStateAge > 0 {
		f.StateChangedBefore = now.Add(-spec.MinStateAge)
	}
	return f
}

// BulkParams is one operator change to every task Filter selects.
type BulkParams struct {
	Filter store.TaskFilter
	// To moves (as Move does); Priority, when To is unset, sets the
	// priority.
	To       store.TaskState
	Priority *int32
	Reason   string
	DryRun   bool
}

// Bulk applies p in one store transaction (see store.Store.TaskBulk), at
// most MaxBulkTasks tasks, and publishes the changed tasks' events.
func (s *Service) Bulk(ctx context.Context, p BulkParams) (*store.TaskBulkResult, error) {
	res, err := s.store.TaskBulk(ctx, &store.TaskBulkParams{
		Filter: p.Filter, To: p.To, Priority: p.Priority, Reason: p.Reason, Max: MaxBulkTasks, DryRun: p.DryRun, Now: s.clock.Now(),
	})
	if err != nil {
		return nil, err
	}
	if !p.DryRun {
		s.publish(res.Changes)
	}
	return res, nil
}

// PauseTasks is a selective pause: the READY tasks f selects move to
// PAUSED, held by a new pause whose id it returns. Tasks becoming READY
// later are not held.
func (s *Service) PauseTasks(ctx context.Context, reason string, f store.TaskFilter, filterText string) (string, int, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", 0, err
	}
	changes, err := s.store.QueuePauseTasks(ctx, &store.QueuePauseTasksParams{
		ID: id.String(), Reason: reason, Filter: f, FilterText: filterText, Max: MaxBulkTasks, Now: s.clock.Now(),
	})
	if err != nil {
		return "", 0, err
	}
	s.publish(changes)
	return id.String(), len(changes), nil
}

// ResumePauses ends the selective pause id, or every one when id is
// empty: the tasks each still holds go back to READY.
func (s *Service) ResumePauses(ctx context.Context, id string) (*store.QueueResumeTasksResult, error) {
	res, err := s.store.QueueResumeTasks(ctx, &store.QueueResumeTasksParams{ID: id, Now: s.clock.Now()})
	if err != nil {
		return nil, err
	}
	s.publish(res.Changes)
	return res, nil
}
