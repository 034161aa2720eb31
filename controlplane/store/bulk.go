package store

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// TaskFilter selects tasks: every field set must hold, and a zero field
// selects everything. It is the one definition of "which tasks" shared by
// TaskList (see TaskListParams.Filter) and the bulk calls (TaskBulk,
// QueuePauseTasks): each driver turns it into SQL in one function used by
// both, so that a list with a filter shows exactly the tasks a bulk call
// with the same filter changes. Match is the same predicate in Go.
type TaskFilter struct {
	States   []TaskState
	Role     string
	Assignee string            // matches Assignee or LeaseHolder
	Labels   map[string]string // every pair must match
	Kind     string
	// Tier keeps tasks of this spend tier (Task.Tier).
	Tier string
	// MinAttempt keeps tasks with Attempt >= MinAttempt.
	MinAttempt int
	// MinPriority and MaxPriority, when set, bound Priority (inclusive).
	MinPriority, MaxPriority *int32
	// CreatedBefore, when set, keeps tasks created at or before it (older
	// than an age).
	CreatedBefore time.Time
	// StateChangedBefore, when set, keeps tasks that entered their current
	// state at or before it (in their state for longer than an age).
	StateChangedBefore time.Time
}

// Empty reports whether f selects every task.
func (f *TaskFilter) Empty() bool {
	return len(f.States) == 0 && f.Role == "" && f.Assignee == "" && len(f.Labels) == 0 && f.Kind == "" && f.Tier == "" &&
		f.MinAttempt <= 0 && f.MinPriority == nil && f.MaxPriority == nil && f.CreatedBefore.IsZero() && f.StateChangedBefore.IsZero()
}

