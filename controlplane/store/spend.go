package store

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// SpendStore is the spend ledger: LLM calls recorded once by their
// reporter's id, rolled up per day in the same transaction, the day's
// budgets, open reservations against their caps, the alerts raised and the
// emergency stop. Days are opaque "YYYY-MM-DD" strings computed by the
// caller in its configured time zone: a store knows nothing of zones, so
// every driver agrees on which day an event counts against.
type SpendStore interface {
	// SpendRecord inserts events whose (Agent, ID) is not stored yet (a
	// key repeated within the batch counts once, the first occurrence
	// wins) and adds each new one to its day's rollups (SpendRollups) in
	// the same transaction. Ids are the reporting agent's own: two agents
	// sending the same id record two events. When ReleaseReservation is
	// set, that reservation is deleted in the same transaction too (unless
	// an event was refused as a rewrite), so a reader sees either the
	// estimate or the actual, never both or neither. Duplicates[i] says whether Events[i] repeated a stored (or
	// earlier) event with the same content; an event whose key is taken by
	// different content is not stored and is listed in Conflicts instead
	// (a retry is idempotent, a rewrite is refused). An event without an
	// ID, Agent, Model, Tier or Day, or with an amount outside the
	// per-event limits, is a FieldError and nothing is stored; so is a
	// batch that would take a day's rollup past MaxAgentDayMicros for an
	// agent or past the int64 range (the sums are checked, never wrapped).
	SpendRecord(ctx context.Context, params *SpendRecordParams) (*SpendRecordResult, error)

	// SpendGet returns one stored event of agent, with its void if it has
	// one, or ErrNotFound.
	SpendGet(ctx context.Context, agent, id string) (*SpendEvent, error)

	// SpendVoid appends the reversal of a stored event: the event stays,
	// the void is stored with its reason, and the event's amounts are
	// taken off its day's rollups in the same transaction, so every
	// report, budget and threshold sees the net. ErrNotFound for an
	// unknown event; ErrAlreadyExists when it is voided already.
	SpendVoid(ctx context.Context, params *SpendVoidParams) (*SpendEvent, error)

	// SpendRollupQuery sums the day rollups of one dimension over
	// [FromDay, ToDay], reading only the rollups, so its cost does not
	// grow with the number of events.
	SpendRollupQuery(ctx context.Context, params *SpendRollupQueryParams) (*SpendRollupResult, error)

	// SpendRollupAdd adds rows to the rollups directly. It exists to seed
	// benchmarks and imports; SpendRecord maintains the rollups itself.
	SpendRollupAdd(ctx context.Context, rows []SpendRollup) error

	// SpendStanding returns one day's spend per budget scope (from the
	// rollups) and the estimates of reservations open at Now (ExpiresAt >
	// Now), as one consistent snapshot.
	SpendStanding(ctx context.Context, params *SpendStandingParams) (*SpendStanding, error)

	// SpendReserve holds an estimate for Day, atomically with checking
	// the caps: for each cap, the scope's recorded spend plus its open
	// reservations plus Estimate must not exceed CapMicros, else a
	// *QuotaError naming the cap's Subject and nothing is stored.
	// Concurrent reservers are serialised per day, so together they never
	// overshoot a cap. Reservations that expired at Now are dropped.
	SpendReserve(ctx context.Context, params *SpendReserveParams) (*SpendReservation, error)

	// SpendRelease deletes an open reservation; ErrNotFound when it is
	// unknown or already settled (an expired one is released quietly).
	SpendRelease(ctx context.Context, params *SpendReleaseParams) (*SpendReservation, error)

	// SpendReservationGet returns one reservation (even an expired one not
	// yet dropped) or ErrNotFound.
	SpendReservationGet(ctx context.Context, id string) (*SpendReservation, error)

	// BudgetSet stores a budget, replacing the one of the same scope and
	// key.
	BudgetSet(ctx context.Context, b *Budget) (*Budget, error)

	// BudgetList returns every stored budget, by scope then key.
	BudgetList(ctx context.Context) ([]*Budget, error)

	// SpendAlertRaise records an alert for (Day, Scope, Key) unless one is
	// already recorded; raised reports whether this call recorded it, so
	// an alert goes out once per day per scope across replicas.
	SpendAlertRaise(ctx context.Context, a *SpendAlert) (raised bool, err error)

	// SpendAlertList returns the alerts raised on day, oldest first.
	SpendAlertList(ctx context.Context, day string) ([]*SpendAlert, error)

	// EmergencyStopGet returns the emergency stop's state (Stopped false
	// when it was never pulled).
	EmergencyStopGet(ctx context.Context) (*EmergencyStop, error)

	// EmergencyStopStart sets the stop unless it is on already; started
	// reports whether this call set it. The state returned is the stored
	// one (the first reason when it was on).
	EmergencyStopStart(ctx context.Context, params *EmergencyStopStartParams) (state *EmergencyStop, started bool, err error)

	// EmergencyStopNotePaused records, while the stop is on, that it
	// paused the queue and how many tasks, so that a rearm resumes only
	// what the stop paused.
	EmergencyStopNotePaused(ctx context.Context, params *EmergencyStopNotePausedParams) error

	// EmergencyStopRearm clears the stop and returns the state it had, so
	// exactly one of several concurrent rearms sees Stopped true.
	EmergencyStopRearm(ctx context.Context, params *EmergencyStopRearmParams) (*EmergencyStop, error)
}

