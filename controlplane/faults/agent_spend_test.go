//go:build faults

package faults_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// spendAs is a BudgetService client sending token.
func spendAs(t *testing.T, cp *controlPlane, token string) factoryv1.BudgetServiceClient {
	t.Helper()
	return factoryv1.NewBudgetServiceClient(dial(t, cp.addr, token))
}

// costEvent is a call of agent with a cost of its own.
func costEvent(id, agent string, micros int64) *factoryv1.SpendEvent {
	return &factoryv1.SpendEvent{Id: id, Agent: agent, Model: "claude-sonnet-4", Provider: "anthropic",
		Tier: factoryv1.SpendTier_SPEND_TIER_MID, CostMicros: &micros, OccurredAt: timestamppb.Now()}
}

// spendCLI runs the factory CLI with the operator's token and returns its
// output.
func spendCLI(t *testing.T, cp *controlPlane, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary(t, "factory"), append([]string{"--addr", cp.addr, "--token", cp.operatorToken(t)}, args...)...)
	cmd.Dir = t.TempDir()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("factory %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// spendByAgent is today's spend per agent, from the ledger.
func spendByAgent(t *testing.T, ctx context.Context, b factoryv1.BudgetServiceClient) (map[string]int64, int64) {
	t.Helper()
	rep, err := b.GetSpend(ctx, &factoryv1.GetSpendRequest{GroupBy: factoryv1.SpendGroupBy_SPEND_GROUP_BY_AGENT})
	if err != nil {
		t.Fatalf("GetSpend: %v", err)
	}
	out := map[string]int64{}
	for _, g := range rep.GetGroups() {
		out[g.GetKey()] = g.GetTotals().GetCostMicros()
	}
	return out, rep.GetTotals().GetCostMicros()
}

// Row 5: hammer's real $50 call, sent with an id forge already used for
// $0, was answered `duplicate: true` with forge's record and never
// counted; a resend with another cost was a silent duplicate too. Ids are
// now per agent, and a rewrite is refused naming what differs.
func hostileRow05StealSpendID(t *testing.T) {
	cp := startControlPlane(t, "controlplane", t.TempDir(), "")
	op := dial(t, cp.addr, cp.operatorToken(t))
	forge := spendAs(t, cp, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "forge"))
	hammer := spendAs(t, cp, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "hammer"))
	ledger := factoryv1.NewBudgetServiceClient(op)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if _, err := forge.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: costEvent("call-7", "forge", 0)}); err != nil {
		t.Fatal(err)
	}
	res, err := hammer.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: costEvent("call-7", "hammer", 50_000_000)})
	if err != nil {
		t.Fatalf("hammer's call with forge's id: %v", err)
	}
	if res.GetDuplicate() || res.GetRecord().GetEvent().GetAgent() != "hammer" || res.GetRecord().GetEvent().GetCostMicros() != 50_000_000 {
		t.Fatalf("hammer's call with forge's id answered %v: want hammer's own record", res)
	}

	// hammer rewriting its own id: refused, naming the field.
	_, err = hammer.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: costEvent("call-7", "hammer", 5_000_000)})
	if st := status.Convert(err); st.Code() != codes.AlreadyExists || !strings.Contains(st.Message(), "cost_micros") {
		t.Fatalf("a resend with another cost = %v, want ALREADY_EXISTS naming cost_micros", err)
	}
	// In a batch: listed, not stored; the rest of the batch is.
	batch, err := hammer.ReportSpendBatch(ctx, &factoryv1.ReportSpendBatchRequest{Events: []*factoryv1.SpendEvent{
		costEvent("call-7", "hammer", 5_000_000), costEvent("call-8", "hammer", 1_000_000)}})
	if err != nil {
		t.Fatal(err)
	}
	if batch.GetRecorded() != 1 || len(batch.GetConflicts()) != 1 || batch.GetConflicts()[0].GetId() != "call-7" ||
		strings.Join(batch.GetConflicts()[0].GetFields(), ",") != "cost_micros" {
		t.Fatalf("a batch rewriting call-7 answered %v", batch)
	}
	// An identical resend is still an idempotent retry.
	again, err := hammer.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: costEvent("call-7", "hammer", 50_000_000)})
	if err != nil || !again.GetDuplicate() {
		t.Fatalf("an identical retry: %v, %v", again, err)
	}

	byAgent, total := spendByAgent(t, ctx, ledger)
	if byAgent["hammer"] != 51_000_000 || byAgent["forge"] != 0 || total != 51_000_000 {
		t.Errorf("ledger by agent %v (total %d), want hammer $51 and forge $0", byAgent, total)
	}
}

