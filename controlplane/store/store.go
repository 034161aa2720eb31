package store

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Store is the persistence contract. Every method runs in one transaction:
// it sees and changes a consistent state, and either all its writes land or
// none do. Time never comes from the driver's clock: callers pass Now.
//
// Mutating task methods return the tasks they changed as TaskChange values,
// the directly targeted tasks first, then any BACKLOG tasks promoted as a
// consequence, so the caller can publish events and wake claimers.
type Store interface {
	// TaskCreate inserts tasks in order, all or none. A task id that exists
	// gets ErrAlreadyExists. Each depends_on id must name an existing task or
	// one earlier in the same batch (else a FieldError on "depends_on").
	// InitialState Unspecified or READY resolves to READY when every
	// dependency is DONE, else BACKLOG; a READY result becomes PAUSED (with
	// PausedByQueue) while the queue is paused. BACKLOG, PAUSED, REVIEW, DONE
	// and FAILED are stored as given; IN_PROGRESS is a FieldError on
	// "initial_state". MaxAttempts 0 means DefaultMaxAttempts.
	TaskCreate(ctx context.Context, params *TaskCreateParams) ([]TaskChange, error)

	// TaskGet returns one task or ErrNotFound.
	TaskGet(ctx context.Context, id string) (*Task, error)

	// TaskList returns tasks in creation order (newest first with
	// NewestFirst) after Cursor, at most Limit and, with MaxBytes, no more
	// than their sizes fit (see TaskSizeFixed; the first task always
	// comes). NextCursor is empty on the last page. An undecodable cursor,
	// or one written for the other order, is a FieldError on "page_token".
	// With Summary the large fields are left out (see Task.Summary).
	TaskList(ctx context.Context, params *TaskListParams) (*TaskListResult, error)

	// TaskClaim moves up to Max READY tasks to IN_PROGRESS for Agent, in
	// order priority DESC then creation ASC, among tasks whose RunAfter <= Now,
	// whose Role is empty or in Roles, and whose Assignee is empty or Agent.
	// Each claimed task gets Attempt+1, a new FencingToken greater than any
	// it had before, LeaseHolder=Agent, ClaimedAt=RenewedAt=Now and
	// LeaseExpiresAt=Now+LeaseDuration. Concurrent claimers never receive
	// the same task. An empty result is not an error. With MaxBytes the
	// claim stops, in claim order, before the first task that would take
	// the claimed tasks' total size past it (see TaskSizeFixed; the first
	// task always comes): what would not fit is never taken. With MaxHeld
	// the claim takes at most MaxHeld less the IN_PROGRESS tasks Agent
	// already holds, counted in the claim's transaction so that
	// concurrent claims by one agent never take it past MaxHeld; an agent
	// already holding MaxHeld is refused with a *QuotaError (see
	// LeaseCapError) whatever is READY.
	TaskClaim(ctx context.Context, params *TaskClaimParams) ([]TaskChange, error)

	// TaskRelease hands back claimed tasks whose claimer never received
	// them: each task still held under its lease goes back to READY
	// (PAUSED while the queue is paused) as if the claim had not happened:
	// the lease ends (its token goes stale) and the attempt it used is
	// given back. A lease no longer held is passed over, not an error.
	TaskRelease(ctx context.Context, params *TaskReleaseParams) ([]TaskChange, error)

	// TaskNextRunAfter returns the earliest RunAfter later than Now among
	// READY tasks, so a waiting claimer can sleep until then; ok is false
	// when there is none.
	TaskNextRunAfter(ctx context.Context, now time.Time) (next time.Time, ok bool, err error)

	// TaskRenew extends a held lease to Now+LeaseDuration, sets RenewedAt=Now
	// and, when Progress is not empty, the progress note. See CheckLease for
	// the holder check. Repeating a renewal while the lease holds extends
	// it again; once the lease has ended, a renewal is refused.
	TaskRenew(ctx context.Context, params *TaskRenewParams) (*Task, error)

	// TaskComplete completes each held task: to REVIEW when Review is set,
	// else to DONE. The lease ends; Note, when set, replaces the task's note,
	// and ResultJSON, when set, its result.
	// Items succeed or fail on their own: Results[i].Err holds item i's
	// error (ErrNotFound, ErrStaleLease), the successes all land. Tasks
	// reaching DONE promote BACKLOG dependents whose dependencies are now all
	// DONE (to PAUSED while the queue is paused). An item repeating the
	// completion that ended the task's last lease (see CheckCompleteReplay)
	// succeeds with the task as it is, Replay set, and changes nothing.
	TaskComplete(ctx context.Context, params *TaskCompleteParams) (*TaskCompleteResult, error)

	// TaskFail records a failure of a held task: LastError=Error and the
	// lease ends. Permanent, or Attempt >= MaxAttempts: to FAILED. Otherwise
	// to READY (PAUSED while the queue is paused) with
	// RunAfter=Now+Backoff(Attempt). A call repeating the failure that
	// ended the task's last lease (see CheckFailReplay) returns the task as
	// it is, with PreviousState equal to its State, and changes nothing.
	TaskFail(ctx context.Context, params *TaskFailParams) ([]TaskChange, error)

	// TaskMove is an operator move. A move CanOperatorMove does not allow is
	// a *TransitionError listing OperatorMoves(from). Leaving IN_PROGRESS
	// ends the lease (its token goes stale). FAILED→READY resets Attempt to 0
	// and clears RunAfter. Reaching DONE promotes dependents. Reason, when
	// set, becomes the task's note.
	TaskMove(ctx context.Context, params *TaskMoveParams) ([]TaskChange, error)

	// TaskResults reads the results of the tasks IDs names, in that order,
	// each id once; an id naming no task is left out. With MaxBytes the
	// results are taken in order while the running total of their sizes
	// (TaskResultSize) stays within it: from the first that would pass it
	// on, each comes with Omitted set, only its ID, State, StateChangedAt
	// and ResultBytes (its title, kind, role, labels and result left out),
	// so the read never loads more than MaxBytes and an omitted one costs
	// little more than its id.
	TaskResults(ctx context.Context, params *TaskResultsParams) ([]TaskResult, error)

	// TaskSetPriority sets a task's priority.
	TaskSetPriority(ctx context.Context, params *TaskSetPriorityParams) (*Task, error)

	// TaskRescueExpired handles every IN_PROGRESS task whose LeaseExpiresAt
	// <= Now as a failure of its holder: LastError says the lease expired and
	// who held it; Attempt >= MaxAttempts goes to FAILED, otherwise READY
	// (PAUSED while paused) with RunAfter=Now+Backoff(Attempt).
	TaskRescueExpired(ctx context.Context, params *TaskRescueExpiredParams) ([]TaskChange, error)

	// TaskRequeueStuck moves IN_PROGRESS tasks whose RenewedAt <= Now-OlderThan
	// to READY (PAUSED while paused), ending their leases, with no backoff and
	// the attempt kept. With DryRun it changes nothing and returns them as
	// they are (PreviousState = their state).
	TaskRequeueStuck(ctx context.Context, params *TaskRequeueStuckParams) ([]TaskChange, error)

	// QueuePause marks the queue paused with Reason and moves every READY
	// task to PAUSED with PausedByQueue. Pausing a paused queue moves
	// nothing new and keeps the first reason.
	QueuePause(ctx context.Context, params *QueuePauseParams) ([]TaskChange, error)

	// QueueResume clears the pause and moves every PausedByQueue task back to
	// READY. Tasks an operator paused stay PAUSED.
	QueueResume(ctx context.Context, params *QueueResumeParams) ([]TaskChange, error)

	// TaskBulk applies one operator change to every task Filter selects,
	// in one transaction: all of it lands or none. An empty filter is a
	// FieldError on "filter"; more than Max selected is a *TooManyError
	// and nothing changes. A move goes as TaskMove's does (OperatorMove:
	// leaving IN_PROGRESS ends the lease, reaching DONE promotes
	// dependents); a selected task the move is not allowed from is left as
	// it is and counted in Skipped. See TaskBulkParams.
	TaskBulk(ctx context.Context, params *TaskBulkParams) (*TaskBulkResult, error)

	// QueuePauseTasks is a selective pause: it records a pause named ID and
	// moves the READY tasks Filter selects to PAUSED, held by it (not
	// PausedByQueue). Tasks becoming READY later are not held. An existing
	// ID gets ErrAlreadyExists; more than Max selected a *TooManyError.
	QueuePauseTasks(ctx context.Context, params *QueuePauseTasksParams) ([]TaskChange, error)

	// QueueResumeTasks ends the selective pause ID (ErrNotFound when there
	// is none), or every one when ID is empty: the tasks it moved that are
	// still PAUSED by it go back to READY (PAUSED by the queue while the
	// queue is paused). A task that left PAUSED since (an operator moved
	// it) is no longer held, so it stays as it is.
	QueueResumeTasks(ctx context.Context, params *QueueResumeTasksParams) (*QueueResumeTasksResult, error)

	// QueueStats counts tasks per state (every state present, zeros too)
	// and reports the oldest READY StateChangedAt, the oldest IN_PROGRESS
	// ClaimedAt, the number of tasks not DONE with Attempt > 1, and the pause.
	QueueStats(ctx context.Context) (*QueueStats, error)

	// AccessStore holds tokens and the audit log (see access.go).
	AccessStore

	// AuditCoalesceStore coalesces and prunes audit entries (see audit.go).
	AuditCoalesceStore

	// FleetStore holds the fleet events that must not be lost (see fleet.go).
	FleetStore

	// TelemetryStore holds the fleet's telemetry history (see telemetry.go).
	TelemetryStore

	// SpendStore holds the spend ledger, budgets and the emergency stop
	// (see spend.go).
	SpendStore

	// AlertStore holds alert instances and silences (see alerts.go).
	AlertStore

	// ApprovalStore holds approval requests and applies decisions to
	// gated tasks (see approval.go).
	ApprovalStore

	// DumpStore moves the whole state out and in (see dump.go).
	DumpStore

	// MaintenanceStore checks, snapshots and holds the maintenance
	// switch (see maintenance.go).
	MaintenanceStore

	// BackupStore records scheduled backups and vacuums (see backups.go).
	BackupStore

	// Close releases the driver's resources.
	Close() error
}

