// Package queue is the task-queue domain: it applies the queue's rules
// through the store, wakes waiting claimers by push, publishes task events
// to watchers and rescues tasks whose leases expired.
//
// Field rules (lengths, ranges, patterns, required fields) are declared in
// the API's .proto files and enforced by the gRPC server before a request
// reaches this package. What stays here needs state or defaults: ids are
// generated, titles trimmed, empty payloads become {} and must parse as
// JSON (which the rule language cannot check), a task may not depend on
// itself, and dependencies must exist (the store checks).
package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/factory/factory/controlplane/store"
)

// Limits the domain itself relies on; the API's .proto files declare the
// same numbers as field rules.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	MaxWait         = 60 * time.Second
	MinLease        = time.Second
	MaxLease        = time.Hour

	// ResponseBytes bounds the tasks one list page or one claim carries,
	// by their sizes as the store counts them (store.TaskSizeFixed): a
	// page ends early and a claim takes fewer tasks rather than go past
	// it, though a single task always comes. It is under gRPC's default
	// 4 MiB receive limit, so any client can read every such response,
	// and one call never makes the server load more than this.
	ResponseBytes = 3 << 20
)

// Clock tells the time. Tests inject a fake one so that leases expire
// without sleeping.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now().UTC() }

// Config configures a Service.
type Config struct {
	Store  store.Store
	Logger *slog.Logger
	Clock  Clock

	// DefaultLease is the lease length when a claim or renewal names none.
	DefaultLease time.Duration
	// RetryBase and RetryMax bound the exponential backoff after a failed
	// attempt: RetryBase·2^(attempt-1), at most RetryMax, spread by ±Jitter.
	RetryBase time.Duration
	RetryMax  time.Duration
	Jitter    float64
	// RescueInterval is how often the sweeper looks for expired leases.
	RescueInterval time.Duration
	// WatchBuffer is how many events a watcher may lag before it is cut
	// off (told where to resume); the replica keeps four times as many
	// recent events (at most 64 MiB) to resume from.
	WatchBuffer int
	// Rand returns a number in [0,1) for jitter; tests make it fixed.
	Rand func() float64
	// MaxLeasesPerAgent caps the leases one agent may hold at once, so
	// that one agent (looping, or made to hoard) cannot take every READY
	// task of its roles: a claim takes no more than the room left, and an
	// agent at the cap is refused with a *store.QuotaError until it
	// completes, fails or loses some. Unset: DefaultMaxLeasesPerAgent.
	MaxLeasesPerAgent int
}

// DefaultMaxLeasesPerAgent is the per-agent lease cap when none is set.
const DefaultMaxLeasesPerAgent = 256

// WithDefaults returns a copy with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	if c.DefaultLease == 0 {
		c.DefaultLease = 5 * time.Minute
	}
	if c.RetryBase == 0 {
		c.RetryBase = 10 * time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = 10 * time.Minute
	}
	if c.Jitter == 0 {
		c.Jitter = 0.2
	}
	if c.RescueInterval == 0 {
		c.RescueInterval = time.Second
	}
	if c.WatchBuffer == 0 {
		c.WatchBuffer = DefaultWatchBuffer
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	if c.MaxLeasesPerAgent == 0 {
		c.MaxLeasesPerAgent = DefaultMaxLeasesPerAgent
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("queue: Config.Store is required")
	case c.DefaultLease < MinLease || c.DefaultLease > MaxLease:
		return fmt.Errorf("queue: DefaultLease %s outside [%s, %s]", c.DefaultLease, MinLease, MaxLease)
	case c.RetryBase <= 0 || c.RetryMax < c.RetryBase:
		return fmt.Errorf("queue: need 0 < RetryBase (%s) <= RetryMax (%s)", c.RetryBase, c.RetryMax)
	case c.Jitter < 0 || c.Jitter >= 1:
		return fmt.Errorf("queue: Jitter %v outside [0, 1)", c.Jitter)
	case c.MaxLeasesPerAgent < 1:
		return fmt.Errorf("queue: MaxLeasesPerAgent %d must be at least 1", c.MaxLeasesPerAgent)
	}
	return nil
}

// Service is the queue domain.
type Service struct {
	cfg    Config
	store  store.Store
	log    *slog.Logger
	clock  Clock
	ready  *broadcast
	events *hub

	gatesMu sync.RWMutex
	gates   []ClaimGate
	filters []ClaimFilter

	// holders are the switches that keep the queue paused (see
	// SetPauseHolders).
	holders atomic.Pointer[PausePartners]

	obs atomic.Pointer[observerBox] // see SetObserver

	claims claimTimes // see metrics.go

	createHook atomic.Pointer[CreateHook] // see SetCreateHook
}

