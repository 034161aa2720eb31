package console

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// listOnly serves ListApprovals from a slice, oldest first or newest
// first, in pages, as the API does (its tokens are indexes, and carry no
// order); it keeps the requests it was sent.
type listOnly struct {
	factoryv1.ApprovalServiceClient
	all []*factoryv1.Approval

	mu    sync.Mutex
	calls []*factoryv1.ListApprovalsRequest
}

func (l *listOnly) ListApprovals(_ context.Context, r *factoryv1.ListApprovalsRequest, _ ...grpc.CallOption) (*factoryv1.ListApprovalsResponse, error) {
	l.mu.Lock()
	l.calls = append(l.calls, proto.CloneOf(r))
	l.mu.Unlock()
	var match []*factoryv1.Approval
	for _, a := range l.all {
		if len(r.GetStates()) == 0 || slices.Contains(r.GetStates(), a.GetState()) {
			match = append(match, a)
		}
	}
	if r.GetNewestFirst() {
		slices.Reverse(match)
	}
	from := 0
	if r.GetPageToken() != "" {
		from, _ = strconv.Atoi(r.GetPageToken())
	}
	to := min(from+int(r.GetPageSize()), len(match))
	res := &factoryv1.ListApprovalsResponse{Approvals: match[from:to]}
	if to < len(match) {
		res.NextPageToken = strconv.Itoa(to)
	}
	return res, nil
}

// decidedCalls are the calls that asked for decided requests.
func (l *listOnly) decidedCalls() []*factoryv1.ListApprovalsRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*factoryv1.ListApprovalsRequest
	for _, r := range l.calls {
		if !slices.Contains(r.GetStates(), factoryv1.ApprovalState_APPROVAL_STATE_PENDING) {
			out = append(out, r)
		}
	}
	return out
}

func TestApprovalsPendingSoonestDeadlineFirst(t *testing.T) {
	base := time.Date(2025, 3, 1, 7, 0, 0, 0, time.UTC)
	l := &listOnly{}
	// Created in one order, due in another.
	for i, dueIn := range []int{50, 10, 30, 20, 40} {
		l.all = append(l.all, &factoryv1.Approval{
			Id: fmt.Sprintf("p%d", i), State: factoryv1.ApprovalState_APPROVAL_STATE_PENDING,
			Deadline: timestamppb.New(base.Add(time.Duration(dueIn) * time.Minute)),
		})
	}
	s := &Server{approvals: l}
	got, total, capped, err := s.soonestPending(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if ids := approvalIDs(got); !slices.Equal(ids, []string{"p1", "p3", "p2"}) || total != 5 || capped {
		t.Fatalf("soonestPending = %v, total %d, capped %v; want [p1 p3 p2], 5, false", ids, total, capped)
	}
}

// getApprovals renders the approvals page at target (a path and query)
// from the fake list, and returns the body.
func getApprovals(t *testing.T, l *listOnly, target string) string {
	t.Helper()
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{}.WithDefaults(), pages: pages, approvals: l}
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	if err := s.approvalsPage(&request{w: w, r: r, ctx: r.Context()}); err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	return w.Body.String()
}

