package server

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
)

// A small PromQL parser for the dashboard and rule checks: a lexer and a
// recursive-descent parser over PromQL's grammar (binary operators by
// precedence with bool, on/ignoring and group_left/group_right;
// aggregations with by/without before or after their argument; function
// calls; vector selectors with label matchers; ranges, subqueries, offset
// and @), and a label check that walks the tree knowing which labels each
// subexpression carries. Grafana's variables ($x, ${x}, $__rate_interval)
// stand for a number or a duration. It accepts what Prometheus accepts for
// the expressions the deploy kit writes, and its checker refuses range
// vectors where an instant vector is due and the reverse; it is not a
// full validator (argument counts and scalar/vector types are not
// checked).

type pqTokKind int

const (
	pqEOF pqTokKind = iota
	pqIdent
	pqNumber
	pqDuration
	pqString
	pqVar
	pqOp // punctuation and operators
)

type pqToken struct {
	kind pqTokKind
	text string
	pos  int
}

// pqLex splits expr into tokens.
func pqLex(expr string) ([]pqToken, error) {
	var toks []pqToken
	brackets := 0 // inside [..], ':' separates a subquery's range and step
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	isIdent := func(c byte) bool { return isIdentStart(c) || isDigit(c) }
	isWord := func(c byte) bool { return c != ':' && isIdent(c) } // numbers, durations, variables
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#': // a comment runs to the end of the line
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for ; j < len(expr) && expr[j] != c; j++ {
				if expr[j] == '\\' && c != '`' {
					j++
				}
			}
			if j >= len(expr) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			toks = append(toks, pqToken{pqString, expr[i+1 : j], i})
			i = j + 1
		case c == '$':
			j := i + 1
			if j < len(expr) && expr[j] == '{' {
				end := strings.IndexByte(expr[j:], '}')
				if end < 0 {
					return nil, fmt.Errorf("unterminated ${ at %d", i)
				}
				j += end + 1
			} else {
				for j < len(expr) && isWord(expr[j]) {
					j++
				}
			}
			if j == i+1 {
				return nil, fmt.Errorf("stray $ at %d", i)
			}
			toks = append(toks, pqToken{pqVar, expr[i:j], i})
			i = j
		case isDigit(c) || c == '.' && i+1 < len(expr) && isDigit(expr[i+1]):
			j := i
			for j < len(expr) && (isWord(expr[j]) || expr[j] == '.' ||
				(expr[j] == '+' || expr[j] == '-') && (expr[j-1] == 'e' || expr[j-1] == 'E') && !strings.HasPrefix(strings.ToLower(expr[i:j]), "0x")) {
				j++
			}
			text := expr[i:j]
			kind, err := pqNumberKind(text)
			if err != nil {
				return nil, fmt.Errorf("%v at %d", err, i)
			}
			toks = append(toks, pqToken{kind, text, i})
			i = j
		case isIdentStart(c) && !(c == ':' && brackets > 0):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			toks = append(toks, pqToken{pqIdent, expr[i:j], i})
			i = j
		default:
			op := ""
			for _, o := range []string{"==", "!=", "=~", "!~", ">=", "<=", "(", ")", "{", "}", "[", "]", ",", "=", "+", "-", "*", "/", "%", "^", ">", "<", "@", ":"} {
				if strings.HasPrefix(expr[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				return nil, fmt.Errorf("unexpected %q at %d", c, i)
			}
			switch op {
			case "[":
				brackets++
			case "]":
				brackets--
			}
			toks = append(toks, pqToken{pqOp, op, i})
			i += len(op)
		}
	}
	return append(toks, pqToken{pqEOF, "", len(expr)}), nil
}

