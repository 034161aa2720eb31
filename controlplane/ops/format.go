package ops

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// The dump format is JSON Lines:
//
//	{"format":"factory-dump","version":1}
//	{"kind":"queue","queue":{"paused":false,"reason":"","paused_at":null}}
//	{"kind":"task","task":{"id":"...","title":"...","state":"READY",...}}
//	{"kind":"token","token":{"id":"...","hash":"...","role":"agent",...}}
//	{"kind":"audit","audit":{"id":1,"time":"...","who":"ops",...}}
//	{"kind":"fleet_event","fleet_event":{"id":"...","host":"gpu-1","kind":"model_swap","time":"...","attributes":{...}}}
//	{"kind":"row","row":{"table":"spend_events","values":{"agent":"forge",...}}}
//	{"kind":"end","counts":{"queue":1,"tasks":2,"tokens":1,"audit":1,"fleet_events":1,"rows":1}}
//
// It is canonical, so that two dumps of the same state are the same bytes
// whichever driver wrote them: every field is always present, in a fixed
// order; times are RFC 3339 in UTC with exactly six fractional digits
// (microseconds, the finest resolution both drivers keep: PostgreSQL
// stores no finer, and a dump means the same on either); unset times are
// null, empty lists [] and empty maps {}; labels and fleet event
// attributes are sorted by key (encoding/json sorts map keys); depends_on keeps its stored order; text,
// payloads included, is written exactly as stored (both drivers keep a
// payload as the text it was given, so it is not re-encoded). The header
// holds no export time, so dumps compare byte for byte.
//
// The end line counts the records: a dump cut short (a full disk, a
// dropped connection) is refused rather than half imported. Unknown
// fields are refused too, so that nothing a newer dump carries is
// silently dropped.

// Format and Version open every dump.
const (
	Format  = "factory-dump"
	Version = 1
)

// timeLayout is the dump's one time format.
const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

// maxLine bounds one line: a task's payload is limited far below it.
const maxLine = 64 << 20

type header struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
}

// line is every line after the header.
type line struct {
	Kind   string      `json:"kind"`
	Queue  *queueJSON  `json:"queue,omitempty"`
	Task   *taskJSON   `json:"task,omitempty"`
	Token  *tokenJSON  `json:"token,omitempty"`
	Audit  *auditJSON  `json:"audit,omitempty"`
	Fleet  *fleetJSON  `json:"fleet_event,omitempty"`
	Row    *rowJSON    `json:"row,omitempty"`
	Counts *countsJSON `json:"counts,omitempty"`
}

const kindEnd = "end"

// jsonTime is a time in the dump's layout; the zero time is null.
type jsonTime time.Time

func (t jsonTime) MarshalJSON() ([]byte, error) {
	tt := time.Time(t)
	if tt.IsZero() {
		return []byte("null"), nil
	}
	return []byte(`"` + tt.UTC().Truncate(time.Microsecond).Format(timeLayout) + `"`), nil
}

func (t *jsonTime) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*t = jsonTime{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a time must be an RFC 3339 string or null, not %s", b)
	}
	tt, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("time %q: %w", s, err)
	}
	if tt.IsZero() {
		return fmt.Errorf("time %q is the zero time; write null for an unset time", s)
	}
	*t = jsonTime(tt.UTC().Truncate(time.Microsecond))
	return nil
}

type queueJSON struct {
	Paused   bool     `json:"paused"`
	Reason   string   `json:"reason"`
	PausedAt jsonTime `json:"paused_at"`
}

