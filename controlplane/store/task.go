// Package store defines the control plane's persistence contract: the domain
// records, the Store interface every driver implements, and the sentinel errors
// the gRPC boundary maps to status codes. Queue semantics (claim order, leases,
// fencing, transitions) live in the drivers' transactions so that they hold
// under concurrency; the conformance suite in storetest proves them for every
// driver.
package store

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// TaskState is a task's place in its life: the runbook's queue folders.
// Values match factory.v1.TaskState.
type TaskState int32

const (
	StateUnspecified TaskState = 0
	StateBacklog     TaskState = 1
	StateReady       TaskState = 2
	StateInProgress  TaskState = 3
	StateReview      TaskState = 4
	StateDone        TaskState = 5
	StateFailed      TaskState = 6
	StatePaused      TaskState = 7
)

// AllStates lists every stored state in lifecycle order.
var AllStates = []TaskState{StateBacklog, StateReady, StateInProgress, StateReview, StateDone, StateFailed, StatePaused}

var stateNames = map[TaskState]string{
	StateUnspecified: "UNSPECIFIED",
	StateBacklog:     "BACKLOG",
	StateReady:       "READY",
	StateInProgress:  "IN_PROGRESS",
	StateReview:      "REVIEW",
	StateDone:        "DONE",
	StateFailed:      "FAILED",
	StatePaused:      "PAUSED",
}

func (s TaskState) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("TaskState(%d)", int32(s))
}

// Valid reports whether s is a stored state.
func (s TaskState) Valid() bool { return s >= StateBacklog && s <= StatePaused }

// ParseState accepts "READY", "ready", "in-progress", "TASK_STATE_READY".
func ParseState(s string) (TaskState, error) {
	n := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	n = strings.TrimPrefix(n, "TASK_STATE_")
	for st, name := range stateNames {
		if name == n && st != StateUnspecified {
			return st, nil
		}
	}
	return StateUnspecified, fmt.Errorf("unknown state %q (want one of %s)", s, JoinStates(AllStates))
}

// JoinStates renders states as "READY, FAILED".
func JoinStates(states []TaskState) string {
	names := make([]string, len(states))
	for i, s := range states {
		names[i] = s.String()
	}
	return strings.Join(names, ", ")
}

// operatorMoves is the transition table for MoveTask: from each state, the
// states an operator may send a task to. The system's own transitions (claim,
// complete, fail, lease expiry, pause, dependency promotion) are listed in
// systemMoves; together they are every legal edge.
var operatorMoves = map[TaskState][]TaskState{
	StateBacklog:    {StateReady, StatePaused, StateFailed},
	StateReady:      {StateBacklog, StatePaused, StateFailed},
	StateInProgress: {StateReady, StateFailed},
	StateReview:     {StateReady, StateDone, StateFailed},
	StateDone:       {},
	StateFailed:     {StateReady, StateBacklog},
	StatePaused:     {StateReady, StateBacklog, StateFailed},
}

// systemMoves are the transitions the queue makes itself.
var systemMoves = map[TaskState][]TaskState{
	StateBacklog:    {StateReady, StatePaused},                                      // dependencies done (paused queue: PAUSED)
	StateReady:      {StateInProgress, StatePaused},                                 // claim, queue pause
	StateInProgress: {StateReview, StateDone, StateReady, StateFailed, StatePaused}, // complete, retry, dead letter, retry into a paused queue
	StatePaused:     {StateReady},                                                   // queue resume
}

// OperatorMoves returns the states an operator may move a task to from s.
func OperatorMoves(from TaskState) []TaskState { return slices.Clone(operatorMoves[from]) }

// CanOperatorMove reports whether MoveTask may take a task from one state to another.
func CanOperatorMove(from, to TaskState) bool { return slices.Contains(operatorMoves[from], to) }

// CanTransition reports whether from→to is any legal edge, system or operator.
func CanTransition(from, to TaskState) bool {
	return slices.Contains(operatorMoves[from], to) || slices.Contains(systemMoves[from], to)
}