// pqNumberKind tells a number (1, 0.5, 1e6, 0x1f) from a duration (5m,
// 1h30m, 500ms).
func pqNumberKind(s string) (pqTokKind, error) {
	ls := strings.ToLower(s)
	if strings.HasPrefix(ls, "0x") {
		if len(ls) > 2 && strings.Trim(ls[2:], "0123456789abcdef") == "" {
			return pqNumber, nil
		}
		return 0, fmt.Errorf("bad number %q", s)
	}
	num := func(s string) bool {
		mant, exp, hasExp := strings.Cut(s, "e")
		if mant == "" || strings.Count(mant, ".") > 1 || strings.Trim(mant, "0123456789.") != "" || mant == "." {
			return false
		}
		if hasExp {
			exp = strings.TrimLeft(exp, "+-")
			return exp != "" && strings.Trim(exp, "0123456789") == ""
		}
		return true
	}
	if num(ls) {
		return pqNumber, nil
	}
	rest := ls
	for rest != "" {
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if j == 0 {
			return 0, fmt.Errorf("bad number or duration %q", s)
		}
		rest = rest[j:]
		unit := ""
		for _, u := range []string{"ms", "s", "m", "h", "d", "w", "y"} {
			if strings.HasPrefix(rest, u) {
				unit = u
				break
			}
		}
		if unit == "" {
			return 0, fmt.Errorf("bad number or duration %q", s)
		}
		rest = rest[len(unit):]
	}
	return pqDuration, nil
}

// AST.
type (
	pqNode     interface{ pqNode() }
	pqLiteral  struct{} // a number or a Grafana variable
	pqSelector struct {
		name     string
		matchers []pqMatcher
		pos      int
	}
	pqMatcher struct{ label, op, value string }
	pqCall    struct {
		fn   string
		args []pqNode
	}
	pqAgg struct {
		op       string
		without  bool
		grouping []string
		param    pqNode
		expr     pqNode
	}
	pqBinary struct {
		op         string
		lhs, rhs   pqNode
		matching   string // "", "on" or "ignoring"
		labels     []string
		card       string // "", "group_left" or "group_right"
		include    []string
		returnBool bool
	}
	pqUnary    struct{ expr pqNode }
	pqRange    struct{ expr pqNode } // a range selector or a subquery
	pqModifier struct{ expr pqNode } // offset or @
)

func (pqLiteral) pqNode()   {}
func (*pqSelector) pqNode() {}
func (*pqCall) pqNode()     {}
func (*pqAgg) pqNode()      {}
func (*pqBinary) pqNode()   {}
func (*pqUnary) pqNode()    {}
func (*pqRange) pqNode()    {}
func (*pqModifier) pqNode() {}

var pqAggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
}

// pqFunctions are PromQL's functions (Prometheus 2.x and 3.x).
var pqFunctions = map[string]bool{}

func init() {
	for _, f := range strings.Fields(`abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil
		changes clamp clamp_max clamp_min cos cosh count_over_time days_in_month day_of_month day_of_week day_of_year
		deg delta deriv exp floor histogram_avg histogram_count histogram_fraction histogram_quantile histogram_stddev
		histogram_stdvar histogram_sum holt_winters double_exponential_smoothing hour idelta increase irate label_join
		label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month pi
		predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label
		sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp vector year`) {
		pqFunctions[f] = true
	}
}

// pqRangeArg is, for each function taking a range vector, the index of
// that argument.
var pqRangeArg = map[string]int{}

func init() {
	for _, f := range strings.Fields(`absent_over_time avg_over_time changes count_over_time delta deriv
		double_exponential_smoothing holt_winters idelta increase irate last_over_time mad_over_time max_over_time
		min_over_time predict_linear present_over_time rate resets stddev_over_time stdvar_over_time sum_over_time`) {
		pqRangeArg[f] = 0
	}
	pqRangeArg["quantile_over_time"] = 1
}

type pqParser struct {
	toks []pqToken
	i    int
}