// ClaimGate decides whether agent may claim now; an error refuses the claim
// and is returned to the claimer as is (a *store.QuotaError for a budget's
// cap or the emergency stop). Gates are asked before every claim attempt,
// also while a claim waits, so a cap reached meanwhile holds the waiter.
type ClaimGate func(ctx context.Context, agent string) error

// AddClaimGate adds a gate every claim must pass. Maintenance mode adds
// one; the budget domain (caps and the emergency stop) adds a ClaimFilter.
func (s *Service) AddClaimGate(g ClaimGate) {
	s.gatesMu.Lock()
	defer s.gatesMu.Unlock()
	s.gates = append(s.gates, g)
}

// ClaimFilter is a claim gate that may also narrow the claim: it returns
// the spend tiers whose tasks agent may not claim now (a tier capped or
// turned off), or an error that refuses the claim as a ClaimGate's does.
// Tasks without a tier and of other tiers stay claimable.
type ClaimFilter func(ctx context.Context, agent string) (excludeTiers []string, err error)

// AddClaimFilter adds a filter every claim must pass; the budget domain
// adds one.
func (s *Service) AddClaimFilter(f ClaimFilter) {
	s.gatesMu.Lock()
	defer s.gatesMu.Unlock()
	s.filters = append(s.filters, f)
}

// checkGates asks every gate and filter; it returns the tiers the claim
// must leave.
func (s *Service) checkGates(ctx context.Context, agent string) ([]string, error) {
	s.gatesMu.RLock()
	gates, filters := s.gates, s.filters
	s.gatesMu.RUnlock()
	for _, g := range gates {
		if err := g(ctx, agent); err != nil {
			return nil, err
		}
	}
	var exclude []string
	for _, f := range filters {
		tiers, err := f(ctx, agent)
		if err != nil {
			return nil, err
		}
		exclude = append(exclude, tiers...)
	}
	return exclude, nil
}

// WakeClaimers wakes every waiting claimer to look again: after a gate
// opens (a cap raised, the emergency stop rearmed).
func (s *Service) WakeClaimers() { s.ready.notify() }

// New returns a Service.
func New(cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, store: cfg.Store, log: cfg.Logger, clock: cfg.Clock, ready: newBroadcast(), events: newHubSized(cfg.WatchBuffer, defaultWatchBufferBytes)}, nil
}

// Backoff is the delay before the next attempt after failing attempt n:
// exponential from RetryBase, capped at RetryMax, with ±Jitter spread so
// that tasks failed together don't come back together.
func (s *Service) Backoff(attempt int32) time.Duration {
	exp := math.Pow(2, float64(max(attempt, 1)-1))
	d := float64(s.cfg.RetryBase) * exp
	if d > float64(s.cfg.RetryMax) {
		d = float64(s.cfg.RetryMax)
	}
	d *= 1 - s.cfg.Jitter + 2*s.cfg.Jitter*s.cfg.Rand()
	return time.Duration(d)
}

// CreateParams is one task to create, as the API gives it.
type CreateParams = store.TaskCreate

// Create creates tasks, all or none, after filling in defaults. Field names
// in errors carry the index for batches ("tasks[3].payload_json").
func (s *Service) Create(ctx context.Context, tasks []*CreateParams) ([]*store.Task, error) {
	for i, t := range tasks {
		prefix := ""
		if len(tasks) > 1 {
			prefix = fmt.Sprintf("tasks[%d].", i)
		}
		if err := s.prepareCreate(prefix, t); err != nil {
			return nil, err
		}
	}
	if err := s.runCreateHook(ctx, tasks); err != nil {
		return nil, err
	}
	changes, err := s.store.TaskCreate(ctx, &store.TaskCreateParams{Tasks: tasks, Now: s.clock.Now()})
	if err != nil {
		return nil, err
	}
	s.publish(changes)
	out := make([]*store.Task, len(tasks))
	for i := range tasks {
		out[i] = changes[i].Task
	}
	return out, nil
}

