package budget

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/store"
)

// Event is one reported call. Cost is nil when the reporter sent none:
// the call is then priced from the price table.
type Event struct {
	ID           string
	Agent        string
	Host         string
	Model        string
	Provider     string
	Tier         string
	InputTokens  int64
	OutputTokens int64
	Cost         *int64
	TaskID       string
	OccurredAt   time.Time
	// CacheReadTokens and CacheWriteTokens are the input tokens read
	// from and written to the provider's prompt cache; Failed marks a
	// failed call. They are counted (SpendObserver), not stored.
	CacheReadTokens  int64
	CacheWriteTokens int64
	Failed           bool
}

// ReportResult says what a report recorded; Records are the events as
// they were to be stored (priced, with their day), in request order.
type ReportResult struct {
	Records    []*store.SpendEvent
	Duplicates []bool
	Recorded   int
	// Conflicts are the events refused because the agent already
	// recorded their id with different content.
	Conflicts []store.SpendConflict
}

// prepare prices an event and computes its day. field prefixes the
// field names in errors ("event", "events[3]").
func (s *Service) prepare(e *Event, field string) (*store.SpendEvent, error) {
	if e == nil {
		return nil, store.InvalidField(field, "missing")
	}
	if !store.ValidTier(e.Tier) {
		return nil, store.InvalidField(field+".tier", "%q is not a tier (frontier, mid, local, infra)", e.Tier)
	}
	if e.OccurredAt.IsZero() {
		return nil, store.InvalidField(field+".occurred_at", "required")
	}
	if e.InputTokens < 0 || e.InputTokens > store.MaxEventTokens {
		return nil, store.InvalidField(field+".input_tokens", "%d is outside 0 to %d tokens per event", e.InputTokens, int64(store.MaxEventTokens))
	}
	if e.OutputTokens < 0 || e.OutputTokens > store.MaxEventTokens {
		return nil, store.InvalidField(field+".output_tokens", "%d is outside 0 to %d tokens per event", e.OutputTokens, int64(store.MaxEventTokens))
	}
	if e.CacheReadTokens < 0 || e.CacheReadTokens > store.MaxEventTokens {
		return nil, store.InvalidField(field+".cache_read_tokens", "%d is outside 0 to %d tokens per event", e.CacheReadTokens, int64(store.MaxEventTokens))
	}
	if e.CacheWriteTokens < 0 || e.CacheWriteTokens > store.MaxEventTokens {
		return nil, store.InvalidField(field+".cache_write_tokens", "%d is outside 0 to %d tokens per event", e.CacheWriteTokens, int64(store.MaxEventTokens))
	}
	rec := &store.SpendEvent{
		ID: e.ID, Agent: e.Agent, Host: e.Host, Model: e.Model, Provider: e.Provider, Tier: e.Tier,
		InputTokens: e.InputTokens, OutputTokens: e.OutputTokens, TaskID: e.TaskID,
		OccurredAt: e.OccurredAt.UTC(), Day: s.DayOf(e.OccurredAt),
	}
	if e.Cost != nil {
		if *e.Cost < 0 || *e.Cost > store.MaxEventCostMicros {
			return nil, store.InvalidField(field+".cost_micros", "%s is outside $0 to %s per event", store.Dollars(*e.Cost), store.Dollars(store.MaxEventCostMicros))
		}
		rec.CostMicros = *e.Cost
		return rec, nil
	}
	price, ok := s.cfg.Prices.Lookup(e.Model, e.Tier)
	if !ok {
		return nil, store.InvalidField(field+".cost_micros",
			"no price for model %s; send cost_micros or add it to the price table", e.Model)
	}
	// The same cap as a cost the reporter sends: however an event is
	// priced, it cannot cost more.
	rec.CostMicros = price.Cost(e.InputTokens, e.OutputTokens)
	if rec.CostMicros > store.MaxEventCostMicros {
		return nil, store.InvalidField(field+".cost_micros", "%d input and %d output tokens of %s are priced at %s, over the cap of %s per event",
			e.InputTokens, e.OutputTokens, e.Model, store.Dollars(rec.CostMicros), store.Dollars(store.MaxEventCostMicros))
	}
	rec.PricedByServer = true
	return rec, nil
}

// Report records events: each id once, priced when sent without a cost,
// all in one transaction. Then it raises the alerts the day's spend
// crossed and pulls the emergency stop past its threshold.
func (s *Service) Report(ctx context.Context, events []*Event) (*ReportResult, error) {
	return s.record(ctx, events, "")
}

