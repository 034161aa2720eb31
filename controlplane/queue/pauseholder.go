package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// PauseHolder is a switch that keeps the queue paused while it is on: the
// emergency stop and maintenance mode. Each resumes the queue when it goes
// off, but only if it paused it; when the other switch is still on at that
// moment, the queue must stay paused, and the duty to resume it passes to
// the switch still on (AdoptPause), so that whichever ends last resumes.
type PauseHolder interface {
	// HoldsPause reports whether the switch is on now.
	HoldsPause(ctx context.Context) (bool, error)
	// AdoptPause makes the switch the one that resumes the queue when it
	// goes off.
	AdoptPause(ctx context.Context) error
	// PauseHold says, while the switch is on, what holds the queue and how
	// to lift it ("the emergency stop holds the queue (reason …); rearm it
	// first: factory emergency-stop --rearm"); empty while it is off.
	PauseHold(ctx context.Context) (string, error)
}

// ErrPauseHeld is an operator's resume refused while a pause holder is on.
// The gRPC boundary answers FAILED_PRECONDITION.
var ErrPauseHeld = errors.New("the queue is held paused")

// PauseHeldError names the holder that refused a resume. It matches
// ErrPauseHeld.
type PauseHeldError struct{ Hold string }

func (e *PauseHeldError) Error() string { return "cannot resume the queue: " + e.Hold }

// Is makes errors.Is(err, ErrPauseHeld) true.
func (e *PauseHeldError) Is(target error) bool { return target == ErrPauseHeld }

// CheckResume refuses an operator's resume while any holder is on, naming
// it; a nil PausePartners holds nothing.
func (p *PausePartners) CheckResume(ctx context.Context) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	holders := append([]PauseHolder(nil), p.holders...)
	p.mu.Unlock()
	for _, h := range holders {
		hold, err := h.PauseHold(ctx)
		if err != nil {
			return fmt.Errorf("checking what holds the queue: %w", err)
		}
		if hold != "" {
			return &PauseHeldError{Hold: hold}
		}
	}
	return nil
}

// PausePartners lets each pause holder find the others.
type PausePartners struct {
	mu      sync.Mutex
	holders []PauseHolder
}

// Add registers a holder.
func (p *PausePartners) Add(h PauseHolder) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holders = append(p.holders, h)
}

// HandOver is called by self as it goes off, before it would resume the
// queue: when another holder is on, that one adopts the pause and HandOver
// reports true (do not resume); otherwise false (resume).
func (p *PausePartners) HandOver(ctx context.Context, self PauseHolder) (bool, error) {
	if p == nil {
		return false, nil
	}
	p.mu.Lock()
	holders := append([]PauseHolder(nil), p.holders...)
	p.mu.Unlock()
	for _, h := range holders {
		if h == self {
			continue
		}
		on, err := h.HoldsPause(ctx)
		if err != nil {
			return false, err
		}
		if on {
			return true, h.AdoptPause(ctx)
		}
	}
	return false, nil
}