// pqParse parses expr into its tree, or says where it is not PromQL.
func pqParse(expr string) (pqNode, error) {
	toks, err := pqLex(expr)
	if err != nil {
		return nil, err
	}
	p := &pqParser{toks: toks}
	n, err := p.expr(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != pqEOF {
		return nil, fmt.Errorf("unexpected %q at %d", t.text, t.pos)
	}
	return n, nil
}

func (p *pqParser) peek() pqToken { return p.toks[p.i] }
func (p *pqParser) next() pqToken { t := p.toks[p.i]; p.i = min(p.i+1, len(p.toks)-1); return t }

func (p *pqParser) isOp(s string) bool { t := p.peek(); return t.kind == pqOp && t.text == s }

func (p *pqParser) isWord(s string) bool {
	t := p.peek()
	return t.kind == pqIdent && strings.EqualFold(t.text, s)
}

func (p *pqParser) expect(s string) error {
	if t := p.next(); t.kind != pqOp || t.text != s {
		if t.kind == pqEOF {
			return fmt.Errorf("expected %q, got the end", s)
		}
		return fmt.Errorf("expected %q, got %q at %d", s, t.text, t.pos)
	}
	return nil
}

// pqPrecedence of each binary operator; ^ is right-associative.
func pqPrecedence(t pqToken) int {
	switch strings.ToLower(t.text) {
	case "or":
		if t.kind == pqIdent {
			return 1
		}
	case "and", "unless":
		if t.kind == pqIdent {
			return 2
		}
	case "==", "!=", "<", ">", "<=", ">=":
		return 3
	case "+", "-":
		return 4
	case "*", "/", "%", "atan2":
		if t.kind == pqOp || strings.EqualFold(t.text, "atan2") {
			return 5
		}
	case "^":
		return 6
	}
	return 0
}

func (p *pqParser) expr(minPrec int) (pqNode, error) {
	lhs, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		prec := pqPrecedence(t)
		if prec == 0 || prec < minPrec {
			return lhs, nil
		}
		p.next()
		b := &pqBinary{op: strings.ToLower(t.text), lhs: lhs}
		if p.isWord("bool") {
			if prec != 3 {
				return nil, fmt.Errorf("bool after %q at %d: only comparisons take bool", t.text, t.pos)
			}
			p.next()
			b.returnBool = true
		}
		if p.isWord("on") || p.isWord("ignoring") {
			b.matching = strings.ToLower(p.next().text)
			if b.labels, err = p.labelList(); err != nil {
				return nil, err
			}
			if p.isWord("group_left") || p.isWord("group_right") {
				b.card = strings.ToLower(p.next().text)
				if p.isOp("(") {
					if b.include, err = p.labelList(); err != nil {
						return nil, err
					}
				}
			}
		}
		next := prec + 1
		if t.text == "^" {
			next = prec
		}
		if b.rhs, err = p.expr(next); err != nil {
			return nil, err
		}
		lhs = b
	}
}

func (p *pqParser) unary() (pqNode, error) {
	if p.isOp("-") || p.isOp("+") {
		p.next()
		// Unary minus binds looser than ^: -2^2 is -(2^2).
		e, err := p.expr(6)
		if err != nil {
			return nil, err
		}
		return &pqUnary{expr: e}, nil
	}
	return p.postfix()
}

func (p *pqParser) postfix() (pqNode, error) {
	n, err := p.primary()
	if err != nil {
		return nil, err
	}
	for {
		switch {
		case p.isOp("["):
			p.next()
			if err := p.duration(); err != nil {
				return nil, err
			}
			if p.isOp(":") {
				p.next()
				if !p.isOp("]") {
					if err := p.duration(); err != nil {
						return nil, err
					}
				}
			} else if _, ok := n.(*pqSelector); !ok {
				return nil, fmt.Errorf("a range [..] needs a vector selector before it (or a subquery's [range:step]) at %d", p.peek().pos)
			}
			if err := p.expect("]"); err != nil {
				return nil, err
			}
			n = &pqRange{expr: n}
		case p.isWord("offset"):
			p.next()
			if p.isOp("-") {
				p.next()
			}
			if err := p.duration(); err != nil {
				return nil, err
			}
			n = &pqModifier{expr: n}
		case p.isOp("@"):
			p.next()
			switch t := p.next(); {
			case t.kind == pqNumber || t.kind == pqVar:
			case t.kind == pqIdent && (t.text == "start" || t.text == "end"):
				if err := p.expect("("); err != nil {
					return nil, err
				}
				if err := p.expect(")"); err != nil {
					return nil, err
				}
			default:
				return nil, fmt.Errorf("@ takes a timestamp, start() or end(), got %q at %d", t.text, t.pos)
			}
			n = &pqModifier{expr: n}
		default:
			return n, nil
		}
	}
}

