package queue

import (
	"context"

	"github.com/factory/factory/controlplane/store"
)

// CreateHook sees every batch of new tasks after their defaults are filled
// in and before they are stored, and may attach what the store writes in
// the same transaction (an approval request gating a task). An error
// refuses the whole batch.
type CreateHook func(ctx context.Context, tasks []*store.TaskCreate) error

// SetCreateHook installs the create hook; the approval domain installs one
// so that tasks needing approval are gated as they are created.
func (s *Service) SetCreateHook(h CreateHook) {
	if h == nil {
		s.createHook.Store(nil)
		return
	}
	s.createHook.Store(&h)
}

func (s *Service) runCreateHook(ctx context.Context, tasks []*store.TaskCreate) error {
	if h := s.createHook.Load(); h != nil {
		return (*h)(ctx, tasks)
	}
	return nil
}

// Publish tells claimers and watchers about task changes another domain
// made through the store (an approval moving its gated task): claimers
// wake when a task became READY, and watch streams see the changes.
func (s *Service) Publish(changes []store.TaskChange) { s.publish(changes) }