// Spend tiers as stored.
const (
	TierFrontier = "frontier"
	TierMid      = "mid"
	TierLocal    = "local"
	TierInfra    = "infra"
)

// Budget scopes as stored.
const (
	ScopeTotal = "total"
	ScopeTier  = "tier"
	ScopeAgent = "agent"
)

// Rollup dimensions. The single ones break a day down by one field; the
// composite ones ("agent/model": key "forge" + RollupSep + "claude-...")
// serve a breakdown filtered by agent or tier.
const (
	DimTotal    = "total"
	DimAgent    = "agent"
	DimModel    = "model"
	DimProvider = "provider"
	DimTier     = "tier"
	DimTask     = "task"
)

// RollupSep joins the parts of a composite rollup key.
const RollupSep = "\x1f"

// CompositeDim names the rollup of dimension dim within outer (agent or
// tier): "agent/model".
func CompositeDim(outer, dim string) string { return outer + "/" + dim }

// Limits on the ledger's amounts. An event is capped however it is priced,
// and a day's spend per agent has a ceiling far above any real day, so
// that no agent can fill the shared sums (the day's total, a tier's, a
// model's) every other agent's report adds to: reaching int64's range on a
// shared row would take thousands of agents at their ceiling, and even
// then the sum is refused, not wrapped.
const (
	// MaxEventCostMicros is the most one event may cost: $1,000,000.
	MaxEventCostMicros = 1_000_000_000_000
	// MaxEventTokens bounds the input and the output tokens of one event:
	// a billion each, far past any model's context.
	MaxEventTokens = 1_000_000_000
	// MaxAgentDayMicros is the most one agent may spend in a day:
	// $1,000,000,000. The migrations hold the same number as a CHECK.
	MaxAgentDayMicros = 1_000_000_000_000_000
)

// SpendEvent is one recorded call.
type SpendEvent struct {
	ID             string
	Agent          string
	Host           string
	Model          string
	Provider       string
	Tier           string
	InputTokens    int64
	OutputTokens   int64
	CostMicros     int64
	PricedByServer bool
	TaskID         string
	OccurredAt     time.Time
	// Day is the day it counts against, in the caller's zone.
	Day        string
	RecordedAt time.Time
	// Void is the event's reversal, when an operator voided it (read by
	// SpendGet only).
	Void *SpendVoidRecord
}

// SpendVoidRecord is a stored reversal of one event.
type SpendVoidRecord struct {
	Reason   string
	VoidedBy string
	VoidedAt time.Time
}

// SpendVoidParams are SpendVoid's arguments.
type SpendVoidParams struct {
	Agent    string
	ID       string
	Reason   string
	VoidedBy string
	Now      time.Time
}

