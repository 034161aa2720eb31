package store

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ApprovalStore holds approval requests (runbook §9) and applies their
// decisions, to the gated task too, in one transaction.
type ApprovalStore interface {
	// ApprovalCreate stores a new request as given (PENDING, or APPROVED by
	// policy). An id that exists gets ErrAlreadyExists; a TaskID that names
	// no task is a FieldError on "task_id".
	ApprovalCreate(ctx context.Context, params *ApprovalCreateParams) (*Approval, error)

	// ApprovalGet returns one request or ErrNotFound.
	ApprovalGet(ctx context.Context, id string) (*Approval, error)

	// ApprovalList returns requests PENDING first, then the rest, each
	// group in creation order (newest first with NewestFirst), after
	// Cursor, at most Limit. NextCursor is empty on the last page. An
	// undecodable cursor, or one written for the other order, is a
	// FieldError on "page_token".
	ApprovalList(ctx context.Context, params *ApprovalListParams) (*ApprovalListResult, error)

	// ApprovalDecide applies an operator's decision to a PENDING request,
	// atomically and once: a request no longer PENDING gets a
	// *DecidedError (matching ErrIllegalTransition) and nothing changes.
	// When the request gates a task (Task.ApprovalID), the task moves in
	// the same transaction (see Task.ApplyApproval) and is returned in
	// TaskChanges.
	ApprovalDecide(ctx context.Context, params *ApprovalDecideParams) (*ApprovalDecideResult, error)

	// ApprovalExpire applies the default of every PENDING request whose
	// Deadline <= Now, at most Limit of them, oldest deadline first:
	// State EXPIRED, Outcome the default, DecidedBy "timeout". Gated tasks
	// move as for a decision.
	ApprovalExpire(ctx context.Context, params *ApprovalExpireParams) ([]*ApprovalDecideResult, error)

	// ApprovalTakeReminders marks every PENDING request whose ReminderAt
	// is set and <= Now and that was not reminded yet as reminded at Now,
	// and returns them, so that each reminder goes out once.
	ApprovalTakeReminders(ctx context.Context, params *ApprovalRemindParams) ([]*Approval, error)

	// ApprovalNextDue returns the earliest Deadline or unsent ReminderAt
	// among PENDING requests, so the sweeper can sleep until then; ok is
	// false when there is none.
	ApprovalNextDue(ctx context.Context) (next time.Time, ok bool, err error)
}

// ApprovalState is a request's place in its life. Values match
// factory.v1.ApprovalState.
type ApprovalState int32

const (
	ApprovalStateUnspecified ApprovalState = 0
	ApprovalPending          ApprovalState = 1
	ApprovalApproved         ApprovalState = 2
	ApprovalRejected         ApprovalState = 3
	ApprovalModified         ApprovalState = 4
	ApprovalExpired          ApprovalState = 5
)

var approvalStateNames = map[ApprovalState]string{
	ApprovalStateUnspecified: "UNSPECIFIED",
	ApprovalPending:          "PENDING",
	ApprovalApproved:         "APPROVED",
	ApprovalRejected:         "REJECTED",
	ApprovalModified:         "MODIFIED",
	ApprovalExpired:          "EXPIRED",
}

func (s ApprovalState) String() string {
	if n, ok := approvalStateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("ApprovalState(%d)", int32(s))
}

// Valid reports whether s is a stored state.
func (s ApprovalState) Valid() bool { return s >= ApprovalPending && s <= ApprovalExpired }

// ApprovalRisk is the requester's risk estimate. Values match
// factory.v1.ApprovalRisk.
type ApprovalRisk int32

const (
	RiskUnspecified ApprovalRisk = 0
	RiskLow         ApprovalRisk = 1
	RiskMedium      ApprovalRisk = 2
	RiskHigh        ApprovalRisk = 3
)

func (r ApprovalRisk) String() string {
	switch r {
	case RiskLow:
		return "low"
	case RiskMedium:
		return "medium"
	case RiskHigh:
		return "high"
	}
	return "unspecified"
}

// ApprovalDecision is a decision or an applied outcome. Values match
// factory.v1.ApprovalDecision.
type ApprovalDecision int32

const (
	DecisionUnspecified ApprovalDecision = 0
	DecisionApprove     ApprovalDecision = 1
	DecisionReject      ApprovalDecision = 2
	DecisionModify      ApprovalDecision = 3
)

