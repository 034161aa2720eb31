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
	// ErrStorageFull is a write refused because the store's disk is full
	// (or its file reached a size limit). Reads still work, and writes work
	// again once space returns; nothing half-written is kept.
	ErrStorageFull = errors.New("the store's disk is full")
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

// ErrQuotaExceeded is a limit reached: a budget's hard cap, or the
// emergency stop. The gRPC boundary answers RESOURCE_EXHAUSTED.
var ErrQuotaExceeded = errors.New("quota exceeded")

// QuotaError names the limit reached. It matches ErrQuotaExceeded; the
// gRPC boundary sends Subject and Description as a google.rpc.QuotaFailure
// detail, so a client can tell which budget refused it.
type QuotaError struct {
	// Subject names the limit: "budget:total", "budget:agent:forge",
	// "budget:tier:frontier", "emergency-stop".
	Subject     string
	Description string
}

func (e *QuotaError) Error() string { return e.Subject + ": " + e.Description }

// Is makes errors.Is(err, ErrQuotaExceeded) true.
func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }
