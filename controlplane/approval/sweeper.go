package approval

import (
	"context"
	"errors"
	"time"

	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
)

// Sweep applies the default of every request past its deadline (recorded
// as EXPIRED with the outcome applied) and sends the reminders that are
// due. The sweeper calls it; tests call it after moving a fake clock.
func (s *Service) Sweep(ctx context.Context) error {
	const batch = 100
	for {
		res, err := s.store.ApprovalExpire(ctx, &store.ApprovalExpireParams{Now: s.clock.Now(), Limit: batch})
		if err != nil {
			return err
		}
		for _, r := range res {
			s.applied(ctx, r, "expired")
		}
		// A full batch may have left more behind.
		if len(res) < batch {
			break
		}
	}
	due, err := s.store.ApprovalTakeReminders(ctx, &store.ApprovalRemindParams{Now: s.clock.Now()})
	if err != nil {
		return err
	}
	for _, a := range due {
		s.notify(ctx, a, "reminder")
	}
	return nil
}

// RunSweeper sweeps until ctx ends: at the next deadline or reminder it
// knows of, and at least every SweepInterval (a request made meanwhile, or
// on another replica, is seen by then). It also sends the card of each
// task gated as it is created, so with replicas the elected one alone
// sends it.
func (s *Service) RunSweeper(ctx context.Context) error {
	if s.cfg.Queue != nil {
		// Subscribed before the first sweep, so no task created from here
		// on goes unannounced.
		go s.announceGatedTasks(ctx, s.subscribeGated())
	}
	for {
		if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "approval sweep failed", "err", err)
		}
		wait := s.cfg.SweepInterval
		if next, ok, err := s.store.ApprovalNextDue(ctx); err == nil && ok {
			wait = min(wait, max(next.Sub(s.clock.Now()), time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// announceGatedTasks watches the queue for tasks created waiting for
// approval and sends their cards.
func (s *Service) subscribeGated() *queue.Subscription {
	return s.cfg.Queue.Subscribe(queue.Filter{States: []store.TaskState{store.StateBacklog}})
}

func (s *Service) announceGatedTasks(ctx context.Context, sub *queue.Subscription) {
	for {
		s.announceFrom(ctx, sub)
		if ctx.Err() != nil {
			return
		}
		// The subscription fell behind and was cut off: take a new one.
		sub = s.subscribeGated()
	}
}

// announceFrom sends the card of each gated task sub reports until ctx
// ends or sub is cut off, and closes sub.
func (s *Service) announceFrom(ctx context.Context, sub *queue.Subscription) {
	defer sub.Close()
	events := sub.Events(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-events:
			if !ok {
				return
			}
			if e.Type != queue.EventCreated || !e.Task.ApprovalPending || e.Task.ApprovalID == "" {
				continue
			}
			a, err := s.store.ApprovalGet(ctx, e.Task.ApprovalID)
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					s.log.WarnContext(ctx, "gated task's approval not readable", "task", e.Task.ID, "err", err)
				}
				continue
			}
			s.notify(ctx, a, "requested")
		}
	}
}
