// Package approval is the human-in-the-loop gate (runbook §9): agents ask
// before risky actions, policy approves the harmless ones at once, an
// operator decides the rest, and the waiting agent hears the decision by
// push the moment it is made. Every request has a deadline at which a safe
// default is applied and recorded as an expiry, never as a human decision.
// A request that waits for a person fails closed: its default is deny
// whoever asks (a default of approve is refused), and its deadline is at
// least MinTimeout away, so that a person has time to look.
//
// Decisions are applied by the store atomically and once (a conditional
// update on a PENDING request); a request gating a task moves the task in
// the same transaction, and the task changes are published through the
// queue so that claimers wake.
package approval

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/notify"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
)

// ErrPermissionDenied is a decision the caller may not make: it is not an
// operator, or it made the request. The gRPC boundary answers
// PERMISSION_DENIED.
var ErrPermissionDenied = errors.New("permission denied")

// Clock tells the time. Tests inject a fake one so that deadlines pass
// without sleeping.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now().UTC() }

// Limits the domain relies on; the API's .proto file declares the same.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	MaxTimeout      = 30 * 24 * time.Hour
	// DefaultMinTimeout is the shortest time a request that waits for a
	// person may give one: long enough to read a card and answer it.
	DefaultMinTimeout = 5 * time.Minute
)

// Config configures a Service.
type Config struct {
	Store  store.Store
	Clock  Clock
	Logger *slog.Logger
	// Publisher carries approval cards to webhooks and the event stream;
	// nil means notify.Discard.
	Publisher notify.Publisher
	// Policy decides tiers and auto-approval; the zero value means
	// DefaultPolicy().
	Policy Policy
	// Queue, when set, hears the task changes decisions make (so claimers
	// wake for an approved task), and gates tasks as they are created.
	Queue *queue.Service

	// DefaultTimeout is the deadline of a request that names none.
	DefaultTimeout time.Duration
	// MinTimeout is the shortest timeout (or time to a deadline) a request
	// that waits for a person may ask for; a shorter one is refused, naming
	// the field. Zero means DefaultMinTimeout.
	MinTimeout time.Duration
	// SweepInterval is the longest the sweeper sleeps between looks; it
	// wakes sooner for the next deadline or reminder it knows of.
	SweepInterval time.Duration
	// Decisions, when set, is the hub every approval card reaches, this
	// replica's and (through the event relay) the other replicas': Wait
	// hears a decision made on another replica from it, without polling.
	Decisions *notify.Hub
	// ConsoleURL is the operator console's address as the operator's
	// phone reaches it (https://factory.example:7421); when set, every
	// approval card carries the link to its page.
	ConsoleURL string
}

// WithDefaults returns a copy with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Publisher == nil {
		c.Publisher = notify.Discard
	}
	if c.Policy.isZero() {
		c.Policy = DefaultPolicy()
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = time.Hour
	}
	if c.MinTimeout == 0 {
		c.MinTimeout = DefaultMinTimeout
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = time.Second
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("approval: Config.Store is required")
	case c.DefaultTimeout < time.Second || c.DefaultTimeout > MaxTimeout:
		return fmt.Errorf("approval: DefaultTimeout %s outside [1s, %s]", c.DefaultTimeout, MaxTimeout)
	case c.MinTimeout <= 0 || c.MinTimeout > c.DefaultTimeout:
		// A gated task's request takes the default timeout: it must
		// satisfy the minimum too.
		return fmt.Errorf("approval: the minimum timeout %s must be above 0 and at most the default timeout %s", c.MinTimeout, c.DefaultTimeout)
	case c.SweepInterval <= 0:
		return errors.New("approval: SweepInterval must be positive")
	}
	return c.Policy.Validate()
}

// Service is the approval domain.
type Service struct {
	cfg   Config
	store store.Store
	clock Clock
	log   *slog.Logger
	pub   notify.Publisher
	hub   *hub
}

