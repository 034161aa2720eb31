package spend

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/factory/factory/controlplane/budget"
	"github.com/factory/factory/sidecar/spool"
)

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// StopState is the emergency stop as the control plane last told this
// sidecar.
type StopState struct {
	// Known is false until the control plane has said anything this run.
	Known   bool      `json:"known"`
	Stopped bool      `json:"stopped"`
	Reason  string    `json:"reason,omitempty"`
	Updated time.Time `json:"updated_at,omitzero"`
}

// Endpoint is the loopback HTTP endpoint agents report spend to.
//
//	POST /v1/spend            one event (a JSON object) or several (an array)
//	GET  /v1/emergency-stop   the stop state the control plane last sent
//
// A report is answered 202 once it is in the spool (so it survives a
// crash), with the event ids; a bad one 400 naming the field, and nothing
// of that request is spooled. A report is checked here as fully as the
// control plane will check it, pricing included, so an event answered 202
// is one the relay delivers, not one dropped later. Only loopback peers
// are served, only with Content-Type: application/json (a web page's
// "simple" cross-origin POST cannot set it), and with Secret set only
// callers that present it.
type Endpoint struct {
	// Spool is where accepted events wait for the relay. Required.
	Spool *spool.Spool
	// Host is this sidecar's host, set on every event.
	Host string
	// Agents, when not empty, are the only agents accepted: the control
	// plane refuses a sidecar's report for an agent its host does not run,
	// and the client should hear that now, not never.
	Agents []string
	// Prices prices a call reported without a cost, as the control plane
	// does: a model it cannot price is refused here, with the reason,
	// instead of being dropped by the relay. nil: the built-in table
	// (deploy/prices.yaml); give the sidecar the control plane's --prices.
	Prices *budget.Prices
	// Secret, when set, must come with every request, as
	// "Authorization: Bearer SECRET" or "X-Factory-Spend-Secret: SECRET":
	// then only processes that were given it (the agents) can report,
	// not any program that can reach the loopback port.
	Secret string
	Logger *slog.Logger
	Clock  Clock

	mu   sync.Mutex
	stop StopState
}

// maxBody bounds one request: a batch of a few hundred events.
const maxBody = 1 << 20

// SetEmergencyStop records what the control plane said of the stop.
func (e *Endpoint) SetEmergencyStop(stopped bool, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stop = StopState{Known: true, Stopped: stopped, Reason: reason, Updated: e.clock().Now().UTC()}
}

// EmergencyStop returns the last stop state.
func (e *Endpoint) EmergencyStop() StopState {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stop
}

func (e *Endpoint) clock() Clock {
	if e.Clock == nil {
		return wallClock{}
	}
	return e.Clock
}

func (e *Endpoint) logger() *slog.Logger {
	if e.Logger == nil {
		return slog.Default()
	}
	return e.Logger
}

// Handler serves the endpoint's routes.
func (e *Endpoint) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/spend", e.report)
	mux.HandleFunc("GET /v1/emergency-stop", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.EmergencyStop())
	})
	return loopbackOnly(e.withSecret(mux))
}

// SecretHeader is the header that may carry the endpoint's secret
// (Authorization: Bearer works too).
const SecretHeader = "X-Factory-Spend-Secret"