type taskJSON struct {
	ID             string            `json:"id"`
	Title          string            `json:"title"`
	Kind           string            `json:"kind"`
	PayloadJSON    string            `json:"payload_json"`
	Role           string            `json:"role"`
	Assignee       string            `json:"assignee"`
	Priority       int32             `json:"priority"`
	State          string            `json:"state"`
	Attempt        int32             `json:"attempt"`
	MaxAttempts    int32             `json:"max_attempts"`
	DependsOn      []string          `json:"depends_on"`
	ApprovalTier   int32             `json:"approval_tier"`
	Labels         map[string]string `json:"labels"`
	LastError      string            `json:"last_error"`
	Progress       string            `json:"progress"`
	Note           string            `json:"note"`
	ResultJSON     string            `json:"result_json,omitempty"`
	LeaseHolder    string            `json:"lease_holder"`
	FencingToken   int64             `json:"fencing_token"`
	LeaseExpiresAt jsonTime          `json:"lease_expires_at"`
	ClaimedAt      jsonTime          `json:"claimed_at"`
	RenewedAt      jsonTime          `json:"renewed_at"`
	RunAfter       jsonTime          `json:"run_after"`
	CreatedAt      jsonTime          `json:"created_at"`
	UpdatedAt      jsonTime          `json:"updated_at"`
	StateChangedAt jsonTime          `json:"state_changed_at"`
	PausedByQueue  bool              `json:"paused_by_queue"`
	// ApprovalID and ApprovalPending are absent from dumps written before
	// approval-gated tasks; they then read as "not gated".
	ApprovalID      string `json:"approval_id"`
	ApprovalPending bool   `json:"approval_pending"`
	// Tier is absent from dumps written before tasks named a spend tier;
	// it then reads as none.
	Tier string `json:"tier,omitempty"`
}

type tokenJSON struct {
	ID          string   `json:"id"`
	Hash        string   `json:"hash"`
	Role        string   `json:"role"`
	Subject     string   `json:"subject"`
	Description string   `json:"description"`
	CreatedBy   string   `json:"created_by"`
	CreatedAt   jsonTime `json:"created_at"`
	ExpiresAt   jsonTime `json:"expires_at"`
	RevokedAt   jsonTime `json:"revoked_at"`
	LastUsedAt  jsonTime `json:"last_used_at"`
	// Roles is an agent token's grant. Dumps written before grants
	// existed have no roles key: their agent tokens load with every role
	// ("*"), as the migration that introduced grants gave them.
	Roles *[]string `json:"roles,omitempty"`
	// SessionOf links a console session to the token it was made from;
	// dumps written before sessions existed have none.
	SessionOf string `json:"session_of,omitempty"`
}

type auditJSON struct {
	ID         int64    `json:"id"`
	Time       jsonTime `json:"time"`
	Who        string   `json:"who"`
	Role       string   `json:"role"`
	TokenID    string   `json:"token_id"`
	RPC        string   `json:"rpc"`
	Target     string   `json:"target"`
	BeforeJSON string   `json:"before_json"`
	AfterJSON  string   `json:"after_json"`
	TraceID    string   `json:"trace_id"`
	Outcome    string   `json:"outcome"`
	Detail     string   `json:"detail"`
	// Count and LastSeen describe an entry standing for several identical
	// refusals. Dumps written before they existed have neither: such an
	// entry is one call, last seen at its time.
	Count    int64    `json:"count,omitempty"`
	LastSeen jsonTime `json:"last_seen,omitempty"`
}

type fleetJSON struct {
	ID         string            `json:"id"`
	Host       string            `json:"host"`
	Kind       string            `json:"kind"`
	Time       jsonTime          `json:"time"`
	Attributes map[string]string `json:"attributes"`
}

// countsJSON's fleet_events is absent from dumps written before fleet
// events were carried; it then reads as 0, which such a dump holds.
type countsJSON struct {
	Queue       int64 `json:"queue"`
	Tasks       int64 `json:"tasks"`
	Tokens      int64 `json:"tokens"`
	Audit       int64 `json:"audit"`
	FleetEvents int64 `json:"fleet_events"`
	// Rows is absent from dumps written before table rows were carried.
	Rows int64 `json:"rows"`
}

