package spend

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/budget"
)

func newEndpoint(t *testing.T) (*Endpoint, http.Handler) {
	t.Helper()
	sp := openSpool(t, filepath.Join(t.TempDir(), "spend.jsonl"))
	e := &Endpoint{Spool: sp, Host: "edge-1", Agents: []string{"planner-01", "coder-03"}, Logger: quiet(),
		Clock: &fixedClock{now: time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)}}
	return e, e.Handler()
}

type reply struct {
	code int
	body map[string]any
}

func post(t *testing.T, h http.Handler, remote, body string) reply {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:7421/v1/spend", strings.NewReader(body))
	r.RemoteAddr = remote
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var m map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &m)
	return reply{code: w.Code, body: m}
}

const local = "127.0.0.1:50000"

// TestEndpointSpoolsAValidReport: a report is answered 202 with its id
// once it is in the spool, with the host set and the dollars converted to
// micro-dollars exactly.
func TestEndpointSpoolsAValidReport(t *testing.T) {
	e, h := newEndpoint(t)
	r := post(t, h, local, `{"id":"run-7:call-1","agent":"planner-01","model":"claude-sonnet-4","provider":"anthropic","tier":"frontier",
		"input_tokens":18650,"output_tokens":1204,"cost_usd":"0.0353028","task_id":"T-20481","occurred_at":"2026-11-27T08:59:00Z"}`)
	if r.code != http.StatusAccepted || r.body["id"] != "run-7:call-1" {
		t.Fatalf("got %d %v", r.code, r.body)
	}
	got := spooledEvents(t, e.Spool)["run-7:call-1"]
	if got == nil || got.Host != "edge-1" || got.Tier != "frontier" || *got.CostMicros != 35303 || got.InputTokens != 18650 || got.TaskID != "T-20481" {
		t.Fatalf("spooled %+v", got)
	}
	// Several at once, cost as micros or a JSON number, none: priced by
	// the control plane.
	r = post(t, h, "[::1]:40000", `[{"agent":"coder-03","model":"qwen2.5:7b","tier":"local","cost_micros":0,"occurred_at":"2026-11-27T08:59:01Z"},
		{"agent":"coder-03","model":"gpt-4o-mini","tier":"mid","cost_usd":0.25,"occurred_at":"2026-11-27T08:59:02Z"},
		{"agent":"coder-03","model":"gpt-4o-mini","tier":"MID","input_tokens":10}]`)
	if r.code != http.StatusAccepted {
		t.Fatalf("batch: %d %v", r.code, r.body)
	}
	ids, _ := r.body["ids"].([]any)
	if len(ids) != 3 || e.Spool.Len() != 4 {
		t.Fatalf("batch ids %v, spool %d", r.body, e.Spool.Len())
	}
	ev := spooledEvents(t, e.Spool)
	if c := ev[ids[1].(string)].CostMicros; c == nil || *c != 250_000 {
		t.Errorf("cost_usd 0.25: %v", c)
	}
	if last := ev[ids[2].(string)]; last.CostMicros != nil || !last.OccurredAt.Equal(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)) {
		t.Errorf("no cost, no time: %+v", last)
	}
}

// TestEndpointIDsAreStableAcrossRetries: a report without an id but with
// its time gets an id derived from its content, so the client's retry is
// the same event (one spool entry, one ledger row); one without a time
// gets a fresh id, returned for the client to retry with.
func TestEndpointIDsAreStableAcrossRetries(t *testing.T) {
	e, h := newEndpoint(t)
	body := `{"agent":"planner-01","model":"claude-sonnet-4","tier":"frontier","input_tokens":5,"cost_micros":12,"occurred_at":"2026-11-27T08:59:00.5Z"}`
	a, b := post(t, h, local, body), post(t, h, local, body)
	if a.code != http.StatusAccepted || a.body["id"] != b.body["id"] || !strings.HasPrefix(a.body["id"].(string), "local:") {
		t.Fatalf("retries: %v then %v", a.body, b.body)
	}
	if e.Spool.Len() != 1 {
		t.Fatalf("spool holds %d events, want 1", e.Spool.Len())
	}
	other := post(t, h, local, strings.Replace(body, `"cost_micros":12`, `"cost_micros":13`, 1))
	if other.body["id"] == a.body["id"] {
		t.Error("a different report got the same id")
	}
	x := post(t, h, local, `{"agent":"planner-01","model":"gpt-4o-mini","tier":"mid"}`)
	y := post(t, h, local, `{"agent":"planner-01","model":"gpt-4o-mini","tier":"mid"}`)
	if x.body["id"] == y.body["id"] {
		t.Error("two reports without time or id got one id: the second would be lost as a duplicate")
	}
}

