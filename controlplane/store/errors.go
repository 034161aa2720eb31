package store

import (
	"errors"
	"fmt"
)

// Sentinel errors. Drivers and domains wrap them with detail; the gRPC
// boundary maps them to status codes in one place.
var (
	ErrNotFound          = errors.New("not found")
	ErrAlreadyExists     = errors.New("already exists")
	ErrInvalidArgument   = errors.New("invalid argument")
	ErrStaleLease        = errors.New("stale lease")
	ErrIllegalTransition = errors.New("illegal transition")
	ErrUnavailable       = errors.New("store unavailable")
)

// FieldError is bad input in one field. It matches ErrInvalidArgument.
type FieldError struct {
	Field       string
	Description string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Description }

// Is makes errors.Is(err, ErrInvalidArgument) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalidArgument }

// InvalidField returns a *FieldError.
func InvalidField(field, format string, args ...any) error {
	return &FieldError{Field: field, Description: fmt.Sprintf(format, args...)}
}

// TransitionError is a move the transition table does not allow. It matches
// ErrIllegalTransition.
type TransitionError struct {
	TaskID   string
	From, To TaskState
	Allowed  []TaskState
}

func (e *TransitionError) Error() string {
	allowed := "none: it is final"
	if len(e.Allowed) > 0 {
		allowed = JoinStates(e.Allowed)
	}
	return fmt.Sprintf("task %s: cannot move from %s to %s (allowed from %s: %s)", e.TaskID, e.From, e.To, e.From, allowed)
}

// Is makes errors.Is(err, ErrIllegalTransition) true.
func (e *TransitionError) Is(target error) bool { return target == ErrIllegalTransition }