// New returns a Service. With a Queue configured, it installs the queue's
// create hook so that tasks needing approval are gated.
func New(cfg Config) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, store: cfg.Store, clock: cfg.Clock, log: cfg.Logger, pub: cfg.Publisher, hub: newHub()}
	if cfg.Queue != nil {
		cfg.Queue.SetCreateHook(s.GateTasks)
	}
	return s, nil
}

// Now is the service's clock, for time left on a request.
func (s *Service) Now() time.Time { return s.clock.Now() }

// RequestParams is a new request as the API gives it.
type RequestParams struct {
	What          string
	Why           string
	Agent         string
	Risk          store.ApprovalRisk
	Tier          int32
	Kind          string
	PayloadJSON   string
	PayloadSHA256 string // optional; must match when set
	// AmountMicros is what the action spends, in micro-dollars (0: nothing
	// stated); above the policy's spend threshold the request is at least
	// the spend tier, whatever its kind.
	AmountMicros int64
	// Deadline, or else Timeout from now, or else the default timeout. For
	// a request that waits for a person, at least MinTimeout from now.
	Deadline time.Time
	Timeout  time.Duration
	// DefaultOnTimeout is applied at the deadline; Unspecified means deny.
	// APPROVE is accepted only where policy approves the request at once
	// anyway: a request that waits for a person is denied at its deadline.
	DefaultOnTimeout store.ApprovalDecision
	TaskID           string
}

// Request stores a request: APPROVED at once by policy for a tier up to
// the auto-approve tier, else PENDING. Either way a card goes out.
func (s *Service) Request(ctx context.Context, p RequestParams) (*store.Approval, error) {
	c, err := s.build(p)
	if err != nil {
		return nil, err
	}
	if s.cfg.Policy.AutoApproves(c.Tier) {
		c.State, c.AutoApproved, c.Outcome, c.DecidedBy, c.DecidedAt = store.ApprovalApproved, true, store.DecisionApprove, store.DecidedByPolicy, s.clock.Now()
		c.ReminderAt = time.Time{}
	}
	a, err := s.store.ApprovalCreate(ctx, &store.ApprovalCreateParams{Approval: c, Now: s.clock.Now()})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "approval requested", "approval", a.ID, "agent", a.Agent, "tier", a.Tier, "state", a.State.String())
	if a.Final() {
		s.hub.publish(a)
		s.notify(ctx, a, "auto-approved")
	} else {
		s.notify(ctx, a, "requested")
	}
	return a, nil
}