// CheckSpendVoid validates a void before a driver stores it.
func CheckSpendVoid(p *SpendVoidParams) error {
	switch {
	case p == nil:
		return InvalidField("params", "missing")
	case p.Agent == "":
		return InvalidField("agent", "required: ids are per agent")
	case p.ID == "":
		return InvalidField("id", "required")
	case strings.TrimSpace(p.Reason) == "":
		return InvalidField("reason", "required: a void is audited")
	case p.VoidedBy == "":
		return InvalidField("voided_by", "required")
	}
	return nil
}

// ReverseRollups are the rollup rows that take ev off its day: its own
// rows, negated.
func ReverseRollups(ev *SpendEvent) []SpendRollup {
	rows := SpendRollups([]*SpendEvent{ev})
	for i := range rows {
		t := &rows[i].SpendTotals
		t.CostMicros, t.Events, t.InputTokens, t.OutputTokens = -t.CostMicros, -t.Events, -t.InputTokens, -t.OutputTokens
	}
	return rows
}

// SpendConflict is an event whose (agent, id) was taken by different
// content: Fields names what differs.
type SpendConflict struct {
	Index  int
	Agent  string
	ID     string
	Fields []string
}

// SpendConflictError refuses a rewrite of a recorded event. It matches
// ErrAlreadyExists.
type SpendConflictError struct{ SpendConflict }

func (e *SpendConflictError) Error() string {
	return fmt.Sprintf("spend event %s of agent %s is already recorded with a different %s; an id is recorded once (send a new id for a new call)",
		e.ID, e.Agent, strings.Join(e.Fields, ", "))
}

// Is makes errors.Is(err, ErrAlreadyExists) true.
func (e *SpendConflictError) Is(target error) bool { return target == ErrAlreadyExists }

// SpendDiff names the fields in which incoming differs from stored, an
// event of the same agent and id; nil when it is the same call sent again
// (a retry). A cost the server priced is compared by its tokens only, so
// a retry stays a retry after the price table changes; the time is
// compared by the day it counts against, so a retry stamped a moment
// later (factory spend report --id without --at) stays a retry while a
// move to another day's budget does not.
func SpendDiff(stored, incoming *SpendEvent) []string {
	var out []string
	add := func(differs bool, name string) {
		if differs {
			out = append(out, name)
		}
	}
	add(stored.Host != incoming.Host, "host")
	add(stored.Model != incoming.Model, "model")
	add(stored.Provider != incoming.Provider, "provider")
	add(stored.Tier != incoming.Tier, "tier")
	add(stored.InputTokens != incoming.InputTokens, "input_tokens")
	add(stored.OutputTokens != incoming.OutputTokens, "output_tokens")
	add(stored.PricedByServer != incoming.PricedByServer ||
		(!stored.PricedByServer && stored.CostMicros != incoming.CostMicros), "cost_micros")
	add(stored.TaskID != incoming.TaskID, "task_id")
	add(stored.Day != incoming.Day, "occurred_at")
	return out
}

// SatAdd is a+b, held at the int64 range instead of wrapping: for sums
// compared against limits, where an overflow must read as "too much".
func SatAdd(a, b int64) int64 {
	s := a + b
	switch {
	case a > 0 && b > 0 && s < 0:
		return math.MaxInt64
	case a < 0 && b < 0 && s >= 0:
		return math.MinInt64
	}
	return s
}

// SpendRecordParams are SpendRecord's arguments. RecordedAt of each event
// is set from Now.
type SpendRecordParams struct {
	Events []*SpendEvent
	// ReleaseReservation, when set, is deleted in the same transaction.
	ReleaseReservation string
	Now                time.Time
}

// SpendRecordResult says which events were new.
type SpendRecordResult struct {
	Recorded   int
	Duplicates []bool
	// Conflicts are the events refused because their key holds different
	// content, in batch order; they are neither recorded nor duplicates.
	Conflicts []SpendConflict
}

