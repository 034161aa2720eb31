package spend

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/factory/factory/sidecar/spool"
)

// LiteLLMConfig configures the LiteLLM poller.
type LiteLLMConfig struct {
	// URL is the proxy's base URL ("http://127.0.0.1:4000"). Required.
	URL string
	// Key is a master or admin key: a key with the internal_user role sees
	// only its own rows.
	Key string
	// Spool receives the events. Required.
	Spool *spool.Spool
	// CursorPath keeps the cursor and the recently seen request ids across
	// restarts. Required.
	CursorPath string
	// Host is this sidecar's host, set on every event.
	Host string
	// Agents, when not empty, are the agents this host runs: rows for
	// other agents are skipped (and logged), since the control plane
	// refuses a sidecar's report for an agent it does not run.
	Agents []string
	// DefaultAgent names the agent of a row that names none (default
	// "litellm").
	DefaultAgent string
	// DefaultTier is the tier of a row whose tags, metadata and model
	// group name none (default "frontier": counting an unknown model
	// against the dearest tier's budget errs on the safe side).
	DefaultTier string
	// Interval is the time between polls (default 30s).
	Interval time.Duration
	// Overlap is how far before the cursor each poll starts again
	// (default 10m): LiteLLM writes a row after the call ends, in batches,
	// stamped with the call's start, so rows land behind the cursor. It
	// must exceed the proxy's spend-write interval plus the longest call.
	Overlap time.Duration
	// SettleLag keeps the window's end this far behind now (default 30s).
	SettleLag time.Duration
	// Backfill is how far back the first poll reaches when there is no
	// cursor yet (default 24h).
	Backfill time.Duration
	// PageSize is the rows per page (default 1000, the API's cap).
	PageSize   int
	HTTPClient *http.Client
	Logger     *slog.Logger
	Clock      Clock
}

