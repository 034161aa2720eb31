package approval

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Policy is runbook §9.3 as configuration: which tiers policy approves by
// itself, the minimum tier of each kind of action, what a kind it does not
// know gets, and when a reminder goes out.
//
// Kinds are compared in their normal form (NormalizeKind: lower case, runs
// of spaces, '-' and '_' as one '_') and through aliases, so "DNS",
// "dns-change" and "dns change " are all the kind dns_change.
type Policy struct {
	// AutoApproveMaxTier is the highest tier approved by policy at once
	// (recorded as such and notified). -1 sends every request to an
	// operator.
	AutoApproveMaxTier int32 `yaml:"auto_approve_max_tier"`
	// KindTiers is the minimum tier per kind: a request declared lower is
	// raised to it. Its keys are the kinds policy knows.
	KindTiers map[string]int32 `yaml:"kind_tiers"`
	// KindAliases maps other spellings to a kind of KindTiers or
	// SpendKinds ("dns" to "dns_change").
	KindAliases map[string]string `yaml:"kind_aliases"`
	// UnknownKindTier is the minimum tier of a request whose kind policy
	// does not know (an empty kind included): unsure means a person looks.
	UnknownKindTier int32 `yaml:"unknown_kind_tier"`
	// SpendKinds are kinds that spend money. A request of any kind whose
	// amount (amount_micros, or "amount_micros" in its payload) is above
	// SpendThresholdMicros is at least SpendTier; a spend kind whose amount
	// is missing or unreadable is treated as above it.
	SpendKinds           []string `yaml:"spend_kinds"`
	SpendThresholdMicros int64    `yaml:"spend_threshold_micros"`
	SpendTier            int32    `yaml:"spend_tier"`
	// ReminderFraction, when above 0, sends a reminder once this fraction
	// of a request's time has passed undecided (0.5: half-way).
	ReminderFraction float64 `yaml:"reminder_fraction"`
}

// DefaultPolicy is the runbook's: Tier 0-1 auto-approved; reading,
// research, analysis, drafts, builds and tests are Tier 0 and staging
// deploys and internal messages Tier 1 (their declared tier still
// counts); production deploys, the first customer-facing message, DNS,
// domain and certificate changes and public posts at least Tier 2;
// spending over $20 in one transaction at least Tier 2; a kind not listed
// at least Tier 2; a reminder half-way to the deadline.
func DefaultPolicy() Policy {
	return Policy{
		AutoApproveMaxTier: 1,
		KindTiers: map[string]int32{
			"research":         0,
			"read":             0,
			"analysis":         0,
			"summary":          0,
			"draft":            0,
			"build":            0,
			"test":             0,
			"code_review":      0,
			"staging_deploy":   1,
			"internal_message": 1,

			"production_deploy":      2,
			"first_customer_message": 2,
			"dns_change":             2,
			"domain_change":          2,
			"certificate_change":     2,
			"public_post":            2,
		},
		KindAliases: defaultAliases(),
		// Unknown means a person looks.
		UnknownKindTier:      2,
		SpendKinds:           []string{"spend"},
		SpendThresholdMicros: 20_000_000,
		SpendTier:            2,
		ReminderFraction:     0.5,
	}
}

// defaultAliases are the spellings agents use for the runbook's kinds.
func defaultAliases() map[string]string {
	return map[string]string{
		"deploy_production":     "production_deploy",
		"production_deployment": "production_deploy",
		"prod_deploy":           "production_deploy",
		"deploy_prod":           "production_deploy",
		"production_release":    "production_deploy",
		"release_production":    "production_deploy",

		"customer_message":       "first_customer_message",
		"first_customer_contact": "first_customer_message",
		"customer_contact":       "first_customer_message",
		"customer_email":         "first_customer_message",
		"message_customer":       "first_customer_message",

		"dns":        "dns_change",
		"dns_record": "dns_change",
		"dns_update": "dns_change",

		"domain":        "domain_change",
		"domain_update": "domain_change",

		"certificate":        "certificate_change",
		"cert":               "certificate_change",
		"cert_change":        "certificate_change",
		"tls_certificate":    "certificate_change",
		"certificate_update": "certificate_change",

		"post_public": "public_post",
		"social_post": "public_post",
		"tweet":       "public_post",
		"blog_post":   "public_post",

		"payment":  "spend",
		"purchase": "spend",

		"deploy_staging": "staging_deploy",
	}
}