// SpendTotals sums events.
type SpendTotals struct {
	CostMicros   int64
	Events       int64
	InputTokens  int64
	OutputTokens int64
}

// Add adds o to t, held at the int64 range (never wrapped): a held sum
// is refused by the store when it is added to a rollup.
func (t *SpendTotals) Add(o SpendTotals) {
	t.CostMicros = SatAdd(t.CostMicros, o.CostMicros)
	t.Events = SatAdd(t.Events, o.Events)
	t.InputTokens = SatAdd(t.InputTokens, o.InputTokens)
	t.OutputTokens = SatAdd(t.OutputTokens, o.OutputTokens)
}

// SpendRollup is one row of the day rollups.
type SpendRollup struct {
	Day       string
	Dimension string
	Key       string
	SpendTotals
}

// SpendRollups sums events into their rollup rows, one row per (day,
// dimension, key) in a stable order, so a batch upserts each row once.
// Every driver maintains the rollups with it.
func SpendRollups(events []*SpendEvent) []SpendRollup {
	type k struct{ day, dim, key string }
	sums := make(map[k]*SpendTotals)
	var order []k
	add := func(day, dim, key string, t SpendTotals) {
		kk := k{day, dim, key}
		s := sums[kk]
		if s == nil {
			s = &SpendTotals{}
			sums[kk] = s
			order = append(order, kk)
		}
		s.Add(t)
	}
	for _, e := range events {
		t := SpendTotals{CostMicros: e.CostMicros, Events: 1, InputTokens: e.InputTokens, OutputTokens: e.OutputTokens}
		single := map[string]string{DimAgent: e.Agent, DimModel: e.Model, DimProvider: e.Provider, DimTier: e.Tier, DimTask: e.TaskID}
		add(e.Day, DimTotal, "", t)
		for _, dim := range []string{DimAgent, DimModel, DimProvider, DimTier, DimTask} {
			add(e.Day, dim, single[dim], t)
		}
		for _, outer := range []string{DimAgent, DimTier} {
			for _, dim := range []string{DimAgent, DimModel, DimProvider, DimTier, DimTask} {
				if dim != outer {
					add(e.Day, CompositeDim(outer, dim), single[outer]+RollupSep+single[dim], t)
				}
			}
		}
	}
	// A stable order also keeps concurrent PostgreSQL upserts from
	// deadlocking on each other's rows.
	sort.Slice(order, func(i, j int) bool {
		a, b := order[i], order[j]
		if a.day != b.day {
			return a.day < b.day
		}
		if a.dim != b.dim {
			return a.dim < b.dim
		}
		return a.key < b.key
	})
	out := make([]SpendRollup, len(order))
	for i, kk := range order {
		out[i] = SpendRollup{Day: kk.day, Dimension: kk.dim, Key: kk.key, SpendTotals: *sums[kk]}
	}
	return out
}

// SpendRollupGroup says how SpendRollupQuery groups the rows it sums.
type SpendRollupGroup int

// The groupings.
const (
	// GroupNone sums everything matched into one row.
	GroupNone SpendRollupGroup = iota
	// GroupKey sums per key, largest cost first (then key).
	GroupKey
	// GroupDay sums per day, in day order.
	GroupDay
)

// SpendRollupQueryParams are SpendRollupQuery's arguments.
type SpendRollupQueryParams struct {
	Dimension string
	// Key, when set, matches that key only.
	Key string
	// KeyPrefix, when set, matches keys starting with it (and Key is
	// ignored); the prefix is cut off the keys returned.
	KeyPrefix string
	FromDay   string
	ToDay     string
	Group     SpendRollupGroup
	// Limit caps the rows returned with GroupKey (0: all); LeftOut then
	// counts the rest.
	Limit int
}

// SpendRollupRow is one summed row: Key is the key (GroupKey) or the day
// (GroupDay), empty for GroupNone.
type SpendRollupRow struct {
	Key string
	SpendTotals
}

// SpendRollupResult is SpendRollupQuery's answer. With GroupNone it has
// exactly one row (zeros when nothing matched).
type SpendRollupResult struct {
	Rows    []SpendRollupRow
	LeftOut int
}

