package console

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

const (
	// pendingShown bounds the cards on the approvals page. Pending
	// requests expire, so more than this waiting at once is an anomaly
	// the page says out loud rather than draws.
	pendingShown = 50
	// decidedPage is the decided table's page: one ListApprovals call,
	// newest request first.
	decidedPage = 20
	// maxDecidedTrail bounds the page tokens the decided pager carries in
	// its links for "← Newer", so a link stays short however far back the
	// operator pages; past it the trail forgets its first pages, and
	// "« Newest" is the way back to them.
	maxDecidedTrail = 20
	// approvalScanPage is the page size of the pending walk. A request's
	// payload may be up to 1 MiB: fifty of them stay under the in-process
	// client's 64 MiB response limit whatever the agents sent.
	approvalScanPage = 50
	// maxPendingScan bounds the pending walk. The cards come soonest
	// deadline first, an order the API does not list in, so the pending
	// requests are read through; they expire, so there are few.
	maxPendingScan = 1000
	// whyOnCard bounds the why shown on a card, so a long one does not
	// push the decision buttons off a phone's first screen; the page of
	// the request shows all of it.
	whyOnCard = 200
	// payloadShown bounds the payload printed on a request's page; the
	// rest is one CLI command away, and the hash covers all of it.
	payloadShown = 64 << 10
)

var (
	pendingStates = []factoryv1.ApprovalState{factoryv1.ApprovalState_APPROVAL_STATE_PENDING}
	decidedStates = []factoryv1.ApprovalState{
		factoryv1.ApprovalState_APPROVAL_STATE_APPROVED, factoryv1.ApprovalState_APPROVAL_STATE_REJECTED,
		factoryv1.ApprovalState_APPROVAL_STATE_MODIFIED, factoryv1.ApprovalState_APPROVAL_STATE_EXPIRED,
	}
)

func (s *Server) routeApprovals(mux *http.ServeMux) {
	mux.Handle("GET /approvals", s.page(s.approvalsPage))
	mux.Handle("GET /approvals/{id}", s.page(s.approvalPage))
	mux.Handle("POST /approvals/{id}/decide", s.action(s.decideApproval))
}

// approvalCard is one request as the templates show it.
type approvalCard struct {
	A *factoryv1.Approval
	// Why is the why to show: clipped on a card (Clipped says so), whole
	// on the request's page.
	Why     string
	Clipped bool
}

func newCard(a *factoryv1.Approval, whyMax int) approvalCard {
	c := approvalCard{A: a, Why: a.GetWhy()}
	if whyMax > 0 && len(c.Why) > whyMax {
		c.Why, c.Clipped = clipRunes(c.Why, whyMax), true
	}
	return c
}

// OnTimeout is what the deadline does, in the words of the card's
// "then: …": an unset default is stored and applied as deny.
func (c approvalCard) OnTimeout() string {
	return outcomeWord(c.A.GetDefaultOnTimeout())
}

// Applied is the outcome an EXPIRED request got from its default.
func (c approvalCard) Applied() string {
	return outcomeWord(c.A.GetAppliedOutcome())
}

func outcomeWord(d factoryv1.ApprovalDecision) string {
	switch d {
	case factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE:
		return "approve"
	case factoryv1.ApprovalDecision_APPROVAL_DECISION_MODIFY:
		return "modify"
	}
	return "deny"
}

// RiskClass colours the risk chip.
func (c approvalCard) RiskClass() string {
	switch c.A.GetRisk() {
	case factoryv1.ApprovalRisk_APPROVAL_RISK_HIGH:
		return "bad"
	case factoryv1.ApprovalRisk_APPROVAL_RISK_MEDIUM:
		return "warn"
	case factoryv1.ApprovalRisk_APPROVAL_RISK_LOW:
		return "ok"
	}
	return ""
}

// Pending says whether the request still waits for a decision.
func (c approvalCard) Pending() bool {
	return c.A.GetState() == factoryv1.ApprovalState_APPROVAL_STATE_PENDING
}

// Expired says the deadline decided: the default was applied, nobody
// chose it, and the page must never show it as someone's decision.
func (c approvalCard) Expired() bool {
	return c.A.GetState() == factoryv1.ApprovalState_APPROVAL_STATE_EXPIRED
}

// Payload is the request's payload indented for reading, clipped to
// payloadShown; Total is its full size when clipped.
func (c approvalCard) Payload() (p payloadView) {
	raw := c.A.GetPayloadJson()
	p.Total = len(raw)
	var buf bytes.Buffer
	if err := json.Indent(&buf, []byte(raw), "", "  "); err == nil {
		raw = buf.String()
	}
	if len(raw) > payloadShown {
		raw, p.Clipped = clipRunes(raw, payloadShown), true
	}
	p.Text = raw
	return p
}