func toLine(r *store.DumpRecord) (*line, error) {
	switch r.Kind() {
	case store.DumpQueue:
		q := r.Queue
		return &line{Kind: string(store.DumpQueue), Queue: &queueJSON{Paused: q.Paused, Reason: q.Reason, PausedAt: jsonTime(q.PausedAt)}}, nil
	case store.DumpTask:
		t := r.Task
		deps := t.DependsOn
		if deps == nil {
			deps = []string{}
		}
		labels := t.Labels
		if labels == nil {
			labels = map[string]string{}
		}
		return &line{Kind: string(store.DumpTask), Task: &taskJSON{
			ID: t.ID, Title: t.Title, Kind: t.Kind, PayloadJSON: t.PayloadJSON, Role: t.Role, Assignee: t.Assignee,
			Priority: t.Priority, State: t.State.String(), Attempt: t.Attempt, MaxAttempts: t.MaxAttempts,
			DependsOn: deps, ApprovalTier: t.ApprovalTier, Labels: labels, LastError: t.LastError,
			Progress: t.Progress, Note: t.Note, ResultJSON: t.ResultJSON, LeaseHolder: t.LeaseHolder, FencingToken: t.FencingToken,
			LeaseExpiresAt: jsonTime(t.LeaseExpiresAt), ClaimedAt: jsonTime(t.ClaimedAt), RenewedAt: jsonTime(t.RenewedAt),
			RunAfter: jsonTime(t.RunAfter), CreatedAt: jsonTime(t.CreatedAt), UpdatedAt: jsonTime(t.UpdatedAt),
			StateChangedAt: jsonTime(t.StateChangedAt), PausedByQueue: t.PausedByQueue,
			ApprovalID: t.ApprovalID, ApprovalPending: t.ApprovalPending, Tier: t.Tier,
		}}, nil
	case store.DumpToken:
		t := r.Token
		roles := append([]string{}, t.Roles...)
		return &line{Kind: string(store.DumpToken), Token: &tokenJSON{
			ID: t.ID, Hash: t.Hash, Role: string(t.Role), Subject: t.Subject, Description: t.Description,
			CreatedBy: t.CreatedBy, CreatedAt: jsonTime(t.CreatedAt), ExpiresAt: jsonTime(t.ExpiresAt),
			RevokedAt: jsonTime(t.RevokedAt), LastUsedAt: jsonTime(t.LastUsedAt), Roles: &roles, SessionOf: t.SessionOf,
		}}, nil
	case store.DumpAudit:
		e := r.Audit
		return &line{Kind: string(store.DumpAudit), Audit: &auditJSON{
			ID: e.ID, Time: jsonTime(e.Time), Who: e.Who, Role: string(e.Role), TokenID: e.TokenID, RPC: e.RPC,
			Target: e.Target, BeforeJSON: e.BeforeJSON, AfterJSON: e.AfterJSON, TraceID: e.TraceID,
			Outcome: e.Outcome, Detail: e.Detail, Count: e.Count, LastSeen: jsonTime(e.LastSeen),
		}}, nil
	case store.DumpFleetEvent:
		e := r.FleetEvent
		attrs := e.Attributes
		if attrs == nil {
			attrs = map[string]string{}
		}
		return &line{Kind: string(store.DumpFleetEvent), Fleet: &fleetJSON{
			ID: e.ID, Host: e.Host, Kind: e.Kind, Time: jsonTime(e.Time), Attributes: attrs,
		}}, nil
	case store.DumpRowKind:
		rj, err := toRowJSON(r.Row)
		if err != nil {
			return nil, err
		}
		return &line{Kind: string(store.DumpRowKind), Row: rj}, nil
	}
	return nil, errors.New("a record must hold exactly one of queue, task, token, audit entry, fleet event or table row")
}