// DefaultMaxAttempts is used when a task is created with MaxAttempts 0.
const DefaultMaxAttempts = 3

// BackoffFunc returns how long a task waits before its next attempt after
// failing attempt number attempt (1 for the first).
type BackoffFunc func(attempt int32) time.Duration

// TaskCreateParams holds new tasks. ID, Title, State etc. come from each
// *Task; drivers fill CreatedAt/UpdatedAt/StateChangedAt from Now. A task
// starts without a lease; Attempt, LastError and Progress are kept as
// given (History), for imports.
type TaskCreateParams struct {
	Tasks []*TaskCreate
	Now   time.Time
}

// TaskCreate is one new task.
type TaskCreate struct {
	ID           string
	Title        string
	Kind         string
	PayloadJSON  string
	Role         string
	Assignee     string
	Priority     int32
	MaxAttempts  int32
	DependsOn    []string
	ApprovalTier int32
	// Tier is the spend tier the task will use; empty names none (see
	// Task.Tier). Drivers store it as given; the queue checks it.
	Tier         string
	Labels       map[string]string
	InitialState TaskState
	RunAfter     time.Time
	Note         string
	// RequiresApproval asks for an operator's approval before the task
	// can be claimed. The approval domain turns it (or a kind its policy
	// puts at Tier 2+) into Approval before the store sees the task;
	// drivers read only Approval.
	RequiresApproval bool
	// Approval, when set, gates the task: the request is stored in the
	// same transaction (its TaskID set to the task), and the task starts
	// in BACKLOG with ApprovalPending until the request is granted.
	// InitialState must then be unset, READY or BACKLOG.
	Approval *ApprovalCreate
	// History is what an imported task brings from where it was: the
	// claims used, the last failure and the last progress note. Zero for
	// new work. Attempt is at most MaxAttempts (after its default).
	History TaskHistory
}