func (p *pqParser) duration() error {
	t := p.next()
	if t.kind != pqDuration && t.kind != pqVar && t.kind != pqNumber {
		return fmt.Errorf("expected a duration, got %q at %d", t.text, t.pos)
	}
	return nil
}

func (p *pqParser) primary() (pqNode, error) {
	t := p.peek()
	switch t.kind {
	case pqNumber, pqVar:
		p.next()
		return pqLiteral{}, nil
	case pqString:
		p.next()
		return pqStringArg(t.text), nil
	case pqOp:
		switch t.text {
		case "(":
			p.next()
			e, err := p.expr(0)
			if err != nil {
				return nil, err
			}
			return e, p.expect(")")
		case "{":
			return p.selector("")
		}
	case pqIdent:
		word := strings.ToLower(t.text)
		switch {
		case word == "inf" || word == "nan":
			p.next()
			return pqLiteral{}, nil
		case pqAggregations[word]:
			return p.aggregation()
		case p.toks[p.i+1].kind == pqOp && p.toks[p.i+1].text == "(":
			if !pqFunctions[t.text] {
				return nil, fmt.Errorf("unknown function %q at %d", t.text, t.pos)
			}
			p.next()
			p.next()
			c := &pqCall{fn: t.text}
			for !p.isOp(")") {
				a, err := p.expr(0)
				if err != nil {
					return nil, err
				}
				c.args = append(c.args, a)
				if !p.isOp(",") {
					break
				}
				p.next()
			}
			return c, p.expect(")")
		case pqPrecedence(t) > 0 || word == "by" || word == "without" || word == "on" || word == "ignoring" ||
			word == "bool" || word == "offset" || word == "group_left" || word == "group_right":
			return nil, fmt.Errorf("unexpected keyword %q at %d", t.text, t.pos)
		default:
			p.next()
			return p.selector(t.text)
		}
	case pqEOF:
		return nil, fmt.Errorf("unexpected end of expression")
	}
	return nil, fmt.Errorf("unexpected %q at %d", t.text, t.pos)
}

func (p *pqParser) selector(name string) (pqNode, error) {
	s := &pqSelector{name: name, pos: p.peek().pos}
	if p.isOp("{") {
		p.next()
		for !p.isOp("}") {
			lt := p.next()
			if lt.kind != pqIdent {
				return nil, fmt.Errorf("expected a label name, got %q at %d", lt.text, lt.pos)
			}
			if strings.Contains(lt.text, ":") {
				return nil, fmt.Errorf("label name %q has a colon at %d", lt.text, lt.pos)
			}
			ot := p.next()
			if ot.kind != pqOp || !slices.Contains([]string{"=", "!=", "=~", "!~"}, ot.text) {
				return nil, fmt.Errorf("expected a label matcher operator after %q, got %q at %d", lt.text, ot.text, ot.pos)
			}
			vt := p.next()
			if vt.kind != pqString {
				return nil, fmt.Errorf("label %q's value must be a string, got %q at %d", lt.text, vt.text, vt.pos)
			}
			s.matchers = append(s.matchers, pqMatcher{lt.text, ot.text, vt.text})
			if !p.isOp(",") {
				break
			}
			p.next()
		}
		if err := p.expect("}"); err != nil {
			return nil, err
		}
	}
	if s.name == "" {
		for _, m := range s.matchers {
			if m.label == "__name__" && m.op == "=" {
				s.name = m.value
			}
		}
		if s.name == "" {
			return nil, fmt.Errorf("a selector without a metric name at %d", s.pos)
		}
	}
	return s, nil
}

