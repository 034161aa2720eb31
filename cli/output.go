package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// jsonOptions keeps the proto field names (task_id, not taskId) so the JSON
// matches the API docs and grpcurl describe, and prints unset fields so
// scripts can rely on every key being there.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// protoJSON renders m as compact JSON. protojson's own spacing is
// deliberately unstable, so it is normalised here.
func protoJSON(m proto.Message) (json.RawMessage, error) {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// writeProto prints one message as indented JSON (or as the -o format w
// carries: see writeResult).
func writeProto(w io.Writer, m proto.Message) error {
	raw, err := protoJSON(m)
	if err != nil {
		return err
	}
	return writeResult(w, raw)
}

// writeProtoList prints messages as one indented JSON array ([] when
// empty), or in w's -o format.
func writeProtoList[M proto.Message](w io.Writer, items []M) error {
	raws := make([]json.RawMessage, 0, len(items))
	for _, m := range items {
		raw, err := protoJSON(m)
		if err != nil {
			return err
		}
		raws = append(raws, raw)
	}
	return writeJSON(w, raws)
}

// writeProtoLine prints one message as a single JSON line (for streams),
// or as one item in w's -o format.
func writeProtoLine(w io.Writer, m proto.Message) error {
	raw, err := protoJSON(m)
	if err != nil {
		return err
	}
	return writeResultLine(w, raw)
}

// writeJSON prints any Go value as indented JSON, or in w's -o format.
func writeJSON(w io.Writer, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeResult(w, raw)
}

func writeIndented(w io.Writer, raw []byte) error {
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

// stateNames are the short names people type and read, in lifecycle order.
var stateNames = []string{"backlog", "ready", "in-progress", "review", "done", "failed", "paused"}

// allStates lists every stored state in lifecycle order.
var allStates = []factoryv1.TaskState{
	factoryv1.TaskState_TASK_STATE_BACKLOG,
	factoryv1.TaskState_TASK_STATE_READY,
	factoryv1.TaskState_TASK_STATE_IN_PROGRESS,
	factoryv1.TaskState_TASK_STATE_REVIEW,
	factoryv1.TaskState_TASK_STATE_DONE,
	factoryv1.TaskState_TASK_STATE_FAILED,
	factoryv1.TaskState_TASK_STATE_PAUSED,
}

// parseState accepts "ready", "READY", "in-progress", "in_progress",
// "IN_PROGRESS" and "TASK_STATE_IN_PROGRESS".
func parseState(s string) (factoryv1.TaskState, error) {
	n := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	n = strings.TrimPrefix(n, "TASK_STATE_")
	if v, ok := factoryv1.TaskState_value["TASK_STATE_"+n]; ok && v != 0 {
		return factoryv1.TaskState(v), nil
	}
	return 0, fmt.Errorf("unknown state %q (want one of %s)", s, strings.Join(stateNames, ", "))
}

// parseStates parses repeated and comma-separated --state values.
func parseStates(values []string) ([]factoryv1.TaskState, error) {
	var out []factoryv1.TaskState
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			st, err := parseState(part)
			if err != nil {
				return nil, err
			}
			out = append(out, st)
		}
	}
	return out, nil
}

// stateName is the short lower-case name: "in-progress".
func stateName(s factoryv1.TaskState) string {
	if s <= factoryv1.TaskState_TASK_STATE_UNSPECIFIED || int(s) > len(stateNames) {
		return strings.ToLower(strings.TrimPrefix(s.String(), "TASK_STATE_"))
	}
	return stateNames[s-1]
}

// stateLabel is the upper-case name used in tables: "IN_PROGRESS".
func stateLabel(s factoryv1.TaskState) string {
	return strings.TrimPrefix(s.String(), "TASK_STATE_")
}

// parseLabels turns repeated k=v flags into a map.
func parseLabels(values []string) (map[string]string, error) {
	if len(values) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(values))
	for _, v := range values {
		k, val, ok := strings.Cut(v, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("label %q: want key=value", v)
		}
		out[k] = val
	}
	return out, nil
}

// formatLabels renders labels sorted by key: "env=prod,team=ml".
func formatLabels(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}