// TaskHistory is the part of a task's record an import keeps.
type TaskHistory struct {
	Attempt   int32
	LastError string
	Progress  string
}

// IsZero reports whether there is no history to keep.
func (h TaskHistory) IsZero() bool { return h == TaskHistory{} }

// TaskListParams filters TaskList. Zero values do not filter.
type TaskListParams struct {
	States   []TaskState
	Role     string
	Assignee string            // matches Assignee or LeaseHolder
	Labels   map[string]string // every pair must match
	IDs      []string
	Kind     string
	Tier     string // TaskFilter.Tier
	Limit    int
	Cursor   string
	// NewestFirst lists the most recently created task first. Cursor
	// must come from a list in the same order.
	NewestFirst bool
	// MinAttempt keeps tasks with Attempt >= MinAttempt: retry loops.
	MinAttempt int
	// MaxBytes bounds the page by the tasks' sizes; 0 does not bound.
	MaxBytes int64
	// Summary leaves the large fields out of the tasks (see Task.Summary).
	Summary bool
	// IDPrefix keeps tasks whose id starts with it (byte for byte): how a
	// shortened id resolves. Drivers answer it from the id index with
	// IDPrefixRange.
	IDPrefix string
	// MinPriority, MaxPriority, CreatedBefore and StateChangedBefore are
	// TaskFilter's fields of the same names.
	MinPriority, MaxPriority          *int32
	CreatedBefore, StateChangedBefore time.Time
}