func (p *pqParser) labelList() ([]string, error) {
	if err := p.expect("("); err != nil {
		return nil, err
	}
	var out []string
	for !p.isOp(")") {
		t := p.next()
		if t.kind != pqIdent {
			return nil, fmt.Errorf("expected a label name, got %q at %d", t.text, t.pos)
		}
		out = append(out, t.text)
		if !p.isOp(",") {
			break
		}
		p.next()
	}
	return out, p.expect(")")
}

func (p *pqParser) aggregation() (pqNode, error) {
	a := &pqAgg{op: strings.ToLower(p.next().text)}
	grouping := func() error {
		if p.isWord("by") || p.isWord("without") {
			if a.grouping != nil || a.without {
				return fmt.Errorf("%s has two groupings at %d", a.op, p.peek().pos)
			}
			a.without = strings.EqualFold(p.next().text, "without")
			g, err := p.labelList()
			if err != nil {
				return err
			}
			a.grouping = append([]string{}, g...)
		}
		return nil
	}
	if err := grouping(); err != nil {
		return nil, err
	}
	if err := p.expect("("); err != nil {
		return nil, err
	}
	first, err := p.expr(0)
	if err != nil {
		return nil, err
	}
	switch a.op {
	case "count_values", "topk", "bottomk", "quantile", "limitk", "limit_ratio":
		a.param = first
		if err := p.expect(","); err != nil {
			return nil, fmt.Errorf("%s takes a parameter and an expression: %w", a.op, err)
		}
		if a.expr, err = p.expr(0); err != nil {
			return nil, err
		}
	default:
		a.expr = first
	}
	if err := p.expect(")"); err != nil {
		return nil, err
	}
	return a, grouping()
}

// pqLabels is what a subexpression is known to carry: a scalar, or a
// vector with a set of label names (any: unknown, so nothing is checked).
type pqLabels struct {
	scalar bool
	any    bool
	set    map[string]bool
	// rng marks a range vector (x[5m], a subquery), which only functions
	// such as rate take.
	rng bool
}

func pqSet(names ...string) pqLabels {
	s := pqLabels{set: map[string]bool{}}
	for _, n := range names {
		s.set[n] = true
	}
	return s
}

func (l pqLabels) has(name string) bool { return l.any || l.set[name] }

func (l pqLabels) union(o pqLabels) pqLabels {
	if l.any || o.any {
		return pqLabels{any: true}
	}
	out := pqSet()
	for n := range l.set {
		out.set[n] = true
	}
	for n := range o.set {
		out.set[n] = true
	}
	return out
}

func (l pqLabels) without(names ...string) pqLabels {
	if l.any {
		return pqLabels{any: true}
	}
	out := pqSet()
	for n := range l.set {
		if !slices.Contains(names, n) {
			out.set[n] = true
		}
	}
	return out
}

func (l pqLabels) String() string {
	if l.any {
		return "(any labels)"
	}
	var names []string
	for n := range l.set {
		if n != "__name__" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return "{" + strings.Join(names, ", ") + "}"
}

// pqSchema says which label names a metric has (ok false: no such metric).
type pqSchema func(metric string) (labels map[string]bool, ok bool)

// pqCheck parses expr and checks it against schema: every metric it
// selects exists, every label it matches on exists on that metric, and
// every label it groups by (by, without, on, ignoring, group_left,
// group_right, label_replace's source, histogram_quantile's le) exists on
// what it groups. It returns every problem found.
func pqCheck(expr string, schema pqSchema) []string {
	n, err := pqParse(expr)
	if err != nil {
		return []string{"does not parse: " + err.Error()}
	}
	c := &pqChecker{schema: schema}
	if c.labels(n).rng {
		c.errorf("the expression is a range vector; a panel or rule needs an instant vector (wrap it in rate(), increase(), ..._over_time())")
	}
	return c.problems
}

type pqChecker struct {
	schema   pqSchema
	problems []string
}

func (c *pqChecker) errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !slices.Contains(c.problems, msg) {
		c.problems = append(c.problems, msg)
	}
}