// Row 6: server-priced events of 1e11 + 1e11 frontier tokens ($9M each)
// passed validation, and about a thousand of them overflowed the day:
// SQLite stored a REAL and every read failed, and every other agent's
// report failed for the rest of the day. Now such events are refused, one
// agent can fill only its own day (refused past its ceiling), and the
// others and every read carry on.
func hostileRow06OverflowDay(t *testing.T) {
	cp := startControlPlane(t, "controlplane", t.TempDir(), "")
	op := dial(t, cp.addr, cp.operatorToken(t))
	forge := spendAs(t, cp, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "forge"))
	hammer := spendAs(t, cp, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "hammer"))
	ledger := factoryv1.NewBudgetServiceClient(op)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	batch := func(n int, prefix string, tokens int64) []*factoryv1.SpendEvent {
		out := make([]*factoryv1.SpendEvent, n)
		for i := range out {
			out[i] = &factoryv1.SpendEvent{Id: fmt.Sprintf("%s-%d", prefix, i), Agent: "forge", Model: "claude-opus-4",
				Provider: "anthropic", Tier: factoryv1.SpendTier_SPEND_TIER_FRONTIER, InputTokens: tokens, OutputTokens: tokens,
				OccurredAt: timestamppb.Now()}
		}
		return out
	}
	// The repro: refused outright.
	_, err := forge.ReportSpendBatch(ctx, &factoryv1.ReportSpendBatchRequest{Events: batch(1000, "huge", 100_000_000_000)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("1e11-token events = %v, want INVALID_ARGUMENT", err)
	}
	// The most the limits let through ($90,000 an event): forge fills its
	// own day until its ceiling refuses it, and nothing wraps.
	var accepted int64
	refused := false
	for b := range 20 {
		_, err := forge.ReportSpendBatch(ctx, &factoryv1.ReportSpendBatchRequest{Events: batch(1000, fmt.Sprintf("max%d", b), 1_000_000_000)})
		if err == nil {
			accepted += 1000 * 90_000_000_000
			continue
		}
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "ceiling") {
			t.Fatalf("batch %d past the ceiling = %v, want INVALID_ARGUMENT about the ceiling", b, err)
		}
		refused = true
		break
	}
	if !refused {
		t.Fatal("forge was never refused: its day has no ceiling")
	}
	t.Logf("forge's day took %d micro-dollars before its ceiling refused a batch", accepted)
	// Another agent's report still works, and so does every read.
	if _, err := hammer.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: costEvent("h-1", "hammer", 1_000_000)}); err != nil {
		t.Fatalf("hammer's report after forge filled its day: %v", err)
	}
	byAgent, total := spendByAgent(t, ctx, ledger)
	if byAgent["forge"] != accepted || byAgent["hammer"] != 1_000_000 || total != accepted+1_000_000 {
		t.Errorf("ledger %v total %d, want forge %d and hammer 1000000", byAgent, total, accepted)
	}
	if _, err := ledger.GetBudget(ctx, &factoryv1.GetBudgetRequest{}); err != nil {
		t.Errorf("GetBudget: %v", err)
	}
	if _, err := ledger.GetSpend(ctx, &factoryv1.GetSpendRequest{Days: 7, GroupBy: factoryv1.SpendGroupBy_SPEND_GROUP_BY_DAY}); err != nil {
		t.Errorf("GetSpend over a week: %v", err)
	}
}