func (s *Service) record(ctx context.Context, events []*Event, release string) (*ReportResult, error) {
	recs := make([]*store.SpendEvent, len(events))
	for i, e := range events {
		field := "event"
		if len(events) > 1 {
			field = "events[" + strconv.Itoa(i) + "]"
		}
		r, err := s.prepare(e, field)
		if err != nil {
			return nil, err
		}
		recs[i] = r
	}
	now := s.clock.Now()
	res, err := s.store.SpendRecord(ctx, &store.SpendRecordParams{Events: recs, ReleaseReservation: release, Now: now})
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		r.RecordedAt = now
	}
	out := &ReportResult{Records: recs, Duplicates: res.Duplicates, Recorded: res.Recorded, Conflicts: res.Conflicts}
	for _, c := range res.Conflicts {
		s.log.WarnContext(ctx, "spend event refused: its id was recorded with different content", "agent", c.Agent, "id", c.ID, "differs", c.Fields)
	}
	s.observeRecorded(events, recs, res)
	if res.Recorded == 0 && release == "" {
		return out, nil
	}
	// The spend is committed: the counters and thresholds follow even if
	// the reporter stops waiting.
	s.afterRecord(context.WithoutCancel(ctx), recs, res.Duplicates)
	return out, nil
}

// afterRecord feeds the counters, refreshes the gate's view and checks
// the thresholds. Its failures are logged: the spend is recorded.
func (s *Service) afterRecord(ctx context.Context, recs []*store.SpendEvent, dups []bool) {
	if s.cfg.OnRecorded != nil {
		byDay := map[string][]CounterEntry{}
		for i, r := range recs {
			if !dups[i] {
				byDay[r.Day] = append(byDay[r.Day], CounterEntry{Agent: r.Agent, Tier: r.Tier, Model: r.Model, Provider: r.Provider, CostMicros: r.CostMicros})
			}
		}
		for _, day := range slices.Sorted(maps.Keys(byDay)) {
			s.cfg.OnRecorded(ctx, day, byDay[day])
		}
	}
	v, err := s.refresh(ctx, true)
	if err != nil {
		s.log.WarnContext(ctx, "budget: reading today's spend after a report failed; thresholds are checked on the next one", "err", err)
		return
	}
	agents := map[string]bool{}
	for i, r := range recs {
		if !dups[i] && r.Day == v.day {
			agents[r.Agent] = true
		}
	}
	s.checkThresholds(ctx, v, slices.Sorted(maps.Keys(agents)))
}

// checkThresholds raises the alerts today's spend crossed (once per day
// per scope, across replicas: the store decides) and pulls the emergency
// stop when the total crossed its threshold.
func (s *Service) checkThresholds(ctx context.Context, v *view, agents []string) {
	st := v.standing
	type scope struct {
		b     store.Budget
		spent int64
	}
	scopes := []scope{{v.budgets.total, st.Spent[store.DimTotal][""]}}
	for _, t := range tiers {
		if b, ok := v.budgets.tiers[t]; ok {
			scopes = append(scopes, scope{b, st.Spent[store.DimTier][t]})
		}
	}
	for _, a := range agents {
		b := v.budgets.agent(a)
		b.Key = a
		scopes = append(scopes, scope{b, st.Spent[store.DimAgent][a]})
	}
	for _, sc := range scopes {
		if sc.b.AlertMicros <= 0 || sc.spent < sc.b.AlertMicros || s.alertStored(v.day, sc.b.Scope, sc.b.Key) {
			continue
		}
		a := &store.SpendAlert{Day: v.day, Scope: sc.b.Scope, Key: sc.b.Key, ThresholdMicros: sc.b.AlertMicros, SpentMicros: sc.spent, RaisedAt: s.clock.Now()}
		raised, err := s.store.SpendAlertRaise(ctx, a)
		if err != nil {
			s.log.WarnContext(ctx, "budget: recording a spend alert failed", "scope", subject(sc.b.Scope, sc.b.Key), "err", err)
			continue
		}
		s.noteAlertStored(v.day, sc.b.Scope, sc.b.Key)
		if raised {
			name := subject(sc.b.Scope, sc.b.Key)
			s.log.WarnContext(ctx, "spend alert", "budget", name, "spent_micros", sc.spent, "alert_micros", sc.b.AlertMicros, "day", v.day)
			s.publish(ctx, notify.KindSpendAlert, fmt.Sprintf("Spend alert: %s at %s (alert %s)", name, store.Dollars(sc.spent), store.Dollars(sc.b.AlertMicros)),
				fmt.Sprintf("%s spent %s on %s (%s), past its alert threshold of %s.", name, store.Dollars(sc.spent), v.day, s.loc, store.Dollars(sc.b.AlertMicros)),
				map[string]string{"scope": sc.b.Scope, "key": sc.b.Key, "day": v.day, "spent_micros": strconv.FormatInt(sc.spent, 10),
					"threshold_micros": strconv.FormatInt(sc.b.AlertMicros, 10)})
		}
	}
	total := st.Spent[store.DimTotal][""]
	if em := v.budgets.total.EmergencyMicros; em > 0 && total >= em && !v.stop.Stopped {
		reason := fmt.Sprintf("today's spend %s crossed the emergency threshold of %s", store.Dollars(total), store.Dollars(em))
		if _, err := s.EmergencyStop(ctx, reason, StoppedByBudget); err != nil {
			s.log.ErrorContext(ctx, "budget: pulling the emergency stop failed", "reason", reason, "err", err)
		}
	}
}

