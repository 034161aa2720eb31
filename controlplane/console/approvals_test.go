package console

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// listOnly serves ListApprovals from a slice, oldest first, in pages, as
// the API does; it counts the calls.
type listOnly struct {
	factoryv1.ApprovalServiceClient
	all   []*factoryv1.Approval
	calls int
}

func (l *listOnly) ListApprovals(_ context.Context, r *factoryv1.ListApprovalsRequest, _ ...grpc.CallOption) (*factoryv1.ListApprovalsResponse, error) {
	l.calls++
	var match []*factoryv1.Approval
	for _, a := range l.all {
		if len(r.GetStates()) == 0 || slices.Contains(r.GetStates(), a.GetState()) {
			match = append(match, a)
		}
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

func TestApprovalsDecidedNewestFirstPaged(t *testing.T) {
	base := time.Date(2025, 3, 1, 7, 0, 0, 0, time.UTC)
	l := &listOnly{}
	// 130 decided requests over three pages of the walk, decided in the
	// reverse of their creation order for the last ten, plus pending ones
	// the decided walk must not see.
	const n = 130
	for i := range n {
		at := base.Add(time.Duration(i) * time.Minute)
		if i >= n-10 {
			at = base.Add(time.Duration(2*n-i) * time.Minute)
		}
		l.all = append(l.all, &factoryv1.Approval{
			Id: fmt.Sprintf("d%03d", i), State: factoryv1.ApprovalState_APPROVAL_STATE_APPROVED, DecidedAt: timestamppb.New(at),
		})
		if i%40 == 0 {
			l.all = append(l.all, &factoryv1.Approval{Id: fmt.Sprintf("p%03d", i), State: factoryv1.ApprovalState_APPROVAL_STATE_PENDING})
		}
	}
	s := &Server{approvals: l}

	got, older, capped, err := s.newestDecided(context.Background(), 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	if ids := approvalIDs(got); !slices.Equal(ids, []string{"d120", "d121", "d122", "d123", "d124"}) || !older || capped {
		t.Fatalf("page 1 = %v older %v capped %v; want d120..d124, older, not capped", ids, older, capped)
	}
	if want := (n + approvalScanPage - 1) / approvalScanPage; l.calls != want {
		t.Errorf("walk made %d calls, want %d", l.calls, want)
	}

	got, _, _, err = s.newestDecided(context.Background(), 10, 5)
	if err != nil {
		t.Fatal(err)
	}
	if ids := approvalIDs(got); !slices.Equal(ids, []string{"d119", "d118", "d117", "d116", "d115"}) {
		t.Fatalf("page 3 = %v, want d119..d115", ids)
	}

	got, older, _, err = s.newestDecided(context.Background(), 125, 5)
	if err != nil {
		t.Fatal(err)
	}
	if ids := approvalIDs(got); !slices.Equal(ids, []string{"d004", "d003", "d002", "d001", "d000"}) || older {
		t.Fatalf("last page = %v older %v, want d004..d000 and no older page", ids, older)
	}

	got, older, _, err = s.newestDecided(context.Background(), 140, 5)
	if err != nil || len(got) != 0 || older {
		t.Fatalf("past the end = %v older %v err %v, want nothing", approvalIDs(got), older, err)
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

func TestApprovalsPageParam(t *testing.T) {
	for v, want := range map[string]int{"": 1, "1": 1, "7": 7} {
		if got, err := pageParam(v); err != nil || got != want {
			t.Errorf("pageParam(%q) = %d, %v; want %d", v, got, err, want)
		}
	}
	for _, v := range []string{"0", "-1", "x", "100000"} {
		if _, err := pageParam(v); status.Code(err) != codes.InvalidArgument {
			t.Errorf("pageParam(%q): err %v, want INVALID_ARGUMENT", v, err)
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
