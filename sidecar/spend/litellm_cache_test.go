package spend

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// copyRow deep-copies a fixture row.
func copyRow(t *testing.T, row map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(row)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// The poller reads the prompt-cache tokens from
// metadata.additional_usage_values (not the row's cache_hit, which is
// LiteLLM's response cache: "False" on every fixture row) or from an
// OpenAI-style usage_object, and a failed call from status (or, on older
// proxies, metadata.status); all survive the spool and go on the wire.
func TestLiteLLMPollReadsCacheTokensAndFailures(t *testing.T) {
	f, srv := newFakeLiteLLM(t)
	first := f.rows[0]
	failure := copyRow(t, first)
	failure["request_id"], failure["status"], failure["spend"] = "chatcmpl-failed-1", "failure", 0.0
	failure["prompt_tokens"], failure["completion_tokens"], failure["total_tokens"] = 0, 0, 0
	failure["startTime"] = "2026-11-26T14:05:00.000000Z"
	meta := failure["metadata"].(map[string]any)
	meta["status"], meta["additional_usage_values"] = "failure", map[string]any{}
	meta["error_information"] = map[string]any{"error_code": "529", "error_class": "InternalServerError"}
	f.add(failure)
	older := copyRow(t, failure)
	delete(older, "status") // only metadata.status says it failed
	older["request_id"] = "chatcmpl-failed-2"
	f.add(older)
	openai := copyRow(t, f.rows[1])
	openai["request_id"] = "chatcmpl-cached-openai"
	openai["startTime"] = "2026-11-26T14:06:00.000000Z"
	om := openai["metadata"].(map[string]any)
	om["usage_object"] = map[string]any{"prompt_tokens": 3120, "completion_tokens": 412, "prompt_tokens_details": map[string]any{"cached_tokens": 2048}}
	f.add(openai)

	dir := t.TempDir()
	sp := openSpool(t, filepath.Join(dir, "spend.jsonl"))
	p := newPoller(t, srv.URL, dir, sp, &fixedClock{now: time.Date(2026, 11, 26, 14, 10, 0, 0, time.UTC)}, 1000)
	if n, err := p.Poll(context.Background()); err != nil || n != 6 {
		t.Fatalf("Poll = %d, %v; want 6 rows", n, err)
	}
	got := spooledEvents(t, sp)
	cases := []struct {
		id          string
		read, write int64
		failed      bool
	}{
		{"litellm:chatcmpl-3f1c9a2e-7b4d-4e0a-9c61-2d8e5b7a9f14", 14336, 0, false},
		{"litellm:chatcmpl-CXq3m8Lr2VnT0aJcY5hKp1sWd9eFz", 0, 0, false},
		{"litellm:chatcmpl-failed-1", 0, 0, true},
		{"litellm:chatcmpl-failed-2", 0, 0, true},
		{"litellm:chatcmpl-cached-openai", 2048, 0, false},
	}
	for _, c := range cases {
		e := got[c.id]
		if e == nil {
			t.Fatalf("no event %s", c.id)
		}
		if e.CacheReadTokens != c.read || e.CacheWriteTokens != c.write || e.Failed != c.failed {
			t.Errorf("%s: cache %d/%d failed %v, want %d/%d %v", c.id, e.CacheReadTokens, e.CacheWriteTokens, e.Failed, c.read, c.write, c.failed)
		}
		pb := e.Proto()
		if pb.GetCacheReadTokens() != c.read || pb.GetCacheWriteTokens() != c.write || pb.GetFailed() != c.failed {
			t.Errorf("%s on the wire: %v", c.id, pb)
		}
	}
	if e := got["litellm:chatcmpl-failed-1"]; e.CostMicros == nil || *e.CostMicros != 0 || e.Model != "claude-sonnet-4-5-20250929" || e.Provider != "anthropic" {
		t.Errorf("failed call: %+v", e)
	}
}

func TestFirstCountSkipsNullsAndHoldsTheBounds(t *testing.T) {
	for _, c := range []struct {
		raw  []string
		want int64
	}{
		{[]string{"null", "12"}, 12},
		{[]string{"", `"7"`}, 7},
		{[]string{"-5"}, 0},
		{[]string{"1e12"}, maxCacheTokens},
		{[]string{`"x"`}, 0},
		{nil, 0},
	} {
		raw := make([]json.RawMessage, len(c.raw))
		for i, s := range c.raw {
			raw[i] = json.RawMessage(s)
		}
		if got := firstCount(raw...); got != c.want {
			t.Errorf("firstCount(%q) = %d, want %d", c.raw, got, c.want)
		}
	}
}

// An agent posting to the endpoint reports its prompt-cache tokens and a
// failed call the same way; out-of-range counts are refused naming the
// field.
func TestEndpointTakesCacheTokensAndFailures(t *testing.T) {
	e, h := newEndpoint(t)
	r := post(t, h, local, `{"id":"c-1","agent":"planner-01","model":"claude-sonnet-4","provider":"anthropic","tier":"frontier",
		"input_tokens":18650,"output_tokens":1204,"cache_read_tokens":14336,"cache_write_tokens":512,"cost_micros":35303,"occurred_at":"2026-11-27T08:59:00Z"}`)
	if r.code != http.StatusAccepted {
		t.Fatalf("got %d %v", r.code, r.body)
	}
	r = post(t, h, local, `{"id":"c-2","agent":"planner-01","model":"claude-sonnet-4","tier":"frontier","failed":true,"cost_micros":0,"occurred_at":"2026-11-27T08:59:01Z"}`)
	if r.code != http.StatusAccepted {
		t.Fatalf("got %d %v", r.code, r.body)
	}
	got := spooledEvents(t, e.Spool)
	if c := got["c-1"]; c == nil || c.CacheReadTokens != 14336 || c.CacheWriteTokens != 512 || c.Failed {
		t.Errorf("c-1 %+v", c)
	}
	if c := got["c-2"]; c == nil || !c.Failed {
		t.Errorf("c-2 %+v", c)
	}
	r = post(t, h, local, `{"agent":"planner-01","model":"m","tier":"mid","cache_read_tokens":-1}`)
	if r.code != http.StatusBadRequest || r.body["field"] != "cache_read_tokens" {
		t.Errorf("negative cache tokens: %d %v", r.code, r.body)
	}
}