// Row 7: one bogus $50,000 event halted the fleet for the day: it could
// not be voided, and a rearm tripped again on the next report. Now the
// operator voids it (audited), rearms, and the next report does not trip
// the stop; the agent's own claim gate opens again too.
func hostileRow07OneEventHaltsFleet(t *testing.T) {
	cp := startControlPlane(t, "controlplane", t.TempDir(), "")
	op := dial(t, cp.addr, cp.operatorToken(t))
	forge := spendAs(t, cp, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "forge"))
	hammer := spendAs(t, cp, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "hammer"))
	ledger := factoryv1.NewBudgetServiceClient(op)
	queue := factoryv1.NewQueueServiceClient(op)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, title := range []string{"build", "test"} {
		if _, err := queue.CreateTask(ctx, &factoryv1.CreateTaskRequest{Title: title}); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := forge.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: costEvent("bogus-1", "forge", 50_000_000_000)}); err != nil {
		t.Fatal(err)
	}
	stop := func() *factoryv1.EmergencyStopState {
		t.Helper()
		st, err := ledger.GetEmergencyStop(ctx, &factoryv1.GetEmergencyStopRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetState()
	}
	// The event crossed the total's $100 threshold: the fleet-wide stop
	// is the runbook's rule, and the way back is below.
	eventually(t, "the stop pulled by the total threshold", 10*time.Second, func() bool { return stop().GetStopped() })

	out := spendCLI(t, cp, "spend", "void", "bogus-1", "--agent", "forge", "--reason", "bogus event from a prompt-injected agent")
	if !strings.Contains(out, "voided bogus-1") {
		t.Errorf("factory spend void printed %q", out)
	}
	_, err := ledger.VoidSpend(ctx, &factoryv1.VoidSpendRequest{Agent: "forge", Id: "bogus-1", Reason: "again"})
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("a second void = %v, want ALREADY_EXISTS", err)
	}
	spendCLI(t, cp, "emergency-stop", "--rearm", "--note", "bogus event voided")
	if _, err := hammer.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: costEvent("real-1", "hammer", 2_000_000)}); err != nil {
		t.Fatal(err)
	}
	if st := stop(); st.GetStopped() {
		t.Fatalf("the next report tripped the stop again: %v", st)
	}
	// The ledger keeps the event; every sum sees the net.
	byAgent, total := spendByAgent(t, ctx, ledger)
	if byAgent["forge"] != 0 || total != 2_000_000 {
		t.Errorf("ledger %v total %d after the void, want the net $2", byAgent, total)
	}
	b, err := ledger.GetBudget(ctx, &factoryv1.GetBudgetRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range b.GetBudgets() {
		if s.GetBudget().GetScope() == factoryv1.BudgetScope_BUDGET_SCOPE_TOTAL && s.GetSpentMicros() != 2_000_000 {
			t.Errorf("the total budget sees %d, want the net", s.GetSpentMicros())
		}
	}
	stats, err := queue.GetQueueStats(ctx, &factoryv1.GetQueueStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if stats.GetPaused() || stateCount(stats, factoryv1.TaskState_TASK_STATE_READY) != 2 {
		t.Errorf("queue after void and rearm: %v", stats)
	}
	// The void is in the audit log, with the operator and the reason.
	audit, err := factoryv1.NewAccessServiceClient(op).ListAudit(ctx, &factoryv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range audit.GetEntries() {
		if e.GetRpc() == factoryv1.BudgetService_VoidSpend_FullMethodName && strings.Contains(e.GetAfterJson()+e.GetTarget()+e.GetBeforeJson(), "bogus-1") {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit entry for the void among %d entries", len(audit.GetEntries()))
	}
}

// Row 12: an agent named `total` wrote into dash:spend:daily:total, the
// runbook's total counter: $7 by `total` plus $1 by kev read 15.000000
// while the ledger said $8. Names that would collide are now counted under
// an escaped key, and the runbook's keys read the ledger's numbers.
func hostileRow12CounterCollision(t *testing.T) {
	url := os.Getenv("FACTORY_TEST_REDIS_URL")
	if url == "" {
		t.Skip("FACTORY_TEST_REDIS_URL is not set: the counter collision is replayed against a real Redis (e.g. redis://127.0.0.1:6379/0)")
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("FACTORY_TEST_REDIS_URL: %v", err)
	}
	// A database of its own: the counters use the runbook's fixed keys.
	opt.DB = 12
	rc := redis.NewClient(opt)
	t.Cleanup(func() { rc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	clear := func() {
		if keys, _ := rc.Keys(context.Background(), "dash:spend:daily:*").Result(); len(keys) > 0 {
			rc.Del(context.Background(), keys...)
		}
	}
	clear()
	t.Cleanup(clear)
	cp := startControlPlane(t, "controlplane", t.TempDir(), "", "--redis-url", fmt.Sprintf("redis://%s/%d", opt.Addr, opt.DB))
	op := dial(t, cp.addr, cp.operatorToken(t))
	total := spendAs(t, cp, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "total"))
	kev := spendAs(t, cp, mintToken(t, op, factoryv1.Role_ROLE_AGENT, "kev"))
	ledger := factoryv1.NewBudgetServiceClient(op)

	if _, err := total.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: costEvent("t-1", "total", 7_000_000)}); err != nil {
		t.Fatal(err)
	}
	if _, err := kev.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: costEvent("k-1", "kev", 1_000_000)}); err != nil {
		t.Fatal(err)
	}
	// A name with ':' that reads as another counter, reported by an
	// operator.
	if _, err := ledger.ReportSpend(ctx, &factoryv1.ReportSpendRequest{Event: costEvent("x-1", "tier:frontier", 2_000_000)}); err != nil {
		t.Fatal(err)
	}
	_, sum := spendByAgent(t, ctx, ledger)
	if sum != 10_000_000 {
		t.Fatalf("the ledger says %d, want $10", sum)
	}
	get := func(k string) string {
		v, err := rc.Get(ctx, "dash:spend:daily:"+k).Result()
		if err != nil {
			return "(" + err.Error() + ")"
		}
		return v
	}
	eventually(t, "dash:spend:daily:total reads the ledger's $10", 15*time.Second, func() bool { return get("total") == "10.000000" })
	for k, want := range map[string]string{
		"total:micros":                 "10000000",
		"kev":                          "1.000000",
		"agent:total":                  "7.000000",
		"agent:tier%3Afrontier":        "2.000000",
		"tier:mid":                     "10.000000",
		"tier:frontier:micros":         "(redis: nil)",
		"agent:tier%3Afrontier:micros": "2000000",
	} {
		if got := get(k); got != want {
			t.Errorf("GET dash:spend:daily:%s = %q, want %q", k, got, want)
		}
	}
}