func (l *line) record() (*store.DumpRecord, error) {
	set := 0
	for _, p := range []bool{l.Queue != nil, l.Task != nil, l.Token != nil, l.Audit != nil, l.Fleet != nil, l.Row != nil, l.Counts != nil} {
		if p {
			set++
		}
	}
	if set != 1 {
		return nil, fmt.Errorf("a %q line must hold exactly one object", l.Kind)
	}
	switch {
	case l.Kind == string(store.DumpQueue) && l.Queue != nil:
		q := l.Queue
		return &store.DumpRecord{Queue: &store.QueueSettings{Paused: q.Paused, Reason: q.Reason, PausedAt: time.Time(q.PausedAt)}}, nil
	case l.Kind == string(store.DumpTask) && l.Task != nil:
		t := l.Task
		state, err := store.ParseState(t.State)
		if err != nil {
			return nil, fmt.Errorf("task %s: %w", t.ID, err)
		}
		out := &store.Task{
			ID: t.ID, Title: t.Title, Kind: t.Kind, PayloadJSON: t.PayloadJSON, Role: t.Role, Assignee: t.Assignee,
			Priority: t.Priority, State: state, Attempt: t.Attempt, MaxAttempts: t.MaxAttempts,
			ApprovalTier: t.ApprovalTier, LastError: t.LastError, Progress: t.Progress, Note: t.Note, ResultJSON: t.ResultJSON,
			LeaseHolder: t.LeaseHolder, FencingToken: t.FencingToken, LeaseExpiresAt: time.Time(t.LeaseExpiresAt),
			ClaimedAt: time.Time(t.ClaimedAt), RenewedAt: time.Time(t.RenewedAt), RunAfter: time.Time(t.RunAfter),
			CreatedAt: time.Time(t.CreatedAt), UpdatedAt: time.Time(t.UpdatedAt),
			StateChangedAt: time.Time(t.StateChangedAt), PausedByQueue: t.PausedByQueue,
			ApprovalID: t.ApprovalID, ApprovalPending: t.ApprovalPending, Tier: t.Tier,
		}
		// Stores read "none" back as nil; so does a load.
		if len(t.DependsOn) > 0 {
			out.DependsOn = t.DependsOn
		}
		if len(t.Labels) > 0 {
			out.Labels = t.Labels
		}
		return &store.DumpRecord{Task: out}, nil
	case l.Kind == string(store.DumpToken) && l.Token != nil:
		t := l.Token
		var roles []string
		switch {
		case t.Roles != nil:
			roles = *t.Roles
		case store.Role(t.Role) == store.RoleAgent:
			roles = []string{store.AnyRole}
		}
		if len(roles) == 0 {
			roles = nil
		}
		return &store.DumpRecord{Token: &store.Token{
			ID: t.ID, Hash: t.Hash, Role: store.Role(t.Role), Subject: t.Subject, Description: t.Description,
			CreatedBy: t.CreatedBy, CreatedAt: time.Time(t.CreatedAt), ExpiresAt: time.Time(t.ExpiresAt),
			RevokedAt: time.Time(t.RevokedAt), LastUsedAt: time.Time(t.LastUsedAt), Roles: roles, SessionOf: t.SessionOf,
		}}, nil
	case l.Kind == string(store.DumpAudit) && l.Audit != nil:
		e := l.Audit
		return &store.DumpRecord{Audit: &store.AuditEntry{
			ID: e.ID, Time: time.Time(e.Time), Who: e.Who, Role: store.Role(e.Role), TokenID: e.TokenID, RPC: e.RPC,
			Target: e.Target, BeforeJSON: e.BeforeJSON, AfterJSON: e.AfterJSON, TraceID: e.TraceID,
			Outcome: e.Outcome, Detail: e.Detail, Count: e.Count, LastSeen: time.Time(e.LastSeen),
		}}, nil
	case l.Kind == string(store.DumpFleetEvent) && l.Fleet != nil:
		e := l.Fleet
		out := &store.FleetEvent{ID: e.ID, Host: e.Host, Kind: e.Kind, Time: time.Time(e.Time)}
		// Stores read "none" back as nil; so does a load.
		if len(e.Attributes) > 0 {
			out.Attributes = e.Attributes
		}
		return &store.DumpRecord{FleetEvent: out}, nil
	case l.Kind == string(store.DumpRowKind) && l.Row != nil:
		r, err := l.Row.row()
		if err != nil {
			return nil, err
		}
		return &store.DumpRecord{Row: r}, nil
	}
	return nil, fmt.Errorf("kind %q does not match the object it holds (want one of queue, task, token, audit, fleet_event, row, end)", l.Kind)
}

// Writer writes a dump.
type Writer struct {
	w      *bufio.Writer
	buf    bytes.Buffer
	enc    *json.Encoder
	counts store.DumpCounts
}

// NewWriter starts a dump on w with its header.
func NewWriter(w io.Writer) (*Writer, error) {
	dw := &Writer{w: bufio.NewWriterSize(w, 64<<10)}
	dw.enc = json.NewEncoder(&dw.buf)
	// "<", ">" and "&" as themselves: the escapes would be canonical too,
	// but harder to read and grep.
	dw.enc.SetEscapeHTML(false)
	return dw, dw.put(header{Format: Format, Version: Version})
}

// put writes v as one line.
func (dw *Writer) put(v any) error {
	dw.buf.Reset()
	if err := dw.enc.Encode(v); err != nil {
		return err
	}
	_, err := dw.w.Write(dw.buf.Bytes())
	return err
}

// Write writes one record.
func (dw *Writer) Write(r *store.DumpRecord) error {
	l, err := toLine(r)
	if err != nil {
		return err
	}
	if err := dw.put(l); err != nil {
		return err
	}
	dw.counts.Add(r.Kind())
	return nil
}