func (s *Service) prepareCreate(prefix string, t *CreateParams) error {
	if t.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		t.ID = id.String()
	}
	t.Title = strings.TrimSpace(t.Title)
	if t.PayloadJSON == "" {
		t.PayloadJSON = "{}"
	}
	if !json.Valid([]byte(t.PayloadJSON)) {
		return store.InvalidField(prefix+"payload_json", "is not valid JSON")
	}
	if t.Tier != "" && !store.ValidTier(t.Tier) {
		return store.InvalidField(prefix+"tier", "%q is not a tier (frontier, mid, local, infra; empty for none)", t.Tier)
	}
	for i, d := range t.DependsOn {
		if d == t.ID {
			return store.InvalidField(fmt.Sprintf("%sdepends_on[%d]", prefix, i), "a task cannot depend on itself")
		}
	}
	return nil
}

// Get returns one task.
func (s *Service) Get(ctx context.Context, id string) (*store.Task, error) {
	return s.store.TaskGet(ctx, id)
}

// ListParams filters List.
type ListParams struct {
	States    []store.TaskState
	Role      string
	Assignee  string
	Labels    []string // "key=value"
	IDs       []string
	Kind      string
	PageSize  int
	PageToken string
	// MinAttempt keeps tasks claimed at least this many times; 0 keeps all.
	MinAttempt int
	// Summary leaves the tasks' large fields out (see store.Task.Summary).
	Summary bool
	// NewestFirst lists the most recently created task first; PageToken
	// must come from a list in the same order.
	NewestFirst bool
	// IDPrefix keeps tasks whose id starts with it: a shortened id.
	IDPrefix string
	// Filter, when set, is the filter (see Service.Filter) instead of
	// States, Role, Assignee, Labels, Kind and MinAttempt.
	Filter *store.TaskFilter
}

// List returns one page of tasks: at most PageSize, and no more than
// ResponseBytes hold.
func (s *Service) List(ctx context.Context, p ListParams) (*store.TaskListResult, error) {
	if p.PageSize == 0 {
		p.PageSize = DefaultPageSize
	}
	lp := &store.TaskListParams{
		States: p.States, Role: p.Role, Assignee: p.Assignee, Labels: parseLabels(p.Labels), IDs: p.IDs,
		Kind: p.Kind, MinAttempt: p.MinAttempt,
		Limit: p.PageSize, Cursor: p.PageToken, MaxBytes: ResponseBytes, Summary: p.Summary,
		NewestFirst: p.NewestFirst, IDPrefix: p.IDPrefix,
	}
	if p.Filter != nil {
		lp.SetFilter(*p.Filter)
	}
	return s.store.TaskList(ctx, lp)
}

// ParseLabels turns "key=value" filters into a map (nil for none); the
// API's rules have already refused a filter without '=' or with an empty
// key.
func ParseLabels(pairs []string) map[string]string { return parseLabels(pairs) }

// parseLabels turns "key=value" filters into a map; the API's rules have
// already refused a filter without '=' or with an empty key.
func parseLabels(pairs []string) map[string]string {
	if len(pairs) == 0 {
		return nil
	}
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, _ := strings.Cut(p, "=")
		m[k] = v
	}
	return m
}

// ClaimParams asks for work.
type ClaimParams struct {
	Agent         string
	Roles         []string
	Wait          time.Duration
	MaxTasks      int
	LeaseDuration time.Duration
}

