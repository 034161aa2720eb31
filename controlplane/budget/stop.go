package budget

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
)

// StoppedByBudget is who pulled a stop the spend threshold triggered.
const StoppedByBudget = "budget"

// StopSignal is what the sidecars are told: the fleet is stopped or not.
type StopSignal struct {
	Stopped bool
	Reason  string
}

// EmergencyStop halts the fleet: the stop is stored (it survives
// restarts), the queue is paused when it was running (READY tasks go
// PAUSED), claims are refused, and operators and sidecars are told.
// Stopping a stopped fleet changes nothing and keeps the first reason.
func (s *Service) EmergencyStop(ctx context.Context, reason, by string) (*store.EmergencyStop, error) {
	if reason == "" {
		return nil, store.InvalidField("reason", "required")
	}
	st, started, err := s.store.EmergencyStopStart(ctx, &store.EmergencyStopStartParams{Reason: reason, StoppedBy: by, Now: s.clock.Now()})
	if err != nil {
		return nil, err
	}
	if !started {
		return st, nil
	}
	// The stop is stored: what follows must happen even if the caller
	// gives up waiting.
	ctx = context.WithoutCancel(ctx)
	s.log.WarnContext(ctx, "emergency stop", "reason", reason, "by", by)
	if err := s.pauseForStop(ctx, st); err != nil {
		// Claims are refused by the gate either way; the pause is
		// retried at the next start.
		s.log.ErrorContext(ctx, "emergency stop: pausing the queue failed", "err", err)
	}
	if _, err := s.refresh(ctx, true); err != nil {
		s.log.WarnContext(ctx, "budget: refreshing after the emergency stop failed", "err", err)
	}
	s.announceStop(st)
	s.publish(ctx, notify.KindEmergencyStop, "EMERGENCY STOP: the fleet is halted",
		fmt.Sprintf("Emergency stop by %s: %s\nREADY tasks are paused (%d) and claims are refused until an operator runs `factory emergency-stop --rearm`.",
			by, reason, st.PausedTasks),
		map[string]string{"stopped": "true", "reason": reason, "stopped_by": by, "paused_tasks": strconv.FormatInt(st.PausedTasks, 10)})
	return st, nil
}

// pauseForStop pauses the queue for a stop, unless it is paused already
// (an operator's pause is then left for the operator to lift), and
// records whether it did, in st too.
func (s *Service) pauseForStop(ctx context.Context, st *store.EmergencyStop) error {
	q := s.cfg.Queue
	if q == nil || st.PausedQueue {
		return nil
	}
	stats, err := s.store.QueueStats(ctx)
	if err != nil {
		return err
	}
	if stats.Paused {
		return nil
	}
	n, err := q.Pause(ctx, "emergency stop: "+st.Reason)
	if err != nil {
		return err
	}
	if err := s.store.EmergencyStopNotePaused(ctx, &store.EmergencyStopNotePausedParams{PausedQueue: true, PausedTasks: int64(n)}); err != nil {
		return err
	}
	st.PausedQueue, st.PausedTasks = true, int64(n)
	return nil
}

// ErrRearmRefused is a rearm refused because today's spend is still at
// or over the emergency threshold: the next report would pull the stop
// again. The gRPC boundary answers FAILED_PRECONDITION.
var ErrRearmRefused = errors.New("rearm refused")

// RearmParams asks for a rearm.
type RearmParams struct {
	By, Note string
	// ThresholdMicros, when more than 0, is the total's new emergency
	// threshold, stored in the same transaction as the rearm. It must be
	// above today's spend.
	ThresholdMicros int64
}

// Rearm lifts the emergency stop and resumes the queue when the stop
// paused it; it returns how many tasks went back to READY. Nothing else
// lifts the stop.
func (s *Service) Rearm(ctx context.Context, by, note string) (int64, error) {
	return s.RearmWith(ctx, RearmParams{By: by, Note: note})
}