func (d ApprovalDecision) String() string {
	switch d {
	case DecisionApprove:
		return "APPROVE"
	case DecisionReject:
		return "REJECT"
	case DecisionModify:
		return "MODIFY"
	}
	return "UNSPECIFIED"
}

// Granted reports whether the outcome lets the action go ahead.
func (d ApprovalDecision) Granted() bool { return d == DecisionApprove || d == DecisionModify }

// StateOf is the state a decision leaves a request in.
func (d ApprovalDecision) StateOf() ApprovalState {
	switch d {
	case DecisionApprove:
		return ApprovalApproved
	case DecisionReject:
		return ApprovalRejected
	case DecisionModify:
		return ApprovalModified
	}
	return ApprovalStateUnspecified
}

// Who decided, when no operator did.
const (
	DecidedByPolicy  = "policy"
	DecidedByTimeout = "timeout"
)

// Approval is a stored request. Times are UTC; zero means unset.
type Approval struct {
	ID          string
	What        string
	Why         string
	Agent       string
	Risk        ApprovalRisk
	Tier        int32
	Kind        string
	PayloadJSON string
	// PayloadSHA256 is the hex SHA-256 of PayloadJSON's bytes.
	PayloadSHA256 string
	Deadline      time.Time
	// DefaultOnTimeout is DecisionApprove or DecisionReject.
	DefaultOnTimeout ApprovalDecision
	TaskID           string
	ReminderAt       time.Time

	State        ApprovalState
	AutoApproved bool
	// Outcome is the decision in force, or for EXPIRED the default applied.
	Outcome      ApprovalDecision
	DecidedBy    string
	DecidedAt    time.Time
	Reason       string
	Instructions string
	RemindedAt   time.Time
	CreatedAt    time.Time
}

// Clone returns a copy.
func (a *Approval) Clone() *Approval {
	c := *a
	return &c
}

// Final reports whether the request is decided or expired.
func (a *Approval) Final() bool { return a.State != ApprovalPending }

// ApprovalCreate is a new request. State is ApprovalPending, or
// ApprovalApproved with AutoApproved, Outcome, DecidedBy and DecidedAt
// for one approved by policy.
type ApprovalCreate struct {
	ID               string
	What             string
	Why              string
	Agent            string
	Risk             ApprovalRisk
	Tier             int32
	Kind             string
	PayloadJSON      string
	PayloadSHA256    string
	Deadline         time.Time
	DefaultOnTimeout ApprovalDecision
	TaskID           string
	ReminderAt       time.Time

	State        ApprovalState
	AutoApproved bool
	Outcome      ApprovalDecision
	DecidedBy    string
	DecidedAt    time.Time
}

// Approval returns the record c creates at now.
func (c *ApprovalCreate) Approval(now time.Time) *Approval {
	return &Approval{
		ID: c.ID, What: c.What, Why: c.Why, Agent: c.Agent, Risk: c.Risk, Tier: c.Tier, Kind: c.Kind,
		PayloadJSON: c.PayloadJSON, PayloadSHA256: c.PayloadSHA256, Deadline: c.Deadline,
		DefaultOnTimeout: c.DefaultOnTimeout, TaskID: c.TaskID, ReminderAt: c.ReminderAt,
		State: c.State, AutoApproved: c.AutoApproved, Outcome: c.Outcome, DecidedBy: c.DecidedBy,
		DecidedAt: c.DecidedAt, CreatedAt: now,
	}
}

// CheckApprovalCreate is the input check every driver makes before
// touching the database.
func CheckApprovalCreate(c *ApprovalCreate) error {
	switch {
	case c == nil:
		return InvalidField("approval", "is missing")
	case c.ID == "":
		return InvalidField("approval_id", "required")
	case strings.TrimSpace(c.What) == "":
		return InvalidField("what", "required")
	case c.Agent == "":
		return InvalidField("agent", "required")
	case c.Deadline.IsZero():
		return InvalidField("deadline", "required")
	case c.DefaultOnTimeout != DecisionApprove && c.DefaultOnTimeout != DecisionReject:
		return InvalidField("default_on_timeout", "must be APPROVE or REJECT, got %s", c.DefaultOnTimeout)
	case c.State != ApprovalPending && c.State != ApprovalApproved:
		return InvalidField("state", "a new request is PENDING or APPROVED by policy, got %s", c.State)
	case c.State == ApprovalApproved && !c.AutoApproved:
		return InvalidField("state", "only policy approves a request as it is made")
	case c.Tier < 0 || c.Tier > 3:
		return InvalidField("tier", "must be 0-3, got %d", c.Tier)
	}
	return nil
}

