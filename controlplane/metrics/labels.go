package metrics

import (
	"cmp"
	"slices"
	"sync"
)

// MaxLabelValues is the most distinct values one label of one instrument
// takes when its values come from what callers send or register (models,
// agents, hosts, roles, tiers, budget names, GPU names, disk paths, probe
// names): past it the rest share one series whose label is Other. No
// honest factory reaches it; a caller inventing names cannot grow /metrics
// past it.
const MaxLabelValues = 100

// Other is the label value of the series that stands for every value past
// MaxLabelValues.
const Other = "other"

// topValues returns by when it has at most limit keys; otherwise the limit
// largest values (ties by name) and the sum of the rest under Other. A
// gauge read at scrape time keeps what matters most: the biggest spenders.
func topValues(by map[string]int64, limit int) map[string]int64 {
	if len(by) <= limit {
		return by
	}
	keys := make([]string, 0, len(by))
	for k := range by {
		if k != Other {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c := cmp.Compare(by[b], by[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	out := make(map[string]int64, limit+1)
	out[Other] = by[Other]
	for i, k := range keys {
		if i < limit {
			out[k] = by[k]
			continue
		}
		out[Other] += by[k]
	}
	return out
}

// firstNames returns the limit smallest of names, sorted, and whether any
// were left out: gauges per agent or host export those and fold the rest
// into Other, the same ones from scrape to scrape.
func firstNames(names []string, limit int) (kept map[string]bool, more bool) {
	names = slices.Clone(names)
	slices.Sort(names)
	names = slices.Compact(names)
	kept = make(map[string]bool, min(len(names), limit))
	for i, n := range names {
		if i >= limit {
			return kept, true
		}
		kept[n] = true
	}
	return kept, false
}

// labelValues admits the first limit distinct values of a counter's label
// and maps every later one to Other. A counter's series live as long as
// the process, so the first values seen keep theirs.
type labelValues struct {
	limit int
	mu    sync.Mutex
	seen  map[string]struct{}
}

func newLabelValues(limit int) *labelValues {
	return &labelValues{limit: limit, seen: map[string]struct{}{}}
}

// value is v, or Other once limit other values were admitted.
func (l *labelValues) value(v string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[v]; ok {
		return v
	}
	if len(l.seen) >= l.limit {
		return Other
	}
	l.seen[v] = struct{}{}
	return v
}

// boundedBudgets keeps the total and tier budgets and the limit agent
// budgets that spent most today; the spend of the agent budgets past the
// limit is summed into otherSpent (nil when none were left out). Their
// limits are not exported: there is no one limit for "other".
func boundedBudgets(lines []BudgetLine, limit int) (kept []BudgetLine, otherSpent *int64) {
	agents := map[string]int64{}
	for _, b := range lines {
		if b.Scope == "agent" {
			agents[b.Name] += b.SpentMicros
		}
	}
	if len(agents) <= limit {
		return lines, nil
	}
	top := topValues(agents, limit)
	var sum int64
	for _, b := range lines {
		if b.Scope != "agent" {
			kept = append(kept, b)
			continue
		}
		if _, ok := top[b.Name]; ok && b.Name != Other {
			kept = append(kept, b)
			continue
		}
		sum += b.SpentMicros
	}
	return kept, &sum
}