// RearmWith is Rearm, optionally raising the emergency threshold with it.
// While today's total is at or over the threshold that would be in force
// after the rearm, it is refused (ErrRearmRefused) and nothing changes:
// the stop would trip again on the next report.
func (s *Service) RearmWith(ctx context.Context, p RearmParams) (int64, error) {
	by, note := p.By, p.Note
	if p.ThresholdMicros < 0 {
		return 0, store.InvalidField("threshold_micros", "must not be negative")
	}
	v, err := s.refresh(ctx, true)
	if err != nil {
		return 0, err
	}
	params := &store.EmergencyStopRearmParams{Now: s.clock.Now()}
	if !v.stop.Stopped && p.ThresholdMicros > 0 {
		return 0, fmt.Errorf("%w: the fleet is not stopped, so there is nothing to rearm; set the threshold with: factory budget set --scope total --emergency <dollars>",
			ErrRearmRefused)
	}
	if v.stop.Stopped {
		total := v.standing.Spent[store.DimTotal][""]
		threshold := v.budgets.total.EmergencyMicros
		if p.ThresholdMicros > 0 {
			threshold = p.ThresholdMicros
		}
		switch {
		case p.ThresholdMicros > 0 && total >= threshold:
			return 0, fmt.Errorf("%w: today's spend %s (%s) is at or over the new threshold %s; raise it above today's spend",
				ErrRearmRefused, store.Dollars(total), v.day, store.Dollars(threshold))
		case threshold > 0 && total >= threshold:
			return 0, fmt.Errorf("%w: today's spend %s (%s) is still at or over the emergency-stop threshold %s, so the next report would stop the fleet again; "+
				"raise the threshold in the same command: factory emergency-stop --rearm --threshold <dollars above %s>",
				ErrRearmRefused, store.Dollars(total), v.day, store.Dollars(threshold), store.Dollars(total))
		}
		if p.ThresholdMicros > 0 {
			b := v.budgets.total
			b.Scope, b.Key, b.EmergencyMicros, b.UpdatedAt = store.ScopeTotal, "", p.ThresholdMicros, s.clock.Now()
			params.Budget = &b
		}
	}
	prev, err := s.store.EmergencyStopRearm(ctx, params)
	if err != nil {
		return 0, err
	}
	if !prev.Stopped {
		return 0, nil
	}
	ctx = context.WithoutCancel(ctx)
	var resumed int64
	kept := false
	if prev.PausedQueue {
		// Maintenance still on keeps the queue paused, and resumes it
		// when it ends.
		if kept, err = s.partners.HandOver(ctx, s); err != nil {
			return 0, fmt.Errorf("the stop is lifted but the queue stays paused (resume it with factory queue resume): %w", err)
		}
	}
	if prev.PausedQueue && !kept && s.cfg.Queue != nil {
		n, err := s.cfg.Queue.Resume(ctx)
		if err != nil {
			return 0, fmt.Errorf("the stop is lifted but resuming the queue failed (resume it with factory queue resume): %w", err)
		}
		resumed = int64(n)
	}
	if _, err := s.refresh(ctx, true); err != nil {
		s.log.WarnContext(ctx, "budget: refreshing after the rearm failed", "err", err)
	}
	if s.cfg.Queue != nil {
		s.cfg.Queue.WakeClaimers()
	}
	s.announceStop(&store.EmergencyStop{})
	attrs := map[string]string{"stopped": "false", "rearmed_by": by, "resumed_tasks": strconv.FormatInt(resumed, 10)}
	raised := ""
	if params.Budget != nil {
		attrs["emergency_micros"] = strconv.FormatInt(params.Budget.EmergencyMicros, 10)
		raised = fmt.Sprintf("\nThe emergency threshold is now %s.", store.Dollars(params.Budget.EmergencyMicros))
	}
	s.log.WarnContext(ctx, "emergency stop rearmed", "by", by, "note", note, "resumed_tasks", resumed, "emergency_micros", v.budgets.total.EmergencyMicros,
		"raised_to_micros", p.ThresholdMicros)
	s.publish(ctx, notify.KindEmergencyStop, "Emergency stop rearmed: the fleet runs again",
		fmt.Sprintf("Rearmed by %s. %d tasks resumed.%s\nNote: %s\n(The stop was: %s)", by, resumed, raised, note, prev.Reason), attrs)
	return resumed, nil
}