// IDPrefixRange bounds the ids that start with prefix, lo <= id < hi,
// for an index range scan (LIKE would need an index of its own); hi is
// empty when there is no upper bound. The range may hold more than the
// prefix's ids, so the caller still compares the prefix exactly. hi
// steps only a letter or digit, and '9' to 'a' rather than to ':', so that
// the range holds under a collation that ignores punctuation or sorts it
// before letters and digits (a PostgreSQL database in en_US) as well as in
// byte order: it leaves out trailing separators, and trailing 'z' and 'Z',
// whose successors '{' and '[' are punctuation.
func IDPrefixRange(prefix string) (lo, hi string) {
	stem := strings.TrimRight(prefix, "-._:zZ")
	last, size := utf8.DecodeLastRuneInString(stem)
	if stem == "" || last == utf8.RuneError || last >= utf8.MaxRune {
		return prefix, ""
	}
	next := last + 1
	if last == '9' {
		next = 'a'
	}
	return prefix, stem[:len(stem)-size] + string(next)
}

// TaskListResult is one page.
type TaskListResult struct {
	Tasks      []*Task
	NextCursor string
}

// TaskClaimParams asks for up to Max tasks.
type TaskClaimParams struct {
	Agent string
	// Roles are the task roles the claim may take, at most MaxClaimRoles;
	// tasks with the empty role are every agent's.
	Roles         []string
	Max           int
	LeaseDuration time.Duration
	Now           time.Time
	// MaxBytes bounds the claimed tasks' total size; 0 does not bound.
	MaxBytes int64
	// ExcludeTiers are spend tiers whose tasks the claim must leave
	// (capped or turned off); tasks without a tier and of other tiers
	// stay claimable.
	ExcludeTiers []string
	// MaxHeld caps the leases Agent may hold once the claim is done; 0
	// does not cap.
	MaxHeld int
}

// LeaseCapError is the refusal of a claim by an agent that already holds
// max leases.
func LeaseCapError(agent string, held, max int) *QuotaError {
	return &QuotaError{Subject: "queue:leases:" + agent, Description: fmt.Sprintf(
		"agent %q holds %d leases, the cap is %d: complete, fail or let some expire before claiming more", agent, held, max)}
}

// LeaseRoom is how many of n tasks the claim may take when its agent
// holds held leases: n, less under MaxHeld (when set); an agent holding
// MaxHeld already is refused with LeaseCapError.
func (p *TaskClaimParams) LeaseRoom(held, n int) (int, error) {
	if p.MaxHeld <= 0 {
		return n, nil
	}
	if held >= p.MaxHeld {
		return 0, LeaseCapError(p.Agent, held, p.MaxHeld)
	}
	return min(n, p.MaxHeld-held), nil
}

// MaxClaimRoles is the most roles one claim may name (as the API allows).
const MaxClaimRoles = 64

// TaskReleaseParams names the leases of claimed tasks to hand back.
type TaskReleaseParams struct {
	Leases []LeaseRef
	Now    time.Time
}