// ApprovalCreateParams holds a new request.
type ApprovalCreateParams struct {
	Approval *ApprovalCreate
	Now      time.Time
}

// ApprovalListParams filters ApprovalList. Zero values do not filter.
type ApprovalListParams struct {
	States []ApprovalState
	Agent  string
	Limit  int
	Cursor string
	// NewestFirst lists each group newest first. Cursor must come from a
	// list in the same order.
	NewestFirst bool
	// IDPrefix keeps requests whose id starts with it (byte for byte): how
	// a shortened id resolves. Drivers answer it from the id index with
	// IDPrefixRange.
	IDPrefix string
}

// ApprovalListResult is one page.
type ApprovalListResult struct {
	Approvals  []*Approval
	NextCursor string
}

// ApprovalDecideParams is an operator's decision.
type ApprovalDecideParams struct {
	ID           string
	Decision     ApprovalDecision
	DecidedBy    string
	Reason       string
	Instructions string
	Now          time.Time
}

// ApprovalDecideResult is a request as decided (or expired) and the task
// changes it made.
type ApprovalDecideResult struct {
	Approval    *Approval
	TaskChanges []TaskChange
}

// ApprovalExpireParams expires overdue requests.
type ApprovalExpireParams struct {
	Now   time.Time
	Limit int // 0 means 100
}

// ApprovalRemindParams takes due reminders.
type ApprovalRemindParams struct {
	Now time.Time
}

// DecidedError is a decision on a request that is no longer PENDING. It
// matches ErrIllegalTransition (FAILED_PRECONDITION at the gRPC boundary).
type DecidedError struct {
	ID    string
	State ApprovalState
	By    string
}

func (e *DecidedError) Error() string {
	by := ""
	if e.By != "" {
		by = " by " + e.By
	}
	return fmt.Sprintf("approval %s is already %s%s: a decision is final", e.ID, e.State, by)
}

// Is makes errors.Is(err, ErrIllegalTransition) true.
func (e *DecidedError) Is(target error) bool { return target == ErrIllegalTransition }

// ApplyDecision records an operator's decision on a PENDING request.
func (a *Approval) ApplyDecision(outcome ApprovalDecision, by, reason, instructions string, now time.Time) {
	a.State = outcome.StateOf()
	a.Outcome = outcome
	a.DecidedBy = by
	a.DecidedAt = now
	a.Reason = reason
	a.Instructions = instructions
}

// Expire applies a PENDING request's default at its deadline: EXPIRED
// with the default as Outcome, by DecidedByTimeout, never as a human
// decision.
func (a *Approval) Expire(now time.Time) {
	a.ApplyDecision(a.DefaultOnTimeout, DecidedByTimeout,
		fmt.Sprintf("no decision by the deadline: default %s applied", a.DefaultOnTimeout), "", now)
	a.State = ApprovalExpired
}

// CheckDecide is the input check every driver's ApprovalDecide makes.
func CheckDecide(p *ApprovalDecideParams) error {
	switch {
	case p == nil || p.ID == "":
		return InvalidField("approval_id", "required")
	case p.Decision != DecisionApprove && p.Decision != DecisionReject && p.Decision != DecisionModify:
		return InvalidField("decision", "must be APPROVE, REJECT or MODIFY, got %s", p.Decision)
	case p.DecidedBy == "":
		return InvalidField("decided_by", "required")
	case p.DecidedBy == DecidedByPolicy || p.DecidedBy == DecidedByTimeout:
		return InvalidField("decided_by", "%q is reserved for decisions no person made", p.DecidedBy)
	}
	return nil
}

