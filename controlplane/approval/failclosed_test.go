package approval

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// requireNothingStored checks that refused requests left no trace.
func requireNothingStored(t *testing.T, b *bundle) {
	t.Helper()
	res, err := b.svc.List(t.Context(), ListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Approvals) != 0 {
		t.Fatalf("a refused request was stored: %+v", res.Approvals[0])
	}
}

// An agent cannot make silence approve its own gated request: a default of
// APPROVE is refused naming the field wherever a person must decide, and
// accepted only where policy approves at once anyway.
func TestDefaultApproveRefusedWhereAPersonDecides(t *testing.T) {
	b := setup(t, nil)
	for _, p := range []RequestParams{
		{Tier: 3, Kind: "production_deploy", Timeout: time.Second},
		{Tier: 3, Kind: "production_deploy", Timeout: time.Hour},
		{Tier: 0, Kind: "dns", Timeout: time.Hour},
		{Tier: 0, Kind: "research", AmountMicros: 25_000_000},
		{Tier: 0, Kind: "something_new"},
		{Tier: 2, Kind: "research", Deadline: b.clock.Now().Add(time.Hour)},
	} {
		p.What, p.Agent, p.Risk, p.DefaultOnTimeout = "x", "forge", store.RiskHigh, store.DecisionApprove
		_, err := b.svc.Request(t.Context(), p)
		requireField(t, err, "default_on_timeout")
	}
	requireNothingStored(t, b)

	low := b.request(t, RequestParams{Tier: 1, Kind: "research", DefaultOnTimeout: store.DecisionApprove})
	if low.State != store.ApprovalApproved || !low.AutoApproved {
		t.Fatalf("tier 1 research with default APPROVE: %s, want approved by policy", low.State)
	}
	// Where an operator's policy approves Tier 2 at once, APPROVE is
	// harmless and accepted.
	lax := setup(t, func(c *Config) {
		c.Policy = DefaultPolicy()
		c.Policy.AutoApproveMaxTier = 2
	})
	if a := lax.request(t, RequestParams{Tier: 2, Kind: "production_deploy", DefaultOnTimeout: store.DecisionApprove}); a.State != store.ApprovalApproved {
		t.Fatalf("auto-approved tier with default APPROVE: %s", a.State)
	}
}

// A request that waits for a person, expiring, is denied: recorded as an
// expiry with REJECT applied, never as an approval.
func TestSilenceDeniesAGatedRequest(t *testing.T) {
	b := setup(t, nil)
	a := b.request(t, RequestParams{Tier: 3, Kind: "production_deploy", Timeout: DefaultMinTimeout})
	if a.DefaultOnTimeout != store.DecisionReject {
		t.Fatalf("stored default %s, want REJECT", a.DefaultOnTimeout)
	}
	b.clock.Advance(DefaultMinTimeout)
	if err := b.svc.Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, _ := b.svc.Get(t.Context(), a.ID)
	if got.State != store.ApprovalExpired || got.Outcome != store.DecisionReject || got.DecidedBy != store.DecidedByTimeout {
		t.Fatalf("after the deadline: %s %s by %s, want EXPIRED with REJECT by timeout", got.State, got.Outcome, got.DecidedBy)
	}
}

