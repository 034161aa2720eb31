package console_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/factory/factory/controlplane/server"
	"github.com/factory/factory/controlplane/transport"
	"github.com/factory/factory/controlplane/transport/transporttest"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// The console's security, driven over HTTP as a browser (or an attacker)
// would, with the rest of the factory checked over gRPC: no page or action
// without a session, sessions that are new secrets and end when they
// should, CSRF and cross-origin refusals, audit under the session's token,
// no open redirects, and the headers that keep pages out of frames.

// secCookieName is the session cookie's name without TLS.
const secCookieName = "factory_session"

// secReply is one HTTP exchange, body read.
type secReply struct {
	status int
	header http.Header
	body   string
}

func (p secReply) location() string { return p.header.Get("Location") }

// cookie is the cookie of that name the answer set, or nil.
func (p secReply) cookie(name string) *http.Cookie {
	for _, c := range (&http.Response{Header: p.header}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// secDo sends req with c and reads the whole answer.
func secDo(t testing.TB, c *http.Client, req *http.Request) secReply {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return secReply{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func secGet(t testing.TB, c *http.Client, u string) secReply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return secDo(t, c, req)
}

// secStreamStatus is the status a stream answers with, without waiting
// for the stream: a stream that opens never ends by itself.
func secStreamStatus(t testing.TB, c *http.Client, u string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// secPost sends a form, with extra headers as name, value pairs.
func secPost(t testing.TB, c *http.Client, u string, form url.Values, headers ...string) secReply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return secDo(t, c, req)
}

// secSignIn posts the sign-in form with the token and returns the answer;
// on success c's jar holds the session cookie.
func secSignIn(t testing.TB, f *factory, c *http.Client, token string, next string) secReply {
	t.Helper()
	form := url.Values{"token": {token}}
	if next != "" {
		form.Set("next", next)
	}
	return secPost(t, c, f.URL+"/signin", form)
}

// secSignedIn returns a client signed in with the token and the session's
// cookie value.
func secSignedIn(t testing.TB, f *factory, token string) (*http.Client, string) {
	t.Helper()
	c := client(t)
	p := secSignIn(t, f, c, token, "")
	if p.status != http.StatusSeeOther {
		t.Fatalf("sign-in: %d, want 303; body: %s", p.status, p.body)
	}
	return c, secCookie(t, f, c, secCookieName)
}

// secCookie returns the value c's jar sends the console for the cookie.
func secCookie(t testing.TB, f *factory, c *http.Client, name string) string {
	t.Helper()
	u, err := url.Parse(f.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == name {
			return ck.Value
		}
	}
	t.Fatalf("no %s cookie in the jar", name)
	return ""
}

// secReplay is a fresh client that sends only the given session cookie:
// a stolen or remembered cookie, replayed.
func secReplay(t testing.TB, f *factory, value string) *http.Client {
	t.Helper()
	c := client(t)
	u, err := url.Parse(f.URL)
	if err != nil {
		t.Fatal(err)
	}
	c.Jar.SetCookies(u, []*http.Cookie{{Name: secCookieName, Value: value, Path: "/"}})
	return c
}

var (
	secCSRFAttr  = regexp.MustCompile(`data-csrf="([^"]+)"`)
	secCSRFField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
)

// secCSRF reads the session's CSRF token off the overview, as the page's
// forms and script do.
func secCSRF(t testing.TB, f *factory, c *http.Client) string {
	t.Helper()
	p := secGet(t, c, f.URL+"/")
	if p.status != http.StatusOK {
		t.Fatalf("GET / signed in: %d, want 200", p.status)
	}
	m := secCSRFAttr.FindStringSubmatch(p.body)
	if m == nil {
		m = secCSRFField.FindStringSubmatch(p.body)
	}
	if m == nil {
		t.Fatal("the overview carries no CSRF token (data-csrf or a csrf field)")
	}
	return m[1]
}

// secWantSignIn asserts a page sent the browser to sign in.
func secWantSignIn(t testing.TB, what string, p secReply) {
	t.Helper()
	if p.status != http.StatusSeeOther || !strings.HasPrefix(p.location(), "/signin") {
		t.Fatalf("%s: %d to %q, want 303 to /signin", what, p.status, p.location())
	}
}

// secAPI is the API, as one token calls it.
type secAPI struct {
	queue  factoryv1.QueueServiceClient
	access factoryv1.AccessServiceClient
	budget factoryv1.BudgetServiceClient
}

func secAPIOf(t testing.TB, f *factory, token string) secAPI {
	t.Helper()
	conn := f.dial(t, token)
	return secAPI{
		queue:  factoryv1.NewQueueServiceClient(conn),
		access: factoryv1.NewAccessServiceClient(conn),
		budget: factoryv1.NewBudgetServiceClient(conn),
	}
}

func secPaused(t testing.TB, a secAPI) bool {
	t.Helper()
	st, err := a.queue.GetQueueStats(context.Background(), &factoryv1.GetQueueStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st.GetPaused()
}

func secTokenID(t testing.TB, f *factory, secret string) string {
	t.Helper()
	who, err := secAPIOf(t, f, secret).access.WhoAmI(context.Background(), &factoryv1.WhoAmIRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return who.GetTokenId()
}

// secSessionsOf lists the console sessions made from the parent token,
// revoked and expired ones included. The session's creator names its
// parent: "subject (parent id)".
func secSessionsOf(t testing.TB, a secAPI, parentID string) []*factoryv1.Token {
	t.Helper()
	r, err := a.access.ListTokens(context.Background(), &factoryv1.ListTokensRequest{IncludeInactive: true, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []*factoryv1.Token
	for _, tok := range r.GetTokens() {
		if strings.HasPrefix(tok.GetDescription(), "console session") && strings.Contains(tok.GetCreatedBy(), parentID) {
			out = append(out, tok)
		}
	}
	return out
}

// secOnlySession is the one console session made from the parent.
func secOnlySession(t testing.TB, a secAPI, parentID string) *factoryv1.Token {
	t.Helper()
	s := secSessionsOf(t, a, parentID)
	if len(s) != 1 {
		t.Fatalf("%d console sessions made from token %s, want 1", len(s), parentID)
	}
	return s[0]
}

func secAudit(t testing.TB, a secAPI) []*factoryv1.AuditEntry {
	t.Helper()
	r, err := a.access.ListAudit(context.Background(), &factoryv1.ListAuditRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetEntries()
}

// secFindAudit returns the first entry for the rpc that match says is the one.
func secFindAudit(entries []*factoryv1.AuditEntry, rpc string, match func(*factoryv1.AuditEntry) bool) *factoryv1.AuditEntry {
	for _, e := range entries {
		if e.GetRpc() == rpc && (match == nil || match(e)) {
			return e
		}
	}
	return nil
}

func secCreateTask(t testing.TB, a secAPI, title string) string {
	t.Helper()
	r, err := a.queue.CreateTask(context.Background(), &factoryv1.CreateTaskRequest{Title: title})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetTask().GetId()
}

func secTask(t testing.TB, a secAPI, id string) *factoryv1.Task {
	t.Helper()
	r, err := a.queue.GetTask(context.Background(), &factoryv1.GetTaskRequest{TaskId: id})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetTask()
}

// TestNoSessionNoAccess: without a session (no cookie, a made-up one, or
// a secret that is not an operator's) every page sends the browser to sign
// in, the event stream and every action answer 401, and nothing changes.
func TestNoSessionNoAccess(t *testing.T) {
	f := startFactory(t, nil)
	op := secAPIOf(t, f, f.Operator)
	task := secCreateTask(t, op, "must stay as it is")
	before := secTask(t, op, task)
	_, agentSecret := f.token(t, factoryv1.Role_ROLE_AGENT, "forge")

	pages := []string{"/", "/tasks", "/tasks/" + task, "/approvals", "/approvals/ap-1", "/spend", "/fleet", "/alerts"}
	actions := []string{"/signout", "/tasks/" + task + "/move", "/tasks/" + task + "/requeue", "/tasks/" + task + "/kill",
		"/tasks/" + task + "/priority", "/queue/pause", "/queue/resume", "/approvals/ap-1/decide", "/emergency/rearm",
		"/emergency/stop", "/alerts/1/ack", "/alerts/1/silence", "/silences/1/expire"}
	// Every field an action might read, so that a missing field is never
	// why it was refused.
	form := url.Values{"csrf": {"0123456789abcdef0123456789abcdef"}, "reason": {"no session"}, "to": {"FAILED"},
		"priority": {"999"}, "decision": {"approve"}, "note": {"no session"}, "duration": {"1h"}, "back": {"/"}}

	for _, tc := range []struct {
		name   string
		cookie string // "" sends none
	}{
		{"no cookie", ""},
		{"made-up cookie", "fst_made-up-secret-0123456789"},
		{"an agent's secret as the cookie", agentSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := client(t)
			if tc.cookie != "" {
				c = secReplay(t, f, tc.cookie)
			}
			for _, path := range pages {
				p := secGet(t, c, f.URL+path)
				want := "/signin?next=" + url.QueryEscape(path)
				if p.status != http.StatusSeeOther || p.location() != want {
					t.Errorf("GET %s: %d to %q, want 303 to %q", path, p.status, p.location(), want)
				}
			}
			if code := secStreamStatus(t, c, f.URL+"/events?topics=tasks"); code != http.StatusUnauthorized {
				t.Errorf("GET /events: %d, want 401", code)
			}
			for _, path := range actions {
				if p := secPost(t, c, f.URL+path, form); p.status != http.StatusUnauthorized {
					t.Errorf("POST %s: %d (to %q), want 401", path, p.status, p.location())
				}
			}
		})
	}

	if secPaused(t, op) {
		t.Error("the queue was paused without a session")
	}
	after := secTask(t, op, task)
	if after.GetState() != before.GetState() || after.GetPriority() != before.GetPriority() {
		t.Errorf("task changed without a session: %s priority %d, was %s priority %d",
			after.GetState(), after.GetPriority(), before.GetState(), before.GetPriority())
	}
	es, err := op.budget.GetEmergencyStop(context.Background(), &factoryv1.GetEmergencyStopRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if es.GetState().GetStopped() {
		t.Error("the fleet was stopped without a session")
	}
	if s := secSessionsOf(t, op, secTokenID(t, f, f.Operator)); len(s) != 0 {
		t.Errorf("%d sessions exist, though no one signed in", len(s))
	}
}

// TestSignIn: an operator token buys a session, a new secret in a cookie
// scripts and other sites cannot use; other tokens buy nothing, and both
// outcomes are audited.
func TestSignIn(t *testing.T) {
	f := startFactory(t, nil)
	op := secAPIOf(t, f, f.Operator)
	operatorID := secTokenID(t, f, f.Operator)

	t.Run("operator", func(t *testing.T) {
		c := client(t)
		start := time.Now()
		p := secSignIn(t, f, c, f.Operator, "")
		if p.status != http.StatusSeeOther || p.location() != "/" {
			t.Fatalf("sign-in: %d to %q, want 303 to /", p.status, p.location())
		}
		ck := p.cookie(secCookieName)
		if ck == nil {
			t.Fatalf("no %s cookie set; Set-Cookie: %q", secCookieName, p.header.Values("Set-Cookie"))
		}
		if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" {
			t.Errorf("cookie %q: HttpOnly %v, SameSite %v, Path %q; want HttpOnly, SameSite=Strict, Path=/",
				p.header.Get("Set-Cookie"), ck.HttpOnly, ck.SameSite, ck.Path)
		}
		if !ck.Expires.After(start) {
			t.Errorf("cookie expires %v, want a time after sign-in (%v)", ck.Expires, start)
		}
		if ck.Value == "" || ck.Value == f.Operator || strings.Contains(ck.Value, f.Operator) {
			t.Error("the session cookie carries the operator token itself, not a new secret")
		}
		if got := secTokenID(t, f, ck.Value); got == operatorID {
			t.Errorf("the cookie's secret is the operator token %s, want a session token of its own", got)
		}
		if p := secGet(t, c, f.URL+"/"); p.status != http.StatusOK {
			t.Fatalf("GET / signed in: %d, want 200", p.status)
		}

		session := secOnlySession(t, op, operatorID)
		if session.GetRole() != factoryv1.Role_ROLE_OPERATOR {
			t.Errorf("session token role %s, want OPERATOR", session.GetRole())
		}
		e := secFindAudit(secAudit(t, op), "console/SignIn", func(e *factoryv1.AuditEntry) bool { return e.GetOutcome() == "OK" })
		if e == nil {
			t.Fatal("no console/SignIn OK entry in the audit log")
		}
		if e.GetTokenId() != operatorID || e.GetTarget() != session.GetId() {
			t.Errorf("sign-in audited with token %q target %q, want token %s (the operator's) target %s (the session)",
				e.GetTokenId(), e.GetTarget(), operatorID, session.GetId())
		}
	})

	t.Run("wrong token", func(t *testing.T) {
		c := client(t)
		p := secSignIn(t, f, c, "fst_not-a-real-token", "")
		if p.status != http.StatusUnauthorized {
			t.Errorf("sign-in with a wrong token: %d, want 401", p.status)
		}
		if v := p.header.Values("Set-Cookie"); len(v) != 0 {
			t.Errorf("a failed sign-in set cookies: %q", v)
		}
	})

	for _, tc := range []struct {
		role    factoryv1.Role
		subject string
	}{
		{factoryv1.Role_ROLE_AGENT, "forge"},
		{factoryv1.Role_ROLE_SIDECAR, "gpu-01"},
	} {
		t.Run(tc.role.String(), func(t *testing.T) {
			id, secret := f.token(t, tc.role, tc.subject)
			c := client(t)
			p := secSignIn(t, f, c, secret, "")
			if p.status != http.StatusForbidden {
				t.Errorf("sign-in with a %s token: %d, want 403", tc.role, p.status)
			}
			if v := p.header.Values("Set-Cookie"); len(v) != 0 {
				t.Errorf("a refused sign-in set cookies: %q", v)
			}
			if p := secGet(t, c, f.URL+"/"); p.status != http.StatusSeeOther {
				t.Errorf("GET / after a refused sign-in: %d, want 303", p.status)
			}
			if s := secSessionsOf(t, op, id); len(s) != 0 {
				t.Errorf("a %s token got %d console sessions", tc.role, len(s))
			}
			e := secFindAudit(secAudit(t, op), "console/SignIn", func(e *factoryv1.AuditEntry) bool { return e.GetTokenId() == id })
			if e == nil {
				t.Fatalf("the refused sign-in of token %s is not in the audit log", id)
			}
			if e.GetOutcome() != "PERMISSION_DENIED" || e.GetWho() != tc.subject {
				t.Errorf("refusal audited as %s by %q, want PERMISSION_DENIED by %q", e.GetOutcome(), e.GetWho(), tc.subject)
			}
		})
	}

	// Headers are tested here, where a session exists: they must be on
	// the pages a session sees as well as on the sign-in page.
	t.Run("security headers", func(t *testing.T) {
		c, _ := secSignedIn(t, f, f.Operator)
		for _, path := range []string{"/", "/tasks", "/approvals", "/spend", "/fleet", "/alerts", "/signin"} {
			p := secGet(t, c, f.URL+path)
			secWantHeaders(t, "GET "+path, p)
		}
		secWantHeaders(t, "GET / signed out", secGet(t, client(t), f.URL+"/"))
	})
}

func secWantHeaders(t testing.TB, what string, p secReply) {
	t.Helper()
	csp := p.header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("%s: Content-Security-Policy %q lacks %s", what, csp, want)
		}
	}
	if got := p.header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("%s: X-Content-Type-Options %q, want nosniff", what, got)
	}
}

// TestActionsNeedCSRFAndSameOrigin: a signed-in browser's POST changes
// nothing without the session's CSRF token, or from another site even with
// it; with it, the change is made and audited under the session's token.
func TestActionsNeedCSRFAndSameOrigin(t *testing.T) {
	f := startFactory(t, nil)
	op := secAPIOf(t, f, f.Operator)
	operatorID := secTokenID(t, f, f.Operator)
	c, _ := secSignedIn(t, f, f.Operator)
	csrf := secCSRF(t, f, c)
	session := secOnlySession(t, op, operatorID)
	pause := f.URL + "/queue/pause"

	for _, tc := range []struct {
		name    string
		form    url.Values
		headers []string
	}{
		{"no csrf", url.Values{"reason": {"maintenance"}}, nil},
		{"wrong csrf", url.Values{"reason": {"maintenance"}, "csrf": {strings.Repeat("0", len(csrf))}}, nil},
		{"cross-site fetch", url.Values{"reason": {"maintenance"}, "csrf": {csrf}}, []string{"Sec-Fetch-Site", "cross-site"}},
		{"another origin", url.Values{"reason": {"maintenance"}, "csrf": {csrf}}, []string{"Origin", "https://evil.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if p := secPost(t, c, pause, tc.form, tc.headers...); p.status != http.StatusForbidden {
				t.Errorf("POST /queue/pause: %d (to %q), want 403", p.status, p.location())
			}
			if secPaused(t, op) {
				t.Fatal("the queue was paused")
			}
		})
	}

	t.Run("pause and resume with the csrf token", func(t *testing.T) {
		p := secPost(t, c, pause, url.Values{"reason": {"maintenance"}, "csrf": {csrf}})
		if p.status != http.StatusSeeOther {
			t.Fatalf("POST /queue/pause: %d, want 303", p.status)
		}
		if !secPaused(t, op) {
			t.Fatal("the queue is not paused after a POST with the CSRF token")
		}
		secWantAuditedAs(t, op, "/factory.v1.QueueService/PauseQueue", session, "")

		p = secPost(t, c, f.URL+"/queue/resume", url.Values{"csrf": {csrf}})
		if p.status != http.StatusSeeOther {
			t.Fatalf("POST /queue/resume: %d, want 303", p.status)
		}
		if secPaused(t, op) {
			t.Fatal("the queue is still paused after resume")
		}
		secWantAuditedAs(t, op, "/factory.v1.QueueService/ResumeQueue", session, "")
	})

	t.Run("kill a task", func(t *testing.T) {
		task := secCreateTask(t, op, "to be killed from the console")
		p := secPost(t, c, f.URL+"/tasks/"+task+"/kill", url.Values{"reason": {"runaway"}, "csrf": {csrf}})
		if p.status != http.StatusSeeOther || strings.Contains(p.location(), "error=") {
			t.Fatalf("POST /tasks/%s/kill: %d to %q, want 303 without an error", task, p.status, p.location())
		}
		if st := secTask(t, op, task).GetState(); st != factoryv1.TaskState_TASK_STATE_FAILED {
			t.Fatalf("killed task is %s, want FAILED", st)
		}
		secWantAuditedAs(t, op, "/factory.v1.QueueService/MoveTask", session, task)
	})

	// A form's "back" field is where the action returns; another site is
	// never one of those places.
	t.Run("no open redirect after an action", func(t *testing.T) {
		for _, back := range []string{"https://evil.example/x", "//evil.example/x", `/\evil.example/x`} {
			p := secPost(t, c, f.URL+"/queue/resume", url.Values{"csrf": {csrf}, "back": {back}})
			if p.status != http.StatusSeeOther || !secLocal(p.location()) {
				t.Errorf("back=%q: %d to %q, want 303 to a path on the console", back, p.status, p.location())
			}
		}
	})
}

// secWantAuditedAs asserts the first listed entry for rpc (on target, when
// given) was made with the session's token, in its operator's name.
func secWantAuditedAs(t testing.TB, a secAPI, rpc string, session *factoryv1.Token, target string) {
	t.Helper()
	e := secFindAudit(secAudit(t, a), rpc, func(e *factoryv1.AuditEntry) bool {
		return e.GetOutcome() == "OK" && (target == "" || e.GetTarget() == target)
	})
	if e == nil {
		t.Fatalf("no OK audit entry for %s", rpc)
	}
	if e.GetTokenId() != session.GetId() || e.GetWho() != session.GetSubject() {
		t.Errorf("%s audited with token %q as %q, want the session's token %s as %q",
			rpc, e.GetTokenId(), e.GetWho(), session.GetId(), session.GetSubject())
	}
}

// secLocal reports whether a Location stays on this site: a path, not
// an absolute or scheme-relative URL a browser would leave for.
func secLocal(loc string) bool {
	return strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "//") && !strings.HasPrefix(loc, `/\`)
}

// TestSignInNextStaysLocal: the page to go to after signing in is a path
// on the console, never another site.
func TestSignInNextStaysLocal(t *testing.T) {
	f := startFactory(t, nil)
	for _, next := range []string{"https://evil.example", "//evil.example", `/\evil.example`, "javascript:alert(1)"} {
		p := secSignIn(t, f, client(t), f.Operator, next)
		if p.status != http.StatusSeeOther || p.location() != "/" {
			t.Errorf("next=%q: %d to %q, want 303 to /", next, p.status, p.location())
		}
	}
	if p := secSignIn(t, f, client(t), f.Operator, "/tasks?state=READY"); p.location() != "/tasks?state=READY" {
		t.Errorf("next=/tasks?state=READY: to %q, want there", p.location())
	}
	c, _ := secSignedIn(t, f, f.Operator)
	if p := secGet(t, c, f.URL+"/signin?next="+url.QueryEscape("https://evil.example")); p.status != http.StatusSeeOther || p.location() != "/" {
		t.Errorf("GET /signin?next=https://evil.example signed in: %d to %q, want 303 to /", p.status, p.location())
	}
}

// TestSignOutAndRevocation: signing out revokes the session's token, so
// a copy of the cookie is worthless; revoking the token a session was made
// from ends the session at once.
func TestSignOutAndRevocation(t *testing.T) {
	f := startFactory(t, nil)
	op := secAPIOf(t, f, f.Operator)

	t.Run("sign out", func(t *testing.T) {
		c, cookie := secSignedIn(t, f, f.Operator)
		csrf := secCSRF(t, f, c)
		p := secPost(t, c, f.URL+"/signout", url.Values{"csrf": {csrf}})
		if p.status != http.StatusSeeOther || p.location() != "/signin" {
			t.Fatalf("POST /signout: %d to %q, want 303 to /signin", p.status, p.location())
		}
		secWantSignIn(t, "GET / with the signed-out cookie", secGet(t, secReplay(t, f, cookie), f.URL+"/"))
		session := secOnlySession(t, op, secTokenID(t, f, f.Operator))
		if session.GetRevokedAt() == nil {
			t.Errorf("session token %s not revoked after signing out", session.GetId())
		}
	})

	t.Run("revoking the parent token", func(t *testing.T) {
		parentID, parent := f.token(t, factoryv1.Role_ROLE_OPERATOR, "alice")
		c, _ := secSignedIn(t, f, parent)
		if p := secGet(t, c, f.URL+"/"); p.status != http.StatusOK {
			t.Fatalf("GET / signed in: %d, want 200", p.status)
		}
		if _, err := op.access.RevokeToken(context.Background(), &factoryv1.RevokeTokenRequest{TokenId: parentID}); err != nil {
			t.Fatal(err)
		}
		secWantSignIn(t, "GET / after the parent token was revoked", secGet(t, c, f.URL+"/"))
		if s := secOnlySession(t, op, parentID); s.GetRevokedAt() == nil {
			t.Errorf("session token %s not revoked with its parent", s.GetId())
		}
	})

	// A session never outlives the token it was made from: a token with a
	// minute left (the API's shortest) gives a minute, not a working day.
	t.Run("short-lived parent token", func(t *testing.T) {
		r, err := op.access.CreateToken(context.Background(), &factoryv1.CreateTokenRequest{
			Role: factoryv1.Role_ROLE_OPERATOR, Subject: "bob", ExpiresIn: durationpb.New(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		c := client(t)
		p := secSignIn(t, f, c, r.GetSecret(), "")
		if p.status != http.StatusSeeOther {
			t.Fatalf("sign-in: %d, want 303", p.status)
		}
		ck := p.cookie(secCookieName)
		if ck == nil {
			t.Fatalf("no %s cookie set", secCookieName)
		}
		parentExpires := r.GetToken().GetExpiresAt().AsTime()
		// The cookie's time has whole seconds.
		if d := ck.Expires.Sub(parentExpires); d > time.Second || d < -2*time.Second {
			t.Errorf("cookie expires %v, want with the token, at %v", ck.Expires, parentExpires)
		}
		// The session's end is computed from the clock a moment after the
		// parent's was read; a second covers that, not a working day.
		s := secOnlySession(t, op, r.GetToken().GetId())
		if s.GetExpiresAt().AsTime().After(parentExpires.Add(time.Second)) {
			t.Errorf("session token expires %v, after its parent's %v", s.GetExpiresAt().AsTime(), parentExpires)
		}
	})
}

// TestSessionExpires: a session ends after the configured time, whatever
// the browser keeps.
func TestSessionExpires(t *testing.T) {
	f := startFactory(t, func(cfg *server.Config) { cfg.Console.SessionTTL = 2 * time.Second })
	c, cookie := secSignedIn(t, f, f.Operator)
	if p := secGet(t, c, f.URL+"/"); p.status != http.StatusOK {
		t.Fatalf("GET / signed in: %d, want 200", p.status)
	}
	time.Sleep(2500 * time.Millisecond)
	// The jar drops the cookie once its Expires passes; a client that kept
	// it (or a thief) must be refused by the server as well.
	secWantSignIn(t, "GET / after the session's time", secGet(t, c, f.URL+"/"))
	secWantSignIn(t, "GET / with the expired session's cookie replayed", secGet(t, secReplay(t, f, cookie), f.URL+"/"))
}

// TestSessionCookieUnderTLS: over HTTPS the cookie is Secure and carries
// the __Host- prefix, so no plaintext page or subdomain can set or read it.
func TestSessionCookieUnderTLS(t *testing.T) {
	pki := transporttest.New(t)
	f := startFactory(t, func(cfg *server.Config) {
		cfg.TLS = transport.ServerTLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey}
	})
	if !strings.HasPrefix(f.URL, "https://") {
		t.Fatalf("console URL %q under TLS, want https", f.URL)
	}
	pem, err := os.ReadFile(pki.ServerCA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("the test CA did not parse")
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(c.CloseIdleConnections)

	p := secSignIn(t, f, c, f.Operator, "")
	if p.status != http.StatusSeeOther {
		t.Fatalf("sign-in over TLS: %d, want 303", p.status)
	}
	ck := p.cookie("__Host-factory_session")
	if ck == nil {
		t.Fatalf("no __Host-factory_session cookie; Set-Cookie: %q", p.header.Values("Set-Cookie"))
	}
	if !ck.Secure || !ck.HttpOnly || ck.Path != "/" || ck.Domain != "" {
		t.Errorf("cookie %q: want Secure, HttpOnly, Path=/ and no Domain", p.header.Get("Set-Cookie"))
	}
	if p := secGet(t, c, f.URL+"/"); p.status != http.StatusOK {
		t.Fatalf("GET / over TLS signed in: %d, want 200", p.status)
	}
}

// TestSignInFailuresLimited: a client that keeps failing to sign in, with
// wrong tokens or tokens of another role, is refused before its next
// attempt is even looked at: a working operator token from that address
// is refused too, a refused agent token is not audited, and the one-time
// link is not used up; another address is not limited.
func TestSignInFailuresLimited(t *testing.T) {
	f := startFactory(t, nil)
	op := secAPIOf(t, f, f.Operator)
	agentID, agent := f.token(t, factoryv1.Role_ROLE_AGENT, "forge")
	c := client(t)
	for i := range 10 {
		token, want := "fst_not-a-real-token", http.StatusUnauthorized
		if i%2 == 1 {
			token, want = agent, http.StatusForbidden
		}
		if p := secSignIn(t, f, c, token, ""); p.status != want {
			t.Fatalf("failed sign-in %d: %d, want %d", i+1, p.status, want)
		}
	}
	refusals := func() int {
		n := 0
		for _, e := range secAudit(t, op) {
			if e.GetRpc() == "console/SignIn" && e.GetTokenId() == agentID {
				n++
			}
		}
		return n
	}
	before := refusals()

	for _, tc := range []struct{ what, token string }{
		{"a wrong token", "fst_not-a-real-token"},
		{"an agent token", agent},
		{"the operator token", f.Operator},
	} {
		p := secSignIn(t, f, c, tc.token, "")
		if p.status != http.StatusTooManyRequests {
			t.Errorf("sign-in with %s after 10 failures: %d, want 429", tc.what, p.status)
		}
		if v := p.header.Values("Set-Cookie"); len(v) != 0 {
			t.Errorf("a limited sign-in with %s set cookies: %q", tc.what, v)
		}
	}
	if after := refusals(); after != before {
		t.Errorf("the agent token's limited sign-in was looked at: %d refusals audited, want %d", after, before)
	}
	if p := secGet(t, client(t), f.URL+f.SignInPath); p.status != http.StatusTooManyRequests {
		t.Errorf("the one-time link from a limited address: %d, want 429", p.status)
	}
	if s := secSessionsOf(t, op, secTokenID(t, f, f.Operator)); len(s) != 0 {
		t.Errorf("a limited address got %d console sessions", len(s))
	}

	// Another loopback address (Linux answers on all of 127/8) has its own
	// count, and the link the limited address was refused still works.
	other := client(t)
	other.Transport = &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}
	if p := secGet(t, other, f.URL+f.SignInPath); p.status != http.StatusSeeOther {
		t.Errorf("the one-time link from another address: %d, want 303", p.status)
	}
}
