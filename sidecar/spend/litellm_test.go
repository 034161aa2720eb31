package spend

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/sidecar/spool"
)

// testdata/litellm-spend-logs.json is a copy of
// ../shared/fixtures/services/litellm-spend-logs.json (its README
// documents the API and its traps).
func loadFixture(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile("testdata/litellm-spend-logs.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

type fixtureResponse struct {
	Response struct {
		Status int             `json:"status"`
		Body   json.RawMessage `json:"body"`
	} `json:"response"`
}

func fixtureEntry(t *testing.T, m map[string]json.RawMessage, key string) fixtureResponse {
	t.Helper()
	var r fixtureResponse
	if err := json.Unmarshal(m[key], &r); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return r
}

// fakeLiteLLM serves /spend/logs/v2 over a set of rows the way the proxy
// does: the key checked, both dates required, rows filtered on startTime
// (inclusive, whole seconds, UTC), sorted ascending, paged, and page_size
// over 1000 refused with the fixture's 422.
type fakeLiteLLM struct {
	t        *testing.T
	mu       sync.Mutex
	rows     []map[string]any
	override *fixtureResponse
	queries  []map[string]string
	fixture  map[string]json.RawMessage
}

const masterKey = "sk-fixture-master-0000000000000000"

func newFakeLiteLLM(t *testing.T) (*fakeLiteLLM, *httptest.Server) {
	f := &fakeLiteLLM{t: t, fixture: loadFixture(t)}
	var page struct {
		Response struct {
			Body struct {
				Data []map[string]any `json:"data"`
			} `json:"body"`
		} `json:"response"`
	}
	if err := json.Unmarshal(f.fixture["GET /spend/logs/v2"], &page); err != nil {
		t.Fatal(err)
	}
	f.rows = page.Response.Body.Data
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeLiteLLM) add(row map[string]any) {
	f.mu.Lock()
	f.rows = append(f.rows, row)
	f.mu.Unlock()
}

func (f *fakeLiteLLM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := map[string]string{}
	for k, v := range r.URL.Query() {
		q[k] = v[0]
	}
	f.queries = append(f.queries, q)
	reply := func(e fixtureResponse) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(e.Response.Status)
		_, _ = w.Write(e.Response.Body)
	}
	if f.override != nil {
		reply(*f.override)
		return
	}
	if r.URL.Path != "/spend/logs/v2" || r.Header.Get("Authorization") != "Bearer "+masterKey {
		http.Error(w, `{"error":"unauthorized or unknown path"}`, http.StatusUnauthorized)
		return
	}
	if q["start_date"] == "" || q["end_date"] == "" {
		reply(fixtureEntry(f.t, f.fixture, "GET /spend/logs/v2 (dates missing)"))
		return
	}
	size, _ := strconv.Atoi(q["page_size"])
	if size > 1000 {
		reply(fixtureEntry(f.t, f.fixture, "GET /spend/logs/v2 (page_size over the cap)"))
		return
	}
	if q["sort_by"] != "startTime" || q["sort_order"] != "asc" {
		f.t.Errorf("query %v: want sort_by=startTime&sort_order=asc", q)
	}
	from, err1 := time.Parse(liteTime, q["start_date"])
	to, err2 := time.Parse(liteTime, q["end_date"])
	if err1 != nil || err2 != nil {
		http.Error(w, "bad dates", http.StatusBadRequest)
		return
	}
	var match []map[string]any
	for _, row := range f.rows {
		st, _ := time.Parse(time.RFC3339Nano, row["startTime"].(string))
		if !st.Before(from) && !st.After(to) {
			match = append(match, row)
		}
	}
	sort.SliceStable(match, func(i, j int) bool { return match[i]["startTime"].(string) < match[j]["startTime"].(string) })
	page, _ := strconv.Atoi(q["page"])
	lo := min((page-1)*size, len(match))
	hi := min(lo+size, len(match))
	data := match[lo:hi]
	if data == nil {
		data = []map[string]any{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"data": data, "total": len(match), "page": page, "page_size": size,
		"total_pages": (len(match) + size - 1) / size, "total_is_capped": false})
}

type fixedClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fixedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fixedClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openSpool(t *testing.T, path string) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

func newPoller(t *testing.T, url, dir string, sp *spool.Spool, clock Clock, pageSize int) *LiteLLM {
	t.Helper()
	p, err := NewLiteLLM(LiteLLMConfig{URL: url, Key: masterKey, Spool: sp, CursorPath: filepath.Join(dir, "litellm-cursor.json"),
		Host: "edge-1", Clock: clock, Logger: quiet(), PageSize: pageSize, Overlap: 5 * time.Minute, SettleLag: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func spooledEvents(t *testing.T, sp *spool.Spool) map[string]*Event {
	t.Helper()
	m := map[string]*Event{}
	for _, s := range sp.Pending() {
		e, err := fromSpool(s)
		if err != nil {
			t.Fatal(err)
		}
		m[e.ID] = e
	}
	return m
}

// TestLiteLLMPollMapsTheFixtureRows: the fixture's three rows become three
// spend events with the agent from the request's tags (not `user`, the
// fleet's shared service account), the tier from its tags, the spend in
// exact micro-dollars and ids derived from request_id.
func TestLiteLLMPollMapsTheFixtureRows(t *testing.T) {
	_, srv := newFakeLiteLLM(t)
	dir := t.TempDir()
	sp := openSpool(t, filepath.Join(dir, "spend.jsonl"))
	clock := &fixedClock{now: time.Date(2026, 11, 26, 14, 10, 0, 0, time.UTC)}
	p := newPoller(t, srv.URL, dir, sp, clock, 1000)
	n, err := p.Poll(context.Background())
	if err != nil || n != 3 {
		t.Fatalf("Poll = %d, %v; want 3 rows", n, err)
	}
	got := spooledEvents(t, sp)
	cases := []struct {
		id, agent, tier, model, provider, task string
		cost, in, out                          int64
	}{
		{"litellm:chatcmpl-3f1c9a2e-7b4d-4e0a-9c61-2d8e5b7a9f14", "planner-01", "frontier", "claude-sonnet-4-5-20250929", "anthropic", "T-20481", 35303, 18650, 1204},
		{"litellm:chatcmpl-CXq3m8Lr2VnT0aJcY5hKp1sWd9eFz", "reviewer-02", "mid", "gpt-4o-mini", "openai", "T-20477", 715, 3120, 412},
		{"litellm:chatcmpl-Jq8nV2xR5tL0wY7mB3cZ6hK9pD4sF1gA", "coder-03", "local", "qwen2.5-coder-32b-instruct", "openai", "T-20483", 0, 9410, 688},
	}
	for _, c := range cases {
		e := got[c.id]
		if e == nil {
			t.Errorf("no event %s; spooled %v", c.id, got)
			continue
		}
		if e.Agent != c.agent || e.Tier != c.tier || e.Model != c.model || e.Provider != c.provider || e.TaskID != c.task ||
			e.CostMicros == nil || *e.CostMicros != c.cost || e.InputTokens != c.in || e.OutputTokens != c.out || e.Host != "edge-1" {
			t.Errorf("%s: got %+v (cost %v)", c.id, e, *e.CostMicros)
		}
	}
	if want := time.Date(2026, 11, 26, 14, 4, 5, 3_000_000, time.UTC); !p.Cursor().Equal(want) {
		t.Errorf("cursor %v, want the largest startTime %v", p.Cursor(), want)
	}
}

// TestLiteLLMPollDedupsAndSurvivesRestart: polling again, and polling from
// a restarted poller that loads the saved cursor, spools nothing twice;
// rows written late (behind the cursor, within the overlap) and new rows
// are picked up, and the window starts at the cursor less the overlap.
func TestLiteLLMPollDedupsAndSurvivesRestart(t *testing.T) {
	f, srv := newFakeLiteLLM(t)
	dir := t.TempDir()
	sp := openSpool(t, filepath.Join(dir, "spend.jsonl"))
	clock := &fixedClock{now: time.Date(2026, 11, 26, 14, 10, 0, 0, time.UTC)}
	p := newPoller(t, srv.URL, dir, sp, clock, 2) // two rows a page: paging is exercised
	ctx := context.Background()
	if n, err := p.Poll(ctx); err != nil || n != 3 {
		t.Fatalf("first poll = %d, %v", n, err)
	}
	if n, err := p.Poll(ctx); err != nil || n != 0 {
		t.Fatalf("second poll = %d, %v; want 0 (deduplicated)", n, err)
	}
	// The relay delivered them: the spool is empty, so only the poller's
	// memory stands between a restart and a re-read.
	var ids []string
	for _, e := range sp.Pending() {
		ids = append(ids, e.ID)
	}
	if err := sp.Ack(ids); err != nil {
		t.Fatal(err)
	}
	// A row that started before the cursor lands late, and a new one.
	late := cloneRow(f.rows[0], "chatcmpl-late-1", "2026-11-26T14:03:59.000000Z", "planner-01")
	fresh := cloneRow(f.rows[0], "chatcmpl-new-1", "2026-11-26T14:11:30.250000Z", "planner-01")
	f.add(late)
	f.add(fresh)
	clock.set(time.Date(2026, 11, 26, 14, 12, 0, 0, time.UTC))

	p2 := newPoller(t, srv.URL, dir, sp, clock, 2)
	if !p2.Cursor().Equal(p.Cursor()) {
		t.Fatalf("restarted cursor %v, want the saved %v", p2.Cursor(), p.Cursor())
	}
	n, err := p2.Poll(ctx)
	if err != nil || n != 2 {
		t.Fatalf("poll after restart = %d, %v; want the late row and the new one", n, err)
	}
	got := spooledEvents(t, sp)
	if got["litellm:chatcmpl-late-1"] == nil || got["litellm:chatcmpl-new-1"] == nil || len(got) != 2 {
		t.Errorf("spooled %v", got)
	}
	last := f.queries[len(f.queries)-1]
	if last["start_date"] != "2026-11-26 13:59:05" || last["end_date"] != "2026-11-26 14:11:50" {
		t.Errorf("window %s .. %s: want the cursor less the 5m overlap .. now less the 10s settle lag", last["start_date"], last["end_date"])
	}
	if !p2.Cursor().Equal(time.Date(2026, 11, 26, 14, 11, 30, 250_000_000, time.UTC)) {
		t.Errorf("cursor %v", p2.Cursor())
	}
}

func cloneRow(row map[string]any, id, start, agent string) map[string]any {
	b, _ := json.Marshal(row)
	var c map[string]any
	_ = json.Unmarshal(b, &c)
	c["request_id"] = id
	c["startTime"] = start
	c["request_tags"] = []string{"agent:" + agent, "tier:frontier"}
	return c
}

// TestLiteLLMRefusesTheLegacyShape: the legacy /spend/logs's daily totals
// (an array) are an error, not rows, and the cursor does not move; so are
// the API's 400 and 422 answers.
func TestLiteLLMRefusesTheLegacyShape(t *testing.T) {
	f, srv := newFakeLiteLLM(t)
	dir := t.TempDir()
	sp := openSpool(t, filepath.Join(dir, "spend.jsonl"))
	clock := &fixedClock{now: time.Date(2026, 11, 26, 14, 10, 0, 0, time.UTC)}
	p := newPoller(t, srv.URL, dir, sp, clock, 1000)
	for _, key := range []string{"GET /spend/logs (legacy, summarize defaults to true)", "GET /spend/logs (legacy, summarize=false)",
		"GET /spend/logs/v2 (page_size over the cap)", "GET /spend/logs/v2 (dates missing)"} {
		e := fixtureEntry(t, f.fixture, key)
		f.override = &e
		n, err := p.Poll(context.Background())
		if err == nil || n != 0 {
			t.Errorf("%s: Poll = %d, %v; want an error", key, n, err)
		}
		if !p.Cursor().IsZero() || sp.Len() != 0 {
			t.Errorf("%s: cursor %v, %d spooled: want nothing moved", key, p.Cursor(), sp.Len())
		}
		if _, err := os.Stat(filepath.Join(dir, "litellm-cursor.json")); err == nil {
			t.Errorf("%s: a cursor was saved", key)
		}
	}
	if err := func() error {
		e := fixtureEntry(t, f.fixture, "GET /spend/logs (legacy, summarize defaults to true)")
		f.override = &e
		_, err := p.Poll(context.Background())
		return err
	}(); err == nil || !strings.Contains(err.Error(), "legacy") {
		t.Errorf("legacy shape error %v: want it named", err)
	}
}

// TestLiteLLMSkipsAgentsOfOtherHosts: with the host's agents declared,
// rows of other agents are not spooled (the control plane would refuse
// them for ever) but still move the cursor.
func TestLiteLLMSkipsAgentsOfOtherHosts(t *testing.T) {
	_, srv := newFakeLiteLLM(t)
	dir := t.TempDir()
	sp := openSpool(t, filepath.Join(dir, "spend.jsonl"))
	clock := &fixedClock{now: time.Date(2026, 11, 26, 14, 10, 0, 0, time.UTC)}
	p, err := NewLiteLLM(LiteLLMConfig{URL: srv.URL, Key: masterKey, Spool: sp, CursorPath: filepath.Join(dir, "c.json"),
		Agents: []string{"planner-01"}, Clock: clock, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.Poll(context.Background()); err != nil || n != 1 {
		t.Fatalf("Poll = %d, %v; want planner-01's row only", n, err)
	}
}

func TestDollarsToMicros(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "12.50": 12_500_000, "$30": 30_000_000, "0.0353028": 35303, "0.0007152": 715, "1.2e-05": 12,
		"0.0000005": 1, "0.0000004": 0, "1000000": 1_000_000_000_000,
	} {
		got, err := DollarsToMicros(in)
		if err != nil || got != want {
			t.Errorf("DollarsToMicros(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "1,5", "1e400"} {
		if _, err := DollarsToMicros(in); err == nil {
			t.Errorf("DollarsToMicros(%q): no error", in)
		}
	}
}