// A person needs time to look: a request that waits for one may not give
// less than the minimum, by timeout or by deadline.
func TestMinimumTimeoutForRequestsThatWait(t *testing.T) {
	b := setup(t, nil)
	_, err := b.svc.Request(t.Context(), RequestParams{What: "x", Agent: "forge", Risk: store.RiskHigh, Tier: 2, Kind: "production_deploy", Timeout: time.Second})
	requireField(t, err, "timeout")
	_, err = b.svc.Request(t.Context(), RequestParams{What: "x", Agent: "forge", Risk: store.RiskHigh, Tier: 0, Kind: "dns", Timeout: DefaultMinTimeout - time.Second})
	requireField(t, err, "timeout")
	_, err = b.svc.Request(t.Context(), RequestParams{What: "x", Agent: "forge", Risk: store.RiskHigh, Tier: 2, Kind: "research", Deadline: b.clock.Now().Add(time.Minute)})
	requireField(t, err, "deadline")
	requireNothingStored(t, b)

	if a := b.request(t, RequestParams{Tier: 2, Kind: "production_deploy", Timeout: DefaultMinTimeout}); a.State != store.ApprovalPending {
		t.Fatalf("a request at the minimum: %s", a.State)
	}
	if a := b.request(t, RequestParams{Tier: 2, Kind: "production_deploy", Deadline: b.clock.Now().Add(DefaultMinTimeout)}); a.State != store.ApprovalPending {
		t.Fatalf("a deadline at the minimum: %s", a.State)
	}
	// Policy approves a Tier 1 request at once: its timeout does not matter.
	if a := b.request(t, RequestParams{Tier: 1, Kind: "research", Timeout: time.Second}); a.State != store.ApprovalApproved {
		t.Fatalf("tier 1 with a short timeout: %s", a.State)
	}

	// The minimum is configurable, and the default timeout (which gated
	// tasks take) may not be below it.
	short := setup(t, func(c *Config) { c.MinTimeout = 2 * time.Second })
	if a := short.request(t, RequestParams{Tier: 2, Kind: "production_deploy", Timeout: 2 * time.Second}); a.State != store.ApprovalPending {
		t.Fatalf("with a 2s minimum: %s", a.State)
	}
	if _, err := New(Config{Store: b.st, DefaultTimeout: time.Minute, MinTimeout: 2 * time.Minute}); err == nil {
		t.Fatal("a minimum above the default timeout was accepted")
	}
}

func TestNormalizeKind(t *testing.T) {
	for in, want := range map[string]string{
		"production_deploy":      "production_deploy",
		"production-deploy":      "production_deploy",
		"production_deploy ":     "production_deploy",
		"  Production  Deploy  ": "production_deploy",
		"PRODUCTION--_deploy":    "production_deploy",
		"_dns_":                  "dns",
		"dns\tchange":            "dns_change",
		"":                       "",
		"   ":                    "",
	} {
		if got := NormalizeKind(in); got != want {
			t.Errorf("NormalizeKind(%q) = %q, want %q", in, got, want)
		}
	}
}

// The kinds the runbook gates (and the API's own docs list) are gated in
// any spelling: case, spaces, '-' and '_' do not matter, and aliases name
// the same kind. The request is stored under the policy's name for it.
func TestGatedKindsInAnySpelling(t *testing.T) {
	b := setup(t, nil)
	for spelling, canonical := range map[string]string{
		"dns":                    "dns_change",
		"DNS":                    "dns_change",
		"dns-change":             "dns_change",
		"domain":                 "domain_change",
		"certificate":            "certificate_change",
		"customer_message":       "first_customer_message",
		"first_customer_message": "first_customer_message",
		"Customer Message":       "first_customer_message",
		"production_deploy":      "production_deploy",
		"production-deploy":      "production_deploy",
		"production_deploy ":     "production_deploy",
		" production deploy":     "production_deploy",
		"deploy_production":      "production_deploy",
		"public_post":            "public_post",
		"Public-Post":            "public_post",
	} {
		a, err := b.svc.Request(t.Context(), RequestParams{What: "x", Agent: "forge", Risk: store.RiskLow, Tier: 1, Kind: spelling})
		if err != nil {
			t.Fatalf("kind %q: %v", spelling, err)
		}
		if a.State != store.ApprovalPending || a.Tier != 2 || a.AutoApproved || a.Kind != canonical {
			t.Errorf("kind %q declared tier 1: %s tier %d kind %q, want PENDING tier 2 kind %q", spelling, a.State, a.Tier, a.Kind, canonical)
		}
	}
}