// humanDuration renders a span the way people say it: "45s", "3m12s",
// "2h05m", "3d4h". Sub-second spans show milliseconds.
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		days := int(d.Hours()) / 24
		return fmt.Sprintf("%dd%dh", days, int(d.Hours())%24)
	}
}

// humanAge renders a time relative to now: "3m12s ago", "in 4m30s", or "-"
// when unset.
func humanAge(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
		return "-"
	}
	d := now.Sub(ts.AsTime())
	if d < 0 {
		return "in " + humanDuration(d)
	}
	if d < time.Second {
		return "just now"
	}
	return humanDuration(d) + " ago"
}

// humanSpan renders a duration field, "-" when zero or unset.
func humanSpan(d *durationpb.Duration) string {
	if d == nil || d.AsDuration() == 0 {
		return "-"
	}
	return humanDuration(d.AsDuration())
}

// orDash shows "-" for an empty cell so columns stay readable.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// truncate shortens s to n runes with an ellipsis, for table cells.
func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// attemptText is "attempt/max", such as "2/3".
func attemptText(t *factoryv1.Task) string {
	return fmt.Sprintf("%d/%d", t.GetAttempt(), t.GetMaxAttempts())
}

// holderText is the lease holder, else the assignee marked with "→".
func holderText(t *factoryv1.Task) string {
	if h := t.GetLease().GetHolder(); h != "" {
		return h
	}
	if a := t.GetAssignee(); a != "" {
		return "→" + a
	}
	return "-"
}

// writeTaskTable prints tasks one per row; with -o wide, writeTaskTableWide.
func writeTaskTable(w io.Writer, tasks []*factoryv1.Task, now time.Time) error {
	if wideOutput(w) {
		return writeTaskTableWide(w, tasks, now)
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSTATE\tPRI\tROLE\tHOLDER\tATTEMPT\tSINCE\tTITLE")
	for _, t := range tasks {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n",
			t.GetId(), stateLabel(t.GetState()), t.GetPriority(), orDash(t.GetRole()),
			holderText(t), attemptText(t), humanAge(t.GetStateChangedAt(), now), truncate(t.GetTitle(), 60))
	}
	return tw.Flush()
}

// writeTaskTableWide is the task table with what a queue operator looks
// at next: the kind, the assignee apart from the lease holder, when the
// lease expires, how long a retried task still waits (run_after), its
// labels and a longer title.
func writeTaskTableWide(w io.Writer, tasks []*factoryv1.Task, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSTATE\tPRI\tROLE\tKIND\tTIER\tASSIGNEE\tHOLDER\tATTEMPT\tLEASE EXPIRES\tRUN AFTER\tSINCE\tLABELS\tTITLE")
	for _, t := range tasks {
		holder, expires := "-", "-"
		if l := t.GetLease(); l.GetHolder() != "" {
			holder, expires = l.GetHolder(), humanAge(l.GetExpiresAt(), now)
		}
		runAfter := "-"
		if ra := t.GetRunAfter(); ra != nil && ra.AsTime().After(now) {
			runAfter = humanAge(ra, now)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			t.GetId(), stateLabel(t.GetState()), t.GetPriority(), orDash(escapeTerminal(t.GetRole())),
			orDash(escapeTerminal(t.GetKind())), orDash(escapeTerminal(t.GetTier())), orDash(escapeTerminal(t.GetAssignee())), escapeTerminal(holder),
			attemptText(t), expires, runAfter, humanAge(t.GetStateChangedAt(), now),
			orDash(escapeTerminal(truncate(formatLabels(t.GetLabels()), 60))), truncate(t.GetTitle(), 100))
	}
	return tw.Flush()
}