// withSecret refuses a request without the endpoint's secret, when one is
// set.
func (e *Endpoint) withSecret(next http.Handler) http.Handler {
	if e.Secret == "" {
		return next
	}
	want := []byte(e.Secret)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get(SecretHeader)
		if got == "" {
			if scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
				got = strings.TrimSpace(token)
			}
		}
		if got == "" || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="factory-sidecar spend"`)
			writeError(w, http.StatusUnauthorized, "", "this sidecar requires its spend secret: send Authorization: Bearer SECRET or "+SecretHeader+": SECRET")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackOnly refuses a peer that is not on this host, and a Host header
// that does not name a loopback address: a web page the operator opens
// must not reach the endpoint through DNS rebinding.
func loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isLoopback(r.RemoteAddr) {
			writeError(w, http.StatusForbidden, "", "only agents on this host may report: the endpoint serves loopback peers only")
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host != "localhost" && !isLoopback(host) {
			writeError(w, http.StatusForbidden, "", "Host header must name a loopback address")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func isLoopback(addr string) bool {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		addr = h
	}
	ip, err := netip.ParseAddr(strings.Trim(addr, "[]"))
	return err == nil && ip.Unmap().IsLoopback()
}

// report is the JSON an agent posts, mirroring SpendEvent. Money is either
// cost_micros (an integer) or cost_usd (a decimal, as a string or a
// number: "0.0353"); neither lets the control plane price the tokens.
type report struct {
	ID           string          `json:"id"`
	Agent        string          `json:"agent"`
	Model        string          `json:"model"`
	Provider     string          `json:"provider"`
	Tier         string          `json:"tier"`
	InputTokens  *json.Number    `json:"input_tokens"`
	OutputTokens *json.Number    `json:"output_tokens"`
	CostMicros   *json.Number    `json:"cost_micros"`
	CostUSD      json.RawMessage `json:"cost_usd"`
	TaskID       string          `json:"task_id"`
	OccurredAt   string          `json:"occurred_at"`
	// Prompt-cache tokens and a failed call, as in SpendEvent.
	CacheReadTokens  *json.Number `json:"cache_read_tokens"`
	CacheWriteTokens *json.Number `json:"cache_write_tokens"`
	Failed           bool         `json:"failed"`
}

func (e *Endpoint) report(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		// A browser's "simple" cross-origin POST (no type, text/plain, a
		// form) cannot send JSON's type without a preflight, which this
		// endpoint never answers.
		writeError(w, http.StatusUnsupportedMediaType, "", "Content-Type must be application/json")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "", "read body: "+err.Error())
		return
	}
	if len(body) > maxBody {
		writeError(w, http.StatusRequestEntityTooLarge, "", "body over 1 MiB: send fewer events per request")
		return
	}
	var reports []report
	single := true
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		single = false
		err = decodeStrict(trimmed, &reports)
	} else {
		var one report
		err = decodeStrict(trimmed, &one)
		reports = []report{one}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, jsonField(err), "bad JSON: "+err.Error())
		return
	}
	if len(reports) == 0 || len(reports) > 1000 {
		writeError(w, http.StatusBadRequest, "", "send 1 to 1000 events")
		return
	}
	now := e.clock().Now()
	events := make([]*Event, 0, len(reports))
	for i, rep := range reports {
		ev, err := e.toEvent(rep, now)
		if err != nil {
			field := ""
			var fe *FieldError
			if errors.As(err, &fe) {
				field = fe.Field
				if !single {
					field = fmt.Sprintf("[%d].%s", i, fe.Field)
				}
			}
			writeError(w, http.StatusBadRequest, field, err.Error())
			return
		}
		events = append(events, ev)
	}
	ids := make([]string, 0, len(events))
	for _, ev := range events {
		s, err := e.Spool.Append(ev.toSpool())
		if err != nil {
			e.logger().Error("spend event not spooled", "id", ev.ID, "agent", ev.Agent, "err", err)
			writeError(w, http.StatusServiceUnavailable, "", "not spooled (disk full?); retry with the same id: "+err.Error())
			return
		}
		ids = append(ids, s.ID)
	}
	if single {
		writeJSON(w, http.StatusAccepted, map[string]any{"id": ids[0]})
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"ids": ids})
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// jsonField names the field of a type or unknown-field error.
func jsonField(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return te.Field
	}
	if s, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return strings.Trim(s, `"`)
	}
	return ""
}