// alertStored says whether this replica already saw the store hold the
// alert of scope on day: the store decides once per day per scope, so a
// report past a threshold need not ask it (a write) again.
func (s *Service) alertStored(day, scope, key string) bool {
	s.alertMu.Lock()
	defer s.alertMu.Unlock()
	return s.alertedDay == day && s.alerted[scope+"\x00"+key]
}

func (s *Service) noteAlertStored(day, scope, key string) {
	s.alertMu.Lock()
	defer s.alertMu.Unlock()
	if s.alertedDay != day {
		s.alertedDay, s.alerted = day, map[string]bool{}
	}
	s.alerted[scope+"\x00"+key] = true
}

// Record returns one stored event of agent.
func (s *Service) Record(ctx context.Context, agent, id string) (*store.SpendEvent, error) {
	return s.store.SpendGet(ctx, agent, id)
}

// ReserveParams asks for a reservation.
type ReserveParams struct {
	Agent          string
	Tier           string
	EstimateMicros int64
	Model          string
	TaskID         string
	// TTL is how long it holds unless settled; 0 means 10 minutes.
	TTL time.Duration
}

// Reserve holds an estimate against today's caps (the total, the tier's
// and the agent's). Refused past a cap with a *store.QuotaError, and
// while the emergency stop is on.
func (s *Service) Reserve(ctx context.Context, p ReserveParams) (*store.SpendReservation, error) {
	if !store.ValidTier(p.Tier) {
		return nil, store.InvalidField("tier", "%q is not a tier (frontier, mid, local, infra)", p.Tier)
	}
	if p.EstimateMicros <= 0 || p.EstimateMicros > store.MaxEventCostMicros {
		return nil, store.InvalidField("estimate_micros", "must be more than $0 and at most %s, the cap of one event", store.Dollars(store.MaxEventCostMicros))
	}
	if p.TTL == 0 {
		p.TTL = DefaultReservationTTL
	}
	if p.TTL < time.Second || p.TTL > MaxReservationTTL {
		return nil, store.InvalidField("ttl", "must be from 1s to 24h, got %s", p.TTL)
	}
	v, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	if v.stop.Stopped {
		return nil, &store.QuotaError{Subject: SubjectEmergencyStop, Description: "the fleet is under an emergency stop (" + v.stop.Reason + ")"}
	}
	now := s.clock.Now()
	agentBudget := v.budgets.agent(p.Agent)
	caps := []store.SpendCap{
		{Scope: store.ScopeTotal, CapMicros: v.budgets.total.CapMicros, Subject: subject(store.ScopeTotal, "")},
		{Scope: store.ScopeTier, Key: p.Tier, CapMicros: v.budgets.tiers[p.Tier].CapMicros, Subject: subject(store.ScopeTier, p.Tier)},
		{Scope: store.ScopeAgent, Key: p.Agent, CapMicros: agentBudget.CapMicros, Subject: subject(store.ScopeAgent, p.Agent)},
	}
	r, err := s.store.SpendReserve(ctx, &store.SpendReserveParams{
		Reservation: &store.SpendReservation{
			ID: uuid.Must(uuid.NewV7()).String(), Agent: p.Agent, Tier: p.Tier, Model: p.Model, TaskID: p.TaskID,
			EstimateMicros: p.EstimateMicros, Day: s.DayOf(now), ExpiresAt: now.Add(p.TTL),
		},
		Caps: caps,
		Now:  now,
	})
	if err != nil {
		return nil, err
	}
	// The gate sees the reservation at once on this replica.
	if _, err := s.refresh(ctx, true); err != nil {
		s.log.WarnContext(ctx, "budget: refreshing after a reservation failed", "err", err)
	}
	return r, nil
}