// TestEndpointRefusesBadInput: each bad field gets 400 naming it and
// nothing is spooled, a batch with one bad event included.
func TestEndpointRefusesBadInput(t *testing.T) {
	e, h := newEndpoint(t)
	ok := `"agent":"planner-01","model":"gpt-4o-mini","tier":"mid"`
	for body, field := range map[string]string{
		`{"model":"m","tier":"mid"}`:                        "agent",
		`{"agent":"planner-01","tier":"mid"}`:               "model",
		`{"agent":"planner-01","model":"m"}`:                "tier",
		`{"agent":"planner-01","model":"m","tier":"gold"}`:  "tier",
		`{"agent":"someone-else","model":"m","tier":"mid"}`: "agent",
		`{"agent":"bad agent","model":"m","tier":"mid"}`:    "agent",
		`{` + ok + `,"input_tokens":-1}`:                    "input_tokens",
		`{` + ok + `,"output_tokens":1.5}`:                  "output_tokens",
		`{` + ok + `,"cost_usd":"twelve"}`:                  "cost_usd",
		`{` + ok + `,"cost_usd":"1","cost_micros":1}`:       "cost_micros",
		`{` + ok + `,"cost_micros":-5}`:                     "cost",
		`{` + ok + `,"occurred_at":"yesterday"}`:            "occurred_at",
		`{` + ok + `,"id":"has space"}`:                     "id",
		`{` + ok + `,"task_id":"a b"}`:                      "task_id",
		`{` + ok + `,"colour":"red"}`:                       "colour",
		`[{` + ok + `},{"agent":"planner-01","model":"m"}]`: "[1].tier",
		// Nothing can price this call: the relay would drop it.
		`{"agent":"planner-01","model":"my-finetune","tier":"mid"}`:                            "cost_micros",
		`[{` + ok + `},{"agent":"planner-01","model":"m","tier":"frontier","input_tokens":5}]`: "[1].cost_micros",
		// Priced, it is over the cap of one event.
		`{"agent":"planner-01","model":"claude-opus-4-1","tier":"frontier","input_tokens":100000000000,"output_tokens":100000000000}`: "cost",
		`{"agent":"planner-01","model":"m","tier":"mid","id":"x"}x`:                                                                   "",
	} {
		r := post(t, h, local, body)
		if r.code != http.StatusBadRequest {
			t.Errorf("%s: %d %v, want 400", body, r.code, r.body)
			continue
		}
		if got, _ := r.body["field"].(string); got != field {
			t.Errorf("%s: field %q (%v), want %q", body, got, r.body["error"], field)
		}
	}
	if e.Spool.Len() != 0 {
		t.Errorf("%d events spooled from bad requests", e.Spool.Len())
	}
}

// TestEndpointServesLoopbackOnly: a peer on another host, a rebinding
// Host header and a browser's form post are refused.
func TestEndpointServesLoopbackOnly(t *testing.T) {
	e, h := newEndpoint(t)
	body := `{"agent":"planner-01","model":"m","tier":"mid"}`
	if r := post(t, h, "10.1.2.3:5555", body); r.code != http.StatusForbidden {
		t.Errorf("remote peer: %d, want 403", r.code)
	}
	req := httptest.NewRequest(http.MethodPost, "http://evil.example:7421/v1/spend", strings.NewReader(body))
	req.RemoteAddr = local
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusForbidden {
		t.Errorf("rebinding Host header: %d, want 403", w.Code)
	}
	req = httptest.NewRequest(http.MethodPost, "http://127.0.0.1:7421/v1/spend", strings.NewReader(body))
	req.RemoteAddr = local
	req.Header.Set("Content-Type", "text/plain")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain post: %d, want 415", w.Code)
	}
	if e.Spool.Len() != 0 {
		t.Errorf("%d spooled", e.Spool.Len())
	}
}