// writeTaskDetail prints one task as aligned "key: value" lines.
func writeTaskDetail(w io.Writer, t *factoryv1.Task, now time.Time) error {
	tw := newTable(w)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, escapeTerminal(v)) }
	row("ID", t.GetId())
	row("Title", t.GetTitle())
	row("State", fmt.Sprintf("%s (since %s)", stateLabel(t.GetState()), humanAge(t.GetStateChangedAt(), now)))
	row("Kind", orDash(t.GetKind()))
	row("Role", orDash(t.GetRole()))
	row("Assignee", orDash(t.GetAssignee()))
	row("Priority", fmt.Sprint(t.GetPriority()))
	row("Attempt", attemptText(t))
	if tier := t.GetTier(); tier != "" {
		row("Spend tier", tier)
	}
	if tier := t.GetApprovalTier(); tier != 0 {
		row("Approval tier", fmt.Sprint(tier))
	}
	if id := t.GetApprovalId(); id != "" {
		state := "decided"
		if t.GetApprovalPending() {
			state = "pending: factory approve " + id
		}
		row("Approval", fmt.Sprintf("%s (%s)", id, state))
	}
	if l := t.GetLease(); l != nil && l.GetHolder() != "" {
		row("Lease", fmt.Sprintf("%s, token %d, claimed %s, renewed %s, expires %s",
			l.GetHolder(), l.GetToken(), humanAge(l.GetClaimedAt(), now), humanAge(l.GetRenewedAt(), now), humanAge(l.GetExpiresAt(), now)))
	}
	if ra := t.GetRunAfter(); ra != nil && ra.AsTime().After(now) {
		row("Run after", humanAge(ra, now))
	}
	if deps := t.GetDependsOn(); len(deps) > 0 {
		row("Depends on", strings.Join(deps, ", "))
	}
	if len(t.GetLabels()) > 0 {
		row("Labels", formatLabels(t.GetLabels()))
	}
	if s := t.GetLastError(); s != "" {
		row("Last error", s)
	}
	if s := t.GetProgress(); s != "" {
		row("Progress", s)
	}
	if s := t.GetNote(); s != "" {
		row("Note", s)
	}
	row("Created", fmt.Sprintf("%s (%s)", humanAge(t.GetCreatedAt(), now), t.GetCreatedAt().AsTime().Format(time.RFC3339)))
	row("Updated", humanAge(t.GetUpdatedAt(), now))
	if p := t.GetPayloadJson(); p != "" && p != "{}" {
		row("Payload", truncate(p, 200))
	}
	if r := t.GetResultJson(); r != "" {
		row("Result", truncate(r, 200))
	}
	for _, d := range t.GetDependencyResults() {
		row("Dependency result", dependencyResultText(d))
	}
	return tw.Flush()
}

// Terminal safety. Titles, errors, notes, agent and node names come from
// agents and other callers; printed raw, an ESC or a C1 CSI would let them
// move the cursor, rewrite the screen or set the window title on the
// operator's terminal, and a bidi override would make a line read other
// than it is. So every human-readable byte the CLI prints goes through
// escapeTerminal (the app's stdout and stderr are safeWriters, and tables
// escape their cells), and JSON keeps the exact value, with such
// characters written as \u escapes.

// unsafeRune reports whether r must not reach a terminal as it is: C0
// controls (NUL, BEL, ESC, CR, ...), DEL, C1 controls (U+0080-U+009F:
// CSI, OSC, ...), the line and paragraph separators, and Unicode's
// invisible format characters (bidi embeddings, overrides and isolates,
// zero-width spaces and marks, the BOM, tag characters). The zero-width
// joiner and non-joiner stay: emoji sequences and several scripts need
// them, and they cannot reorder or hide text.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20 || r == 0x7f:
		return true
	case r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x2028 || r == 0x2029:
		return true
	case r == 0x200c || r == 0x200d:
		return false
	case r < 0xad:
		return false
	}
	return unicode.Is(unicode.Cf, r)
}

// escapeMode is how appendEscaped writes what it escapes.
type escapeMode int

const (
	// escapeCell escapes line breaks and tabs too: a table cell or a
	// one-line value, where a newline would forge a row.
	escapeCell escapeMode = iota
	// escapeStream keeps "\n" and "\t": text already laid out in lines.
	escapeStream
	// escapeJSON writes \uXXXX escapes, which keep a JSON document valid
	// and its values exact; JSON's own whitespace stays.
	escapeJSON
)

// escapeTerminal returns s with every unsafe character (see unsafeRune)
// written as a visible escape: "\x1b", "\x9b", "\u202e", "\n".
func escapeTerminal(s string) string {
	if !needsEscape([]byte(s), escapeCell) {
		return s
	}
	return string(appendEscaped(nil, []byte(s), escapeCell))
}