// Match reports whether f selects t: the predicate the drivers apply in SQL.
func (f *TaskFilter) Match(t *Task) bool {
	switch {
	case len(f.States) > 0 && !slices.Contains(f.States, t.State),
		f.Role != "" && t.Role != f.Role,
		f.Assignee != "" && t.Assignee != f.Assignee && t.LeaseHolder != f.Assignee,
		f.Kind != "" && t.Kind != f.Kind,
		f.Tier != "" && t.Tier != f.Tier,
		f.MinAttempt > 0 && int(t.Attempt) < f.MinAttempt,
		f.MinPriority != nil && t.Priority < *f.MinPriority,
		f.MaxPriority != nil && t.Priority > *f.MaxPriority,
		!f.CreatedBefore.IsZero() && t.CreatedAt.After(f.CreatedBefore),
		!f.StateChangedBefore.IsZero() && t.StateChangedAt.After(f.StateChangedBefore):
		return false
	}
	for k, v := range f.Labels {
		if got, ok := t.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Filter is the list's filter as a TaskFilter: what the drivers apply.
// IDs and IDPrefix, which only a list has, are applied beside it.
func (p *TaskListParams) Filter() TaskFilter {
	return TaskFilter{
		States: p.States, Role: p.Role, Assignee: p.Assignee, Labels: p.Labels, Kind: p.Kind, Tier: p.Tier, MinAttempt: p.MinAttempt,
		MinPriority: p.MinPriority, MaxPriority: p.MaxPriority, CreatedBefore: p.CreatedBefore, StateChangedBefore: p.StateChangedBefore,
	}
}

// SetFilter sets the list's filter fields from f.
func (p *TaskListParams) SetFilter(f TaskFilter) {
	p.States, p.Role, p.Assignee, p.Labels, p.Kind, p.Tier, p.MinAttempt = f.States, f.Role, f.Assignee, maps.Clone(f.Labels), f.Kind, f.Tier, f.MinAttempt
	p.MinPriority, p.MaxPriority, p.CreatedBefore, p.StateChangedBefore = f.MinPriority, f.MaxPriority, f.CreatedBefore, f.StateChangedBefore
}

// ErrTooMany is a bulk call whose filter selects more tasks than one call
// may change. The gRPC boundary answers FAILED_PRECONDITION.
var ErrTooMany = errors.New("too many tasks")

// TooManyError says how many tasks a bulk call's filter matched. It
// matches ErrTooMany.
type TooManyError struct {
	Matched, Max int
}

func (e *TooManyError) Error() string {
	return fmt.Sprintf("the filter matches %d tasks, more than the %d one call may change: narrow the filter", e.Matched, e.Max)
}

// Is makes errors.Is(err, ErrTooMany) true.
func (e *TooManyError) Is(target error) bool { return target == ErrTooMany }

// TaskBulkParams is one operator change applied to every task Filter
// selects, in one transaction.
type TaskBulkParams struct {
	Filter TaskFilter
	// To, when set, moves each task there exactly as TaskMove does
	// (OperatorMove); a task whose move CanOperatorMove does not allow is
	// left as it is and counted in Skipped.
	To TaskState
	// Priority, when set (and To is not), sets each task's priority.
	Priority *int32
	// Reason becomes each moved task's note when set.
	Reason string
	// Max bounds the tasks one call selects: more matching is a
	// *TooManyError and nothing changes. 0 means no bound.
	Max int
	// DryRun changes nothing: Changes hold the tasks that would change, as
	// they are (PreviousState = their state).
	DryRun bool
	Now    time.Time
}

// TaskBulkResult is what TaskBulk did (or, with DryRun, would do).
type TaskBulkResult struct {
	// Matched is how many tasks the filter selected.
	Matched int
	// Changed is how many of them changed (would change).
	Changed int
	// Changes hold the Changed tasks in creation order, then the BACKLOG
	// tasks promoted because a move reached DONE.
	Changes []TaskChange
	// Skipped counts the selected tasks a move left alone, by their state.
	Skipped map[TaskState]int
}

// OperatorMove applies an operator move to a loaded task, the rule
// TaskMove and TaskBulk share: a move CanOperatorMove does not allow is a
// *TransitionError and t is untouched. Leaving IN_PROGRESS ends the lease;
// FAILED→READY resets Attempt and RunAfter; the move clears PausedByQueue
// (an operator's pause is not the queue's). Reason, when set, becomes the
// note. The caller promotes dependents when To is DONE.
func OperatorMove(t *Task, to TaskState, reason string, now time.Time) error {
	from := t.State
	if !CanOperatorMove(from, to) {
		return &TransitionError{TaskID: t.ID, From: from, To: to, Allowed: OperatorMoves(from)}
	}
	t.SetState(to, now)
	t.PausedByQueue = false
	if from == StateInProgress {
		t.EndLease()
	}
	if from == StateFailed && to == StateReady {
		t.Attempt = 0
		t.RunAfter = time.Time{}
	}
	if reason != "" {
		t.Note = reason
	}
	return nil
}

// CheckTaskBulk is the input check every driver's TaskBulk makes.
func CheckTaskBulk(p *TaskBulkParams) error {
	switch {
	case p.Filter.Empty():
		return InvalidField("filter", "is empty: it would select every task; name at least one term")
	case p.To == StateUnspecified && p.Priority == nil:
		return InvalidField("to", "a bulk call needs a state to move to or a priority")
	case p.To != StateUnspecified && p.Priority != nil:
		return InvalidField("to", "a bulk call either moves or sets a priority, not both")
	case p.To != StateUnspecified && !p.To.Valid():
		return InvalidField("to", "unknown state %s", p.To)
	}
	return nil
}

// ApplyBulk applies p's change to the selected tasks (loaded for update,
// in creation order) and returns the result; changed are the tasks to
// write back (none with DryRun) and done the ids that reached DONE, whose
// dependents the caller promotes.
func ApplyBulk(p *TaskBulkParams, tasks []*Task, now time.Time) (res *TaskBulkResult, changed []int, done []string) {
	res = &TaskBulkResult{Matched: len(tasks), Skipped: map[TaskState]int{}}
	for i, t := range tasks {
		from := t.State
		move := p.To != StateUnspecified
		if move && !CanOperatorMove(from, p.To) {
			res.Skipped[from]++
			continue
		}
		if !p.DryRun {
			if move {
				_ = OperatorMove(t, p.To, p.Reason, now)
				if p.To == StateDone {
					done = append(done, t.ID)
				}
			} else {
				t.Priority = *p.Priority
				t.UpdatedAt = now
			}
			changed = append(changed, i)
		}
		res.Changes = append(res.Changes, TaskChange{Task: t.Clone(), PreviousState: from})
	}
	res.Changed = len(res.Changes)
	return res, changed, done
}

// QueuePauseTasksParams is a selective pause: the READY tasks Filter
// selects move to PAUSED, held by the pause named ID.
type QueuePauseTasksParams struct {
	ID     string
	Reason string
	// Filter selects the tasks; its States are ignored (a pause holds
	// READY tasks only). It must not be empty.
	Filter TaskFilter
	// FilterText is the filter as the caller shows it, kept with the
	// pause for QueueStats.
	FilterText string
	// Max bounds the tasks one pause may hold, as TaskBulkParams.Max.
	Max int
	Now time.Time
}

// QueueResumeTasksParams ends selective pauses.
type QueueResumeTasksParams struct {
	// ID names the pause to end; empty ends every selective pause.
	ID  string
	Now time.Time
}

// QueueResumeTasksResult is what ending selective pauses did.
type QueueResumeTasksResult struct {
	// Ended names the pauses ended.
	Ended []string
	// Changes hold the tasks that went back (to READY, or to PAUSED by
	// the queue while the queue is paused).
	Changes []TaskChange
}

// QueuePauseInfo is one active selective pause.
type QueuePauseInfo struct {
	ID         string
	Reason     string
	FilterText string
	CreatedAt  time.Time
	// Held is how many tasks the pause still holds.
	Held int64
}

// CheckQueuePauseTasks is the input check every driver's QueuePauseTasks
// makes; it returns the filter the pause applies (READY only).
func CheckQueuePauseTasks(p *QueuePauseTasksParams) (TaskFilter, error) {
	f := p.Filter
	f.States = nil
	if p.ID == "" {
		return f, InvalidField("pause_id", "required")
	}
	if f.Empty() {
		return f, InvalidField("filter", "is empty: a selective pause needs at least one term besides state (PauseQueue without a filter pauses everything)")
	}
	f.States = []TaskState{StateReady}
	return f, nil
}
