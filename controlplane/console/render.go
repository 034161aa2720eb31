package console

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"path"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fragmentHeader asks for a page's main content only: the live script
// fetches it to redraw a page in place.
const fragmentHeader = "X-Console-Fragment"

// pageSet holds one template set per page: the layout, the shared
// partials and the page's own file, which defines "main".
type pageSet struct {
	byName map[string]*template.Template
}

func parsePages() (*pageSet, error) {
	files, err := fs.Glob(webFS, "web/templates/*.html")
	if err != nil {
		return nil, err
	}
	ps := &pageSet{byName: map[string]*template.Template{}}
	for _, f := range files {
		name := strings.TrimSuffix(path.Base(f), ".html")
		if name == "layout" || name == "partials" {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(webFS, "web/templates/layout.html", "web/templates/partials.html", f)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		ps.byName[name] = t
	}
	return ps, nil
}

// view is what every page's template gets: the frame's fields and the
// page's own data in D.
type view struct {
	Title  string
	Nav    string // the nav entry to highlight
	Topics string // the /events topics that redraw this page
	CSRF   string
	Who    string
	Path   string // this page's URL, for forms' "back"
	Note   string // a finished action's message
	Error  string // a failed action's message
	Now    time.Time
	D      any
}

// render writes a page, or only its main content for the live script.
func (s *Server) render(rq *request, status int, name string, v view, data any) error {
	t, ok := s.pages.byName[name]
	if !ok {
		return fmt.Errorf("console: no template %q", name)
	}
	v.CSRF, v.Who, v.Path, v.Now, v.D = rq.csrf, rq.who.Subject, rq.r.URL.RequestURI(), s.cfg.Now(), data
	q := rq.r.URL.Query()
	v.Note, v.Error = clip(q.Get("note"), 300), clip(q.Get("error"), 500)
	root := "layout"
	if rq.r.Header.Get(fragmentHeader) != "" {
		root = "main"
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, root, v); err != nil {
		return err
	}
	h := rq.w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Vary", fragmentHeader)
	rq.w.WriteHeader(status)
	_, err := rq.w.Write(buf.Bytes())
	return err
}

// renderBare writes a page outside the frame (sign-in).
func (s *Server) renderBare(w http.ResponseWriter, status int, name string, data any) {
	t, ok := s.pages.byName[name]
	if !ok {
		http.Error(w, "no template "+name, http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "bare", data); err != nil {
		s.log.Error("console: rendering failed", "page", name, "err", err)
		http.Error(w, "rendering failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// httpStatus maps the API's answer to the page's status.
func httpStatus(err error) int {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.FailedPrecondition, codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unavailable, codes.DeadlineExceeded:
		return http.StatusServiceUnavailable
	case codes.Unimplemented:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

// message is the API's own words for an error, which name the field or
// the state that refused it.
func message(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}

// fail shows a page's error inside the frame. A session the API no longer
// accepts (revoked, expired) sends the operator to sign in again.
func (s *Server) fail(rq *request, err error) {
	if status.Code(err) == codes.Unauthenticated {
		s.noSession(rq.w, rq.r, nil)
		return
	}
	code := httpStatus(err)
	if code >= 500 {
		s.log.WarnContext(rq.r.Context(), "console: page failed", "path", rq.r.URL.Path, "err", err)
	}
	if rerr := s.render(rq, code, "error", view{Title: http.StatusText(code)}, message(err)); rerr != nil {
		http.Error(rq.w, message(err), code)
	}
}

// actionFailed sends the operator back to the form with the reason.
func (s *Server) actionFailed(rq *request, err error) {
	if status.Code(err) == codes.Unauthenticated {
		s.noSession(rq.w, rq.r, nil)
		return
	}
	if code := httpStatus(err); code >= 500 {
		s.log.WarnContext(rq.r.Context(), "console: action failed", "path", rq.r.URL.Path, "err", err)
	}
	http.Redirect(rq.w, rq.r, withParam(back(rq, "/"), "error", clip(message(err), 500)), http.StatusSeeOther)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

var funcs = template.FuncMap{
	"money": money,
	"ago":   ago,
	"since": since,
	"stamp": stamp,
	"iso":   iso,
	"dur":   dur,
	"enum":  enumName,
	"lower": strings.ToLower,
	"pct":   pct,
	"short": shortID,
	"dict":  dict,
}

// dict pairs names with values, so a shared template can be given more
// than one: {{template "decide" (dict "A" .A "V" $v)}}.
func dict(kv ...any) (map[string]any, error) {
	if len(kv)%2 != 0 {
		return nil, fmt.Errorf("dict: odd number of arguments")
	}
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			return nil, fmt.Errorf("dict: key %v is not a string", kv[i])
		}
		m[k] = kv[i+1]
	}
	return m, nil
}

// money shows integer micro-dollars as dollars: cents, or more digits
// under a cent so a small model's cost is not shown as $0.00.
func money(micros int64) string {
	neg := micros < 0
	if neg {
		micros = -micros
	}
	var s string
	switch {
	case micros == 0:
		s = "$0.00"
	case micros < 10_000:
		s = fmt.Sprintf("$%.4f", float64(micros)/1e6)
	default:
		// Rounded to the cent, as the CLI shows it.
		cents := (micros + 5_000) / 10_000
		s = fmt.Sprintf("$%d.%02d", cents/100, cents%100)
	}
	if neg {
		return "−" + s
	}
	return s
}

func toTime(v any) time.Time {
	switch t := v.(type) {
	case *timestamppb.Timestamp:
		if t == nil || (t.Seconds == 0 && t.Nanos == 0) {
			return time.Time{}
		}
		return t.AsTime()
	case time.Time:
		return t
	}
	return time.Time{}
}

// iso is a timestamp for <time datetime> and the live countdowns.
func iso(v any) string {
	t := toTime(v)
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// stamp is a timestamp for people: UTC, to the second.
func stamp(v any) string {
	t := toTime(v)
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// ago is how long before now v was ("3m ago"), or how long until it is
// ("in 2m").
func ago(now time.Time, v any) string {
	t := toTime(v)
	if t.IsZero() {
		return "—"
	}
	d := now.Sub(t)
	switch {
	case d > -time.Second && d < time.Second:
		return "just now"
	case d < 0:
		return "in " + human(-d)
	}
	return human(d) + " ago"
}

// since is a span from v to now without a suffix ("3m").
func since(now time.Time, v any) string {
	t := toTime(v)
	if t.IsZero() {
		return "—"
	}
	return human(now.Sub(t))
}

func dur(v any) string {
	switch d := v.(type) {
	case *durationpb.Duration:
		if d == nil {
			return "—"
		}
		return human(d.AsDuration())
	case time.Duration:
		return human(d)
	}
	return "—"
}

// human is a span at the precision a person reads: 42s, 3m 12s, 5h 3m, 2d 4h.
func human(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d < time.Second:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
}

// enumName is an enum value without its type's prefix, as the CLI's
// tables show it: TASK_STATE_READY → READY.
func enumName(v any) string {
	e, ok := v.(protoreflect.Enum)
	if !ok {
		return fmt.Sprint(v)
	}
	d := e.Descriptor().Values().ByNumber(e.Number())
	if d == nil {
		return fmt.Sprint(e.Number())
	}
	name := string(d.Name())
	prefix := enumPrefix(string(e.Descriptor().Name()))
	return strings.TrimPrefix(name, prefix)
}

// enumPrefix turns TaskState into TASK_STATE_.
func enumPrefix(typ string) string {
	var b strings.Builder
	for i, r := range typ {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String()) + "_"
}

func pct(part, whole int64) int {
	if whole <= 0 || part <= 0 {
		return 0
	}
	p := float64(part) / float64(whole) * 100
	return int(math.Min(100, math.Round(p)))
}

// shortID is the head of a UUIDv7 that tells tasks apart on screen: its
// random tail. The full id is in the link and the title.
func shortID(id string) string {
	if len(id) == 36 {
		return id[:8] + "…" + id[len(id)-4:]
	}
	return id
}