// needsEscape is the fast path: plain ASCII text is passed through.
func needsEscape(p []byte, mode escapeMode) bool {
	for _, b := range p {
		switch {
		case b >= 0x80 || b == 0x7f:
			return true
		case b >= 0x20:
		case mode != escapeCell && (b == '\n' || b == '\t'):
		case mode == escapeJSON && b == '\r':
		default:
			return true
		}
	}
	return false
}

func appendEscaped(dst, p []byte, mode escapeMode) []byte {
	for len(p) > 0 {
		r, size := utf8.DecodeRune(p)
		switch {
		case r == utf8.RuneError && size <= 1:
			// Not UTF-8: show the byte, never pass it (a lone 0x9b is a
			// CSI to an 8-bit terminal).
			if mode == escapeJSON {
				dst = append(dst, `\ufffd`...)
			} else {
				dst = fmt.Appendf(dst, `\x%02x`, p[0])
			}
		case !unsafeRune(r):
			dst = append(dst, p[:size]...)
		case mode != escapeCell && (r == '\n' || r == '\t'):
			dst = append(dst, byte(r))
		case mode == escapeJSON && r == '\r':
			dst = append(dst, '\r')
		case mode == escapeJSON:
			for _, u := range utf16.Encode([]rune{r}) {
				dst = fmt.Appendf(dst, `\u%04x`, u)
			}
		case r == '\n':
			dst = append(dst, `\n`...)
		case r == '\t':
			dst = append(dst, `\t`...)
		case r == '\r':
			dst = append(dst, `\r`...)
		case r < 0x100:
			dst = fmt.Appendf(dst, `\x%02x`, r)
		case r <= 0xffff:
			dst = fmt.Appendf(dst, `\u%04x`, r)
		default:
			dst = fmt.Appendf(dst, `\U%08x`, r)
		}
		p = p[size:]
	}
	return dst
}

// safeWriter escapes what passes through it (escapeStream, or escapeJSON
// while json reports true). A character split across two writes is held
// until the rest arrives, so it is judged whole.
type safeWriter struct {
	w       io.Writer
	json    func() bool
	pending []byte
	// format is the parsed -o value, set once the flags are parsed; the
	// writers read it from here (see formatOf).
	format *outputFormat
}

func newSafeWriter(w io.Writer, json func() bool) *safeWriter {
	if json == nil {
		json = func() bool { return false }
	}
	return &safeWriter{w: w, json: json}
}

func (s *safeWriter) Write(p []byte) (int, error) {
	buf := p
	if len(s.pending) > 0 {
		buf = append(s.pending, p...)
		s.pending = nil
	}
	cut := len(buf)
	for i := len(buf) - 1; i >= 0 && i >= len(buf)-utf8.UTFMax; i-- {
		if utf8.RuneStart(buf[i]) {
			if !utf8.FullRune(buf[i:]) {
				cut = i
			}
			break
		}
	}
	if cut < len(buf) {
		s.pending = append([]byte(nil), buf[cut:]...)
		buf = buf[:cut]
	}
	mode := escapeStream
	if s.json() {
		mode = escapeJSON
	}
	if needsEscape(buf, mode) {
		buf = appendEscaped(make([]byte, 0, len(buf)+16), buf, mode)
	}
	if _, err := s.w.Write(buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// table is a tab-aligned writer whose cells are escaped before they are
// measured, so an escape neither reaches the terminal nor breaks the
// columns. Tabs and newlines in what is written to it are its layout: a
// cell value that may hold them goes through escapeTerminal first (the
// table helpers here do).
type table struct {
	tw *tabwriter.Writer
}

// newTable returns a compact tab-aligned writer; call Flush when done.
func newTable(w io.Writer) *table {
	return &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
}

func (t *table) Write(p []byte) (int, error) {
	if !needsEscape(p, escapeStream) {
		return t.tw.Write(p)
	}
	if _, err := t.tw.Write(appendEscaped(nil, p, escapeStream)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes the aligned table.
func (t *table) Flush() error { return t.tw.Flush() }