// Claim hands out READY tasks: up to MaxTasks, and no more than
// ResponseBytes hold (the rest stay READY). With Wait it blocks until
// work arrives, the wait ends or ctx ends; it is woken by push the moment
// a task becomes READY, and by a timer when a backed-off task's run_after
// comes due. An agent holding MaxLeasesPerAgent leases is refused at
// once (a *store.QuotaError), waiting or not.
func (s *Service) Claim(ctx context.Context, p ClaimParams) ([]*store.Task, error) {
	if p.MaxTasks == 0 {
		p.MaxTasks = 1
	}
	lease := s.leaseDuration(p.LeaseDuration)
	var deadline <-chan time.Time
	if p.Wait > 0 {
		t := time.NewTimer(p.Wait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		woken := s.ready.wait()
		exclude, err := s.checkGates(ctx, p.Agent)
		if err != nil {
			return nil, err
		}
		changes, err := s.store.TaskClaim(ctx, &store.TaskClaimParams{
			Agent: p.Agent, Roles: p.Roles, Max: p.MaxTasks, LeaseDuration: lease, Now: s.clock.Now(),
			MaxBytes: ResponseBytes, ExcludeTiers: exclude, MaxHeld: s.cfg.MaxLeasesPerAgent,
		})
		if err != nil {
			return nil, err
		}
		if len(changes) > 0 || deadline == nil {
			s.publish(changes)
			s.observeClaimed(p.Agent, changes)
			return tasksOf(changes), nil
		}
		next, ok, err := s.store.TaskNextRunAfter(ctx, s.clock.Now())
		if err != nil {
			return nil, err
		}
		due := time.NewTimer(MaxWait)
		if !ok {
			due.Stop()
		} else {
			due.Reset(next.Sub(s.clock.Now()))
		}
		select {
		case <-woken:
		case <-due.C:
		case <-deadline:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		due.Stop()
	}
}

// Release hands back claimed tasks that never reached their claimer (the
// response could not be sent): each still held under the lease it was
// claimed with goes back to READY with its attempt given back, and
// waiting claimers are woken. It returns the tasks released.
func (s *Service) Release(ctx context.Context, claimed []*store.Task) ([]*store.Task, error) {
	leases := make([]store.LeaseRef, len(claimed))
	for i, t := range claimed {
		leases[i] = store.LeaseRef{TaskID: t.ID, Agent: t.LeaseHolder, FencingToken: t.FencingToken}
	}
	changes, err := s.store.TaskRelease(ctx, &store.TaskReleaseParams{Leases: leases, Now: s.clock.Now()})
	if err != nil {
		return nil, err
	}
	s.publish(changes)
	return tasksOf(changes), nil
}

// leaseDuration is d, or the configured default when d is unset.
func (s *Service) leaseDuration(d time.Duration) time.Duration {
	if d == 0 {
		return s.cfg.DefaultLease
	}
	return d
}

// Renew extends a lease.
func (s *Service) Renew(ctx context.Context, ref store.LeaseRef, lease time.Duration, progress string) (*store.Task, error) {
	t, err := s.store.TaskRenew(ctx, &store.TaskRenewParams{Lease: ref, LeaseDuration: s.leaseDuration(lease), Progress: progress, Now: s.clock.Now()})
	if err != nil {
		return nil, err
	}
	s.publish([]store.TaskChange{{Task: t, PreviousState: t.State}})
	return t, nil
}

// Complete completes held tasks; each item succeeds or fails on its own.
func (s *Service) Complete(ctx context.Context, items []store.TaskCompleteItem) ([]store.TaskCompleteItemResult, error) {
	if len(items) == 0 {
		return nil, nil
	}
	if err := checkResults(items); err != nil {
		return nil, err
	}
	res, err := s.store.TaskComplete(ctx, &store.TaskCompleteParams{Items: items, Now: s.clock.Now()})
	if err != nil {
		return nil, err
	}
	s.observeCompleted(items, res.Results) // before publish forgets the claim times
	s.publish(res.Changes)
	return res.Results, nil
}

// Fail records a failed attempt.
func (s *Service) Fail(ctx context.Context, ref store.LeaseRef, errText string, permanent bool) (*store.Task, error) {
	changes, err := s.store.TaskFail(ctx, &store.TaskFailParams{Lease: ref, Error: errText, Permanent: permanent, Backoff: s.Backoff, Now: s.clock.Now()})
	if err != nil {
		return nil, err
	}
	if changes[0].PreviousState == changes[0].Task.State {
		// A repeat of the failure that ended this lease: nothing changed,
		// so there is nothing to announce or count.
		return changes[0].Task, nil
	}
	s.observeFailed(ref, changes[0].Task) // before publish forgets the claim time
	s.publish(changes)
	return changes[0].Task, nil
}

// Move is an operator move allowed by the transition table.
func (s *Service) Move(ctx context.Context, id string, to store.TaskState, reason string) (*store.Task, error) {
	changes, err := s.store.TaskMove(ctx, &store.TaskMoveParams{TaskID: id, To: to, Reason: reason, Now: s.clock.Now()})
	if err != nil {
		return nil, err
	}
	s.publish(changes)
	return changes[0].Task, nil
}

// SetPriority changes a task's priority.
func (s *Service) SetPriority(ctx context.Context, id string, priority int32) (*store.Task, error) {
	t, err := s.store.TaskSetPriority(ctx, &store.TaskSetPriorityParams{TaskID: id, Priority: priority, Now: s.clock.Now()})
	if err != nil {
		return nil, err
	}
	s.publish([]store.TaskChange{{Task: t, PreviousState: t.State}})
	return t, nil
}

// Pause pauses the queue; it returns how many READY tasks it paused.
func (s *Service) Pause(ctx context.Context, reason string) (int, error) {
	changes, err := s.store.QueuePause(ctx, &store.QueuePauseParams{Reason: reason, Now: s.clock.Now()})
	if err != nil {
		return 0, err
	}
	s.publish(changes)
	return len(changes), nil
}

// ResumeByOperator is an operator's resume: refused (ErrPauseHeld) while
// a switch that holds the queue paused (the emergency stop, maintenance)
// is on, since claims stay refused until it goes off, and it resumes the
// queue itself then.
func (s *Service) ResumeByOperator(ctx context.Context) (int, error) {
	if err := s.holders.Load().CheckResume(ctx); err != nil {
		return 0, err
	}
	return s.Resume(ctx)
}

// SetPauseHolders names the switches that hold the queue paused, for
// ResumeByOperator.
func (s *Service) SetPauseHolders(p *PausePartners) { s.holders.Store(p) }

// Resume resumes the queue; it returns how many tasks went back to READY.
// The pause holders call it as they go off; an operator's resume is
// ResumeByOperator.
func (s *Service) Resume(ctx context.Context) (int, error) {
	changes, err := s.store.QueueResume(ctx, &store.QueueResumeParams{Now: s.clock.Now()})
	if err != nil {
		return 0, err
	}
	s.publish(changes)
	return len(changes), nil
}

// RequeueStuck requeues IN_PROGRESS tasks with no sign of life for olderThan.
func (s *Service) RequeueStuck(ctx context.Context, olderThan time.Duration, dryRun bool) ([]*store.Task, error) {
	changes, err := s.store.TaskRequeueStuck(ctx, &store.TaskRequeueStuckParams{OlderThan: olderThan, DryRun: dryRun, Now: s.clock.Now()})
	if err != nil {
		return nil, err
	}
	if !dryRun {
		s.publish(changes)
	}
	return tasksOf(changes), nil
}

// Stats returns the queue's shape and the time it was taken.
func (s *Service) Stats(ctx context.Context) (*store.QueueStats, time.Time, error) {
	st, err := s.store.QueueStats(ctx)
	return st, s.clock.Now(), err
}

// RescueExpired handles every lease that has expired: retry with backoff or
// dead letter. The sweeper calls it; tests call it with a fake clock.
func (s *Service) RescueExpired(ctx context.Context) ([]*store.Task, error) {
	changes, err := s.store.TaskRescueExpired(ctx, &store.TaskRescueExpiredParams{Backoff: s.Backoff, Now: s.clock.Now()})
	if err != nil {
		return nil, err
	}
	for _, c := range changes {
		s.log.WarnContext(ctx, "lease expired", "task", c.Task.ID, "attempt", c.Task.Attempt, "max_attempts", c.Task.MaxAttempts, "now", c.Task.State.String())
	}
	s.publish(changes)
	s.observeRescued(changes)
	return tasksOf(changes), nil
}

// RunSweeper rescues expired leases every RescueInterval until ctx ends.
func (s *Service) RunSweeper(ctx context.Context) error {
	t := time.NewTicker(s.cfg.RescueInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := s.RescueExpired(ctx); err != nil && ctx.Err() == nil {
				s.log.ErrorContext(ctx, "lease rescue failed", "err", err)
			}
		}
	}
}

// Subscribe returns a subscription to task events matching f. Subscribe
// before taking a snapshot so that no change falls between the two.
func (s *Service) Subscribe(f Filter) *Subscription { return s.events.subscribe(f) }

// ResumeWatch returns a subscription to the events matching f after cursor
// (an Event's Cursor, or a Subscription's); ErrCursorTooOld when this
// replica cannot replay from there.
func (s *Service) ResumeWatch(f Filter, cursor string) (*Subscription, error) {
	return s.events.resume(f, cursor)
}

func (s *Service) publish(changes []store.TaskChange) {
	if len(changes) == 0 {
		return
	}
	s.claims.note(changes)
	for _, c := range changes {
		if c.Task.State == store.StateReady && c.PreviousState != store.StateReady {
			s.ready.notify()
			break
		}
	}
	s.events.publish(eventsOf(changes, s.clock.Now()))
}

func eventsOf(changes []store.TaskChange, now time.Time) []Event {
	events := make([]Event, len(changes))
	for i, c := range changes {
		e := Event{Type: EventUpdated, Task: c.Task, PreviousState: c.PreviousState, Time: now}
		switch {
		case c.PreviousState == store.StateUnspecified:
			e.Type = EventCreated
		case c.PreviousState != c.Task.State:
			e.Type = EventStateChanged
		}
		events[i] = e
	}
	return events
}

func tasksOf(changes []store.TaskChange) []*store.Task {
	out := make([]*store.Task, len(changes))
	for i, c := range changes {
		out[i] = c.Task
	}
	return out
}
