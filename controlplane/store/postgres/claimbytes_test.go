package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// Claims that run as one transaction keep their byte budgets: each takes,
// in claim order, what fits its own budget and leaves the rest READY and
// untouched, as the claims would one after another.
func TestGroupedClaimsKeepByteBudgets(t *testing.T) {
	url := testURL(t)
	s := openTest(t, url, testSchema(t, url), Config{})
	ctx := context.Background()
	payload := `"` + strings.Repeat("x", 100<<10) + `"`
	var tasks []*store.TaskCreate
	for i := range 4 {
		tasks = append(tasks, &store.TaskCreate{ID: fmt.Sprintf("big-%d", i+1), PayloadJSON: payload, Priority: int32(9 - i)})
	}
	tasks = append(tasks, &store.TaskCreate{ID: "small"})
	if _, err := s.TaskCreate(ctx, &store.TaskCreateParams{Now: t0, Tasks: tasks}); err != nil {
		t.Fatal(err)
	}
	req := func(agent string, budget int64) *claimReq {
		return &claimReq{request: newRequest(ctx), now: t0,
			p: &store.TaskClaimParams{Agent: agent, Max: 5, LeaseDuration: time.Minute, Now: t0, MaxBytes: budget}}
	}
	a, b := req("agent-a", 250<<10), req("agent-b", 150<<10)
	if err := s.runGroup(ctx, []groupRequest{a, b}); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		r    *claimReq
		want []string
	}{
		{a, []string{"big-1", "big-2"}},
		// b's first task comes whatever its size; the next would not fit.
		{b, []string{"big-3"}},
	} {
		byClaimOrder(x.r.out)
		var got []string
		for _, r := range x.r.out {
			got = append(got, r.t.ID)
		}
		if fmt.Sprint(got) != fmt.Sprint(x.want) {
			t.Fatalf("%s claimed %v, want %v", x.r.p.Agent, got, x.want)
		}
	}
	for _, id := range []string{"big-4", "small"} {
		if got, _ := s.TaskGet(ctx, id); got.State != store.StateReady || got.Attempt != 0 {
			t.Fatalf("%s is %s with attempt %d; want READY, 0", id, got.State, got.Attempt)
		}
	}
}