type payloadView struct {
	Text    string
	Clipped bool
	Total   int
}

type approvalsData struct {
	Pending []approvalCard
	// PendingTotal counts the pending requests read; PendingCapped says
	// the walk stopped at maxPendingScan and there may be more.
	PendingTotal  int
	PendingCapped bool

	// Decided is one page of decided requests, the newest request first.
	Decided []approvalCard
	// Deeper says the table is past its first page.
	Deeper bool
	// Newest, Newer and Older are the pager's links (empty: not offered).
	Newest, Newer, Older string
}

// MaxPendingScan is shown when the pending walk was cut short.
func (approvalsData) MaxPendingScan() int { return maxPendingScan }

// approvalsPage shows what waits for the operator, soonest deadline first,
// then one page of what was decided, newest request first. The two reads
// run at once.
func (s *Server) approvalsPage(rq *request) error {
	trail, err := parseDecidedTrail(rq.r.URL.Query())
	if err != nil {
		return err
	}
	d := approvalsData{Deeper: len(trail.tokens) > 0}
	var (
		pending []*factoryv1.Approval
		decided *factoryv1.ListApprovalsResponse
	)
	r := newReads(rq.ctx)
	r.must(func(ctx context.Context) (err error) {
		pending, d.PendingTotal, d.PendingCapped, err = s.soonestPending(ctx, pendingShown)
		return err
	})
	r.must(func(ctx context.Context) (err error) {
		decided, err = s.approvals.ListApprovals(ctx, trail.request())
		return err
	})
	if err := r.wait(); err != nil {
		return err
	}
	for _, a := range pending {
		d.Pending = append(d.Pending, newCard(a, whyOnCard))
	}
	for _, a := range decided.GetApprovals() {
		d.Decided = append(d.Decided, newCard(a, 0))
	}
	d.Newest, d.Newer, d.Older = trail.links(decided.GetNextPageToken())
	return s.render(rq, http.StatusOK, "approvals", view{Title: "Approvals", Nav: "approvals", Topics: "approvals"}, d)
}

// decidedTrail is where the decided table is: the page tokens of the pages
// from the second to the one shown, so that "← Newer" is the trail less
// its last token. The tokens travel in the query as repeated "decided"
// values, oldest page last; "decided_cut" says older tokens were dropped
// (see maxDecidedTrail), and then the trail's first page has no
// "← Newer".
type decidedTrail struct {
	tokens []string
	cut    bool
}

// parseDecidedTrail reads the decided table's place; none is the first
// page. Only the shape is checked: the API judges the tokens.
func parseDecidedTrail(q url.Values) (decidedTrail, error) {
	t := decidedTrail{tokens: q["decided"], cut: q.Get("decided_cut") != ""}
	if len(t.tokens) > maxDecidedTrail {
		return t, status.Errorf(codes.InvalidArgument, "decided: at most %d page tokens, got %d", maxDecidedTrail, len(t.tokens))
	}
	if t.cut && len(t.tokens) == 0 {
		return t, status.Error(codes.InvalidArgument, "decided_cut: set without a page token in decided")
	}
	for _, tok := range t.tokens {
		if tok == "" {
			return t, status.Error(codes.InvalidArgument, "decided: an empty page token")
		}
	}
	return t, nil
}

// request is the ListApprovals call for the trail's page: the decided
// requests, newest first, one page from the trail's last token.
func (t decidedTrail) request() *factoryv1.ListApprovalsRequest {
	r := &factoryv1.ListApprovalsRequest{States: decidedStates, NewestFirst: true, PageSize: decidedPage}
	if n := len(t.tokens); n > 0 {
		r.PageToken = t.tokens[n-1]
	}
	return r
}

// href is the approvals page at this trail.
func (t decidedTrail) href() string {
	if len(t.tokens) == 0 {
		return "/approvals"
	}
	q := url.Values{"decided": t.tokens}
	if t.cut {
		q.Set("decided_cut", "1")
	}
	return "/approvals?" + q.Encode()
}

// links are the pager's links from the trail's page, given the token of
// the page after it (empty on the last): newest (only where "← Newer"
// does not already lead there), newer and older.
func (t decidedTrail) links(next string) (newest, newer, older string) {
	if n := len(t.tokens); n > 0 {
		if n > 1 || !t.cut {
			back := decidedTrail{tokens: t.tokens[:n-1], cut: t.cut}
			newer = back.href()
		}
		if newer != "/approvals" {
			newest = "/approvals"
		}
	}
	if next != "" {
		on := decidedTrail{tokens: append(slices.Clone(t.tokens), next), cut: t.cut}
		if len(on.tokens) > maxDecidedTrail {
			on.tokens, on.cut = on.tokens[1:], true
		}
		older = on.href()
	}
	return newest, newer, older
}