// A kind policy does not know goes to a person (unknown means a person
// looks), and so does a request that names no kind; a known harmless kind
// is still approved at once.
func TestUnknownKindGoesToAPerson(t *testing.T) {
	b := setup(t, nil)
	for _, kind := range []string{"frobnicate", "", "   ", "deploy_to_prod_now", "dnsx"} {
		a, err := b.svc.Request(t.Context(), RequestParams{What: "x", Agent: "forge", Risk: store.RiskLow, Tier: 0, Kind: kind})
		if err != nil {
			t.Fatalf("kind %q: %v", kind, err)
		}
		if a.State != store.ApprovalPending || a.Tier != 2 {
			t.Errorf("kind %q declared tier 0: %s tier %d, want PENDING tier 2", kind, a.State, a.Tier)
		}
	}
	for _, kind := range []string{"research", "Research", "code-review", "staging_deploy"} {
		a, err := b.svc.Request(t.Context(), RequestParams{What: "x", Agent: "forge", Risk: store.RiskLow, Tier: 0, Kind: kind})
		if err != nil {
			t.Fatalf("kind %q: %v", kind, err)
		}
		if a.State != store.ApprovalApproved || !a.AutoApproved {
			t.Errorf("known harmless kind %q: %s, want approved by policy", kind, a.State)
		}
	}
	strict := setup(t, func(c *Config) {
		c.Policy = DefaultPolicy()
		c.Policy.UnknownKindTier = 3
	})
	if a := strict.request(t, RequestParams{Tier: 0, Kind: "frobnicate"}); a.Tier != 3 {
		t.Fatalf("unknown kind under unknown_kind_tier 3: tier %d", a.Tier)
	}
}

