package cli

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// filterHelp teaches the --filter syntax; task ls, the bulk verbs and
// queue pause show it.
const filterHelp = `Filters (--filter, repeatable; terms separated by commas; every term must
hold):
  state=ready             in this state; alternatives with |: state=ready|paused
  role=builder            needing this role
  agent=forge             assigned to or held (under a lease) by this agent
  kind=build              of this kind
  tier=frontier           using this spend tier (frontier, mid, local, infra)
  label:team=web          carrying this label (key team, value web)
  priority<=0             priority bound: <=, >=, <, > or = (-1000..1000)
  attempt>=3              claimed at least this many times (>= or >)
  age>1h                  created longer ago than this (s, m, h or d)
  state-age>30m           in its current state for longer than this
Quote an expression holding <, > or |, which the shell reads itself:
--filter 'state=failed|review,attempt>=3'. The same filter lists with
"task ls --filter" exactly the tasks a bulk verb with it changes: look
before you leap.`

// filterFlags is the --filter flag shared by task ls, the bulk verbs and
// queue pause.
type filterFlags struct {
	exprs []string
	cmd   *cobra.Command
}

func addFilterFlags(cmd *cobra.Command) *filterFlags {
	ff := &filterFlags{cmd: cmd}
	cmd.Flags().StringArrayVar(&ff.exprs, "filter", nil, "select tasks by a filter expression such as state=ready,role=builder (repeatable; see above)")
	return ff
}

// set reports whether --filter was given, even empty.
func (ff *filterFlags) set() bool { return ff.cmd.Flags().Changed("filter") }

// filter parses every --filter into one TaskFilter.
func (ff *filterFlags) filter() (*factoryv1.TaskFilter, error) {
	return parseFilter(ff.exprs)
}

// required is the filter of a bulk verb: given and not empty, so that no
// typo can select every task.
func (ff *filterFlags) required(verb string) (*factoryv1.TaskFilter, error) {
	f, err := ff.filter()
	if err != nil {
		return nil, err
	}
	if proto.Equal(f, &factoryv1.TaskFilter{}) {
		return nil, usageErrorf("--filter is empty: %s needs at least one term, or it would select every task (for example --filter state=failed,role=builder)", verb)
	}
	return f, nil
}

// filterKeys are the terms parseFilter knows, for its errors.
const filterKeys = "state, role, agent, kind, tier, label:KEY, priority, attempt, age, state-age"

// parseFilter parses filter expressions: comma-separated terms, each
// KEY OP VALUE. An error names the bad term.
func parseFilter(exprs []string) (*factoryv1.TaskFilter, error) {
	f := &factoryv1.TaskFilter{}
	for _, expr := range exprs {
		for _, term := range strings.Split(expr, ",") {
			term = strings.TrimSpace(term)
			if term == "" {
				continue
			}
			if err := addTerm(f, term); err != nil {
				return nil, usageErrorf("--filter: term %q: %v", term, err)
			}
		}
	}
	return f, nil
}