// ApplyApproval applies a gating approval's outcome to its task: the
// approval is no longer pending either way. A granted outcome moves a
// BACKLOG task to READY (PAUSED while the queue is) when depsDone, and
// leaves it in BACKLOG for dependency promotion otherwise; MODIFY puts the
// instructions in the note. A rejection fails a task that has not started
// (BACKLOG, READY, PAUSED) with the reason as LastError. It reports
// whether the task changed.
func (t *Task) ApplyApproval(outcome ApprovalDecision, reason, instructions string, depsDone, paused bool, now time.Time) bool {
	if !t.ApprovalPending {
		return false
	}
	t.ApprovalPending = false
	t.UpdatedAt = now
	switch {
	case outcome.Granted():
		if outcome == DecisionModify {
			t.Note = "approval instructions: " + instructions
		}
		if t.State == StateBacklog && depsDone {
			st, byQueue := ReadyState(paused)
			t.SetState(st, now)
			t.PausedByQueue = byQueue
		}
	default:
		switch t.State {
		case StateBacklog, StateReady, StatePaused:
			t.SetState(StateFailed, now)
			t.PausedByQueue = false
			if reason == "" {
				reason = "approval rejected"
			}
			t.LastError = "approval rejected: " + reason
		}
	}
	return true
}

// Approval list cursors are "<group>.<seq>": group 0 for PENDING, 1 for
// the rest, and the creation sequence of the last request returned. A
// newest-first cursor carries the prefix newestFirstCursor, so that a
// token is only ever read in the order that wrote it: read the other way,
// "after seq" would silently skip or repeat a whole group's pages.

// ParseApprovalCursor reads a cursor of the given order. Empty means the
// start: group 0 and, newest first, seq math.MaxInt64 (every request is
// before it). A cursor of the other order is a FieldError on "page_token".
func ParseApprovalCursor(cursor string, newestFirst bool) (group int, seq int64, err error) {
	if cursor == "" {
		if newestFirst {
			return 0, math.MaxInt64, nil
		}
		return 0, 0, nil
	}
	body, err := cursorOfOrder(cursor, newestFirst)
	if err != nil {
		return 0, 0, err
	}
	g, s, ok := strings.Cut(body, ".")
	gi, err1 := strconv.Atoi(g)
	si, err2 := strconv.ParseInt(s, 10, 64)
	if !ok || err1 != nil || err2 != nil || gi < 0 || gi > 1 || si < 0 {
		return 0, 0, notACursor(cursor)
	}
	return gi, si, nil
}

// FormatApprovalCursor writes a cursor of the given order after a request.
func FormatApprovalCursor(state ApprovalState, seq int64, newestFirst bool) string {
	g := 1
	if state == ApprovalPending {
		g = 0
	}
	return orderPrefix(newestFirst) + strconv.Itoa(g) + "." + strconv.FormatInt(seq, 10)
}

// ApprovalGroupScan is one group a newest-first ApprovalList reads: the
// PENDING requests or the rest, those created before seq Before, newest
// first. Each is one backward range scan of the list index, where a
// single ORDER BY over both groups (PENDING ascending, seq descending)
// matches no index direction and would sort every row.
type ApprovalGroupScan struct {
	Pending bool
	Before  int64
}

// NewestApprovalScans returns the group scans of a newest-first list that
// continues from a cursor's group and seq (see ParseApprovalCursor), in
// list order. A group the States filter leaves empty is not read.
func NewestApprovalScans(states []ApprovalState, group int, seq int64) []ApprovalGroupScan {
	pending, rest := len(states) == 0, len(states) == 0
	for _, st := range states {
		if st == ApprovalPending {
			pending = true
		} else {
			rest = true
		}
	}
	var scans []ApprovalGroupScan
	if group == 0 && pending {
		scans = append(scans, ApprovalGroupScan{Pending: true, Before: seq})
	}
	if rest {
		before := int64(math.MaxInt64)
		if group == 1 {
			before = seq
		}
		scans = append(scans, ApprovalGroupScan{Before: before})
	}
	return scans
}

// Gate attaches a new task's approval request: the request names the task,
// and while it is PENDING the task starts in BACKLOG with ApprovalPending.
// A request approved by policy as it is made leaves the task ungated. It
// is applied by every driver's TaskCreate to a task built from its
// TaskCreate, before the initial state is resolved.
func (t *Task) Gate(a *ApprovalCreate) error {
	switch t.State {
	case StateUnspecified, StateReady, StateBacklog:
	default:
		return InvalidField("initial_state", "task %s: a task waiting for approval starts in BACKLOG, not %s", t.ID, t.State)
	}
	a.TaskID = t.ID
	if err := CheckApprovalCreate(a); err != nil {
		return err
	}
	t.ApprovalID = a.ID
	if a.State == ApprovalPending {
		t.ApprovalPending = true
		t.State = StateBacklog
	}
	return nil
}