// instant flags a range vector where an instant vector or scalar is due.
func (c *pqChecker) instant(l pqLabels, where string) pqLabels {
	if l.rng {
		c.errorf("%s takes an instant vector, got a range vector", where)
		l.rng = false
	}
	return l
}

func (c *pqChecker) need(l pqLabels, label, what string) {
	if !l.scalar && !l.has(label) {
		c.errorf("%s label %q is not on %s", what, label, l)
	}
}

// labels returns the labels n's result carries, checking n on the way.
func (c *pqChecker) labels(n pqNode) pqLabels {
	switch n := n.(type) {
	case pqLiteral:
		return pqLabels{scalar: true}
	case pqStringArg:
		return pqLabels{scalar: true}
	case *pqSelector:
		have, ok := c.schema(n.name)
		if !ok {
			c.errorf("metric %q is not exported", n.name)
			return pqLabels{any: true}
		}
		l := pqSet("__name__")
		for k := range have {
			l.set[k] = true
		}
		for _, m := range n.matchers {
			if m.label != "__name__" && !l.set[m.label] {
				c.errorf("label %q is not on metric %q %s", m.label, n.name, l)
			}
		}
		return l
	case *pqRange:
		l := c.instant(c.labels(n.expr), "a range [..]")
		l.rng = true
		return l
	case *pqModifier:
		return c.labels(n.expr)
	case *pqUnary:
		return c.instant(c.labels(n.expr), "unary minus").without("__name__")
	case *pqAgg:
		if n.param != nil {
			c.instant(c.labels(n.param), n.op+"'s parameter")
		}
		in := c.instant(c.labels(n.expr), n.op)
		for _, g := range n.grouping {
			c.need(in, g, n.op+map[bool]string{false: " by", true: " without"}[n.without])
		}
		var out pqLabels
		if n.without {
			out = in.without(append(n.grouping, "__name__")...)
		} else {
			out = pqSet(n.grouping...)
		}
		if label, ok := n.param.(pqStringArg); ok && n.op == "count_values" {
			out = out.union(pqSet(string(label)))
		}
		if n.op == "topk" || n.op == "bottomk" || n.op == "limitk" || n.op == "limit_ratio" {
			return in // they keep their input's series
		}
		return out
	case *pqCall:
		var args []pqLabels
		rangeArg, takesRange := pqRangeArg[n.fn]
		for i, a := range n.args {
			l := c.labels(a)
			switch {
			case takesRange && i == rangeArg:
				if !l.rng {
					c.errorf("%s takes a range vector (x[5m]), got an instant vector or scalar", n.fn)
				}
				l.rng = false
			default:
				l = c.instant(l, n.fn+"()")
			}
			args = append(args, l)
		}
		switch n.fn {
		case "time", "pi", "scalar":
			return pqLabels{scalar: true}
		case "vector":
			return pqSet()
		case "absent", "absent_over_time":
			return pqLabels{any: true}
		case "histogram_quantile", "histogram_fraction":
			if len(args) > 0 {
				in := args[len(args)-1]
				c.need(in, "le", n.fn)
				return in.without("le", "__name__")
			}
		case "label_replace", "label_join":
			if len(args) < 2 {
				return pqLabels{any: true}
			}
			strs := pqStringArgs(n.args)
			out := args[0]
			if len(strs) > 0 {
				out = out.union(pqSet(strs[0]))
			}
			switch {
			case n.fn == "label_replace" && len(strs) >= 3 && strs[2] != "":
				c.need(args[0], strs[2], "label_replace source")
			case n.fn == "label_join" && len(strs) > 2:
				for _, s := range strs[2:] {
					c.need(args[0], s, "label_join source")
				}
			}
			return out
		case "sort_by_label", "sort_by_label_desc":
			for _, s := range pqStringArgs(n.args) {
				c.need(args[0], s, n.fn)
			}
			return args[0]
		}
		for _, a := range args {
			if !a.scalar {
				return a.without("__name__")
			}
		}
		if len(args) == 0 && n.fn != "time" && n.fn != "pi" {
			return pqSet() // minute(), hour() ... of vector(time())
		}
		return pqLabels{scalar: true}
	case *pqBinary:
		lhs, rhs := c.instant(c.labels(n.lhs), "operator "+n.op), c.instant(c.labels(n.rhs), "operator "+n.op)
		switch {
		case lhs.scalar && rhs.scalar:
			return pqLabels{scalar: true}
		case lhs.scalar:
			return rhs.without("__name__")
		case rhs.scalar:
			if n.op == "==" || n.op == "!=" || n.op == "<" || n.op == ">" || n.op == "<=" || n.op == ">=" {
				if !n.returnBool {
					return lhs
				}
			}
			return lhs.without("__name__")
		}
		for _, l := range n.labels {
			switch n.matching {
			case "on":
				c.need(lhs, l, "on() left-hand")
				c.need(rhs, l, "on() right-hand")
			case "ignoring":
				if !lhs.has(l) && !rhs.has(l) {
					c.errorf("ignoring() label %q is on neither side: %s, %s", l, lhs, rhs)
				}
			}
		}
		switch n.card {
		case "group_left":
			for _, l := range n.include {
				c.need(rhs, l, "group_left")
			}
		case "group_right":
			for _, l := range n.include {
				c.need(lhs, l, "group_right")
			}
		}
		switch n.op {
		case "and", "unless":
			return lhs
		case "or":
			return lhs.union(rhs)
		}
		many := lhs
		if n.card == "group_right" {
			many = rhs
		}
		var out pqLabels
		switch {
		case n.card != "":
			out = many.union(pqSet(n.include...))
		case n.matching == "on":
			out = pqSet(n.labels...)
		case n.matching == "ignoring":
			out = many.without(n.labels...)
		default:
			out = many
		}
		return out.without("__name__")
	}
	return pqLabels{any: true}
}