// Reservation returns one reservation.
func (s *Service) Reservation(ctx context.Context, id string) (*store.SpendReservation, error) {
	return s.store.SpendReservationGet(ctx, id)
}

// Settle ends a reservation. With actual, it records the spend and drops
// the estimate in one transaction (idempotent on the event's id, and the
// spend is recorded even when the reservation already expired); without,
// it releases the estimate.
func (s *Service) Settle(ctx context.Context, reservationID string, actual *Event) (*store.SpendEvent, bool, error) {
	if actual == nil {
		if _, err := s.store.SpendRelease(ctx, &store.SpendReleaseParams{ID: reservationID, Now: s.clock.Now()}); err != nil {
			return nil, false, err
		}
		if _, err := s.refresh(ctx, true); err != nil {
			s.log.WarnContext(ctx, "budget: refreshing after a release failed", "err", err)
		}
		if s.cfg.Queue != nil {
			s.cfg.Queue.WakeClaimers()
		}
		return nil, false, nil
	}
	res, err := s.record(ctx, []*Event{actual}, reservationID)
	if err != nil {
		return nil, false, err
	}
	return s.one(ctx, res, actual)
}

// ReportOne records one event; a duplicate (the same call sent again)
// answers with the stored record, and an id the agent already used for
// different content is refused with a *store.SpendConflictError naming
// what differs.
func (s *Service) ReportOne(ctx context.Context, e *Event) (*store.SpendEvent, bool, error) {
	res, err := s.Report(ctx, []*Event{e})
	if err != nil {
		return nil, false, err
	}
	return s.one(ctx, res, e)
}

// one is the answer to a report of the single event e.
func (s *Service) one(ctx context.Context, res *ReportResult, e *Event) (*store.SpendEvent, bool, error) {
	if len(res.Conflicts) > 0 {
		return nil, false, &store.SpendConflictError{SpendConflict: res.Conflicts[0]}
	}
	if res.Duplicates[0] {
		stored, err := s.store.SpendGet(ctx, e.Agent, e.ID)
		return stored, true, err
	}
	return res.Records[0], false, nil
}

// Void appends the reversal of agent's event id: the ledger keeps both,
// and every report, budget, live counter and the emergency stop's
// threshold sees the net from then on. Voiding a voided event is
// ErrAlreadyExists. A claim gate the event had closed (the agent's cap)
// opens at once; an emergency stop stays on until an operator rearms it,
// and a rearm then holds while the net is under the threshold.
func (s *Service) Void(ctx context.Context, agent, id, reason, by string) (*store.SpendEvent, error) {
	ev, err := s.store.SpendVoid(ctx, &store.SpendVoidParams{Agent: agent, ID: id, Reason: reason, VoidedBy: by, Now: s.clock.Now()})
	if err != nil {
		return nil, err
	}
	ctx = context.WithoutCancel(ctx)
	s.log.WarnContext(ctx, "spend event voided", "agent", agent, "id", id, "cost_micros", ev.CostMicros, "day", ev.Day, "by", by, "reason", reason)
	if s.cfg.OnRecorded != nil && ev.CostMicros != 0 {
		s.cfg.OnRecorded(ctx, ev.Day, []CounterEntry{{Agent: ev.Agent, Tier: ev.Tier, Model: ev.Model, Provider: ev.Provider, CostMicros: -ev.CostMicros}})
	}
	if _, err := s.refresh(ctx, true); err != nil {
		s.log.WarnContext(ctx, "budget: refreshing after a void failed", "err", err)
	}
	if s.cfg.Queue != nil {
		s.cfg.Queue.WakeClaimers()
	}
	return ev, nil
}

// DayTotals is one day's spend from the rollups: what the live counters
// are rebuilt from.
func (s *Service) DayTotals(ctx context.Context, day string) (total int64, byAgent, byTier, byModel map[string]int64, err error) {
	st, err := s.store.SpendStanding(ctx, &store.SpendStandingParams{Day: day, Now: s.clock.Now()})
	if err != nil {
		return 0, nil, nil, nil, err
	}
	return st.Spent[store.DimTotal][""], st.Spent[store.DimAgent], st.Spent[store.DimTier], st.Spent[store.DimModel], nil
}