// LeaseRef names a held lease. Every call on a claimed task carries one.
type LeaseRef struct {
	TaskID       string
	Agent        string
	FencingToken int64
}

// TaskRenewParams extends a lease.
type TaskRenewParams struct {
	Lease         LeaseRef
	LeaseDuration time.Duration
	Progress      string
	Now           time.Time
}

// TaskCompleteParams completes held tasks.
type TaskCompleteParams struct {
	Items []TaskCompleteItem
	Now   time.Time
}

// TaskCompleteItem is one completion.
type TaskCompleteItem struct {
	Lease  LeaseRef
	Review bool
	Note   string
	// ResultJSON, when set, becomes the task's result (callers check that
	// it is JSON and bound its size).
	ResultJSON string
}

// TaskResultsParams names the tasks whose results to read.
type TaskResultsParams struct {
	IDs []string
	// MaxBytes bounds the results' total size; 0 does not bound.
	MaxBytes int64
}

// TaskResultSizeFixed is what TaskResults' byte budget counts for a
// result besides its text: a result's size is TaskResultSizeFixed plus the
// bytes of its result, title, kind, role and labels.
const TaskResultSizeFixed = 256

// TaskResult is one task's result with what names the task.
type TaskResult struct {
	ID          string
	Title       string
	Kind        string
	Role        string
	State       TaskState
	Labels      map[string]string
	ResultJSON  string
	ResultBytes int64
	// Omitted marks a result left out for MaxBytes.
	Omitted bool
	// StateChangedAt is when the task entered its state: for a DONE
	// task, when it was completed.
	StateChangedAt time.Time
}

// TaskCompleteResult has one entry per item plus every change made.
type TaskCompleteResult struct {
	Results []TaskCompleteItemResult
	Changes []TaskChange
}

// TaskCompleteItemResult is one item's outcome: Task on success, Err otherwise.
type TaskCompleteItemResult struct {
	Task *Task
	Err  error
	// Replay marks a success that repeated an earlier completion of the
	// same lease: Task is as that completion left it and nothing changed.
	Replay bool
}

// TaskFailParams reports a failure.
type TaskFailParams struct {
	Lease     LeaseRef
	Error     string
	Permanent bool
	Backoff   BackoffFunc
	Now       time.Time
}

// TaskMoveParams is an operator move.
type TaskMoveParams struct {
	TaskID string
	To     TaskState
	Reason string
	Now    time.Time
}

// TaskSetPriorityParams sets a priority.
type TaskSetPriorityParams struct {
	TaskID   string
	Priority int32
	Now      time.Time
}

// TaskRescueExpiredParams rescues tasks whose leases expired.
type TaskRescueExpiredParams struct {
	Backoff BackoffFunc
	Now     time.Time
}

// TaskRequeueStuckParams requeues tasks with no sign of life.
type TaskRequeueStuckParams struct {
	OlderThan time.Duration
	DryRun    bool
	Now       time.Time
}

// QueuePauseParams pauses the queue.
type QueuePauseParams struct {
	Reason string
	Now    time.Time
}

// QueueResumeParams resumes the queue.
type QueueResumeParams struct {
	Now time.Time
}

// QueueStats is the queue's shape.
type QueueStats struct {
	Counts           map[TaskState]int64
	OldestReadySince time.Time // zero when no READY task
	OldestClaimedAt  time.Time // zero when no IN_PROGRESS task
	Retrying         int64
	Paused           bool
	PauseReason      string
	// Pauses are the active selective pauses, oldest first.
	Pauses []QueuePauseInfo
}

