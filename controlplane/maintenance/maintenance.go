// Package maintenance is the factory's maintenance mode (runbook §11.2):
// a start pauses READY work, refuses new claims and waits, for a bounded
// time, for the tasks in flight to finish; an end restores exactly what
// the start changed. The switch is stored, so a control plane restarted
// in maintenance stays in it.
package maintenance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
)

// ErrInMaintenance refuses a claim while the factory is in maintenance.
// The gRPC boundary answers FAILED_PRECONDITION with the Error's text.
var ErrInMaintenance = errors.New("in maintenance")

// Error is a claim refused by maintenance; it matches ErrInMaintenance.
type Error struct {
	Since  time.Time
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("maintenance since %s: %s", e.Since.UTC().Format(time.RFC3339), e.Reason)
}

// Is makes errors.Is(err, ErrInMaintenance) true.
func (e *Error) Is(target error) bool { return target == ErrInMaintenance }

// Clock is the time source.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now().UTC() }

// Config configures a Service.
type Config struct {
	Store  store.Store
	Queue  *queue.Service
	Logger *slog.Logger
	Clock  Clock
	// Publisher hears of starts and ends (notify.KindMaintenance).
	Publisher notify.Publisher
	// Recheck is how often a start's wait looks at the queue when no task
	// event arrived (events from other replicas arrive only as counts):
	// 1s.
	Recheck time.Duration
	// Refresh is how long the claim gate trusts its copy of the switch
	// before reading the store again, so a start on another replica
	// reaches this one: 2s.
	Refresh time.Duration
}

// WithDefaults returns a copy with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	if c.Publisher == nil {
		c.Publisher = notify.Discard
	}
	if c.Recheck <= 0 {
		c.Recheck = time.Second
	}
	if c.Refresh <= 0 {
		c.Refresh = 2 * time.Second
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("maintenance: Config.Store is required")
	case c.Queue == nil:
		return errors.New("maintenance: Config.Queue is required")
	}
	return nil
}

// Service runs maintenance mode.
type Service struct {
	cfg   Config
	store store.Store
	q     *queue.Service
	log   *slog.Logger
	clock Clock

	// ops serialises starts and ends.
	ops sync.Mutex

	mu       sync.Mutex
	state    store.MaintenanceState
	loadedAt time.Time

	// partners are the other switches that pause the queue (the
	// emergency stop): ending maintenance while one is on leaves the queue
	// paused for it to resume.
	partners *queue.PausePartners
}

// SetPausePartners joins the switches that pause the queue.
func (s *Service) SetPausePartners(p *queue.PausePartners) {
	s.partners = p
	p.Add(s)
}

// HoldsPause implements queue.PauseHolder.
func (s *Service) HoldsPause(ctx context.Context) (bool, error) {
	st, err := s.store.MaintenanceGet(ctx)
	if err != nil {
		return false, err
	}
	return st.Active, nil
}

// PauseHold implements queue.PauseHolder.
func (s *Service) PauseHold(ctx context.Context) (string, error) {
	st, err := s.store.MaintenanceGet(ctx)
	if err != nil || !st.Active {
		return "", err
	}
	return fmt.Sprintf("maintenance holds the queue (reason %s, since %s); end it first: factory maintenance end",
		st.Reason, st.StartedAt.UTC().Format(time.RFC3339)), nil
}

// AdoptPause implements queue.PauseHolder: the end of maintenance will
// resume the queue.
func (s *Service) AdoptPause(ctx context.Context) error {
	st, err := s.store.MaintenanceGet(ctx)
	if err != nil || !st.Active || st.PausedQueue {
		return err
	}
	st.PausedQueue = true
	if err := s.store.MaintenanceSet(ctx, st); err != nil {
		return err
	}
	s.remember(*st)
	return nil
}

// New returns a Service with its claim gate installed on the queue. A
// switch found on reads back as it was: if the start had paused the queue
// and the queue is running (a crash between the two writes, or an
// operator's resume), it is paused again.
func New(ctx context.Context, cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, store: cfg.Store, q: cfg.Queue, log: cfg.Logger, clock: cfg.Clock}
	st, err := s.load(ctx)
	if err != nil {
		return nil, err
	}
	if st.Active && st.PausedQueue {
		qs, _, err := s.q.Stats(ctx)
		if err != nil {
			return nil, err
		}
		if !qs.Paused {
			if _, err := s.q.Pause(ctx, pauseReason(st.Reason)); err != nil {
				return nil, err
			}
		}
	}
	if st.Active {
		s.log.WarnContext(ctx, "in maintenance: claims are refused until it ends", "since", st.StartedAt, "reason", st.Reason)
	}
	s.q.AddClaimGate(s.gate)
	return s, nil
}

