// Package budget is the spend ledger's domain: it prices and records the
// LLM calls agents report (each id once), answers spend reports from the
// day rollups, holds the day's budgets, reservations and alert thresholds,
// gates claims on the hard caps and runs the emergency stop (runbook
// 10.2), which halts the fleet until an operator rearms it.
//
// Days are calendar days in the configured zone (the runbook's is
// Pacific/Auckland): the domain computes each event's day from its time,
// so the stores and every replica agree on it across daylight-saving
// changes, and "today" is the operator's today.
package budget

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
	// The runbook's zone must load on hosts without a zone database.
	_ "time/tzdata"

	"github.com/google/uuid"

	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
)

// DefaultTimeZone is the runbook's zone.
const DefaultTimeZone = "Pacific/Auckland"

// Limits the domain relies on; the API declares the same as field rules.
const (
	DefaultReservationTTL = 10 * time.Minute
	MaxReservationTTL     = 24 * time.Hour
	MaxReportDays         = 366
	DefaultGroupLimit     = 100
)

// dayLayout is how days are written.
const dayLayout = "2006-01-02"

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now().UTC() }

// CounterEntry is one newly recorded event as the live counters see it.
type CounterEntry struct {
	Agent, Tier, Model, Provider string
	CostMicros                   int64
}

// Config configures a Service.
type Config struct {
	Store  store.Store
	Logger *slog.Logger
	Clock  Clock
	// Location is the zone days are counted in; default Pacific/Auckland.
	Location *time.Location
	// Prices prices calls reported without a cost; default the built-in
	// table (deploy/prices.yaml).
	Prices *Prices
	// Defaults are the budgets in force for scopes without a stored one;
	// default DefaultBudgets (the runbook's cost table).
	Defaults []store.Budget
	// Publisher receives spend alerts and the emergency stop.
	Publisher notify.Publisher
	// Queue, when set, is paused by the emergency stop; Attach also
	// registers the claim gate on it.
	Queue *queue.Service
	// OnRecorded, when set, is called after each commit with the events it
	// newly recorded (never duplicates), per day: it feeds the live
	// counters. Its failures are its own business.
	OnRecorded func(ctx context.Context, day string, recs []CounterEntry)
	// RefreshInterval bounds how stale the claim gate's view of the day
	// may be when other replicas write; default 1 s.
	RefreshInterval time.Duration
}

// WithDefaults returns a copy with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	if c.Location == nil {
		if loc, err := time.LoadLocation(DefaultTimeZone); err == nil {
			c.Location = loc
		}
	}
	if c.Prices == nil {
		c.Prices = DefaultPrices()
	}
	if c.Defaults == nil {
		c.Defaults = DefaultBudgets()
	}
	if c.Publisher == nil {
		c.Publisher = notify.Discard
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = time.Second
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("budget: Config.Store is required")
	case c.Location == nil:
		return errors.New("budget: Config.Location is required (the zone database may be missing; import time/tzdata)")
	case c.RefreshInterval < 0:
		return errors.New("budget: RefreshInterval must not be negative")
	}
	for _, b := range c.Defaults {
		if err := store.CheckBudget(&b); err != nil {
			return fmt.Errorf("budget: default budget %s/%s: %w", b.Scope, b.Key, err)
		}
	}
	return nil
}

// Dollars is whole dollars in micro-dollars.
func Dollars(d int64) int64 { return d * 1_000_000 }

// DefaultBudgets are the runbook's cost table (8.1, 10.2): the total's
// target $30, alert $50 and emergency stop $100 a day; tier alerts
// frontier $25, mid $15, infra $10; an agent over $10 a day is a runaway:
// the default agent budget alerts and caps at $10, so a runaway agent's
// claims are refused (budget:agent:<name>) while the rest of the fleet
// works on. Only the total's emergency threshold halts the fleet.
func DefaultBudgets() []store.Budget {
	return []store.Budget{
		{Scope: store.ScopeTotal, TargetMicros: Dollars(30), AlertMicros: Dollars(50), EmergencyMicros: Dollars(100)},
		{Scope: store.ScopeTier, Key: store.TierFrontier, AlertMicros: Dollars(25)},
		{Scope: store.ScopeTier, Key: store.TierMid, AlertMicros: Dollars(15)},
		{Scope: store.ScopeTier, Key: store.TierInfra, AlertMicros: Dollars(10)},
		{Scope: store.ScopeAgent, Key: "", AlertMicros: Dollars(10), CapMicros: Dollars(10)},
	}
}