// An amount over the threshold makes any request Tier 2, typed or in the
// payload (the larger counts); an unreadable amount, or a spend that says
// none, is treated as large.
func TestAmountOverThresholdWhateverTheKind(t *testing.T) {
	b := setup(t, nil)
	for name, p := range map[string]RequestParams{
		"typed $25 research":               {Kind: "research", AmountMicros: 25_000_000},
		"typed $25 spend":                  {Kind: "spend", AmountMicros: 25_000_000},
		"payload $25, typed $1":            {Kind: "spend", AmountMicros: 1_000_000, PayloadJSON: `{"amount_micros": 25000000}`},
		"typed $25, payload $1":            {Kind: "spend", AmountMicros: 25_000_000, PayloadJSON: `{"amount_micros": 1000000}`},
		"payload amount as text":           {Kind: "spend", PayloadJSON: `{"amount_micros": "25000000"}`},
		"payload amount as a float":        {Kind: "research", PayloadJSON: `{"amount_micros": 2.5e7}`},
		"payload amount negative":          {Kind: "research", PayloadJSON: `{"amount_micros": -1}`},
		"payload amount twice":             {Kind: "spend", PayloadJSON: `{"amount_micros": 25000000, "amount_micros": 1}`},
		"spend with no amount":             {Kind: "spend"},
		"spend in another spelling, no $":  {Kind: "Payment"},
		"payload amount over int64":        {Kind: "research", PayloadJSON: `{"amount_micros": 99999999999999999999}`},
		"payload $25 on an unrelated kind": {Kind: "build", PayloadJSON: `{"amount_micros": 25000000}`},
	} {
		p.What, p.Agent, p.Risk, p.Tier = "x", "forge", store.RiskLow, 0
		a, err := b.svc.Request(t.Context(), p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if a.State != store.ApprovalPending || a.Tier != 2 {
			t.Errorf("%s: %s tier %d, want PENDING tier 2", name, a.State, a.Tier)
		}
	}
	for name, p := range map[string]RequestParams{
		"typed $19 spend":   {Kind: "spend", AmountMicros: 19_000_000},
		"typed $20 exactly": {Kind: "spend", AmountMicros: 20_000_000},
		"payload $19 spend": {Kind: "spend", PayloadJSON: `{"amount_micros": 19000000}`},
		"array payload":     {Kind: "research", PayloadJSON: `[{"amount_micros": 25000000}]`},
	} {
		p.What, p.Agent, p.Risk, p.Tier = "x", "forge", store.RiskLow, 1
		if a, err := b.svc.Request(t.Context(), p); err != nil || a.State != store.ApprovalApproved {
			t.Errorf("%s: %v %v, want approved by policy", name, a, err)
		}
	}
	_, err := b.svc.Request(t.Context(), RequestParams{What: "x", Agent: "forge", Risk: store.RiskLow, Kind: "spend", AmountMicros: -1})
	requireField(t, err, "amount_micros")
}

// Tasks are gated by the same reading of kinds: a near-spelling of a gated
// kind waits for approval, denied at its deadline; a task's own work kind
// that policy does not list is not gated.
func TestGatedTaskKindsInAnySpelling(t *testing.T) {
	b := setup(t, nil)
	ctx := t.Context()
	for _, kind := range []string{"Production-Deploy", "production_deploy ", "deploy_production", "dns", "customer message"} {
		tasks, err := b.q.Create(ctx, []*store.TaskCreate{{Title: "t", Kind: kind}})
		if err != nil {
			t.Fatalf("kind %q: %v", kind, err)
		}
		if !tasks[0].ApprovalPending || tasks[0].State != store.StateBacklog {
			t.Errorf("task of kind %q: %s pending=%v, want gated", kind, tasks[0].State, tasks[0].ApprovalPending)
			continue
		}
		a, err := b.svc.Get(ctx, tasks[0].ApprovalID)
		if err != nil || a.DefaultOnTimeout != store.DecisionReject || a.Tier < 2 {
			t.Errorf("task of kind %q: request %+v %v, want tier 2+ denied at its deadline", kind, a, err)
		}
	}
	tasks, err := b.q.Create(ctx, []*store.TaskCreate{{Title: "pay", Kind: "build", PayloadJSON: `{"amount_micros": 25000000}`}})
	if err != nil || !tasks[0].ApprovalPending {
		t.Fatalf("a task spending $25: %+v %v, want gated", tasks, err)
	}
	for _, kind := range []string{"", "build", "summarise-logs"} {
		tasks, err := b.q.Create(ctx, []*store.TaskCreate{{Title: "t", Kind: kind}})
		if err != nil || tasks[0].ApprovalPending || tasks[0].State != store.StateReady {
			t.Errorf("ordinary task of kind %q: %+v %v, want READY", kind, tasks, err)
		}
	}
}

// The policy file of before (no aliases, no unknown_kind_tier) still
// loads, with the new rules' defaults; the new keys load in any spelling.
func TestLoadPolicyKindsAndAliases(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		path := filepath.Join(dir, "policy.yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	p, err := LoadPolicy(write("auto_approve_max_tier: 1\nkind_tiers:\n  model_swap: 3\nspend_kinds: [spend]\nspend_threshold_micros: 20000000\nspend_tier: 2\nreminder_fraction: 0.5\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.UnknownKindTier != 2 || p.TierFor(Action{Kind: "dns"}) != 2 || p.TierFor(Action{Kind: "Model-Swap"}) != 3 {
		t.Fatalf("an old policy file: unknown %d, dns %d, model swap %d", p.UnknownKindTier, p.TierFor(Action{Kind: "dns"}), p.TierFor(Action{Kind: "Model-Swap"}))
	}
	p, err = LoadPolicy(write("unknown_kind_tier: 3\nkind_tiers:\n  DNS: 3\n  Model Swap: 1\nkind_aliases:\n  swap-model: model_swap\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.TierFor(Action{Kind: "dns_change"}) != 3 || p.TierFor(Action{Kind: "swap model"}) != 1 || p.TierFor(Action{Kind: "new_thing"}) != 3 {
		t.Fatalf("aliases and unknown_kind_tier: %+v", p)
	}
	for _, bad := range []string{"kind_aliases:\n  foo: no_such_kind\n", "unknown_kind_tier: 4\n", "unknown_kind_tier: -1\n"} {
		if _, err := LoadPolicy(write(bad)); err == nil {
			t.Errorf("policy %q accepted", strings.TrimSpace(bad))
		}
	}
}