// walkApprovals reads the requests in states page by page, oldest first,
// until the list ends or limit requests were read; capped says it stopped
// at the limit with more to read.
func (s *Server) walkApprovals(ctx context.Context, states []factoryv1.ApprovalState, limit int, each func([]*factoryv1.Approval)) (read int, capped bool, err error) {
	req := &factoryv1.ListApprovalsRequest{States: states, PageSize: approvalScanPage}
	for {
		res, err := s.approvals.ListApprovals(ctx, req)
		if err != nil {
			return read, false, err
		}
		each(res.GetApprovals())
		read += len(res.GetApprovals())
		if res.GetNextPageToken() == "" {
			return read, false, nil
		}
		if read >= limit {
			return read, true, nil
		}
		req.PageToken = res.GetNextPageToken()
	}
}

// soonestPending returns up to n pending requests, the soonest deadline
// first, and how many are pending.
func (s *Server) soonestPending(ctx context.Context, n int) (_ []*factoryv1.Approval, total int, capped bool, err error) {
	var all []*factoryv1.Approval
	total, capped, err = s.walkApprovals(ctx, pendingStates, maxPendingScan, func(page []*factoryv1.Approval) {
		all = append(all, page...)
	})
	if err != nil {
		return nil, 0, false, err
	}
	slices.SortStableFunc(all, bySoonestDeadline)
	return all[:min(n, len(all))], total, capped, nil
}

func bySoonestDeadline(a, b *factoryv1.Approval) int {
	if c := toTime(a.GetDeadline()).Compare(toTime(b.GetDeadline())); c != 0 {
		return c
	}
	return strings.Compare(a.GetId(), b.GetId())
}

// approvalPage is one request: the page approval notifications link to,
// so the decision comes right after what, why and the deadline.
func (s *Server) approvalPage(rq *request) error {
	res, err := s.approvals.GetApproval(rq.ctx, &factoryv1.GetApprovalRequest{ApprovalId: rq.r.PathValue("id")})
	if err != nil {
		return err
	}
	c := newCard(res.GetApproval(), whyOnCard)
	return s.render(rq, http.StatusOK, "approval", view{
		Title: "Approval: " + clipRunes(c.A.GetWhat(), 80), Nav: "approvals", Topics: "approvals",
	}, c)
}

// decisions maps the form's decision to the API's.
var decisions = map[string]struct {
	d    factoryv1.ApprovalDecision
	note string
}{
	"approve": {factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE, "Approved"},
	"reject":  {factoryv1.ApprovalDecision_APPROVAL_DECISION_REJECT, "Rejected"},
	"modify":  {factoryv1.ApprovalDecision_APPROVAL_DECISION_MODIFY, "Modified"},
}

// decideRequest reads a decision form: decision, and reason and
// instructions as the operator typed them. The API says what each
// decision needs, and names the field that is missing.
func decideRequest(id string, form interface{ Get(string) string }) (*factoryv1.DecideRequest, string, error) {
	dec, ok := decisions[strings.ToLower(strings.TrimSpace(form.Get("decision")))]
	if !ok {
		return nil, "", status.Errorf(codes.InvalidArgument, "decision: %q is not approve, reject or modify", form.Get("decision"))
	}
	return &factoryv1.DecideRequest{
		ApprovalId:   id,
		Decision:     dec.d,
		Reason:       form.Get("reason"),
		Instructions: form.Get("instructions"),
	}, dec.note, nil
}

func (s *Server) decideApproval(rq *request) error {
	id := rq.r.PathValue("id")
	req, note, err := decideRequest(id, rq.r.PostForm)
	if err != nil {
		return err
	}
	if _, err := s.approvals.Decide(rq.ctx, req); err != nil {
		return err
	}
	return done(rq, "/approvals/"+id, note)
}

// clipRunes cuts s to at most n bytes without splitting a character.
func clipRunes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Short versions of the decision's texts, for the decided table: a page
// of twenty stays small whatever the operators wrote.
const decidedTextShown = 200

// ReasonShort is the reason, clipped for the table.
func (c approvalCard) ReasonShort() string { return clipRunes(c.A.GetReason(), decidedTextShown) }

// InstructionsShort is the instructions, clipped for the table.
func (c approvalCard) InstructionsShort() string {
	return clipRunes(c.A.GetInstructions(), decidedTextShown)
}