// Close writes the end line and flushes; it returns what was written.
func (dw *Writer) Close() (store.DumpCounts, error) {
	c := dw.counts
	if err := dw.put(line{Kind: kindEnd, Counts: &countsJSON{Queue: c.Queue, Tasks: c.Tasks, Tokens: c.Tokens, Audit: c.Audit, FleetEvents: c.FleetEvents, Rows: c.Rows}}); err != nil {
		return c, err
	}
	return c, dw.w.Flush()
}

// Reader reads a dump.
type Reader struct {
	sc     *bufio.Scanner
	line   int
	begun  bool
	ended  bool
	counts store.DumpCounts
}

// NewReader reads a dump from r.
func NewReader(r io.Reader) *Reader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	return &Reader{sc: sc}
}

// FormatError is a dump that cannot be read, with the line that says so
// (0 when the problem is the dump as a whole).
type FormatError struct {
	Line int
	Err  error
}

func (e *FormatError) Error() string {
	if e.Line == 0 {
		return "dump: " + e.Err.Error()
	}
	return fmt.Sprintf("dump line %d: %v", e.Line, e.Err)
}

func (e *FormatError) Unwrap() error { return e.Err }

func (dr *Reader) fail(format string, args ...any) error {
	return &FormatError{Line: dr.line, Err: fmt.Errorf(format, args...)}
}

// Line is the number of the line read last.
func (dr *Reader) Line() int { return dr.line }

// Next returns the next record, or io.EOF after the end line. A dump
// that ends without one, or whose counts disagree with it, is a
// *FormatError.
func (dr *Reader) Next() (*store.DumpRecord, error) {
	for {
		if !dr.sc.Scan() {
			if err := dr.sc.Err(); err != nil {
				if errors.Is(err, bufio.ErrTooLong) {
					return nil, dr.fail("longer than %d bytes", maxLine)
				}
				return nil, err
			}
			if !dr.begun {
				return nil, &FormatError{Err: errors.New("empty: a dump starts with a header line")}
			}
			if !dr.ended {
				return nil, &FormatError{Err: fmt.Errorf("ends after line %d without its end line: it was cut short", dr.line)}
			}
			return nil, io.EOF
		}
		dr.line++
		raw := bytes.TrimSpace(dr.sc.Bytes())
		if dr.ended {
			if len(raw) == 0 {
				continue
			}
			return nil, dr.fail("more after the end line")
		}
		if !dr.begun {
			var h header
			if err := strictJSON(raw, &h); err != nil || h.Format != Format {
				return nil, dr.fail("not a factory dump: the first line must be {\"format\":%q,\"version\":%d}", Format, Version)
			}
			if h.Version != Version {
				return nil, dr.fail("dump version %d; this control plane reads version %d", h.Version, Version)
			}
			dr.begun = true
			continue
		}
		var l line
		if err := strictJSON(raw, &l); err != nil {
			return nil, dr.fail("%v", err)
		}
		if l.Kind == kindEnd && l.Counts != nil {
			c := l.Counts
			want := store.DumpCounts{Queue: c.Queue, Tasks: c.Tasks, Tokens: c.Tokens, Audit: c.Audit, FleetEvents: c.FleetEvents, Rows: c.Rows}
			if want != dr.counts {
				return nil, dr.fail("the end line counts %s, but the dump holds %s", countsText(want), countsText(dr.counts))
			}
			dr.ended = true
			continue
		}
		r, err := l.record()
		if err != nil {
			return nil, dr.fail("%v", err)
		}
		dr.counts.Add(r.Kind())
		return r, nil
	}
}

// strictJSON decodes one JSON value that must fill v exactly: no unknown
// fields, nothing after it.
func strictJSON(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value on the line")
	}
	return nil
}

func countsText(c store.DumpCounts) string {
	parts := map[string]int64{"queue": c.Queue, "tasks": c.Tasks, "tokens": c.Tokens, "audit": c.Audit, "fleet_events": c.FleetEvents, "rows": c.Rows}
	out := make([]string, 0, len(parts))
	for _, k := range slices.Sorted(maps.Keys(parts)) {
		out = append(out, fmt.Sprintf("%s %d", k, parts[k]))
	}
	return strings.Join(out, ", ")
}