// CheckSpendRollupQuery validates a query.
func CheckSpendRollupQuery(p *SpendRollupQueryParams) error {
	switch {
	case p == nil:
		return InvalidField("params", "missing")
	case p.Dimension == "":
		return InvalidField("dimension", "required")
	case p.FromDay == "" || p.ToDay == "":
		return InvalidField("from_day", "both days of the range are required")
	case p.FromDay > p.ToDay:
		return InvalidField("from_day", "%s is after to_day %s", p.FromDay, p.ToDay)
	case p.Limit < 0:
		return InvalidField("limit", "must not be negative")
	}
	return nil
}

// SpendStandingParams are SpendStanding's arguments.
type SpendStandingParams struct {
	Day string
	Now time.Time
}

// SpendStanding is a day's spend and open reservations. Spent is keyed by
// dimension (total, agent, tier, model) then key (empty for the total);
// Reserved by scope (total, agent, tier) then key.
type SpendStanding struct {
	Spent    map[string]map[string]int64
	Reserved map[string]map[string]int64
}

// NewSpendStanding is an empty standing with every dimension and scope
// present, as the drivers fill it.
func NewSpendStanding() *SpendStanding {
	return &SpendStanding{
		Spent: map[string]map[string]int64{
			DimTotal: {}, DimAgent: {}, DimTier: {}, DimModel: {},
		},
		Reserved: map[string]map[string]int64{
			ScopeTotal: {}, ScopeAgent: {}, ScopeTier: {},
		},
	}
}

// AddReserved counts an open reservation against its agent, its tier and
// the total.
func (s *SpendStanding) AddReserved(agent, tier string, estimate int64) {
	s.Reserved[ScopeTotal][""] = SatAdd(s.Reserved[ScopeTotal][""], estimate)
	s.Reserved[ScopeAgent][agent] = SatAdd(s.Reserved[ScopeAgent][agent], estimate)
	s.Reserved[ScopeTier][tier] = SatAdd(s.Reserved[ScopeTier][tier], estimate)
}

// SpendCap is one hard cap a reservation is checked against.
type SpendCap struct {
	// Scope and Key name the budget (ScopeTotal with an empty key,
	// ScopeTier with a tier, ScopeAgent with an agent).
	Scope string
	Key   string
	// CapMicros is the cap; 0 means none and is skipped.
	CapMicros int64
	// Subject names the cap in a refusal ("budget:agent:forge").
	Subject string
}

// SpendReservation is an estimate held against the caps.
type SpendReservation struct {
	ID             string
	Agent          string
	Tier           string
	Model          string
	TaskID         string
	EstimateMicros int64
	Day            string
	CreatedAt      time.Time
	ExpiresAt      time.Time
}

// SpendReserveParams are SpendReserve's arguments.
type SpendReserveParams struct {
	Reservation *SpendReservation
	Caps        []SpendCap
	Now         time.Time
}

// SpendReleaseParams are SpendRelease's arguments.
type SpendReleaseParams struct {
	ID  string
	Now time.Time
}

// Budget is one scope's daily limits in micro-dollars; 0 means none
// (a CapMicros of 0 is no cap, not a cap of $0).
type Budget struct {
	Scope           string
	Key             string
	TargetMicros    int64
	AlertMicros     int64
	CapMicros       int64
	EmergencyMicros int64
	// Off turns a tier off (tier scope only): its tasks are not claimed,
	// whatever the day's spend, until it is turned on again.
	Off       bool
	UpdatedAt time.Time
}

