package approval

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Policy is runbook §9.3 as configuration: which tiers policy approves by
// itself, the minimum tier of each kind of action, and when a reminder
// goes out.
type Policy struct {
	// AutoApproveMaxTier is the highest tier approved by policy at once
	// (recorded as such and notified). -1 sends every request to an
	// operator.
	AutoApproveMaxTier int32 `yaml:"auto_approve_max_tier"`
	// KindTiers is the minimum tier per kind: a request declared lower is
	// raised to it.
	KindTiers map[string]int32 `yaml:"kind_tiers"`
	// SpendKinds are kinds whose payload carries an amount in
	// "amount_micros"; above SpendThresholdMicros in one transaction they
	// are at least SpendTier.
	SpendKinds           []string `yaml:"spend_kinds"`
	SpendThresholdMicros int64    `yaml:"spend_threshold_micros"`
	SpendTier            int32    `yaml:"spend_tier"`
	// ReminderFraction, when above 0, sends a reminder once this fraction
	// of a request's time has passed undecided (0.5: half-way).
	ReminderFraction float64 `yaml:"reminder_fraction"`
}

// DefaultPolicy is the runbook's: Tier 0-1 auto-approved; production
// deploys, the first customer-facing message, DNS, domain and certificate
// changes and public posts at least Tier 2; spending over $20 in one
// transaction at least Tier 2; a reminder half-way to the deadline.
func DefaultPolicy() Policy {
	return Policy{
		AutoApproveMaxTier: 1,
		KindTiers: map[string]int32{
			"production_deploy":      2,
			"first_customer_message": 2,
			"dns_change":             2,
			"domain_change":          2,
			"certificate_change":     2,
			"public_post":            2,
		},
		SpendKinds:           []string{"spend"},
		SpendThresholdMicros: 20_000_000,
		SpendTier:            2,
		ReminderFraction:     0.5,
	}
}

func (p Policy) isZero() bool {
	return p.AutoApproveMaxTier == 0 && p.KindTiers == nil && p.SpendKinds == nil && p.SpendThresholdMicros == 0 &&
		p.SpendTier == 0 && p.ReminderFraction == 0
}

// Validate checks the policy's ranges.
func (p Policy) Validate() error {
	switch {
	case p.AutoApproveMaxTier < -1 || p.AutoApproveMaxTier > 3:
		return fmt.Errorf("approval policy: auto_approve_max_tier %d outside [-1, 3]", p.AutoApproveMaxTier)
	case p.ReminderFraction < 0 || p.ReminderFraction >= 1:
		return fmt.Errorf("approval policy: reminder_fraction %v outside [0, 1)", p.ReminderFraction)
	case p.SpendTier < 0 || p.SpendTier > 3 || p.SpendThresholdMicros < 0:
		return errors.New("approval policy: spend_tier must be 0-3 and spend_threshold_micros not negative")
	}
	for k, t := range p.KindTiers {
		if t < 0 || t > 3 {
			return fmt.Errorf("approval policy: kind %q has tier %d outside [0, 3]", k, t)
		}
	}
	return nil
}

// TierFor is the tier a request gets: the declared tier raised to its
// kind's minimum, and to the spend tier for a large spend.
func (p Policy) TierFor(kind string, declared int32, payloadJSON string) int32 {
	tier := declared
	k := strings.ToLower(kind)
	if t, ok := p.KindTiers[k]; ok {
		tier = max(tier, t)
	}
	for _, sk := range p.SpendKinds {
		if k != strings.ToLower(sk) {
			continue
		}
		var body struct {
			AmountMicros int64 `json:"amount_micros"`
		}
		// An unreadable amount is treated as large: the safe side.
		if err := json.Unmarshal([]byte(payloadJSON), &body); err != nil || body.AmountMicros > p.SpendThresholdMicros {
			tier = max(tier, p.SpendTier)
		}
	}
	return min(tier, 3)
}

// AutoApproves reports whether policy approves a request of this tier by
// itself.
func (p Policy) AutoApproves(tier int32) bool { return tier <= p.AutoApproveMaxTier }

// LoadPolicy reads a YAML policy file. Fields it leaves out keep the
// default policy's values; kind_tiers given add to (or override) the
// defaults.
func LoadPolicy(path string) (Policy, error) {
	p := DefaultPolicy()
	b, err := os.ReadFile(path)
	if err != nil {
		return Policy{}, fmt.Errorf("approval policy: %w", err)
	}
	var file struct {
		AutoApproveMaxTier   *int32           `yaml:"auto_approve_max_tier"`
		KindTiers            map[string]int32 `yaml:"kind_tiers"`
		SpendKinds           []string         `yaml:"spend_kinds"`
		SpendThresholdMicros *int64           `yaml:"spend_threshold_micros"`
		SpendTier            *int32           `yaml:"spend_tier"`
		ReminderFraction     *float64         `yaml:"reminder_fraction"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		return Policy{}, fmt.Errorf("approval policy %s: %w", path, err)
	}
	if file.AutoApproveMaxTier != nil {
		p.AutoApproveMaxTier = *file.AutoApproveMaxTier
	}
	for k, t := range file.KindTiers {
		p.KindTiers[strings.ToLower(k)] = t
	}
	if file.SpendKinds != nil {
		p.SpendKinds = file.SpendKinds
	}
	if file.SpendThresholdMicros != nil {
		p.SpendThresholdMicros = *file.SpendThresholdMicros
	}
	if file.SpendTier != nil {
		p.SpendTier = *file.SpendTier
	}
	if file.ReminderFraction != nil {
		p.ReminderFraction = *file.ReminderFraction
	}
	return p, p.Validate()
}
