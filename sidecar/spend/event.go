// Package spend is the sidecar's spend collector: the LLM calls the agents
// on this host make, from two sources, relayed to the control plane's
// ledger (BudgetService.ReportSpendBatch) with the sidecar's token.
//
//   - A loopback HTTP endpoint (POST /v1/spend) that agents on the host
//     post to without a control-plane token of their own: the sidecar
//     vouches for them, and the control plane lets a sidecar report only
//     for the agents its host runs.
//   - A LiteLLM poller that reads the proxy's spend logs
//     (/spend/logs/v2) from a persisted cursor.
//
// Both append to an on-disk spool (sidecar/spool) before they answer or
// move their cursor, and the relay drops an event from the spool only
// after the control plane stored it, so a crash, a restart or a
// control-plane outage loses nothing. Every event carries a stable id (the
// client's, one derived from the body or the LiteLLM request id, or one
// assigned at spool time and kept in the spool), so a replay counts once.
package spend

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
	"github.com/factory/factory/sidecar/spool"
)

// Kind is the spool event kind of a spend event.
const Kind = "spend"

// Event is one call's spend as the sidecar holds it. Money is integer
// micro-dollars; CostMicros nil lets the control plane price the call.
type Event struct {
	ID           string
	Agent        string
	Host         string
	Model        string
	Provider     string
	Tier         string
	InputTokens  int64
	OutputTokens int64
	CostMicros   *int64
	TaskID       string
	OccurredAt   time.Time
	// CacheReadTokens and CacheWriteTokens are the input tokens read from
	// and written to the provider's prompt cache (part of InputTokens
	// where the provider counts them there, as LiteLLM does).
	CacheReadTokens  int64
	CacheWriteTokens int64
	// Failed marks a failed call (LiteLLM's status "failure").
	Failed bool
}

// The API's limits (proto/factory/v1/budget.proto): an event the control
// plane would refuse is refused here, where the client still hears why.
var (
	idPattern     = regexp.MustCompile(`^[A-Za-z0-9._:/@+=-]+$`)
	namePattern   = regexp.MustCompile(`^[A-Za-z0-9._:/-]+$`)
	hostPattern   = regexp.MustCompile(`^[A-Za-z0-9._:-]*$`)
	maxTokens     = int64(100_000_000_000)
	maxCostMicros = int64(1_000_000_000_000)
	// maxCacheTokens is SpendEvent's bound on cache_read_tokens and
	// cache_write_tokens.
	maxCacheTokens = int64(1_000_000_000)
)

// Tiers are the tier names the API knows, as SpendTier values.
var Tiers = map[string]factoryv1.SpendTier{
	"frontier": factoryv1.SpendTier_SPEND_TIER_FRONTIER,
	"mid":      factoryv1.SpendTier_SPEND_TIER_MID,
	"local":    factoryv1.SpendTier_SPEND_TIER_LOCAL,
	"infra":    factoryv1.SpendTier_SPEND_TIER_INFRA,
}

// FieldError names the field that is wrong.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks e against the API's rules.
func (e *Event) Validate() error {
	switch {
	case e.ID != "" && (len(e.ID) > 128 || !idPattern.MatchString(e.ID)):
		return fieldErr("id", "at most 128 of A-Z a-z 0-9 . _ : / @ + = -")
	case e.Agent == "":
		return fieldErr("agent", "required")
	case len(e.Agent) > 128 || !namePattern.MatchString(e.Agent):
		return fieldErr("agent", "at most 128 of A-Z a-z 0-9 . _ : / -")
	case len(e.Host) > 253 || !hostPattern.MatchString(e.Host):
		return fieldErr("host", "not a host name")
	case e.Model == "":
		return fieldErr("model", "required")
	case len(e.Model) > 200:
		return fieldErr("model", "at most 200 characters")
	case len(e.Provider) > 100:
		return fieldErr("provider", "at most 100 characters")
	case e.Tier == "":
		return fieldErr("tier", "required: frontier, mid, local or infra")
	case Tiers[e.Tier] == 0:
		return fieldErr("tier", "%q: want frontier, mid, local or infra", e.Tier)
	case e.InputTokens < 0 || e.InputTokens > maxTokens:
		return fieldErr("input_tokens", "0 to %d", maxTokens)
	case e.OutputTokens < 0 || e.OutputTokens > maxTokens:
		return fieldErr("output_tokens", "0 to %d", maxTokens)
	case e.CacheReadTokens < 0 || e.CacheReadTokens > maxCacheTokens:
		return fieldErr("cache_read_tokens", "0 to %d", maxCacheTokens)
	case e.CacheWriteTokens < 0 || e.CacheWriteTokens > maxCacheTokens:
		return fieldErr("cache_write_tokens", "0 to %d", maxCacheTokens)
	case e.CostMicros != nil && (*e.CostMicros < 0 || *e.CostMicros > maxCostMicros):
		return fieldErr("cost", "0 to $1,000,000")
	case e.TaskID != "" && (len(e.TaskID) > 128 || !namePattern.MatchString(e.TaskID)):
		return fieldErr("task_id", "at most 128 of A-Z a-z 0-9 . _ : / -")
	case e.OccurredAt.IsZero():
		return fieldErr("occurred_at", "required")
	}
	return nil
}