// Service is the budget domain.
type Service struct {
	cfg   Config
	store store.Store
	// partners are the other switches that pause the queue (see
	// SetPausePartners).
	partners *queue.PausePartners
	log      *slog.Logger
	clock    Clock
	loc      *time.Location

	// refreshMu makes one caller refresh the view while the others wait
	// for it rather than all reading the store.
	refreshMu sync.Mutex
	mu        sync.RWMutex
	view      *view

	watchMu  sync.Mutex
	watchers map[chan StopSignal]struct{}
	lastStop *StopSignal
	// stopGen counts announcements; a state read before the latest one
	// (a view refreshed while the stop was pulled or rearmed) is stale and
	// is not announced.
	stopGen uint64

	// alerted holds the scopes whose alert the store already has for
	// alertedDay, so reports past a threshold do not write it again.
	alertMu    sync.Mutex
	alertedDay string
	alerted    map[string]bool

	extra observers // calls.go
}

// view is the day's standing as of at: what the claim gate decides on.
type view struct {
	day string
	// end is when day ends (the next local midnight): comparing with it
	// is cheaper than formatting the day on every claim.
	end      time.Time
	at       time.Time
	standing *store.SpendStanding
	budgets  *budgetSet
	stop     *store.EmergencyStop
	// excluded are the tiers claims leave (see excludedTiers).
	excluded []string
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Service{
		cfg: cfg, store: cfg.Store, log: cfg.Logger, clock: cfg.Clock, loc: cfg.Location,
		watchers: make(map[chan StopSignal]struct{}),
	}, nil
}

// DayOf is the day t falls on in the configured zone.
func (s *Service) DayOf(t time.Time) string { return t.In(s.loc).Format(dayLayout) }

// dayEnd is the next local midnight after t. Midnight itself may not
// exist on a daylight-saving day; time.Date then normalises it, and the
// view is refreshed at most an hour early, which is harmless.
func (s *Service) dayEnd(t time.Time) time.Time {
	l := t.In(s.loc)
	return time.Date(l.Year(), l.Month(), l.Day()+1, 0, 0, 0, 0, s.loc)
}

// Today is the current day in the configured zone.
func (s *Service) Today() string { return s.DayOf(s.clock.Now()) }

// Attach registers the claim gate on q and applies a stop left on by a
// previous run (the queue pause it made is durable; this repairs a crash
// between the stop and the pause).
func (s *Service) Attach(ctx context.Context, q *queue.Service) error {
	if q != nil {
		s.cfg.Queue = q
		q.AddClaimFilter(s.ClaimFilter)
	}
	st, err := s.store.EmergencyStopGet(ctx)
	if err != nil {
		return err
	}
	if st.Stopped {
		if err := s.pauseForStop(ctx, st); err != nil {
			return err
		}
	}
	_, err = s.refresh(ctx, true)
	return err
}

// current returns the view, refreshed when it is older than the refresh
// interval or of another day.
func (s *Service) current(ctx context.Context) (*view, error) {
	s.mu.RLock()
	v := s.view
	s.mu.RUnlock()
	now := s.clock.Now()
	if v != nil && now.Before(v.end) && now.Sub(v.at) < s.cfg.RefreshInterval && !now.Before(v.at) {
		return v, nil
	}
	return s.refresh(ctx, false)
}

// refresh reads the day's standing, the budgets and the stop. Unless
// force, a caller that waited for another's refresh takes its result.
func (s *Service) refresh(ctx context.Context, force bool) (*view, error) {
	started := s.clock.Now()
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	if !force {
		s.mu.RLock()
		v := s.view
		s.mu.RUnlock()
		if v != nil && !v.at.Before(started) && v.day == s.DayOf(started) {
			return v, nil
		}
	}
	now := s.clock.Now()
	day := s.DayOf(now)
	standing, err := s.store.SpendStanding(ctx, &store.SpendStandingParams{Day: day, Now: now})
	if err != nil {
		return nil, err
	}
	stored, err := s.store.BudgetList(ctx)
	if err != nil {
		return nil, err
	}
	gen := s.stopGeneration()
	stop, err := s.store.EmergencyStopGet(ctx)
	if err != nil {
		return nil, err
	}
	v := &view{day: day, end: s.dayEnd(now), at: now, standing: standing, budgets: newBudgetSet(s.cfg.Defaults, stored), stop: stop}
	v.excluded = excludedTiers(v.budgets, standing)
	s.mu.Lock()
	s.view = v
	s.mu.Unlock()
	// Another replica may have pulled or rearmed the stop: tell this
	// replica's sidecars, unless this replica announced a newer state
	// while the read was under way.
	s.announceStopRead(stop, gen)
	return v, nil
}

// Gate says whether agent may claim at all: it refuses claims while the
// emergency stop is on, or the total's or the agent's hard cap is
// reached. A tier's cap does not refuse a claim; it only leaves that
// tier's tasks out of it (see ClaimFilter).
func (s *Service) Gate(ctx context.Context, agent string) error {
	_, err := s.ClaimFilter(ctx, agent)
	return err
}

