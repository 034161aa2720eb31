package budget

import (
	_ "embed"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/factory/factory/controlplane/store"
)

// defaultPrices is deploy/prices.yaml as shipped; --prices replaces it.
//
//go:embed prices.yaml
var defaultPrices []byte

// Price is a model's list price in micro-dollars per million tokens.
type Price struct {
	InputMicros  int64
	OutputMicros int64
}

// Prices prices calls by model: exact name first, then the longest listed
// name the model's name starts with, then the call's tier.
type Prices struct {
	models map[string]Price
	tiers  map[string]Price
}

// DefaultPrices returns the built-in table.
func DefaultPrices() *Prices {
	p, err := ParsePrices(defaultPrices)
	if err != nil {
		panic("budget: the built-in price table does not parse: " + err.Error())
	}
	return p
}

// LoadPrices reads a price table file (see deploy/prices.yaml).
func LoadPrices(path string) (*Prices, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("price table: %w", err)
	}
	p, err := ParsePrices(b)
	if err != nil {
		return nil, fmt.Errorf("price table %s: %w", path, err)
	}
	return p, nil
}

type priceYAML struct {
	Input  yaml.Node `yaml:"input"`
	Output yaml.Node `yaml:"output"`
}

type pricesYAML struct {
	Models map[string]priceYAML `yaml:"models"`
	Tiers  map[string]priceYAML `yaml:"tiers"`
}

// ParsePrices parses a price table. Amounts are read as decimal text, so
// "0.15" is exactly 150,000 micro-dollars.
func ParsePrices(b []byte) (*Prices, error) {
	var raw pricesYAML
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, err
	}
	p := &Prices{models: make(map[string]Price, len(raw.Models)), tiers: make(map[string]Price, len(raw.Tiers))}
	conv := func(where string, in priceYAML) (Price, error) {
		i, err := parseMicros(in.Input.Value)
		if err != nil {
			return Price{}, fmt.Errorf("%s: input: %w", where, err)
		}
		o, err := parseMicros(in.Output.Value)
		if err != nil {
			return Price{}, fmt.Errorf("%s: output: %w", where, err)
		}
		return Price{InputMicros: i, OutputMicros: o}, nil
	}
	for name, m := range raw.Models {
		pr, err := conv("model "+name, m)
		if err != nil {
			return nil, err
		}
		p.models[name] = pr
	}
	for name, m := range raw.Tiers {
		if !store.ValidTier(name) {
			return nil, fmt.Errorf("tiers: %q is not a tier (frontier, mid, local, infra)", name)
		}
		pr, err := conv("tier "+name, m)
		if err != nil {
			return nil, err
		}
		p.tiers[name] = pr
	}
	return p, nil
}

// parseMicros reads a non-negative decimal dollar amount with at most six
// places as micro-dollars.
func parseMicros(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("missing")
	}
	whole, frac, _ := strings.Cut(s, ".")
	if len(frac) > 6 {
		return 0, fmt.Errorf("%q has more than six decimal places", s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w < 0 || strings.HasPrefix(whole, "+") || w > 1_000_000 {
		return 0, fmt.Errorf("%q is not an amount of dollars from 0 to 1,000,000", s)
	}
	f := int64(0)
	if frac != "" {
		f, err = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
		if err != nil || f < 0 {
			return 0, fmt.Errorf("%q is not a decimal amount", s)
		}
	}
	return w*1_000_000 + f, nil
}

// Lookup returns the price of model, or of tier when no model matches.
func (p *Prices) Lookup(model, tier string) (Price, bool) {
	if pr, ok := p.models[model]; ok {
		return pr, true
	}
	best, found := "", false
	for name := range p.models {
		if strings.HasPrefix(model, name) && len(name) > len(best) {
			best, found = name, true
		}
	}
	if found {
		return p.models[best], true
	}
	pr, ok := p.tiers[tier]
	return pr, ok
}

// Cost prices a call: tokens times the per-million prices, rounded half
// up to a micro-dollar, in exact integer arithmetic.
func (pr Price) Cost(inputTokens, outputTokens int64) int64 {
	return mulDivRound(inputTokens, pr.InputMicros) + mulDivRound(outputTokens, pr.OutputMicros)
}

// mulDivRound is round(a*b / 1e6) for non-negative a and b, without
// overflowing on the product.
func mulDivRound(a, b int64) int64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	lo, carry := bits.Add64(lo, 500_000, 0)
	hi += carry
	if hi >= 1_000_000 {
		// Past what an int64 of micro-dollars can hold; validation keeps
		// real calls far below.
		return 1<<63 - 1
	}
	q, _ := bits.Div64(hi, lo, 1_000_000)
	if q > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(q)
}