// CheckBudget validates a budget before a driver stores it.
func CheckBudget(b *Budget) error {
	switch {
	case b == nil:
		return InvalidField("budget", "missing")
	case b.Scope != ScopeTotal && b.Scope != ScopeTier && b.Scope != ScopeAgent:
		return InvalidField("budget.scope", "unknown scope %q", b.Scope)
	case b.Scope == ScopeTotal && b.Key != "":
		return InvalidField("budget.key", "the total budget has no key, got %q", b.Key)
	case b.Scope == ScopeTier && !ValidTier(b.Key):
		return InvalidField("budget.key", "%q is not a tier (frontier, mid, local, infra)", b.Key)
	case b.TargetMicros < 0 || b.AlertMicros < 0 || b.CapMicros < 0 || b.EmergencyMicros < 0:
		return InvalidField("budget", "amounts must not be negative")
	case b.Scope != ScopeTotal && b.EmergencyMicros != 0:
		return InvalidField("budget.emergency_micros", "only the total budget has an emergency threshold")
	case b.Scope != ScopeTier && b.Off:
		return InvalidField("budget.off", "only a tier can be turned off")
	}
	return nil
}

// ValidTier says whether t names a tier (frontier, mid, local, infra).
func ValidTier(t string) bool {
	return t == TierFrontier || t == TierMid || t == TierLocal || t == TierInfra
}

// SpendAlert is an alert threshold crossed, once per day per scope.
type SpendAlert struct {
	Day             string
	Scope           string
	Key             string
	ThresholdMicros int64
	SpentMicros     int64
	RaisedAt        time.Time
}

// EmergencyStop is the emergency stop's durable state.
type EmergencyStop struct {
	Stopped   bool
	Reason    string
	StoppedBy string
	StoppedAt time.Time
	// PausedQueue says the stop paused the queue (it was running), so a
	// rearm resumes it; PausedTasks is how many tasks that paused.
	PausedQueue bool
	PausedTasks int64
}

// EmergencyStopStartParams are EmergencyStopStart's arguments.
type EmergencyStopStartParams struct {
	Reason    string
	StoppedBy string
	Now       time.Time
}

// EmergencyStopNotePausedParams are EmergencyStopNotePaused's arguments.
type EmergencyStopNotePausedParams struct {
	PausedQueue bool
	PausedTasks int64
}

// EmergencyStopRearmParams are EmergencyStopRearm's arguments.
type EmergencyStopRearmParams struct {
	Now time.Time
	// Budget, when set, is stored in the same transaction as the rearm
	// (the total's raised emergency threshold), and only if the stop was
	// on; it is checked as BudgetSet checks it.
	Budget *Budget
}

// CheckSpendEvents validates events before a driver stores them.
func CheckSpendEvents(events []*SpendEvent) error {
	for i, e := range events {
		switch {
		case e == nil:
			return InvalidField("events", "event %d is missing", i)
		case e.ID == "":
			return InvalidField("event.id", "event %d has no id", i)
		case e.Agent == "":
			return InvalidField("event.agent", "event %s has no agent", e.ID)
		case e.Model == "":
			return InvalidField("event.model", "event %s has no model", e.ID)
		case !ValidTier(e.Tier):
			return InvalidField("event.tier", "event %s: %q is not a tier", e.ID, e.Tier)
		case len(e.Day) != len("2006-01-02"):
			return InvalidField("event.day", "event %s: day %q is not YYYY-MM-DD", e.ID, e.Day)
		case e.CostMicros < 0 || e.InputTokens < 0 || e.OutputTokens < 0:
			return InvalidField("event.cost_micros", "event %s: amounts must not be negative", e.ID)
		case e.CostMicros > MaxEventCostMicros:
			return InvalidField("event.cost_micros", "event %s: %s is over the cap of %s per event", e.ID, Dollars(e.CostMicros), Dollars(MaxEventCostMicros))
		case e.InputTokens > MaxEventTokens:
			return InvalidField("event.input_tokens", "event %s: %d tokens is over the limit of %d per event", e.ID, e.InputTokens, MaxEventTokens)
		case e.OutputTokens > MaxEventTokens:
			return InvalidField("event.output_tokens", "event %s: %d tokens is over the limit of %d per event", e.ID, e.OutputTokens, MaxEventTokens)
		case strings.Contains(e.Agent, RollupSep) || strings.Contains(e.Tier, RollupSep):
			return InvalidField("event.agent", "event %s: agent holds a control character", e.ID)
		}
	}
	return nil
}