// CheckLease is the fencing rule every driver applies to a call on a held
// task: the task must be IN_PROGRESS, held by ref.Agent under
// ref.FencingToken, with a lease that has not expired at now. Anything else
// is ErrStaleLease with a message saying which part failed.
func CheckLease(t *Task, ref LeaseRef, now time.Time) error {
	switch {
	case t.State != StateInProgress:
		return leaseErr(ref, "task is %s, not IN_PROGRESS", t.State)
	case t.FencingToken != ref.FencingToken:
		return leaseErr(ref, "fencing token %d is stale (current %d, held by %s)", ref.FencingToken, t.FencingToken, t.LeaseHolder)
	case t.LeaseHolder != ref.Agent:
		return leaseErr(ref, "held by %s, not %s", t.LeaseHolder, ref.Agent)
	case !now.Before(t.LeaseExpiresAt):
		return leaseErr(ref, "lease expired at %s", t.LeaseExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

func leaseErr(ref LeaseRef, format string, args ...any) error {
	return &leaseError{taskID: ref.TaskID, detail: fmt.Sprintf(format, args...)}
}

type leaseError struct{ taskID, detail string }

func (e *leaseError) Error() string        { return "task " + e.taskID + ": stale lease: " + e.detail }
func (e *leaseError) Is(target error) bool { return target == ErrStaleLease }

// CheckTaskCreates is the input check every driver's TaskCreate makes
// before touching the database.
func CheckTaskCreates(tasks []*TaskCreate) error {
	for i, c := range tasks {
		switch {
		case c == nil:
			return InvalidField("tasks", "task %d is missing", i)
		case c.ID == "":
			return InvalidField("id", "task %d: id is required", i)
		case c.InitialState == StateInProgress:
			return InvalidField("initial_state", "task %s: a task cannot start IN_PROGRESS; only a claim puts it there", c.ID)
		case c.InitialState != StateUnspecified && !c.InitialState.Valid():
			return InvalidField("initial_state", "task %s: unknown state %s", c.ID, c.InitialState)
		case c.MaxAttempts < 0:
			return InvalidField("max_attempts", "task %s: must not be negative, got %d", c.ID, c.MaxAttempts)
		case c.History.Attempt < 0:
			return InvalidField("attempt", "task %s: must not be negative, got %d", c.ID, c.History.Attempt)
		case c.History.Attempt > cmp.Or(c.MaxAttempts, DefaultMaxAttempts):
			return InvalidField("attempt", "task %s: %d claims used is more than its max_attempts %d", c.ID, c.History.Attempt, cmp.Or(c.MaxAttempts, DefaultMaxAttempts))
		}
	}
	return nil
}

// Task list cursors are the decimal creation sequence of the last task
// returned; a newest-first cursor carries the prefix newestFirstCursor
// (see ParseApprovalCursor for why the order is in the token).

// ParseTaskCursor reads a cursor of the given order. Empty means the
// start: 0, or newest first math.MaxInt64 (every task is before it). A
// cursor of the other order is a FieldError on "page_token".
func ParseTaskCursor(cursor string, newestFirst bool) (int64, error) {
	if cursor == "" {
		if newestFirst {
			return math.MaxInt64, nil
		}
		return 0, nil
	}
	body, err := cursorOfOrder(cursor, newestFirst)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(body, 10, 64)
	if err != nil || n < 0 {
		return 0, notACursor(cursor)
	}
	return n, nil
}

// FormatTaskCursor writes a cursor of the given order after the task with
// creation sequence seq.
func FormatTaskCursor(seq int64, newestFirst bool) string {
	return orderPrefix(newestFirst) + strconv.FormatInt(seq, 10)
}

// newestFirstCursor starts every newest-first list cursor. Oldest-first
// cursors start with a digit, as they always have, so tokens handed out
// before lists had an order still work.
const newestFirstCursor = "n"

func orderPrefix(newestFirst bool) string {
	if newestFirst {
		return newestFirstCursor
	}
	return ""
}

// cursorOfOrder strips the order prefix from a cursor, refusing one
// written for the other order.
func cursorOfOrder(cursor string, newestFirst bool) (string, error) {
	body, newest := strings.CutPrefix(cursor, newestFirstCursor)
	if newest == newestFirst {
		return body, nil
	}
	if body == "" || body[0] < '0' || body[0] > '9' {
		return "", notACursor(cursor)
	}
	if newest {
		return "", InvalidField("page_token", "%q continues a newest-first list: ask for newest first again, or start over without the token", cursor)
	}
	return "", InvalidField("page_token", "%q continues an oldest-first list: ask for oldest first again, or start over without the token", cursor)
}

func notACursor(cursor string) error {
	return InvalidField("page_token", "%q is not a page token from a previous list", cursor)
}