// Task is the stored task. Times are UTC; zero means unset.
type Task struct {
	ID           string
	Title        string
	Kind         string
	PayloadJSON  string
	Role         string
	Assignee     string
	Priority     int32
	State        TaskState
	Attempt      int32
	MaxAttempts  int32
	DependsOn    []string
	ApprovalTier int32
	// Tier is the spend tier the task's model calls use (TierFrontier,
	// TierMid, TierLocal, TierInfra); empty names none. A tier capped or
	// turned off keeps its tasks from being claimed.
	Tier      string
	Labels    map[string]string
	LastError string
	Progress  string
	Note      string
	// ResultJSON is the JSON its holder completed it with; empty when
	// none. Tasks that depend on it read it (see Store.TaskResults).
	ResultJSON string

	// Lease fields are set only while IN_PROGRESS.
	LeaseHolder    string
	FencingToken   int64 // the current (or last) lease's token; grows with every claim
	LeaseExpiresAt time.Time
	ClaimedAt      time.Time
	RenewedAt      time.Time

	RunAfter       time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
	StateChangedAt time.Time

	// PausedByQueue marks a PAUSED task that PauseQueue (not an operator
	// move) paused, so ResumeQueue restores exactly those.
	PausedByQueue bool

	// ApprovalID names the approval request gating the task; empty when
	// none. While ApprovalPending, dependency promotion passes the task
	// over: it leaves BACKLOG only when the request is granted.
	ApprovalID      string
	ApprovalPending bool

	// Summary marks a task read without its large fields: PayloadJSON,
	// LastError, Progress, Note and ResultJSON are empty, and PayloadBytes
	// says how large the payload is.
	Summary      bool
	PayloadBytes int64
}

// TaskSizeFixed is what byte budgets (TaskListParams.MaxBytes,
// TaskClaimParams.MaxBytes) count for a task besides its text: ids, names,
// numbers and times, with room for their encoding. A task's size is
// TaskSizeFixed plus the bytes of its title, kind, dependencies, labels
// and, unless it is a summary, payload, last error, progress, note and
// result.
// Drivers compute it in SQL from the stored lengths, so a budget bounds
// what a page or a claim reads, not only what it returns; it is at least
// the task's encoded size in a response.
const TaskSizeFixed = 1024

// PayloadSize is the payload's length in bytes, also for a summary.
func (t *Task) PayloadSize() int64 {
	if t.Summary {
		return t.PayloadBytes
	}
	return int64(len(t.PayloadJSON))
}

// Release undoes a claim whose claimer never received the task: back to
// READY (PAUSED while paused), the lease ended and the attempt given back.
func (t *Task) Release(paused bool, now time.Time) {
	t.EndLease()
	st, byQueue := ReadyState(paused)
	t.SetState(st, now)
	t.PausedByQueue = byQueue
	t.Attempt = max(t.Attempt-1, 0)
}

// Clone returns a deep copy.
func (t *Task) Clone() *Task {
	c := *t
	c.DependsOn = slices.Clone(t.DependsOn)
	if t.Labels != nil {
		c.Labels = make(map[string]string, len(t.Labels))
		for k, v := range t.Labels {
			c.Labels[k] = v
		}
	}
	return &c
}

// TaskChange is one task changed by a store call, with the state it had
// before (StateUnspecified for a new task). The queue publishes these as
// events.
type TaskChange struct {
	Task          *Task
	PreviousState TaskState
}

// The rules below are the queue's state changes on a loaded task, shared by
// every driver so that each applies them identically inside its own
// transaction.

// ReadyState is where a task bound for READY goes: PAUSED, marked as the
// queue's doing, while the queue is paused.
func ReadyState(paused bool) (state TaskState, pausedByQueue bool) {
	if paused {
		return StatePaused, true
	}
	return StateReady, false
}

// SetState moves t to a state at now.
func (t *Task) SetState(to TaskState, now time.Time) {
	t.State = to
	t.StateChangedAt = now
	t.UpdatedAt = now
}

// EndLease clears the lease but keeps FencingToken: the next claim's token
// must be greater than every token this task has had.
func (t *Task) EndLease() {
	t.LeaseHolder = ""
	t.LeaseExpiresAt = time.Time{}
	t.ClaimedAt = time.Time{}
	t.RenewedAt = time.Time{}
}

// Retry applies a failed attempt: FAILED when it was the last or the
// failure is permanent, else READY (PAUSED while paused) after the backoff.
func (t *Task) Retry(permanent, paused bool, backoff BackoffFunc, now time.Time) {
	if permanent || t.Attempt >= t.MaxAttempts {
		t.SetState(StateFailed, now)
		t.PausedByQueue = false
		return
	}
	st, byQueue := ReadyState(paused)
	t.SetState(st, now)
	t.PausedByQueue = byQueue
	var wait time.Duration
	if backoff != nil {
		wait = max(backoff(t.Attempt), 0)
	}
	t.RunAfter = now.Add(wait)
}

// UniqueIDs returns ids without repeats and empty ids, in first-seen order.
func UniqueIDs(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
