package console

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	// decidedPage is the decided table's page.
	decidedPage = 20
	// approvalScanPage is the page size of the walks below. A request's
	// payload may be up to 1 MiB: fifty of them stay under the in-process
	// client's 64 MiB response limit whatever the agents sent.
	approvalScanPage = 50
	// maxPendingScan and maxDecidedScan bound the walks. The API lists
	// oldest first and has no other order, so the soonest deadlines and
	// the newest decisions can only be found by reading the list through.
	maxPendingScan = 1000
	maxDecidedScan = 10000
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

	Decided []approvalCard
	// Page is the decided table's page (1 = newest); Older says there is
	// a next one. DecidedCapped says the walk stopped at maxDecidedScan,
	// so the table shows the newest of that many, not of all.
	Page          int
	Older         bool
	DecidedCapped bool
}

// Newer and Next are the pager's pages.
func (d approvalsData) Newer() int { return d.Page - 1 }
func (d approvalsData) Next() int  { return d.Page + 1 }

// MaxPendingScan is shown when the pending walk was cut short.
func (approvalsData) MaxPendingScan() int { return maxPendingScan }

// MaxDecidedScan is shown when the decided walk was cut short.
func (approvalsData) MaxDecidedScan() int { return maxDecidedScan }

// approvalsPage shows what waits for the operator, soonest deadline first,
// then what was decided, newest first. The two reads run at once.
func (s *Server) approvalsPage(rq *request) error {
	page, err := pageParam(rq.r.URL.Query().Get("page"))
	if err != nil {
		return err
	}
	d := approvalsData{Page: page}
	var (
		wg               sync.WaitGroup
		pendErr, decErr  error
		pending, decided []*factoryv1.Approval
	)
	wg.Go(func() {
		pending, d.PendingTotal, d.PendingCapped, pendErr = s.soonestPending(rq.ctx, pendingShown)
	})
	wg.Go(func() {
		decided, d.Older, d.DecidedCapped, decErr = s.newestDecided(rq.ctx, (page-1)*decidedPage, decidedPage)
	})
	wg.Wait()
	if pendErr != nil {
		return pendErr
	}
	if decErr != nil {
		return decErr
	}
	for _, a := range pending {
		d.Pending = append(d.Pending, newCard(a, whyOnCard))
	}
	for _, a := range decided {
		d.Decided = append(d.Decided, newCard(a, 0))
	}
	return s.render(rq, http.StatusOK, "approvals", view{Title: "Approvals", Nav: "approvals", Topics: "approvals"}, d)
}

// pageParam reads the decided table's page: 1 when absent.
func pageParam(v string) (int, error) {
	if v == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, status.Error(codes.InvalidArgument, "page: not a number")
	}
	if n < 1 || n > maxDecidedScan/decidedPage {
		return 0, status.Errorf(codes.InvalidArgument, "page: between 1 and %d", maxDecidedScan/decidedPage)
	}
	return n, nil
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

// newestDecided returns the decided requests from skip to skip+n, newest
// decision first, and whether there are older ones. Only the newest
// skip+n seen so far are kept while walking, so memory stays bounded by
// the page asked for, not by the history.
func (s *Server) newestDecided(ctx context.Context, skip, n int) (_ []*factoryv1.Approval, older, capped bool, err error) {
	keep := skip + n
	var top []*factoryv1.Approval
	read, capped, err := s.walkApprovals(ctx, decidedStates, maxDecidedScan, func(page []*factoryv1.Approval) {
		top = append(top, page...)
		if len(top) > 2*keep {
			slices.SortFunc(top, byNewestDecision)
			top = top[:keep]
		}
	})
	if err != nil {
		return nil, false, false, err
	}
	slices.SortFunc(top, byNewestDecision)
	if len(top) <= skip {
		return nil, false, capped, nil
	}
	return top[skip:min(keep, len(top))], read > keep, capped, nil
}

func byNewestDecision(a, b *factoryv1.Approval) int {
	if c := toTime(b.GetDecidedAt()).Compare(toTime(a.GetDecidedAt())); c != 0 {
		return c
	}
	// UUIDv7 ids sort by creation: the later request first.
	return strings.Compare(b.GetId(), a.GetId())
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