// CheckSpendReservation validates a reservation before a driver stores it.
func CheckSpendReservation(r *SpendReservation) error {
	switch {
	case r == nil:
		return InvalidField("reservation", "missing")
	case r.ID == "":
		return InvalidField("reservation_id", "required")
	case r.Agent == "":
		return InvalidField("agent", "required")
	case !ValidTier(r.Tier):
		return InvalidField("tier", "%q is not a tier", r.Tier)
	case r.EstimateMicros <= 0:
		return InvalidField("estimate_micros", "must be more than 0")
	case len(r.Day) != len("2006-01-02"):
		return InvalidField("day", "%q is not YYYY-MM-DD", r.Day)
	case r.ExpiresAt.IsZero():
		return InvalidField("ttl", "the reservation needs an expiry")
	}
	return nil
}

// SpendKey is an event's key in the ledger: ids are per agent.
type SpendKey struct{ Agent, ID string }

// FirstSpendIDs marks, for each event, whether an earlier event of the
// batch has the same (agent, id): drivers store only the first. A repeat
// with different content is returned as a conflict (its Duplicates entry
// stays false).
func FirstSpendIDs(events []*SpendEvent) (repeated []bool, conflicts []SpendConflict) {
	seen := make(map[SpendKey]*SpendEvent, len(events))
	repeated = make([]bool, len(events))
	for i, e := range events {
		k := SpendKey{e.Agent, e.ID}
		first, ok := seen[k]
		if !ok {
			seen[k] = e
			continue
		}
		repeated[i] = true
		if diff := SpendDiff(first, e); len(diff) > 0 {
			conflicts = append(conflicts, SpendConflict{Index: i, Agent: e.Agent, ID: e.ID, Fields: diff})
		}
	}
	return repeated, conflicts
}

// SortConflicts puts conflicts in batch order.
func SortConflicts(c []SpendConflict) {
	sort.Slice(c, func(i, j int) bool { return c[i].Index < c[j].Index })
}

// DaySumError is the refusal of a report that would take a day's sum past
// the ledger's limits; it is a FieldError on the event's cost, so a relay
// drops the event instead of retrying it forever.
func DaySumError(agents []string) error {
	return InvalidField("event.cost_micros",
		"recording this would take the day's spend of %s past the ledger's ceiling of %s per agent per day, or a day's sum past the largest amount the ledger holds; refused, nothing recorded",
		strings.Join(agents, ", "), Dollars(MaxAgentDayMicros))
}

// SumRangeError is the refusal of a read whose sum would pass the int64
// range.
func SumRangeError() error {
	return InvalidField("from_day", "the spend summed over this range passes the largest amount the ledger can add up; ask for a shorter range")
}

// CheckCap is the rule every driver applies to a reservation: the scope's
// spend, its open reservations and the new estimate together must not
// exceed the cap.
func CheckCap(c SpendCap, spent, reserved, estimate int64) error {
	if c.CapMicros <= 0 || SatAdd(SatAdd(spent, reserved), estimate) <= c.CapMicros {
		return nil
	}
	return &QuotaError{Subject: c.Subject, Description: fmt.Sprintf(
		"reserving %s would cross the daily cap of %s (spent %s, reserved %s)",
		Dollars(estimate), Dollars(c.CapMicros), Dollars(spent), Dollars(reserved))}
}

// Dollars formats micro-dollars as "$12.345678", trimmed to cents when
// exact: for messages, never for arithmetic.
func Dollars(micros int64) string {
	sign := ""
	if micros < 0 {
		sign, micros = "-", -micros
	}
	whole, frac := micros/1_000_000, micros%1_000_000
	if frac%10_000 == 0 {
		return fmt.Sprintf("%s$%d.%02d", sign, whole, frac/10_000)
	}
	return fmt.Sprintf("%s$%d.%06d", sign, whole, frac)
}

// ScopeDimension is the rollup dimension a budget scope reads.
func ScopeDimension(scope string) string {
	switch scope {
	case ScopeTier:
		return DimTier
	case ScopeAgent:
		return DimAgent
	}
	return DimTotal
}