func (c LiteLLMConfig) withDefaults() LiteLLMConfig {
	if c.DefaultAgent == "" {
		c.DefaultAgent = "litellm"
	}
	if c.DefaultTier == "" {
		c.DefaultTier = "frontier"
	}
	if c.Interval <= 0 {
		c.Interval = 30 * time.Second
	}
	if c.Overlap <= 0 {
		c.Overlap = 10 * time.Minute
	}
	if c.SettleLag < 0 {
		c.SettleLag = 0
	} else if c.SettleLag == 0 {
		c.SettleLag = 30 * time.Second
	}
	if c.Backfill <= 0 {
		c.Backfill = 24 * time.Hour
	}
	if c.PageSize <= 0 || c.PageSize > 1000 {
		c.PageSize = 1000
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	return c
}

// LiteLLM polls a LiteLLM proxy's spend logs into the spool.
type LiteLLM struct {
	cfg     LiteLLMConfig
	state   cursorState
	skipped map[string]bool // agents already warned about
}

// cursorState is the persisted cursor: the largest startTime seen and
// the request ids seen since Cursor − Overlap, which the next window
// overlaps.
type cursorState struct {
	Cursor time.Time            `json:"cursor"`
	Seen   map[string]time.Time `json:"seen"`
}

// NewLiteLLM checks cfg and loads the cursor.
func NewLiteLLM(cfg LiteLLMConfig) (*LiteLLM, error) {
	cfg = cfg.withDefaults()
	switch {
	case cfg.URL == "":
		return nil, errors.New("litellm: URL is required")
	case cfg.Spool == nil:
		return nil, errors.New("litellm: Spool is required")
	case cfg.CursorPath == "":
		return nil, errors.New("litellm: CursorPath is required")
	case Tiers[cfg.DefaultTier] == 0:
		return nil, fmt.Errorf("litellm: default tier %q: want frontier, mid, local or infra", cfg.DefaultTier)
	}
	if _, err := url.Parse(cfg.URL); err != nil {
		return nil, fmt.Errorf("litellm: url: %w", err)
	}
	p := &LiteLLM{cfg: cfg, state: cursorState{Seen: map[string]time.Time{}}, skipped: map[string]bool{}}
	raw, err := os.ReadFile(cfg.CursorPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("litellm: cursor: %w", err)
	default:
		if err := json.Unmarshal(raw, &p.state); err != nil {
			// A damaged cursor costs a re-read of the backfill, which the
			// ids make harmless; refusing to start would lose spend.
			cfg.Logger.Warn("litellm cursor unreadable; starting from the backfill window", "path", cfg.CursorPath, "err", err)
			p.state = cursorState{}
		}
		if p.state.Seen == nil {
			p.state.Seen = map[string]time.Time{}
		}
	}
	return p, nil
}

// Cursor is the largest startTime spooled so far.
func (p *LiteLLM) Cursor() time.Time { return p.state.Cursor }

// Run polls every Interval until ctx ends; failures are logged and the
// next poll tries again from the same cursor.
func (p *LiteLLM) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	failing := false
	for {
		n, err := p.Poll(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				p.cfg.Logger.Warn("litellm spend poll failed; retrying", "url", p.cfg.URL, "err", err)
			}
			failing = true
		case err == nil:
			if failing {
				p.cfg.Logger.Info("litellm spend poll works again", "url", p.cfg.URL)
			}
			failing = false
			if n > 0 {
				p.cfg.Logger.Debug("litellm spend rows spooled", "rows", n, "cursor", p.state.Cursor)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// liteTime is LiteLLM's timestamp format for start_date/end_date (UTC).
const liteTime = "2006-01-02 15:04:05"

// Poll reads one window, [cursor − Overlap, now − SettleLag], page by page
// in ascending startTime, spools the rows it has not seen, then saves the
// cursor. It returns how many rows it spooled. On an error the cursor is
// not moved, so the next poll reads the window again.
func (p *LiteLLM) Poll(ctx context.Context) (int, error) {
	now := p.cfg.Clock.Now().UTC()
	end := now.Add(-p.cfg.SettleLag)
	from := p.state.Cursor.Add(-p.cfg.Overlap)
	if p.state.Cursor.IsZero() {
		from = now.Add(-p.cfg.Backfill)
	}
	if !end.After(from) {
		return 0, nil
	}
	maxSeen := p.state.Cursor
	spooled := 0
	for page := 1; ; page++ {
		rows, err := p.fetch(ctx, from, end, page)
		if err != nil {
			return spooled, err
		}
		if len(rows) == 0 {
			break
		}
		for _, row := range rows {
			if start, seen := p.state.Seen[row.RequestID]; seen {
				if start.After(maxSeen) {
					maxSeen = start
				}
				continue
			}
			ev, start, ok := p.toEvent(row)
			if !ok {
				continue
			}
			if start.After(maxSeen) {
				maxSeen = start
			}
			if ev != nil {
				if _, err := p.cfg.Spool.Append(ev.toSpool()); err != nil {
					return spooled, fmt.Errorf("litellm: spool: %w", err)
				}
				spooled++
			}
			p.state.Seen[row.RequestID] = start
		}
		if len(rows) < p.cfg.PageSize {
			break
		}
	}
	// An idle proxy's window would grow for ever: it spans at most the
	// backfill.
	if floor := end.Add(-p.cfg.Backfill); maxSeen.Before(floor) {
		maxSeen = floor
	}
	p.state.Cursor = maxSeen
	horizon := maxSeen.Add(-p.cfg.Overlap)
	for id, t := range p.state.Seen {
		if t.Before(horizon) {
			delete(p.state.Seen, id)
		}
	}
	return spooled, p.save()
}

// save writes the cursor atomically (temporary file, fsync, rename): a
// crash leaves the old cursor or the new, and an old one only re-reads
// rows whose ids the control plane already holds.
func (p *LiteLLM) save() error {
	b, err := json.Marshal(p.state)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p.cfg.CursorPath), 0o700); err != nil {
		return fmt.Errorf("litellm: cursor: %w", err)
	}
	tmp := p.cfg.CursorPath + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("litellm: cursor: %w", err)
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("litellm: cursor: %w", werr)
	}
	if err := os.Rename(tmp, p.cfg.CursorPath); err != nil {
		return fmt.Errorf("litellm: cursor: %w", err)
	}
	return nil
}