// NormalizeKind is a kind's normal form: trimmed, lower case, and every
// run of spaces, '-' and '_' made one '_' ("Production-Deploy " and
// "production  deploy" are both "production_deploy").
func NormalizeKind(kind string) string {
	var b strings.Builder
	sep := false
	for _, r := range strings.ToLower(strings.TrimSpace(kind)) {
		switch r {
		case ' ', '\t', '-', '_':
			sep = true
			continue
		}
		if sep && b.Len() > 0 {
			b.WriteByte('_')
		}
		sep = false
		b.WriteRune(r)
	}
	return b.String()
}

// CanonicalKind is the kind policy reads kind as: its normal form, through
// the aliases.
func (p Policy) CanonicalKind(kind string) string {
	k := NormalizeKind(kind)
	if c, ok := p.KindAliases[k]; ok {
		return c
	}
	return k
}

func (p Policy) isZero() bool {
	return p.AutoApproveMaxTier == 0 && p.KindTiers == nil && p.KindAliases == nil && p.UnknownKindTier == 0 &&
		p.SpendKinds == nil && p.SpendThresholdMicros == 0 && p.SpendTier == 0 && p.ReminderFraction == 0
}

// Validate checks the policy's ranges, and that every alias names a kind
// policy knows (an alias to nothing would make its spelling unknown
// silently).
func (p Policy) Validate() error {
	switch {
	case p.AutoApproveMaxTier < -1 || p.AutoApproveMaxTier > 3:
		return fmt.Errorf("approval policy: auto_approve_max_tier %d outside [-1, 3]", p.AutoApproveMaxTier)
	case p.ReminderFraction < 0 || p.ReminderFraction >= 1:
		return fmt.Errorf("approval policy: reminder_fraction %v outside [0, 1)", p.ReminderFraction)
	case p.SpendTier < 0 || p.SpendTier > 3 || p.SpendThresholdMicros < 0:
		return errors.New("approval policy: spend_tier must be 0-3 and spend_threshold_micros not negative")
	case p.UnknownKindTier < 0 || p.UnknownKindTier > 3:
		return fmt.Errorf("approval policy: unknown_kind_tier %d outside [0, 3]", p.UnknownKindTier)
	}
	for k, t := range p.KindTiers {
		if t < 0 || t > 3 {
			return fmt.Errorf("approval policy: kind %q has tier %d outside [0, 3]", k, t)
		}
		if k == "" || NormalizeKind(k) != k {
			return fmt.Errorf("approval policy: kind %q is not in normal form (want %q)", k, NormalizeKind(k))
		}
	}
	for _, a := range sortedKeys(p.KindAliases) {
		if !p.known(p.KindAliases[a]) {
			return fmt.Errorf("approval policy: alias %q names kind %q, which is neither in kind_tiers nor in spend_kinds", a, p.KindAliases[a])
		}
	}
	return nil
}

// known reports whether canonical (a canonical kind) is one policy lists.
func (p Policy) known(canonical string) bool {
	if _, ok := p.KindTiers[canonical]; ok {
		return true
	}
	return p.isSpendKind(canonical)
}

func (p Policy) isSpendKind(canonical string) bool {
	for _, sk := range p.SpendKinds {
		if NormalizeKind(sk) == canonical {
			return true
		}
	}
	return false
}

// Action is what policy tiers: a request for approval, or a task.
type Action struct {
	Kind     string
	Declared int32
	// PayloadJSON may carry "amount_micros" (the form older agents send).
	PayloadJSON string
	// AmountMicros is the typed amount; the larger of it and the payload's
	// counts.
	AmountMicros int64
}

// TierFor is the tier a request for approval gets: the declared tier,
// raised to its kind's minimum (UnknownKindTier for a kind policy does not
// know, an empty one included), and to SpendTier for a large or unreadable
// amount.
func (p Policy) TierFor(a Action) int32 {
	return p.tier(a, p.UnknownKindTier)
}

