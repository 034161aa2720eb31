package store

import (
	"context"
	"fmt"
	"maps"
	"time"
)

// AlertStore keeps alert instances and silences, so that what is firing,
// what an operator acked and what is silenced survive a restart and move
// with the evaluation duty when another replica takes it over.
//
// An alert instance is keyed by its rule and the fingerprint of its labels:
// a rule that watches every agent has one instance per agent. An instance
// that resolves keeps its row until it fires again (a new ID, a new
// occurrence) or is pruned.
type AlertStore interface {
	// AlertSave writes the evaluator's view in one transaction: it upserts
	// Alerts by (Rule, Fingerprint), deletes the alerts in DeleteIDs
	// (pending alerts whose condition cleared before they fired), and,
	// when PruneBefore is set, deletes RESOLVED alerts resolved before it
	// and silences that ended before it. An upsert keeps the stored ack
	// when the ID is unchanged (an operator may ack between the
	// evaluator's read and write) and clears it when the ID changed (a new
	// occurrence). An alert without ID, Rule or a valid State is a
	// FieldError.
	AlertSave(ctx context.Context, params *AlertSaveParams) error

	// AlertList returns alerts ordered by Rule then Fingerprint, filtered
	// by States and Rule when set. RESOLVED alerts whose ResolvedAt is
	// before ResolvedSince are left out when ResolvedSince is set.
	AlertList(ctx context.Context, params *AlertListParams) ([]*Alert, error)

	// AlertAck records that By acknowledged the alert at Now, which stops
	// repeated notifications until it resolves. An alert already acked
	// keeps its first ack. An unknown ID is ErrNotFound; a RESOLVED alert
	// is ErrIllegalTransition.
	AlertAck(ctx context.Context, params *AlertAckParams) (*Alert, error)

	// SilenceCreate stores a silence. A silence without ID, Rule or
	// CreatedBy, or whose EndsAt is not after StartsAt, is a FieldError;
	// an ID that exists is ErrAlreadyExists.
	SilenceCreate(ctx context.Context, params *SilenceCreateParams) (*Silence, error)

	// SilenceList returns silences ordered by StartsAt then ID; with
	// ActiveAt set, only those active then (StartsAt <= ActiveAt < EndsAt).
	SilenceList(ctx context.Context, params *SilenceListParams) ([]*Silence, error)

	// SilenceExpire ends a silence at Now (an earlier end is kept). An
	// unknown ID is ErrNotFound.
	SilenceExpire(ctx context.Context, params *SilenceExpireParams) (*Silence, error)
}

// AlertState is where an alert instance is in its life.
type AlertState string

// Alert states, Prometheus's: a condition that holds is PENDING until it
// has held for the rule's duration, then FIRING until it no longer holds,
// then RESOLVED.
const (
	AlertPending  AlertState = "PENDING"
	AlertFiring   AlertState = "FIRING"
	AlertResolved AlertState = "RESOLVED"
)

// Valid reports whether s is one of the states.
func (s AlertState) Valid() bool {
	return s == AlertPending || s == AlertFiring || s == AlertResolved
}

// Alert is one instance of a rule.
type Alert struct {
	// ID is new for each occurrence (a UUIDv7), so an ack names one.
	ID string
	// Rule is the rule's name.
	Rule string
	// Fingerprint identifies Labels; (Rule, Fingerprint) is the key.
	Fingerprint string
	// Labels say which instance: {"agent": "forge"}, {"host": "gpu-1"}.
	Labels   map[string]string
	State    AlertState
	Severity string
	// Summary is the rendered one-line description.
	Summary string
	// Value is the measurement when last evaluated, in the measurement's
	// unit (money rules: micro-dollars, whole numbers).
	Value float64
	// ActiveSince is when the condition started to hold.
	ActiveSince time.Time
	// FiredAt is when it went FIRING; zero while PENDING.
	FiredAt time.Time
	// ResolvedAt is when it went RESOLVED; zero before.
	ResolvedAt time.Time
	// LastNotifiedAt is when a notification last went out for it.
	LastNotifiedAt time.Time
	AckedBy        string
	AckedAt        time.Time
	UpdatedAt      time.Time
}

// Clone returns a deep copy.
func (a *Alert) Clone() *Alert {
	c := *a
	c.Labels = maps.Clone(a.Labels)
	return &c
}

// Silence mutes notifications of the alerts it matches while it is active.
type Silence struct {
	ID string
	// Rule is the rule whose alerts it matches.
	Rule string
	// Matchers, when set, narrow it to the alerts whose labels carry
	// every pair.
	Matchers  map[string]string
	CreatedBy string
	Reason    string
	StartsAt  time.Time
	EndsAt    time.Time
	CreatedAt time.Time
}

// Matches reports whether the silence covers an alert of rule with labels.
func (s *Silence) Matches(rule string, labels map[string]string) bool {
	if s.Rule != rule {
		return false
	}
	for k, v := range s.Matchers {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// ActiveAt reports whether the silence is in force at t.
func (s *Silence) ActiveAt(t time.Time) bool {
	return !t.Before(s.StartsAt) && t.Before(s.EndsAt)
}

// AlertSaveParams are AlertSave's arguments.
type AlertSaveParams struct {
	Alerts      []*Alert
	DeleteIDs   []string
	PruneBefore time.Time
}

// AlertListParams are AlertList's arguments.
type AlertListParams struct {
	States        []AlertState
	Rule          string
	ResolvedSince time.Time
}

// AlertAckParams are AlertAck's arguments.
type AlertAckParams struct {
	ID  string
	By  string
	Now time.Time
}

// SilenceCreateParams are SilenceCreate's arguments.
type SilenceCreateParams struct {
	Silence *Silence
	Now     time.Time
}

// SilenceListParams are SilenceList's arguments.
type SilenceListParams struct {
	ActiveAt time.Time
}

// SilenceExpireParams are SilenceExpire's arguments.
type SilenceExpireParams struct {
	ID  string
	Now time.Time
}

// CheckAlerts validates alerts before a driver stores them.
func CheckAlerts(alerts []*Alert) error {
	for i, a := range alerts {
		switch {
		case a == nil:
			return InvalidField("alerts", "alert %d is missing", i)
		case a.ID == "":
			return InvalidField("id", "alert %d has no id", i)
		case a.Rule == "":
			return InvalidField("rule", "alert %d has no rule", i)
		case !a.State.Valid():
			return InvalidField("state", "alert %d: unknown state %q", i, a.State)
		}
	}
	return nil
}

// CheckSilence validates a silence before a driver stores it.
func CheckSilence(s *Silence) error {
	switch {
	case s == nil:
		return InvalidField("silence", "is missing")
	case s.ID == "":
		return InvalidField("id", "a silence needs an id")
	case s.Rule == "":
		return InvalidField("rule", "a silence needs the rule it mutes")
	case s.CreatedBy == "":
		return InvalidField("created_by", "a silence needs who made it")
	case !s.EndsAt.After(s.StartsAt):
		return InvalidField("ends_at", "%s is not after the start %s", s.EndsAt.Format(time.RFC3339), s.StartsAt.Format(time.RFC3339))
	}
	return nil
}

// AlertResolvedErr is the error of acking a resolved alert.
func AlertResolvedErr(id string) error {
	return fmt.Errorf("alert %s is resolved: nothing to acknowledge: %w", id, ErrIllegalTransition)
}