func addTerm(f *factoryv1.TaskFilter, term string) error {
	i := strings.IndexAny(term, "<>=")
	if i <= 0 {
		return fmt.Errorf("want KEY=VALUE or KEY<=N and the like (keys: %s)", filterKeys)
	}
	key := strings.ToLower(strings.TrimSpace(term[:i]))
	op := term[i : i+1]
	if i+1 < len(term) && term[i+1] == '=' && op != "=" {
		op += "="
	}
	value := strings.TrimSpace(term[i+len(op):])
	if lk, ok := strings.CutPrefix(key, "label:"); ok {
		key = "label"
		if op != "=" || lk == "" {
			return fmt.Errorf("want label:KEY=VALUE")
		}
		value = lk + "=" + value
	}
	equals := func() error {
		if op != "=" {
			return fmt.Errorf("%s takes =, not %s", key, op)
		}
		if value == "" {
			return fmt.Errorf("%s needs a value", key)
		}
		return nil
	}
	switch key {
	case "state":
		if err := equals(); err != nil {
			return err
		}
		for _, s := range strings.Split(value, "|") {
			st, err := parseState(s)
			if err != nil {
				return err
			}
			if !slices.Contains(f.States, st) {
				f.States = append(f.States, st)
			}
		}
	case "role", "agent", "kind", "tier":
		if err := equals(); err != nil {
			return err
		}
		p := map[string]*string{"role": &f.Role, "agent": &f.Agent, "kind": &f.Kind, "tier": &f.Tier}[key]
		if *p != "" && *p != value {
			return fmt.Errorf("%s given twice (%q and %q): a task has one", key, *p, value)
		}
		*p = value
	case "label":
		f.Labels = append(f.Labels, value)
	case "priority":
		n, err := strconv.ParseInt(value, 10, 32)
		if err != nil || n < -1000 || n > 1000 {
			return fmt.Errorf("priority %q is not a whole number from -1000 to 1000", value)
		}
		lo, hi := int32(n), int32(n)
		switch op {
		case "<":
			hi--
		case ">":
			lo++
		}
		if op != "<" && op != "<=" && (f.MinPriority == nil || lo > f.GetMinPriority()) {
			f.MinPriority = &lo
		}
		if op != ">" && op != ">=" && (f.MaxPriority == nil || hi < f.GetMaxPriority()) {
			f.MaxPriority = &hi
		}
	case "attempt":
		n, err := strconv.ParseInt(value, 10, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("attempt %q is not a whole number of claims", value)
		}
		switch op {
		case ">":
			n++
		case ">=":
		default:
			return fmt.Errorf("attempt takes >= or > (tasks claimed at least N times), not %s", op)
		}
		f.MinAttempt = max(f.MinAttempt, int32(n))
	case "age", "state-age", "state_age":
		if op != ">" && op != ">=" {
			return fmt.Errorf("%s takes > (older than), not %s", key, op)
		}
		d, err := parseAge(value)
		if err != nil {
			return err
		}
		if key == "age" {
			f.MinAge = durationpb.New(d)
		} else {
			f.MinStateAge = durationpb.New(d)
		}
	default:
		return fmt.Errorf("unknown key %q (keys: %s)", key, filterKeys)
	}
	return nil
}

// parseAge reads a span: a Go duration (90s, 1h30m) or whole days (2d).
func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a span such as 90s, 30m, 2h or 3d", s)
	}
	return d, nil
}

// formatFilter writes a filter back in --filter syntax.
func formatFilter(f *factoryv1.TaskFilter) string {
	var terms []string
	if len(f.GetStates()) > 0 {
		names := make([]string, len(f.GetStates()))
		for i, st := range f.GetStates() {
			names[i] = stateName(st)
		}
		terms = append(terms, "state="+strings.Join(names, "|"))
	}
	for _, kv := range [][2]string{{"role", f.GetRole()}, {"agent", f.GetAgent()}, {"kind", f.GetKind()}, {"tier", f.GetTier()}} {
		if kv[1] != "" {
			terms = append(terms, kv[0]+"="+kv[1])
		}
	}
	for _, l := range f.GetLabels() {
		terms = append(terms, "label:"+l)
	}
	if f.MinPriority != nil {
		terms = append(terms, fmt.Sprintf("priority>=%d", f.GetMinPriority()))
	}
	if f.MaxPriority != nil {
		terms = append(terms, fmt.Sprintf("priority<=%d", f.GetMaxPriority()))
	}
	if f.GetMinAttempt() > 0 {
		terms = append(terms, fmt.Sprintf("attempt>=%d", f.GetMinAttempt()))
	}
	if f.GetMinAge() != nil {
		terms = append(terms, "age>"+f.GetMinAge().AsDuration().String())
	}
	if f.GetMinStateAge() != nil {
		terms = append(terms, "state-age>"+f.GetMinStateAge().AsDuration().String())
	}
	return strings.Join(terms, ",")
}