// pagerLink is the decided pager's link with this text, or "".
func pagerLink(body, text string) string {
	nav := body[strings.Index(body, `aria-label="Decided requests pages"`)+1:]
	m := regexp.MustCompile(`<a href="([^"]*)#h-decided"[^>]*>` + regexp.QuoteMeta(text) + `</a>`).FindStringSubmatch(nav)
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

// decidedRows are the ids in the decided table, in order.
func decidedRows(body string) []string {
	var ids []string
	for _, m := range regexp.MustCompile(`<tr id="decided-([^"]+)">`).FindAllStringSubmatch(body, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

func idRange(from, to int) []string {
	var ids []string
	for i := from; ; {
		ids = append(ids, fmt.Sprintf("d%03d", i))
		if i == to {
			return ids
		}
		if from < to {
			i++
		} else {
			i--
		}
	}
}

func TestApprovalsDecidedReadsOnlyItsPage(t *testing.T) {
	l := &listOnly{}
	// 45 decided requests, and pending ones the decided table must not see.
	for i := range 45 {
		l.all = append(l.all, &factoryv1.Approval{Id: fmt.Sprintf("d%03d", i), State: factoryv1.ApprovalState_APPROVAL_STATE_APPROVED})
		if i%10 == 0 {
			l.all = append(l.all, &factoryv1.Approval{Id: fmt.Sprintf("p%03d", i), State: factoryv1.ApprovalState_APPROVAL_STATE_PENDING})
		}
	}

	first := getApprovals(t, l, "/approvals")
	calls := l.decidedCalls()
	want := &factoryv1.ListApprovalsRequest{States: decidedStates, NewestFirst: true, PageSize: decidedPage}
	if len(calls) != 1 || !proto.Equal(calls[0], want) {
		t.Fatalf("decided calls %v, want one: %v", calls, want)
	}
	if got := decidedRows(first); !slices.Equal(got, idRange(44, 25)) {
		t.Fatalf("first page %v, want d044..d025", got)
	}
	if pagerLink(first, "← Newer") != "" || pagerLink(first, "« Newest") != "" {
		t.Fatal("the first page links to newer pages")
	}
	older := pagerLink(first, "Older →")
	if older != "/approvals?decided=20" {
		t.Fatalf("older link %q", older)
	}

	second := getApprovals(t, l, older)
	if got := decidedRows(second); !slices.Equal(got, idRange(24, 5)) {
		t.Fatalf("second page %v, want d024..d005", got)
	}
	if calls := l.decidedCalls(); len(calls) != 2 || calls[1].GetPageToken() != "20" {
		t.Fatalf("second page read with %v", calls[len(calls)-1])
	}
	if got := pagerLink(second, "← Newer"); got != "/approvals" {
		t.Fatalf("second page's newer link %q, want /approvals", got)
	}
	if got := pagerLink(second, "« Newest"); got != "" {
		t.Fatalf("second page links to the newest as well as newer: %q", got)
	}
	older = pagerLink(second, "Older →")

	third := getApprovals(t, l, older)
	if got := decidedRows(third); !slices.Equal(got, idRange(4, 0)) {
		t.Fatalf("third page %v, want d004..d000", got)
	}
	if got := pagerLink(third, "← Newer"); got != "/approvals?decided=20" {
		t.Fatalf("third page's newer link %q", got)
	}
	if got := pagerLink(third, "« Newest"); got != "/approvals" {
		t.Fatalf("third page's newest link %q", got)
	}
	if got := pagerLink(third, "Older →"); got != "" {
		t.Fatalf("the last page links to %q", got)
	}
	if strings.Contains(third, "oldest first") {
		t.Fatal("the page still explains a scan of the history")
	}
}

func TestDecidedTrailLinks(t *testing.T) {
	var full []string
	for i := range maxDecidedTrail {
		full = append(full, fmt.Sprintf("t%d", i))
	}
	href := func(cut bool, tokens ...string) string { return decidedTrail{tokens: tokens, cut: cut}.href() }
	for _, c := range []struct {
		name                 string
		trail                decidedTrail
		next                 string
		newest, newer, older string
	}{
		{"first page", decidedTrail{}, "a", "", "", href(false, "a")},
		{"only page", decidedTrail{}, "", "", "", ""},
		{"second page", decidedTrail{tokens: []string{"a"}}, "b", "", "/approvals", href(false, "a", "b")},
		{"third page, the last", decidedTrail{tokens: []string{"a", "b"}}, "", "/approvals", href(false, "a"), ""},
		// Past the cap the oldest token is dropped, and the trail says so.
		{"full trail", decidedTrail{tokens: full}, "x", "/approvals", href(false, full[:len(full)-1]...), href(true, append(slices.Clone(full[1:]), "x")...)},
		{"cut trail", decidedTrail{tokens: []string{"k", "l"}, cut: true}, "m", "/approvals", href(true, "k"), href(true, "k", "l", "m")},
		{"first of a cut trail", decidedTrail{tokens: []string{"k"}, cut: true}, "l", "/approvals", "", href(true, "k", "l")},
	} {
		newest, newer, older := c.trail.links(c.next)
		if newest != c.newest || newer != c.newer || older != c.older {
			t.Errorf("%s: links (%q, %q, %q), want (%q, %q, %q)", c.name, newest, newer, older, c.newest, c.newer, c.older)
		}
	}
	// A link reads back as the trail it was made from.
	u, _ := url.Parse(href(true, "n1.5", "n1.9"))
	got, err := parseDecidedTrail(u.Query())
	if err != nil || !slices.Equal(got.tokens, []string{"n1.5", "n1.9"}) || !got.cut || got.request().GetPageToken() != "n1.9" {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
}

func TestDecidedTrailParseErrors(t *testing.T) {
	many := url.Values{}
	for i := range maxDecidedTrail + 1 {
		many.Add("decided", strconv.Itoa(i))
	}
	for _, q := range []url.Values{many, {"decided": {"a", ""}}, {"decided_cut": {"1"}}} {
		if _, err := parseDecidedTrail(q); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: err %v, want INVALID_ARGUMENT", q, err)
		}
	}
}

func TestDecideRequestFromForm(t *testing.T) {
	for _, tc := range []struct {
		form url.Values
		want *factoryv1.DecideRequest
		note string
	}{
		{url.Values{"decision": {"approve"}}, &factoryv1.DecideRequest{ApprovalId: "a1", Decision: factoryv1.ApprovalDecision_APPROVAL_DECISION_APPROVE}, "Approved"},
		{url.Values{"decision": {"reject"}, "reason": {"not today"}}, &factoryv1.DecideRequest{ApprovalId: "a1", Decision: factoryv1.ApprovalDecision_APPROVAL_DECISION_REJECT, Reason: "not today"}, "Rejected"},
		{url.Values{"decision": {"Modify"}, "reason": {"smaller"}, "instructions": {"deploy to one region"}}, &factoryv1.DecideRequest{ApprovalId: "a1", Decision: factoryv1.ApprovalDecision_APPROVAL_DECISION_MODIFY, Reason: "smaller", Instructions: "deploy to one region"}, "Modified"},
	} {
		got, note, err := decideRequest("a1", tc.form)
		if err != nil {
			t.Fatalf("%v: %v", tc.form, err)
		}
		if got.String() != tc.want.String() || note != tc.note {
			t.Errorf("%v: got %v %q, want %v %q", tc.form, got, note, tc.want, tc.note)
		}
	}
	for _, bad := range []string{"", "yes", "expire"} {
		if _, _, err := decideRequest("a1", url.Values{"decision": {bad}}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("decision %q: err %v, want INVALID_ARGUMENT", bad, err)
		}
	}
}

func TestClipRunesKeepsCharactersWhole(t *testing.T) {
	if got := clipRunes("héllo", 2); got != "h…" {
		t.Errorf("clipRunes = %q, want %q", got, "h…")
	}
	if got := clipRunes("short", 10); got != "short" {
		t.Errorf("clipRunes = %q", got)
	}
}

func approvalIDs(as []*factoryv1.Approval) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.GetId()
	}
	return out
}