// ClaimFilter is the queue's claim filter: Gate's refusals, and otherwise
// the tiers whose tasks the claim must leave, those turned off or whose
// hard cap is reached. Tasks without a tier and of other tiers stay
// claimable, so a capped frontier tier does not stop the builders that
// run on mid-tier models.
func (s *Service) ClaimFilter(ctx context.Context, agent string) ([]string, error) {
	v, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	if v.stop.Stopped {
		return nil, &store.QuotaError{Subject: SubjectEmergencyStop, Description: "the fleet is under an emergency stop (" + v.stop.Reason +
			"); an operator must rearm it (factory emergency-stop --rearm)"}
	}
	check := func(b store.Budget, spent, reserved int64) error {
		if b.CapMicros > 0 && store.SatAdd(spent, reserved) >= b.CapMicros {
			return &store.QuotaError{Subject: subject(b.Scope, b.Key), Description: fmt.Sprintf(
				"today's spend %s (and %s reserved) reached the daily cap of %s; claims are refused until the day ends or the cap is raised",
				store.Dollars(spent), store.Dollars(reserved), store.Dollars(b.CapMicros))}
		}
		return nil
	}
	st := v.standing
	if err := check(v.budgets.total, st.Spent[store.DimTotal][""], st.Reserved[store.ScopeTotal][""]); err != nil {
		return nil, err
	}
	b := v.budgets.agent(agent)
	b.Key = agent
	if err := check(b, st.Spent[store.DimAgent][agent], st.Reserved[store.ScopeAgent][agent]); err != nil {
		return nil, err
	}
	return v.excluded, nil
}

// excludedTiers are the tiers whose tasks no claim takes now: turned off,
// or at their hard cap (spent plus reserved).
func excludedTiers(bs *budgetSet, st *store.SpendStanding) []string {
	var out []string
	for _, tier := range tiers {
		b, ok := bs.tiers[tier]
		if !ok {
			continue
		}
		if b.Off || (b.CapMicros > 0 && store.SatAdd(st.Spent[store.DimTier][tier], st.Reserved[store.ScopeTier][tier]) >= b.CapMicros) {
			out = append(out, tier)
		}
	}
	return out
}

// SubjectEmergencyStop names the emergency stop in a refusal.
const SubjectEmergencyStop = "emergency-stop"

// subject names a budget in a refusal: "budget:total",
// "budget:tier:frontier", "budget:agent:forge".
func subject(scope, key string) string {
	if scope == store.ScopeTotal {
		return "budget:total"
	}
	return "budget:" + scope + ":" + key
}

var tiers = []string{store.TierFrontier, store.TierMid, store.TierLocal, store.TierInfra}

// budgetSet is the budgets in force: stored ones over the defaults.
type budgetSet struct {
	total        store.Budget
	tiers        map[string]store.Budget
	agents       map[string]store.Budget
	agentDefault store.Budget
}

func newBudgetSet(defaults []store.Budget, stored []*store.Budget) *budgetSet {
	bs := &budgetSet{
		total:        store.Budget{Scope: store.ScopeTotal},
		tiers:        map[string]store.Budget{},
		agents:       map[string]store.Budget{},
		agentDefault: store.Budget{Scope: store.ScopeAgent},
	}
	put := func(b store.Budget) {
		switch {
		case b.Scope == store.ScopeTotal:
			bs.total = b
		case b.Scope == store.ScopeTier:
			bs.tiers[b.Key] = b
		case b.Scope == store.ScopeAgent && b.Key == "":
			bs.agentDefault = b
		case b.Scope == store.ScopeAgent:
			bs.agents[b.Key] = b
		}
	}
	for _, b := range defaults {
		put(b)
	}
	for _, b := range stored {
		put(*b)
	}
	return bs
}

// agent is the budget in force for agent: its own, else the default.
func (bs *budgetSet) agent(agent string) store.Budget {
	if b, ok := bs.agents[agent]; ok {
		return b
	}
	return bs.agentDefault
}

// list is every budget, total first, then tiers, the default agent
// budget and each agent's.
func (bs *budgetSet) list() []store.Budget {
	out := []store.Budget{bs.total}
	for _, t := range tiers {
		if b, ok := bs.tiers[t]; ok {
			out = append(out, b)
		}
	}
	out = append(out, bs.agentDefault)
	for _, name := range slices.Sorted(maps.Keys(bs.agents)) {
		out = append(out, bs.agents[name])
	}
	return out
}

// publish sends an operator-facing event.
func (s *Service) publish(ctx context.Context, kind notify.Kind, title, text string, attrs map[string]string) {
	s.cfg.Publisher.Publish(ctx, notify.Event{
		Kind: kind, ID: uuid.Must(uuid.NewV7()).String(), Time: s.clock.Now(), Title: title, Text: text, Attributes: attrs,
	})
}