// DerivedID is a deterministic id from the event's content: the same
// report sent twice (a client's retry) gets the same id.
func (e *Event) DerivedID(prefix string) string {
	h := sha256.New()
	cost := "unset"
	if e.CostMicros != nil {
		cost = strconv.FormatInt(*e.CostMicros, 10)
	}
	for _, s := range []string{e.Agent, e.Host, e.Model, e.Provider, e.Tier, strconv.FormatInt(e.InputTokens, 10),
		strconv.FormatInt(e.OutputTokens, 10), cost, e.TaskID, e.OccurredAt.UTC().Format(time.RFC3339Nano)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	// Written only when set, so the ids of reports without them stay
	// what they were.
	if e.CacheReadTokens != 0 || e.CacheWriteTokens != 0 || e.Failed {
		fmt.Fprintf(h, "cache:%d:%d:failed:%t", e.CacheReadTokens, e.CacheWriteTokens, e.Failed)
	}
	return prefix + hex.EncodeToString(h.Sum(nil))[:40]
}

// toSpool turns e into a spool event; the attributes carry every field so
// the event survives a restart intact.
func (e *Event) toSpool() spool.Event {
	a := map[string]string{
		"agent": e.Agent, "model": e.Model, "tier": e.Tier,
		"input_tokens": strconv.FormatInt(e.InputTokens, 10), "output_tokens": strconv.FormatInt(e.OutputTokens, 10),
	}
	for k, v := range map[string]string{"host": e.Host, "provider": e.Provider, "task_id": e.TaskID} {
		if v != "" {
			a[k] = v
		}
	}
	if e.CostMicros != nil {
		a["cost_micros"] = strconv.FormatInt(*e.CostMicros, 10)
	}
	if e.CacheReadTokens != 0 {
		a["cache_read_tokens"] = strconv.FormatInt(e.CacheReadTokens, 10)
	}
	if e.CacheWriteTokens != 0 {
		a["cache_write_tokens"] = strconv.FormatInt(e.CacheWriteTokens, 10)
	}
	if e.Failed {
		a["failed"] = "true"
	}
	return spool.Event{ID: e.ID, Kind: Kind, Time: e.OccurredAt.UTC(), Attributes: a}
}

// fromSpool reads back what toSpool wrote.
func fromSpool(s spool.Event) (*Event, error) {
	if s.Kind != Kind {
		return nil, fmt.Errorf("spool event %s is a %q, not spend", s.ID, s.Kind)
	}
	a := s.Attributes
	e := &Event{ID: s.ID, Agent: a["agent"], Host: a["host"], Model: a["model"], Provider: a["provider"],
		Tier: a["tier"], TaskID: a["task_id"], OccurredAt: s.Time}
	var err error
	if e.InputTokens, err = strconv.ParseInt(a["input_tokens"], 10, 64); err != nil {
		return nil, fmt.Errorf("spool event %s: input_tokens: %w", s.ID, err)
	}
	if e.OutputTokens, err = strconv.ParseInt(a["output_tokens"], 10, 64); err != nil {
		return nil, fmt.Errorf("spool event %s: output_tokens: %w", s.ID, err)
	}
	if v, ok := a["cost_micros"]; ok {
		c, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("spool event %s: cost_micros: %w", s.ID, err)
		}
		e.CostMicros = &c
	}
	// Absent from events spooled before these fields existed: 0.
	for k, dst := range map[string]*int64{"cache_read_tokens": &e.CacheReadTokens, "cache_write_tokens": &e.CacheWriteTokens} {
		if v, ok := a[k]; ok {
			if *dst, err = strconv.ParseInt(v, 10, 64); err != nil {
				return nil, fmt.Errorf("spool event %s: %s: %w", s.ID, k, err)
			}
		}
	}
	e.Failed = a["failed"] == "true"
	return e, nil
}

// Proto is e on the wire.
func (e *Event) Proto() *factoryv1.SpendEvent {
	return &factoryv1.SpendEvent{
		Id: e.ID, Agent: e.Agent, Host: e.Host, Model: e.Model, Provider: e.Provider, Tier: Tiers[e.Tier],
		InputTokens: e.InputTokens, OutputTokens: e.OutputTokens, CostMicros: e.CostMicros, TaskId: e.TaskID,
		OccurredAt: timestamppb.New(e.OccurredAt), CacheReadTokens: e.CacheReadTokens, CacheWriteTokens: e.CacheWriteTokens,
		Failed: e.Failed,
	}
}

// DollarsToMicros converts a decimal dollar amount ("12.50", "0.0353028",
// "1.2e-05": LiteLLM writes small floats in exponent form) to
// micro-dollars exactly, rounding a fraction of a micro-dollar half away
// from zero. No float is involved: the text is read as a rational.
func DollarsToMicros(s string) (int64, error) {
	s = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), "$"))
	if s == "" {
		return 0, errors.New("empty amount")
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return 0, fmt.Errorf("%q is not a dollar amount", s)
	}
	r.Mul(r, big.NewRat(1_000_000, 1))
	num, den := r.Num(), r.Denom()
	q, m := new(big.Int).QuoRem(num, den, new(big.Int))
	// Round half away from zero: compare twice the remainder with the
	// denominator.
	if m.Sign() != 0 {
		twice := new(big.Int).Mul(new(big.Int).Abs(m), big.NewInt(2))
		if twice.Cmp(den) >= 0 {
			if num.Sign() < 0 {
				q.Sub(q, big.NewInt(1))
			} else {
				q.Add(q, big.NewInt(1))
			}
		}
	}
	if !q.IsInt64() {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return q.Int64(), nil
}