// liteRow is the part of a LiteLLM_SpendLogs row the poller reads.
type liteRow struct {
	RequestID        string          `json:"request_id"`
	Spend            json.Number     `json:"spend"`
	PromptTokens     int64           `json:"prompt_tokens"`
	CompletionTokens int64           `json:"completion_tokens"`
	StartTime        string          `json:"startTime"`
	Model            string          `json:"model"`
	ModelGroup       string          `json:"model_group"`
	Provider         string          `json:"custom_llm_provider"`
	User             string          `json:"user"`
	EndUser          string          `json:"end_user"`
	RequestTags      json.RawMessage `json:"request_tags"`
	// Status is "success" or "failure"; rows of older proxies carry it
	// only in metadata.status.
	Status   string `json:"status"`
	Metadata struct {
		KeyAlias          string         `json:"user_api_key_alias"`
		SpendLogsMetadata map[string]any `json:"spend_logs_metadata"`
		Status            string         `json:"status"`
		// AdditionalUsage holds the prompt-cache counts LiteLLM keeps
		// beside the usage: cache_read_input_tokens and
		// cache_creation_input_tokens (Anthropic's names, which LiteLLM
		// uses for every provider). The row's top-level cache_hit is
		// LiteLLM's own response cache, not the provider's prompt cache.
		AdditionalUsage map[string]json.RawMessage `json:"additional_usage_values"`
		// UsageObject is the provider's usage as LiteLLM normalised it:
		// OpenAI-style rows carry cached input tokens in
		// prompt_tokens_details.cached_tokens.
		UsageObject struct {
			CacheRead           json.RawMessage `json:"cache_read_input_tokens"`
			CacheCreation       json.RawMessage `json:"cache_creation_input_tokens"`
			PromptTokensDetails struct {
				CachedTokens json.RawMessage `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage_object"`
	} `json:"metadata"`
}

// failed reports whether the row is a failed call: status "failure" at
// the top level or, on older proxies, in the metadata. Any other value
// (or none) is a success, as every row was before LiteLLM logged
// failures.
func (r *liteRow) failed() bool {
	return strings.EqualFold(strings.TrimSpace(cmp.Or(r.Status, r.Metadata.Status)), "failure")
}

// cacheTokens reads the prompt-cache tokens: read from the cache, and
// written to it. Each is the first of its sources that holds a count.
func (r *liteRow) cacheTokens() (read, write int64) {
	m, u := r.Metadata.AdditionalUsage, r.Metadata.UsageObject
	read = firstCount(m["cache_read_input_tokens"], u.CacheRead, u.PromptTokensDetails.CachedTokens)
	write = firstCount(m["cache_creation_input_tokens"], u.CacheCreation)
	return read, write
}

// firstCount is the first of raw that is a token count (a JSON number or
// a numeric string; null and absent are skipped), held to 0 through
// maxCacheTokens; 0 when none is.
func firstCount(raw ...json.RawMessage) int64 {
	for _, b := range raw {
		s := strings.Trim(strings.TrimSpace(string(b)), `"`)
		if s == "" || s == "null" {
			continue
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f != f {
			continue
		}
		return int64(min(max(f, 0), float64(maxCacheTokens)))
	}
	return 0
}

// fetch reads one page.
func (p *LiteLLM) fetch(ctx context.Context, from, to time.Time, page int) ([]liteRow, error) {
	q := url.Values{}
	q.Set("start_date", from.UTC().Format(liteTime))
	q.Set("end_date", to.UTC().Format(liteTime))
	q.Set("sort_by", "startTime")
	q.Set("sort_order", "asc")
	q.Set("page", strconv.Itoa(page))
	q.Set("page_size", strconv.Itoa(p.cfg.PageSize))
	u := strings.TrimRight(p.cfg.URL, "/") + "/spend/logs/v2?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if p.cfg.Key != "" {
		req.Header.Set("Authorization", "Bearer "+p.cfg.Key)
	}
	resp, err := p.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("litellm: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("litellm: read: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, errors.New("litellm: /spend/logs/v2 not found: the proxy predates it (LiteLLM 1.80 or later is needed)")
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("litellm: %s: the key must be the master key or an admin key: %s", resp.Status, snippet(body))
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("litellm: %s: %s", resp.Status, snippet(body))
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		// Legacy /spend/logs answers an array: daily totals (the default
		// summarize=true with dates) or rows newest first. Neither can be
		// paged from a cursor.
		return nil, errors.New("litellm: got an array, the legacy /spend/logs shape (daily totals or unpaged rows), not /spend/logs/v2's {data: [...]}")
	}
	var pageBody struct {
		Data *[]liteRow `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	if err := dec.Decode(&pageBody); err != nil {
		return nil, fmt.Errorf("litellm: decode page %d: %w", page, err)
	}
	if pageBody.Data == nil {
		return nil, fmt.Errorf("litellm: page %d has no data array: %s", page, snippet(body))
	}
	return *pageBody.Data, nil
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// tags reads request_tags ("agent:planner-01", "tier:frontier",
// "task:T-1") into a map.
func (r *liteRow) tags() map[string]string {
	var list []string
	_ = json.Unmarshal(r.RequestTags, &list)
	m := map[string]string{}
	for _, t := range list {
		if k, v, ok := strings.Cut(t, ":"); ok && m[k] == "" {
			m[k] = v
		}
	}
	return m
}

func (r *liteRow) meta(key string) string {
	if s, ok := r.Metadata.SpendLogsMetadata[key].(string); ok {
		return s
	}
	return ""
}

// toEvent maps a row. The agent comes from the request's tags
// ("agent:X"), else metadata.spend_logs_metadata.agent, else end_user,
// else the key's alias: never from `user`, which is the key's owner (one
// service account for the whole fleet). The tier likewise from a
// "tier:X" tag, the metadata, the model group's first word
// ("frontier-sonnet") or DefaultTier. ok is false for a row to skip
// entirely (no id, no time); ev is nil for a row seen but not reported
// (an agent of another host).
func (p *LiteLLM) toEvent(r liteRow) (ev *Event, start time.Time, ok bool) {
	if r.RequestID == "" {
		return nil, time.Time{}, false
	}
	start, err := time.Parse(time.RFC3339Nano, r.StartTime)
	if err != nil {
		// LiteLLM has written naive UTC times too.
		if start, err = time.Parse("2006-01-02T15:04:05.999999", r.StartTime); err != nil {
			p.cfg.Logger.Warn("litellm row skipped: unreadable startTime", "request_id", r.RequestID, "start_time", r.StartTime)
			return nil, time.Time{}, false
		}
	}
	tags := r.tags()
	agent := cmp.Or(tags["agent"], r.meta("agent"), r.EndUser, r.Metadata.KeyAlias, p.cfg.DefaultAgent)
	tier := strings.ToLower(cmp.Or(tags["tier"], r.meta("tier")))
	if Tiers[tier] == 0 {
		group, _, _ := strings.Cut(strings.ToLower(r.ModelGroup), "-")
		tier = group
	}
	if Tiers[tier] == 0 {
		tier = p.cfg.DefaultTier
	}
	cost, err := DollarsToMicros(string(r.Spend))
	if err != nil || cost < 0 {
		cost = 0
		p.cfg.Logger.Warn("litellm row has no readable spend; recorded at $0", "request_id", r.RequestID, "spend", string(r.Spend))
	}
	ev = &Event{
		ID: liteID(r.RequestID), Agent: sanitize(agent, 128), Host: p.cfg.Host,
		Model: cmp.Or(r.Model, r.ModelGroup, "unknown"), Provider: r.Provider, Tier: tier,
		InputTokens: r.PromptTokens, OutputTokens: r.CompletionTokens, CostMicros: &cost,
		TaskID: sanitize(cmp.Or(tags["task"], r.meta("task_id")), 128), OccurredAt: start.UTC(),
		Failed: r.failed(),
	}
	ev.CacheReadTokens, ev.CacheWriteTokens = r.cacheTokens()
	if len(ev.Model) > 200 {
		ev.Model = ev.Model[:200]
	}
	if len(ev.Provider) > 100 {
		ev.Provider = ev.Provider[:100]
	}
	if len(p.cfg.Agents) > 0 && !slices.Contains(p.cfg.Agents, ev.Agent) {
		if !p.skipped[ev.Agent] {
			p.skipped[ev.Agent] = true
			p.cfg.Logger.Warn("litellm rows of an agent this host does not run are not reported (declare it under agents: to report them)", "agent", ev.Agent)
		}
		return nil, start, true
	}
	if err := ev.Validate(); err != nil {
		p.cfg.Logger.Warn("litellm row skipped", "request_id", r.RequestID, "err", err)
		return nil, start, true
	}
	return ev, start, true
}

// liteID is the event id of a LiteLLM request: stable across polls and
// restarts, so a re-read row counts once.
func liteID(requestID string) string {
	id := "litellm:" + requestID
	if len(id) <= 128 && idPattern.MatchString(id) {
		return id
	}
	h := sha256.Sum256([]byte(requestID))
	return "litellm:sha256:" + hex.EncodeToString(h[:])
}

// sanitize maps characters the API refuses in names to '-'.
func sanitize(s string, n int) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:/-", c) >= 0) {
			b[i] = '-'
		}
	}
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}
