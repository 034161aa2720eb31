package budget

import (
	"context"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// GroupBy picks a report's breakdown: "" (none), "agent", "model",
// "provider", "tier", "task" or "day".
type GroupBy string

// The breakdowns.
const (
	GroupNone     GroupBy = ""
	GroupAgent    GroupBy = store.DimAgent
	GroupModel    GroupBy = store.DimModel
	GroupProvider GroupBy = store.DimProvider
	GroupTier     GroupBy = store.DimTier
	GroupTask     GroupBy = store.DimTask
	GroupDay      GroupBy = "day"
)

// Query asks for a spend report.
type Query struct {
	// FromDay and ToDay bound the range (YYYY-MM-DD, inclusive); ToDay
	// empty is today, FromDay empty is ToDay minus Days-1.
	FromDay, ToDay string
	Days           int
	GroupBy        GroupBy
	// Agent and Tier, when set, keep only that agent's or tier's spend.
	Agent, Tier string
	// Limit caps the groups, largest first; 0 means 100.
	Limit int
}

// Group is one row of a breakdown.
type Group struct {
	Key string
	store.SpendTotals
}

// Report is a spend report.
type Report struct {
	TimeZone       string
	FromDay, ToDay string
	Totals         store.SpendTotals
	Groups         []Group
	GroupsLeftOut  int
	// Rolling7DayAvg is the average daily cost over the 7 days before
	// ToDay.
	Rolling7DayAvg int64
}

// Spend answers a report from the day rollups only, so its cost does not
// grow with the number of events.
func (s *Service) Spend(ctx context.Context, q Query) (*Report, error) {
	to := q.ToDay
	if to == "" {
		to = s.Today()
	}
	toT, err := time.Parse(dayLayout, to)
	if err != nil {
		return nil, store.InvalidField("to_day", "%q is not a day (YYYY-MM-DD)", q.ToDay)
	}
	from := q.FromDay
	var fromT time.Time
	if from == "" {
		days := max(q.Days, 1)
		if days > MaxReportDays {
			return nil, store.InvalidField("days", "at most %d", MaxReportDays)
		}
		fromT = toT.AddDate(0, 0, -(days - 1))
		from = fromT.Format(dayLayout)
	} else if fromT, err = time.Parse(dayLayout, from); err != nil {
		return nil, store.InvalidField("from_day", "%q is not a day (YYYY-MM-DD)", q.FromDay)
	}
	if fromT.After(toT) {
		return nil, store.InvalidField("from_day", "%s is after to_day %s", from, to)
	}
	if toT.Sub(fromT) >= MaxReportDays*24*time.Hour {
		return nil, store.InvalidField("from_day", "the range %s..%s is longer than %d days", from, to, MaxReportDays)
	}
	if q.Tier != "" && !store.ValidTier(q.Tier) {
		return nil, store.InvalidField("tier", "%q is not a tier", q.Tier)
	}
	limit := q.Limit
	if limit == 0 {
		limit = DefaultGroupLimit
	}

	// The rollup holding the filtered spend, and how to break it down.
	base := store.SpendRollupQueryParams{Dimension: store.DimTotal}
	switch {
	case q.Agent != "" && q.Tier != "":
		base = store.SpendRollupQueryParams{Dimension: store.CompositeDim(store.DimAgent, store.DimTier), Key: q.Agent + store.RollupSep + q.Tier}
	case q.Agent != "":
		base = store.SpendRollupQueryParams{Dimension: store.DimAgent, Key: q.Agent}
	case q.Tier != "":
		base = store.SpendRollupQueryParams{Dimension: store.DimTier, Key: q.Tier}
	}
	var groups *store.SpendRollupQueryParams
	switch g := q.GroupBy; {
	case g == GroupNone:
	case g == GroupDay:
		p := base
		p.Group = store.GroupDay
		groups = &p
	case g != GroupAgent && g != GroupModel && g != GroupProvider && g != GroupTier && g != GroupTask:
		return nil, store.InvalidField("group_by", "unknown breakdown %q", g)
	case q.Agent == "" && q.Tier == "":
		groups = &store.SpendRollupQueryParams{Dimension: string(g), Group: store.GroupKey, Limit: limit}
	case q.Agent != "" && q.Tier != "":
		if g != GroupAgent && g != GroupTier {
			return nil, store.InvalidField("group_by", "with both an agent and a tier filter, spend breaks down only by day")
		}
		p := base
		p.Group, p.Limit = store.GroupKey, limit
		groups = &p
	default:
		outer, key := store.DimAgent, q.Agent
		if q.Tier != "" {
			outer, key = store.DimTier, q.Tier
		}
		if string(g) == outer {
			p := base
			p.Group, p.Limit = store.GroupKey, limit
			groups = &p
		} else {
			groups = &store.SpendRollupQueryParams{Dimension: store.CompositeDim(outer, string(g)), KeyPrefix: key + store.RollupSep,
				Group: store.GroupKey, Limit: limit}
		}
	}

	rep := &Report{TimeZone: s.loc.String(), FromDay: from, ToDay: to}
	tot := base
	tot.FromDay, tot.ToDay, tot.Group = from, to, store.GroupNone
	res, err := s.store.SpendRollupQuery(ctx, &tot)
	if err != nil {
		return nil, err
	}
	rep.Totals = res.Rows[0].SpendTotals
	if groups != nil {
		groups.FromDay, groups.ToDay = from, to
		res, err := s.store.SpendRollupQuery(ctx, groups)
		if err != nil {
			return nil, err
		}
		for _, r := range res.Rows {
			key := r.Key
			if groups.Key != "" && groups.Group == store.GroupKey {
				// A grouping by the filter's own dimension: the key is
				// the filter's value, not the composite key.
				key = q.Agent
				if string(q.GroupBy) == store.DimTier {
					key = q.Tier
				}
			}
			rep.Groups = append(rep.Groups, Group{Key: key, SpendTotals: r.SpendTotals})
		}
		rep.GroupsLeftOut = res.LeftOut
	}
	// The 7 days before to_day.
	roll := base
	roll.FromDay, roll.ToDay, roll.Group = toT.AddDate(0, 0, -7).Format(dayLayout), toT.AddDate(0, 0, -1).Format(dayLayout), store.GroupNone
	res, err = s.store.SpendRollupQuery(ctx, &roll)
	if err != nil {
		return nil, err
	}
	rep.Rolling7DayAvg = roundDiv(res.Rows[0].CostMicros, 7)
	return rep, nil
}

// roundDiv is a/b rounded half up, for non-negative a, without
// overflowing when a is near the int64 range.
func roundDiv(a, b int64) int64 {
	q, r := a/b, a%b
	if r >= b-r {
		q++
	}
	return q
}