// build checks a request and applies policy: the tier, the payload's
// hash, the deadline and the reminder. The request it returns is PENDING.
func (s *Service) build(p RequestParams) (*store.ApprovalCreate, error) {
	now := s.clock.Now()
	p.What = strings.TrimSpace(p.What)
	switch {
	case p.What == "":
		return nil, store.InvalidField("what", "must not be blank")
	case p.Agent == "":
		return nil, store.InvalidField("agent", "required")
	case p.Risk < store.RiskLow || p.Risk > store.RiskHigh:
		return nil, store.InvalidField("risk", "must be LOW, MEDIUM or HIGH")
	case p.Tier < 0 || p.Tier > 3:
		return nil, store.InvalidField("tier", "must be 0-3, got %d", p.Tier)
	case !p.Deadline.IsZero() && p.Timeout != 0:
		return nil, store.InvalidField("deadline", "set deadline or timeout, not both")
	case p.Timeout < 0 || p.Timeout > MaxTimeout:
		return nil, store.InvalidField("timeout", "must be between 1s and %s", MaxTimeout)
	case p.DefaultOnTimeout == store.DecisionModify:
		return nil, store.InvalidField("default_on_timeout", "a default is APPROVE or REJECT")
	case p.AmountMicros < 0:
		return nil, store.InvalidField("amount_micros", "must not be negative, got %d", p.AmountMicros)
	}
	if p.PayloadJSON == "" {
		p.PayloadJSON = "{}"
	}
	if !json.Valid([]byte(p.PayloadJSON)) {
		return nil, store.InvalidField("payload_json", "is not valid JSON")
	}
	sum := sha256.Sum256([]byte(p.PayloadJSON))
	hash := hex.EncodeToString(sum[:])
	if p.PayloadSHA256 != "" && !strings.EqualFold(p.PayloadSHA256, hash) {
		return nil, store.InvalidField("payload_sha256", "does not match the payload: its SHA-256 is %s", hash)
	}
	kind := s.cfg.Policy.CanonicalKind(p.Kind)
	tier := s.cfg.Policy.TierFor(Action{Kind: p.Kind, Declared: p.Tier, PayloadJSON: p.PayloadJSON, AmountMicros: p.AmountMicros})
	// A request policy does not approve at once waits for a person: it
	// fails closed. Silence denies it, and the person gets time to look.
	waits := !s.cfg.Policy.AutoApproves(tier)
	if waits && p.DefaultOnTimeout == store.DecisionApprove {
		return nil, store.InvalidField("default_on_timeout",
			"APPROVE is allowed only for a request policy approves at once; this %s request is Tier %d and waits for an operator, so silence denies it: leave the default unset or REJECT",
			kindOrNone(kind), tier)
	}
	deadline := p.Deadline
	switch {
	case deadline.IsZero() && p.Timeout > 0:
		if waits && p.Timeout < s.cfg.MinTimeout {
			return nil, store.InvalidField("timeout", "a Tier %d request waits for an operator: at least %s, got %s", tier, s.cfg.MinTimeout, p.Timeout)
		}
		deadline = now.Add(p.Timeout)
	case deadline.IsZero():
		deadline = now.Add(s.cfg.DefaultTimeout)
	case !deadline.After(now):
		return nil, store.InvalidField("deadline", "must be in the future")
	case waits && deadline.Sub(now) < s.cfg.MinTimeout:
		return nil, store.InvalidField("deadline", "a Tier %d request waits for an operator: at least %s from now, got %s",
			tier, s.cfg.MinTimeout, deadline.Sub(now).Round(time.Millisecond))
	}
	def := p.DefaultOnTimeout
	if def == store.DecisionUnspecified || waits {
		def = store.DecisionReject
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	c := &store.ApprovalCreate{
		ID: id.String(), What: p.What, Why: p.Why, Agent: p.Agent, Risk: p.Risk,
		Tier: tier, Kind: kind,
		PayloadJSON: p.PayloadJSON, PayloadSHA256: hash, Deadline: deadline, DefaultOnTimeout: def,
		TaskID: p.TaskID, State: store.ApprovalPending,
	}
	if f := s.cfg.Policy.ReminderFraction; f > 0 {
		c.ReminderAt = now.Add(time.Duration(f * float64(deadline.Sub(now))))
	}
	return c, nil
}

// QueueRequester is the agent of a gated task's request when an operator
// created the task with no assignee: whichever agent claims it.
const QueueRequester = "queue"

// GateTasks is the queue's create hook: a task created with
// RequiresApproval, or whose tier policy does not approve at once (its
// declared approval tier raised for its kind, read as TaskTier reads it:
// "Production-Deploy" and "deploy_production" are production_deploy; or
// for an amount_micros in its payload over the spend threshold), gets an
// approval request stored with it (what = its title, kind = its kind, at
// least Tier 2, denied at its deadline) and waits in BACKLOG for it.
//
// The request's agent, the party that may never decide it, is the agent
// that created the task. A task an operator creates asks on behalf of the
// agent that will do it (its assignee, or "queue" when whichever agent
// claims it will), so an operator who queued a production deploy at 7am
// can approve it: the gate holds the work until someone decides, and no
// agent can decide.
func (s *Service) GateTasks(ctx context.Context, tasks []*store.TaskCreate) error {
	creator, byOperator := "unknown", false
	if c, ok := access.FromContext(ctx); ok && c.Subject != "" {
		creator, byOperator = c.Subject, c.Role == store.RoleOperator
	}
	for i, t := range tasks {
		requester := creator
		if byOperator {
			requester = QueueRequester
			if t.Assignee != "" {
				requester = t.Assignee
			}
		}
		tier := s.cfg.Policy.TaskTier(Action{Kind: t.Kind, Declared: t.ApprovalTier, PayloadJSON: t.PayloadJSON})
		if !t.RequiresApproval && s.cfg.Policy.AutoApproves(tier) {
			continue
		}
		// A gated task waits for an operator: at least Tier 2, and above
		// what policy approves by itself.
		tier = min(max(tier, 2, s.cfg.Policy.AutoApproveMaxTier+1), 3)
		c, err := s.build(RequestParams{
			What: t.Title, Why: "task " + t.ID + " needs approval before it runs", Agent: requester, Risk: store.RiskHigh,
			Tier: tier, Kind: t.Kind, PayloadJSON: t.PayloadJSON,
		})
		if err != nil {
			var fe *store.FieldError
			if len(tasks) > 1 && errors.As(err, &fe) {
				return store.InvalidField(fmt.Sprintf("tasks[%d].%s", i, fe.Field), "%s", fe.Description)
			}
			return err
		}
		t.ApprovalTier = max(t.ApprovalTier, tier)
		t.Approval = c
	}
	return nil
}

// Get returns one request.
func (s *Service) Get(ctx context.Context, id string) (*store.Approval, error) {
	return s.store.ApprovalGet(ctx, id)
}

// ListParams filters List.
type ListParams struct {
	States    []store.ApprovalState
	Agent     string
	PageSize  int
	PageToken string
	// NewestFirst lists each group newest first; PageToken must come from
	// a list in the same order.
	NewestFirst bool
	// IDPrefix keeps requests whose id starts with it: a shortened id.
	IDPrefix string
}

// List returns a page of requests, PENDING first.
func (s *Service) List(ctx context.Context, p ListParams) (*store.ApprovalListResult, error) {
	size := p.PageSize
	if size <= 0 {
		size = DefaultPageSize
	}
	size = min(size, MaxPageSize)
	return s.store.ApprovalList(ctx, &store.ApprovalListParams{
		States: p.States, Agent: p.Agent, Limit: size, Cursor: p.PageToken, NewestFirst: p.NewestFirst,
		IDPrefix: p.IDPrefix,
	})
}

// Decider is who decides: the server passes the authenticated caller.
type Decider struct {
	Name     string
	Operator bool
}

// DecideParams is an operator's decision.
type DecideParams struct {
	ID           string
	Decision     store.ApprovalDecision
	Reason       string
	Instructions string
	By           Decider
}

// Decide applies a decision: operators only, never on their own request,
// and once. The gated task moves in the same transaction; waiters hear at
// once; a card goes out.
func (s *Service) Decide(ctx context.Context, p DecideParams) (*store.Approval, error) {
	p.Reason, p.Instructions = strings.TrimSpace(p.Reason), strings.TrimSpace(p.Instructions)
	switch {
	case p.Decision != store.DecisionApprove && p.Decision != store.DecisionReject && p.Decision != store.DecisionModify:
		return nil, store.InvalidField("decision", "must be APPROVE, REJECT or MODIFY")
	case p.Decision != store.DecisionApprove && p.Reason == "":
		return nil, store.InvalidField("reason", "a reason is required to %s", strings.ToLower(p.Decision.String()))
	case p.Decision == store.DecisionModify && p.Instructions == "":
		return nil, store.InvalidField("instructions", "required to modify")
	case p.Decision != store.DecisionModify && p.Instructions != "":
		return nil, store.InvalidField("instructions", "only a MODIFY decision carries instructions")
	}
	if !p.By.Operator {
		return nil, fmt.Errorf("%w: only an operator decides approvals, not %s", ErrPermissionDenied, orUnknown(p.By.Name))
	}
	if p.By.Name == "" || p.By.Name == store.DecidedByPolicy || p.By.Name == store.DecidedByTimeout {
		return nil, fmt.Errorf("%w: the decider has no usable name (%q)", ErrPermissionDenied, p.By.Name)
	}
	cur, err := s.store.ApprovalGet(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	// The requester never decides its own request, whatever token it
	// holds: an agent given an operator token is still the requester.
	if cur.Agent == p.By.Name {
		return nil, fmt.Errorf("%w: %s requested approval %s and may not decide it", ErrPermissionDenied, p.By.Name, p.ID)
	}
	res, err := s.store.ApprovalDecide(ctx, &store.ApprovalDecideParams{
		ID: p.ID, Decision: p.Decision, DecidedBy: p.By.Name, Reason: p.Reason, Instructions: p.Instructions, Now: s.clock.Now(),
	})
	if err != nil {
		return nil, err
	}
	s.applied(ctx, res, "decided")
	return res.Approval, nil
}

// applied spreads the news of a decision or expiry: waiters, the queue,
// the card.
func (s *Service) applied(ctx context.Context, res *store.ApprovalDecideResult, what string) {
	a := res.Approval
	s.hub.publish(a)
	if s.cfg.Queue != nil && len(res.TaskChanges) > 0 {
		s.cfg.Queue.Publish(res.TaskChanges)
	}
	s.log.InfoContext(ctx, "approval "+what, "approval", a.ID, "state", a.State.String(), "outcome", a.Outcome.String(), "by", a.DecidedBy)
	s.notify(ctx, a, what)
}

// Wait calls send with the request as it is, then again with its final
// state as soon as it is decided or expires, and returns. A decision made
// here arrives by in-process push; one made on another replica arrives as
// its approval card on the Decisions hub (relayed by LISTEN/NOTIFY), after
// which the request is read once. Past its deadline the request is re-read
// every SweepInterval until the sweeper has applied its default, in case
// the card was lost.
func (s *Service) Wait(ctx context.Context, id string, send func(a *store.Approval) error) error {
	sub := s.hub.subscribe(id)
	defer s.hub.unsubscribe(id, sub)
	var cards *notify.Subscription
	if s.cfg.Decisions != nil {
		cards = s.cfg.Decisions.Subscribe(notify.KindApproval)
		defer func() { cards.Close() }()
	}
	a, err := s.store.ApprovalGet(ctx, id)
	if err != nil {
		return err
	}
	if err := send(a); err != nil || a.Final() {
		return err
	}
	overdue := time.NewTimer(max(a.Deadline.Sub(s.clock.Now()), 0) + s.cfg.SweepInterval)
	defer overdue.Stop()
	for {
		var events <-chan notify.Event
		var cut <-chan struct{}
		if cards != nil {
			events, cut = cards.Events(), cards.Done()
		}
		reread := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case got := <-sub:
			return send(got)
		case e := <-events:
			reread = e.Attributes["id"] == id && e.Attributes["state"] != store.ApprovalPending.String()
		case <-cut:
			// Fell behind and was cut off: a card may be lost.
			cards.Close()
			cards = s.cfg.Decisions.Subscribe(notify.KindApproval)
			reread = true
		case <-overdue.C:
			overdue.Reset(s.cfg.SweepInterval)
			reread = true
		}
		if !reread {
			continue
		}
		cur, err := s.store.ApprovalGet(ctx, id)
		if err != nil {
			return err
		}
		if cur.Final() {
			return send(cur)
		}
	}
}

func kindOrNone(kind string) string {
	if kind == "" {
		return "kindless"
	}
	return kind
}

func orUnknown(name string) string {
	if name == "" {
		return "an unnamed caller"
	}
	return name
}