// pqStringArgs returns the string literals among a call's arguments, in
// order.
func pqStringArgs(args []pqNode) []string {
	var out []string
	for _, a := range args {
		if s, ok := a.(pqStringArg); ok {
			out = append(out, string(s))
		}
	}
	return out
}

// pqStringArg is a string literal (a function's or count_values'
// argument), kept with its value.
type pqStringArg string

func (pqStringArg) pqNode() {}

func TestPQParse(t *testing.T) {
	good := []string{
		`factory_queue_depth{state="ready"}`,
		`sum by (state) (rate(factory_queue_claims_total{agent=~"$agent", x="}by("}[$__rate_interval])) * 60`,
		`histogram_quantile(0.95, sum by (le, rpc_method) (rate(rpc_server_call_duration_seconds_bucket[5m])))`,
		`1 - a_remaining{scope="total"} / on (scope) group_left (name) b_cap / 1e6`,
		`count(sum by (agent) (spend) > 10e6) or vector(0)`,
		`topk(10, sum without (instance) (x offset 1h)) and y @ start()`,
		`max_over_time(m[1h:5m]) > bool ${threshold}`,
		`sum(a) by (x)`, `-x ^ 2`, `a offset -5m @ 1609746000`, `m[5m:]`, `count_values("v", m)`,
		`label_replace(up, "dst", "$1", "src", "(.*)")`, `a{b=~"x|y", c!~'z',}`, `0x1F + 1e-3 + .5 + Inf - NaN`,
		`a and on(x) b unless ignoring(y) c`, `time() - m`, `a atan2 b`, "a{b=`raw`}",
		`(a + b) * (c - d) % 2`, `avg_over_time(a[1h30m]) # a comment`,
	}
	for _, e := range good {
		if _, err := pqParse(e); err != nil {
			t.Errorf("pqParse(%q): %v", e, err)
		}
	}
	// Each is refused by Prometheus 2.55 (the compose file's) too, except
	// {a="b"}: valid PromQL, refused here because the check needs a
	// metric name.
	bad := []string{`sum by ("quoted") (m)`, `x{a="b"`, `sum(rate(x[5m)`, `x{a="b}`, `sum by (x`, `rate(x[5m]`, `foo(x)`, `a +`, `(a`, `a b`,
		`x{a=b}`, `x{a~"b"}`, `sum(x) by (a) by (b)`, `topk(x)`, `1 + bool 2`, `rate(x)[5m]`, `x[5x]`, `{a="b"}`,
		`sum by (x) x`, `a / on x b`, `$`, `x{a:b="c"}`, ``, `a @ soon`, `x)`}
	for _, e := range bad {
		if _, err := pqParse(e); err == nil {
			t.Errorf("pqParse(%q): no error", e)
		}
	}
}