// Now is the service's clock: the control plane's, which tests move.
func (s *Service) Now() time.Time { return s.clock.Now() }

func pauseReason(reason string) string { return "maintenance: " + reason }

// load reads the switch from the store into the cache.
func (s *Service) load(ctx context.Context) (store.MaintenanceState, error) {
	st, err := s.store.MaintenanceGet(ctx)
	if err != nil {
		return store.MaintenanceState{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.loadedAt = *st, s.clock.Now()
	return *st, nil
}

func (s *Service) remember(st store.MaintenanceState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.loadedAt = st, s.clock.Now()
}

// current is the cached switch, read again once it is older than Refresh.
func (s *Service) current(ctx context.Context) (store.MaintenanceState, error) {
	s.mu.Lock()
	st, fresh := s.state, s.clock.Now().Sub(s.loadedAt) < s.cfg.Refresh
	s.mu.Unlock()
	if fresh {
		return st, nil
	}
	return s.load(ctx)
}

// gate refuses every claim while in maintenance.
func (s *Service) gate(ctx context.Context, _ string) error {
	st, err := s.current(ctx)
	if err != nil {
		return err
	}
	if st.Active {
		return &Error{Since: st.StartedAt, Reason: st.Reason}
	}
	return nil
}

// StartParams starts maintenance.
type StartParams struct {
	Reason    string
	StartedBy string
	// Wait bounds the wait for IN_PROGRESS tasks; zero answers at once.
	Wait time.Duration
	// Progress, when set, is called with the number of tasks still
	// IN_PROGRESS each time it changes while waiting.
	Progress func(inProgress int64)
}

// StartResult is what a start did.
type StartResult struct {
	State store.MaintenanceState
	// PausedTasks counts the READY tasks the start paused.
	PausedTasks int
	// StillRunning are the IN_PROGRESS tasks when the wait ended.
	StillRunning []*store.Task
}

// Start starts maintenance, or, when it is on already, keeps the first
// start's reason and only waits again. The switch is stored before the
// queue is paused, so a crash in between leaves it on and New pauses the
// queue at the next start.
func (s *Service) Start(ctx context.Context, p StartParams) (*StartResult, error) {
	if p.Reason == "" {
		return nil, store.InvalidField("reason", "say why the factory goes into maintenance")
	}
	if p.Wait < 0 {
		return nil, store.InvalidField("wait", "must not be negative, got %s", p.Wait)
	}
	res, err := s.start(ctx, p)
	if err != nil {
		return nil, err
	}
	res.StillRunning, err = s.drain(ctx, p.Wait, p.Progress)
	if err != nil {
		return nil, err
	}
	return res, nil
}

func (s *Service) start(ctx context.Context, p StartParams) (*StartResult, error) {
	s.ops.Lock()
	defer s.ops.Unlock()
	cur, err := s.load(ctx)
	if err != nil {
		return nil, err
	}
	if cur.Active {
		return &StartResult{State: cur}, nil
	}
	qs, _, err := s.q.Stats(ctx)
	if err != nil {
		return nil, err
	}
	st := store.MaintenanceState{Active: true, Reason: p.Reason, StartedAt: s.clock.Now(), StartedBy: p.StartedBy, PausedQueue: !qs.Paused}
	if err := s.store.MaintenanceSet(ctx, &st); err != nil {
		return nil, err
	}
	s.remember(st)
	res := &StartResult{State: st}
	if st.PausedQueue {
		if res.PausedTasks, err = s.q.Pause(ctx, pauseReason(p.Reason)); err != nil {
			return nil, err
		}
	}
	s.log.WarnContext(ctx, "maintenance started", "reason", st.Reason, "by", st.StartedBy, "paused_queue", st.PausedQueue, "paused_tasks", res.PausedTasks)
	s.cfg.Publisher.Publish(ctx, notify.Event{
		Kind: notify.KindMaintenance, ID: "maintenance-start-" + st.StartedAt.Format(time.RFC3339Nano), Time: st.StartedAt,
		Title:      "Maintenance started: " + st.Reason,
		Text:       fmt.Sprintf("Maintenance started by %s: %s\nREADY work paused (%d tasks); new claims are refused.", st.StartedBy, st.Reason, res.PausedTasks),
		Attributes: map[string]string{"state": "started", "reason": st.Reason, "by": st.StartedBy},
	})
	return res, nil
}

// drain waits up to wait for the queue's IN_PROGRESS tasks to finish and
// returns those still running. Task events wake it; Recheck catches what
// other replicas finish.
func (s *Service) drain(ctx context.Context, wait time.Duration, progress func(int64)) ([]*store.Task, error) {
	sub := s.q.Subscribe(queue.Filter{})
	defer sub.Close()
	events := sub.Events(ctx)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(s.cfg.Recheck)
	defer tick.Stop()
	last := int64(-1)
	for {
		qs, _, err := s.q.Stats(ctx)
		if err != nil {
			return nil, err
		}
		n := qs.Counts[store.StateInProgress]
		if n != last && progress != nil {
			progress(n)
		}
		last = n
		if n == 0 {
			return nil, nil
		}
		select {
		case _, ok := <-events:
			if !ok {
				events = nil // fell behind: the recheck carries on
			}
		case <-tick.C:
		case <-deadline.C:
			return s.InProgress(ctx, maxListed)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// maxListed bounds the tasks a start or a get lists.
const maxListed = 100

// InProgress lists up to limit IN_PROGRESS tasks, as summaries: a status
// must not carry (or load) every payload.
func (s *Service) InProgress(ctx context.Context, limit int) ([]*store.Task, error) {
	res, err := s.store.TaskList(ctx, &store.TaskListParams{States: []store.TaskState{store.StateInProgress}, Limit: limit, Summary: true})
	if err != nil {
		return nil, err
	}
	return res.Tasks, nil
}

// EndResult is what an end restored.
type EndResult struct {
	// Ended is the maintenance that ended; Active is false when there was
	// none.
	Ended        store.MaintenanceState
	ResumedQueue bool
	ResumedTasks int
}

// End ends maintenance: the queue is resumed only if the start paused it,
// then the switch is cleared (a crash in between leaves maintenance on,
// and ending again finishes the job). Ending when off changes nothing.
func (s *Service) End(ctx context.Context, by string) (*EndResult, error) {
	s.ops.Lock()
	defer s.ops.Unlock()
	cur, err := s.load(ctx)
	if err != nil {
		return nil, err
	}
	res := &EndResult{Ended: cur}
	if !cur.Active {
		return res, nil
	}
	if cur.PausedQueue {
		kept, err := s.partners.HandOver(ctx, s)
		if err != nil {
			return nil, err
		}
		if !kept {
			if res.ResumedTasks, err = s.q.Resume(ctx); err != nil {
				return nil, err
			}
			res.ResumedQueue = true
		}
	}
	if err := s.store.MaintenanceSet(ctx, &store.MaintenanceState{}); err != nil {
		return nil, err
	}
	s.remember(store.MaintenanceState{})
	// Claimers waiting behind the gate look again.
	s.q.WakeClaimers()
	now := s.clock.Now()
	s.log.WarnContext(ctx, "maintenance ended", "reason", cur.Reason, "by", by, "resumed_queue", res.ResumedQueue, "resumed_tasks", res.ResumedTasks)
	s.cfg.Publisher.Publish(ctx, notify.Event{
		Kind: notify.KindMaintenance, ID: "maintenance-end-" + now.Format(time.RFC3339Nano), Time: now,
		Title:      "Maintenance ended: " + cur.Reason,
		Text:       fmt.Sprintf("Maintenance ended by %s after %s: %s\n%d tasks back to READY; claims are admitted.", by, now.Sub(cur.StartedAt).Round(time.Second), cur.Reason, res.ResumedTasks),
		Attributes: map[string]string{"state": "ended", "reason": cur.Reason, "by": by},
	})
	return res, nil
}

// Status is the switch and the work in flight.
type Status struct {
	State           store.MaintenanceState
	InProgressCount int64
	InProgress      []*store.Task
}

// Get returns the switch as stored and the IN_PROGRESS tasks.
func (s *Service) Get(ctx context.Context) (*Status, error) {
	st, err := s.load(ctx)
	if err != nil {
		return nil, err
	}
	qs, _, err := s.q.Stats(ctx)
	if err != nil {
		return nil, err
	}
	out := &Status{State: st, InProgressCount: qs.Counts[store.StateInProgress]}
	if out.InProgressCount > 0 {
		if out.InProgress, err = s.InProgress(ctx, maxListed); err != nil {
			return nil, err
		}
	}
	return out, nil
}
