package alert

import (
	"context"
	"testing"
)

type fakeLLM []LLMRequests

func (f fakeLLM) LLMRequests(context.Context) ([]LLMRequests, error) { return f, nil }

// The error ratio is per provider and model, and a pair with too few
// calls to tell has no series: one failure in three calls is not an
// outage.
func TestLLMErrorRatioNeedsEnoughCalls(t *testing.T) {
	m := &measurer{src: Sources{LLM: fakeLLM{
		{Provider: "anthropic", Model: "sonnet", Requests: 200, Failures: 11},
		{Provider: "openai", Model: "gpt-4o-mini", Requests: LLMErrorRateMinRequests - 1, Failures: 3},
	}}, memo: map[Expr][]series{}, errs: map[Expr]error{}}
	got, err := m.get(context.Background(), ExprLLMErrorRate)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].labels["provider"] != "anthropic" || got[0].labels["model"] != "sonnet" || got[0].value != 0.055 {
		t.Fatalf("series %+v", got)
	}
	if _, err := (&measurer{memo: map[Expr][]series{}, errs: map[Expr]error{}}).get(context.Background(), ExprLLMErrorRate); err == nil {
		t.Fatal("measured without a source")
	}
}