func TestPQCheckLabels(t *testing.T) {
	schema := func(m string) (map[string]bool, bool) {
		switch m {
		case "a":
			return map[string]bool{"x": true, "y": true, "le": true}, true
		case "b":
			return map[string]bool{"x": true, "z": true}, true
		}
		return nil, false
	}
	cases := map[string]string{ // expression -> the name its problem names ("" for none)
		`sum by (x) (a)`: "", `sum by (q) (a)`: `"q"`, `a{q="1"}`: `"q"`, `a{x="1", __name__="a"}`: "",
		`a / on(x) b`: "", `a / on(y) b`: `"y"`, `a / ignoring(z) b`: "", `a / ignoring(q) b`: `"q"`,
		`a * on(x) group_left(z) b`: "", `a * on(x) group_left(y) b`: `"y"`, `b * on(x) group_right(y) a`: `"y"`,
		`sum by (y) (sum by (x) (a))`: `"y"`, `sum by (y) (sum without (x) (a))`: "", `sum by (x) (sum without (x) (a))`: `"x"`,
		`histogram_quantile(0.9, sum by (le) (rate(a[5m])))`: "", `histogram_quantile(0.9, sum by (x) (rate(a[5m])))`: `"le"`,
		`sum by (le) (histogram_quantile(0.9, rate(a[5m])))`:           `"le"`,
		`sum by (x, new) (label_replace(a, "new", "$1", "y", "(.*)"))`: "", `label_replace(a, "new", "$1", "q", "(.*)")`: `"q"`,
		`count(a > 10) or vector(0)`: "", `nope`: `"nope"`, `sum by (x) (a / b)`: "", `sum by (y) (a / b)`: "",
		`sum by (y) (a / ignoring(y) b)`: `"y"`, `sum by (z) (a * on(x) group_left(z) b)`: "",
		`sum by (x) (a and b)`: "", `sum by (z) (a or b)`: "", `sum by (z) (a unless b)`: `"z"`,
		`sum by (x) (topk(3, a))`: "", `sum by (v) (count_values("v", a))`: "", `sum by (x) (count_values("v", a))`: `"x"`,
		`time() - max(a)`: "", `sum by (x) (2 * a)`: "", `sum by (q) (absent(nope2))`: `"nope2"`,
		// Range vectors only where a function takes one.
		`sum(a[5m])`: "sum takes an instant vector", `rate(a)`: "rate takes a range vector", `a[5m]`: "is a range vector",
		`rate(a[5m]) / a[5m]`: "operator / takes", `max_over_time(rate(a[5m])[1h:5m])`: "", `quantile_over_time(0.9, a[1h])`: "",
		`quantile_over_time(0.9, a)`: "takes a range vector", `histogram_quantile(0.9, a[5m])`: "histogram_quantile() takes",
		`-a[5m]`: "unary minus", `rate(a[5m] offset 1h)`: "", `rate(a[5m:1m])`: "",
	}
	for e, want := range cases {
		problems := pqCheck(e, schema)
		switch {
		case want == "" && len(problems) > 0:
			t.Errorf("pqCheck(%q) = %v, want none", e, problems)
		case want != "" && (len(problems) == 0 || !strings.Contains(strings.Join(problems, "; "), want)):
			t.Errorf("pqCheck(%q) = %v, want a problem naming %s", e, problems, want)
		}
	}
}