// TaskTier is the tier a new task gets from its kind: like TierFor, except
// that a kind policy does not know keeps the declared tier. A task's kind
// names the work it is ("research", "build", anything a team invents), not
// an action an agent asks to take, so only the kinds policy lists gate it;
// a task that must wait for a person says so with requires_approval.
func (p Policy) TaskTier(a Action) int32 {
	return p.tier(a, 0)
}

func (p Policy) tier(a Action, unknownTier int32) int32 {
	tier := a.Declared
	k := p.CanonicalKind(a.Kind)
	if t, ok := p.KindTiers[k]; ok {
		tier = max(tier, t)
	} else if !p.isSpendKind(k) {
		tier = max(tier, unknownTier)
	}
	amount, stated, readable := payloadAmount(a.PayloadJSON)
	amount = max(amount, a.AmountMicros)
	switch {
	case !readable:
		// An amount that cannot be read is treated as large: the safe side.
		tier = max(tier, p.SpendTier)
	case amount > p.SpendThresholdMicros:
		tier = max(tier, p.SpendTier)
	case p.isSpendKind(k) && !stated && a.AmountMicros == 0:
		// A spend that does not say how much could be any amount.
		tier = max(tier, p.SpendTier)
	}
	return min(tier, 3)
}

// payloadAmount reads "amount_micros" from a JSON object payload: the
// amount, whether the payload states one, and whether what it states is a
// readable amount (a whole number of micro-dollars from 0 to the int64
// maximum). An empty payload, or one that is not an object, states none. A key given twice
// counts at its largest, whichever copy the action's executor reads.
func payloadAmount(payloadJSON string) (amount int64, stated, readable bool) {
	if strings.TrimSpace(payloadJSON) == "" {
		return 0, false, true
	}
	dec := json.NewDecoder(strings.NewReader(payloadJSON))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return 0, false, err == nil
	}
	readable = true
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return amount, true, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return amount, true, false
		}
		if key, _ := tok.(string); key != "amount_micros" {
			continue
		}
		stated = true
		n, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
		if err != nil || n < 0 {
			readable = false
			continue
		}
		amount = max(amount, n)
	}
	return amount, stated, readable
}

// AutoApproves reports whether policy approves a request of this tier by
// itself.
func (p Policy) AutoApproves(tier int32) bool { return tier <= p.AutoApproveMaxTier }

// LoadPolicy reads a YAML policy file. Fields it leaves out keep the
// default policy's values; kind_tiers and kind_aliases given add to (or
// override) the defaults. Kinds and aliases in the file may be written in
// any spelling NormalizeKind accepts; a kind_tiers key that is a known
// alias sets its kind's tier.
func LoadPolicy(path string) (Policy, error) {
	p := DefaultPolicy()
	b, err := os.ReadFile(path)
	if err != nil {
		return Policy{}, fmt.Errorf("approval policy: %w", err)
	}
	var file struct {
		AutoApproveMaxTier   *int32            `yaml:"auto_approve_max_tier"`
		KindTiers            map[string]int32  `yaml:"kind_tiers"`
		KindAliases          map[string]string `yaml:"kind_aliases"`
		UnknownKindTier      *int32            `yaml:"unknown_kind_tier"`
		SpendKinds           []string          `yaml:"spend_kinds"`
		SpendThresholdMicros *int64            `yaml:"spend_threshold_micros"`
		SpendTier            *int32            `yaml:"spend_tier"`
		ReminderFraction     *float64          `yaml:"reminder_fraction"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		return Policy{}, fmt.Errorf("approval policy %s: %w", path, err)
	}
	if file.AutoApproveMaxTier != nil {
		p.AutoApproveMaxTier = *file.AutoApproveMaxTier
	}
	if file.SpendKinds != nil {
		p.SpendKinds = nil
		for _, sk := range file.SpendKinds {
			p.SpendKinds = append(p.SpendKinds, NormalizeKind(sk))
		}
	}
	for _, a := range sortedKeys(file.KindAliases) {
		p.KindAliases[NormalizeKind(a)] = NormalizeKind(file.KindAliases[a])
	}
	for _, k := range sortedKeys(file.KindTiers) {
		p.KindTiers[p.CanonicalKind(k)] = file.KindTiers[k]
	}
	if file.UnknownKindTier != nil {
		p.UnknownKindTier = *file.UnknownKindTier
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
	if err := p.Validate(); err != nil {
		return Policy{}, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