// TestEndpointEmergencyStop: GET /v1/emergency-stop says what the control
// plane last said.
func TestEndpointEmergencyStop(t *testing.T) {
	e, h := newEndpoint(t)
	get := func() StopState {
		req := httptest.NewRequest(http.MethodGet, "http://localhost:7421/v1/emergency-stop", nil)
		req.RemoteAddr = local
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var s StopState
		if err := json.Unmarshal(w.Body.Bytes(), &s); err != nil || w.Code != http.StatusOK {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		return s
	}
	if s := get(); s.Known || s.Stopped {
		t.Errorf("before any word: %+v", s)
	}
	e.SetEmergencyStop(true, "spend $104.20 crossed $100")
	if s := get(); !s.Known || !s.Stopped || s.Reason != "spend $104.20 crossed $100" {
		t.Errorf("stopped: %+v", s)
	}
	e.SetEmergencyStop(false, "")
	if s := get(); !s.Known || s.Stopped {
		t.Errorf("rearmed: %+v", s)
	}
}

// TestEndpointTakesOnlyJSON: a request a web page could send without a
// preflight (no Content-Type, text/plain, a form) is refused before its
// body is read; JSON with a charset is fine.
func TestEndpointTakesOnlyJSON(t *testing.T) {
	e, h := newEndpoint(t)
	body := `{"agent":"planner-01","model":"gpt-4o-mini","tier":"mid","input_tokens":10}`
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
		"application/jsonp", "application/json-seq", "text/json", "application/json;;"} {
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:7421/v1/spend", strings.NewReader(body))
		req.RemoteAddr = local
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusUnsupportedMediaType {
			t.Errorf("Content-Type %q: %d, want 415", ct, w.Code)
		}
	}
	if e.Spool.Len() != 0 {
		t.Fatalf("%d spooled from refused requests", e.Spool.Len())
	}
	req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:7421/v1/spend", strings.NewReader(body))
	req.RemoteAddr = local
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusAccepted {
		t.Errorf("application/json; charset=utf-8: %d %s", w.Code, w.Body)
	}
}

// TestEndpointPricesLikeTheControlPlane: a model the sidecar's table
// prices is taken without a cost (and spooled without one: the control
// plane prices it); with a table of its own, the sidecar follows it.
func TestEndpointPricesLikeTheControlPlane(t *testing.T) {
	e, h := newEndpoint(t)
	for _, body := range []string{
		`{"agent":"planner-01","model":"claude-sonnet-4-20250514","tier":"frontier","input_tokens":10}`,
		`{"agent":"planner-01","model":"whatever-local","tier":"local","input_tokens":10}`,
		`{"agent":"planner-01","model":"my-finetune","tier":"mid","cost_micros":7}`,
	} {
		if r := post(t, h, local, body); r.code != http.StatusAccepted {
			t.Errorf("%s: %d %v", body, r.code, r.body)
		} else if ev := spooledEvents(t, e.Spool)[r.body["id"].(string)]; strings.Contains(body, "input_tokens") && ev.CostMicros != nil {
			t.Errorf("%s: spooled with a cost of %d; the control plane prices it", body, *ev.CostMicros)
		}
	}
	r := post(t, h, local, `{"agent":"planner-01","model":"my-finetune","tier":"mid","input_tokens":10}`)
	if msg, _ := r.body["error"].(string); r.code != http.StatusBadRequest || !strings.Contains(msg, "my-finetune") || !strings.Contains(msg, "cost_micros") {
		t.Errorf("unpriced: %d %v, want 400 saying how to send it", r.code, r.body)
	}
	prices, err := budget.ParsePrices([]byte("models:\n  my-finetune: {input: 1, output: 2}\n"))
	if err != nil {
		t.Fatal(err)
	}
	e.Prices = prices
	if r := post(t, e.Handler(), local, `{"agent":"planner-01","model":"my-finetune","tier":"mid","input_tokens":10}`); r.code != http.StatusAccepted {
		t.Errorf("priced by the sidecar's own table: %d %v", r.code, r.body)
	}
}

// TestEndpointSecret: with a secret set, a report without it (or with a
// wrong one) is 401 and nothing is spooled; either header carries it.
func TestEndpointSecret(t *testing.T) {
	e, _ := newEndpoint(t)
	e.Secret = "s3cret-for-edge-1"
	h := e.Handler()
	body := `{"agent":"planner-01","model":"gpt-4o-mini","tier":"mid","input_tokens":10}`
	send := func(header, value string) int {
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:7421/v1/spend", strings.NewReader(body))
		req.RemoteAddr = local
		req.Header.Set("Content-Type", "application/json")
		if header != "" {
			req.Header.Set(header, value)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	for _, bad := range [][2]string{{"", ""}, {"Authorization", "Bearer wrong"}, {"Authorization", "Basic s3cret-for-edge-1"},
		{SecretHeader, "s3cret-for-edge-"}, {SecretHeader, "s3cret-for-edge-1x"}} {
		if code := send(bad[0], bad[1]); code != http.StatusUnauthorized {
			t.Errorf("%s: %q: %d, want 401", bad[0], bad[1], code)
		}
	}
	if e.Spool.Len() != 0 {
		t.Fatalf("%d spooled without the secret", e.Spool.Len())
	}
	if code := send("Authorization", "Bearer s3cret-for-edge-1"); code != http.StatusAccepted {
		t.Errorf("bearer: %d", code)
	}
	if code := send(SecretHeader, "s3cret-for-edge-1"); code != http.StatusAccepted {
		t.Errorf("%s: %d", SecretHeader, code)
	}
}