// StopState returns the emergency stop's stored state.
func (s *Service) StopState(ctx context.Context) (*store.EmergencyStop, error) {
	return s.store.EmergencyStopGet(ctx)
}

// WatchStop returns a channel that receives the stop's state whenever it
// changes (only the latest counts: a slow reader skips to it) and a
// function to stop watching. The Connect stream forwards it to sidecars.
func (s *Service) WatchStop() (<-chan StopSignal, func()) {
	ch := make(chan StopSignal, 1)
	s.watchMu.Lock()
	s.watchers[ch] = struct{}{}
	s.watchMu.Unlock()
	return ch, func() {
		s.watchMu.Lock()
		delete(s.watchers, ch)
		s.watchMu.Unlock()
	}
}

// announceStop tells the watchers when the stop's state, just written by
// this replica, differs from what they were last told.
func (s *Service) announceStop(st *store.EmergencyStop) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	s.announceLocked(st)
}

// stopGeneration is the announcement count, taken before reading the
// stop's state for announceStopRead.
func (s *Service) stopGeneration() uint64 {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	return s.stopGen
}

// announceStopRead announces a state read from the store after
// stopGeneration returned gen, unless something was announced since: that
// announcement is newer than the read, and announcing the read would
// flip the sidecars back to a state already replaced.
func (s *Service) announceStopRead(st *store.EmergencyStop, gen uint64) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.stopGen != gen {
		return
	}
	s.announceLocked(st)
}

func (s *Service) announceLocked(st *store.EmergencyStop) {
	sig := StopSignal{Stopped: st.Stopped, Reason: st.Reason}
	s.stopGen++
	if s.lastStop != nil && *s.lastStop == sig {
		return
	}
	first := s.lastStop == nil
	s.lastStop = &sig
	if first && !sig.Stopped {
		// Nothing changed since the start: a running fleet is the norm.
		return
	}
	for ch := range s.watchers {
		select {
		case <-ch:
		default:
		}
		ch <- sig
	}
}

// SetPausePartners joins the switches that pause the queue (maintenance):
// a rearm while one is on leaves the queue paused for it to resume.
func (s *Service) SetPausePartners(p *queue.PausePartners) {
	s.partners = p
	p.Add(s)
}

// HoldsPause implements queue.PauseHolder.
func (s *Service) HoldsPause(ctx context.Context) (bool, error) {
	st, err := s.store.EmergencyStopGet(ctx)
	if err != nil {
		return false, err
	}
	return st.Stopped, nil
}

// PauseHold implements queue.PauseHolder.
func (s *Service) PauseHold(ctx context.Context) (string, error) {
	st, err := s.store.EmergencyStopGet(ctx)
	if err != nil || !st.Stopped {
		return "", err
	}
	return fmt.Sprintf("the emergency stop holds the queue (reason %s); rearm it first: factory emergency-stop --rearm", st.Reason), nil
}

// AdoptPause implements queue.PauseHolder: the rearm will resume the queue.
func (s *Service) AdoptPause(ctx context.Context) error {
	st, err := s.store.EmergencyStopGet(ctx)
	if err != nil || !st.Stopped || st.PausedQueue {
		return err
	}
	return s.store.EmergencyStopNotePaused(ctx, &store.EmergencyStopNotePausedParams{PausedQueue: true, PausedTasks: st.PausedTasks})
}