// toEvent validates one report. Its id is the client's; else, when the
// client said when the call happened, one derived from the body (a retry
// of the same report gets the same id); else a fresh one, fixed in the
// spool from then on, and returned so the client can retry with it.
func (e *Endpoint) toEvent(r report, now time.Time) (*Event, error) {
	ev := &Event{ID: r.ID, Agent: r.Agent, Host: e.Host, Model: r.Model, Provider: r.Provider,
		Tier: strings.ToLower(r.Tier), TaskID: r.TaskID}
	var err error
	if ev.InputTokens, err = intField("input_tokens", r.InputTokens); err != nil {
		return nil, err
	}
	if ev.OutputTokens, err = intField("output_tokens", r.OutputTokens); err != nil {
		return nil, err
	}
	if ev.CacheReadTokens, err = intField("cache_read_tokens", r.CacheReadTokens); err != nil {
		return nil, err
	}
	if ev.CacheWriteTokens, err = intField("cache_write_tokens", r.CacheWriteTokens); err != nil {
		return nil, err
	}
	ev.Failed = r.Failed
	switch {
	case r.CostMicros != nil && len(r.CostUSD) > 0:
		return nil, fieldErr("cost_micros", "give cost_micros or cost_usd, not both")
	case r.CostMicros != nil:
		c, err := intField("cost_micros", r.CostMicros)
		if err != nil {
			return nil, err
		}
		ev.CostMicros = &c
	case len(r.CostUSD) > 0 && string(r.CostUSD) != "null":
		s := strings.Trim(string(r.CostUSD), `"`)
		c, err := DollarsToMicros(s)
		if err != nil {
			return nil, fieldErr("cost_usd", "%v", err)
		}
		ev.CostMicros = &c
	}
	derive := true
	if r.OccurredAt == "" {
		ev.OccurredAt, derive = now, false
	} else if ev.OccurredAt, err = time.Parse(time.RFC3339Nano, r.OccurredAt); err != nil {
		return nil, fieldErr("occurred_at", "want RFC 3339, like 2026-11-27T09:30:00Z")
	}
	if len(e.Agents) > 0 && ev.Agent != "" {
		known := false
		for _, a := range e.Agents {
			known = known || a == ev.Agent
		}
		if !known {
			return nil, fieldErr("agent", "%q is not an agent of this host (declare it under agents: in the sidecar's config)", ev.Agent)
		}
	}
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	if err := e.checkPrice(ev); err != nil {
		return nil, err
	}
	if ev.ID == "" {
		if derive {
			ev.ID = ev.DerivedID("local:")
		} else {
			ev.ID = "local:" + spool.NewID()
		}
	}
	return ev, nil
}

// defaultPrices is the built-in table, parsed once.
var defaultPrices = sync.OnceValue(budget.DefaultPrices)

// checkPrice refuses what the control plane could not price or would
// refuse once priced. The event stays without a cost: the control plane
// prices it with its own table and marks it priced by the server.
func (e *Endpoint) checkPrice(ev *Event) error {
	if ev.CostMicros != nil {
		return nil
	}
	prices := e.Prices
	if prices == nil {
		prices = defaultPrices()
	}
	price, ok := prices.Lookup(ev.Model, ev.Tier)
	if !ok {
		return fieldErr("cost_micros", "no price for model %q on this sidecar: send cost_micros or cost_usd, or give the sidecar the control plane's --prices table", ev.Model)
	}
	if c := price.Cost(ev.InputTokens, ev.OutputTokens); c > maxCostMicros {
		return fieldErr("cost", "the tokens price at over $1,000,000 for one call")
	}
	return nil
}

func intField(name string, n *json.Number) (int64, error) {
	if n == nil {
		return 0, nil
	}
	v, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil {
		return 0, fieldErr(name, "want a whole number, got %s", n.String())
	}
	return v, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, field, msg string) {
	body := map[string]string{"error": msg}
	if field != "" {
		body["field"] = field
	}
	writeJSON(w, code, body)
}
