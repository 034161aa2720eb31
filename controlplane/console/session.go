package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/metadata"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// sessionDescription marks the tokens the console mints, in `token ls`.
const sessionDescription = "console session"

// signInRPC names sign-ins in the audit log, beside the API's methods.
const signInRPC = "console/SignIn"

// maxFormBytes bounds a form: the longest is a reason or instructions,
// which the API caps far below this.
const maxFormBytes = 64 << 10

// linkTTL bounds a one-time sign-in link: it is printed for the operator
// who just started the control plane.
const linkTTL = 15 * time.Minute

// request is one authenticated console request: the session it runs as,
// and a context that carries the session's token to the API.
type request struct {
	w    http.ResponseWriter
	r    *http.Request
	ctx  context.Context
	who  access.Caller
	csrf string
}

// cookieName is the session cookie's name: with TLS the __Host- prefix
// makes the browser refuse it unless it is Secure, host-only and for /.
func (s *Server) cookieName() string {
	if s.cfg.Secure {
		return "__Host-factory_session"
	}
	return "factory_session"
}

// csrfToken derives the session's CSRF token from its secret: nothing to
// store, different for every session, useless to anyone without the
// cookie.
func csrfToken(secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("factory console csrf"))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// authenticate resolves the request's session, or says why there is none.
func (s *Server) authenticate(r *http.Request) (*request, error) {
	c, err := r.Cookie(s.cookieName())
	if err != nil || c.Value == "" {
		return nil, errNoSession
	}
	who, err := s.cfg.Access.Authenticate(r.Context(), c.Value)
	if err != nil {
		return nil, err
	}
	// Only operators sign in; a cookie carrying another kind of secret is
	// not a session, whatever it is.
	if who.Role != store.RoleOperator {
		return nil, errNoSession
	}
	ctx := metadata.AppendToOutgoingContext(r.Context(), "authorization", "Bearer "+c.Value)
	return &request{r: r, ctx: ctx, who: who, csrf: csrfToken(c.Value)}, nil
}

var errNoSession = errors.New("no session")

// session wraps a handler that needs a session: without one, a page
// request goes to the sign-in page (and comes back after), anything else
// gets 401.
func (s *Server) session(h func(*request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rq, err := s.authenticate(r)
		if err != nil {
			s.noSession(w, r, err)
			return
		}
		rq.w = w
		h(rq)
	})
}

func (s *Server) noSession(w http.ResponseWriter, r *http.Request, err error) {
	var authErr *access.AuthError
	if err != nil && !errors.Is(err, errNoSession) && !errors.As(err, &authErr) {
		// The store failed: not the operator's fault, and not a reason to
		// drop his cookie.
		s.log.WarnContext(r.Context(), "console: checking a session failed", "err", err)
		http.Error(w, "the control plane could not check your session; try again", http.StatusServiceUnavailable)
		return
	}
	s.clearCookie(w)
	if r.Method == http.MethodGet && r.Header.Get(fragmentHeader) == "" && r.URL.Path != "/events" {
		http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	http.Error(w, "sign in first", http.StatusUnauthorized)
}

// page wraps a page handler: a session, and no caching of what it shows.
func (s *Server) page(h func(*request) error) http.Handler {
	return s.session(func(rq *request) {
		rq.w.Header().Set("Cache-Control", "no-store")
		if err := h(rq); err != nil {
			s.fail(rq, err)
		}
	})
}

// action wraps a state-changing handler: a session and its CSRF token.
// The handler redirects on success; on failure the operator is sent back
// where he came from with the API's message.
func (s *Server) action(h func(*request) error) http.Handler {
	return s.session(func(rq *request) {
		rq.w.Header().Set("Cache-Control", "no-store")
		rq.r.Body = http.MaxBytesReader(rq.w, rq.r.Body, maxFormBytes)
		if err := rq.r.ParseForm(); err != nil {
			http.Error(rq.w, "malformed form: "+err.Error(), http.StatusBadRequest)
			return
		}
		got := rq.r.PostForm.Get("csrf")
		if got == "" {
			got = rq.r.Header.Get("X-CSRF-Token")
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(rq.csrf)) != 1 {
			http.Error(rq.w, "this form is stale or did not come from the console (CSRF token missing or wrong): reload the page and try again", http.StatusForbidden)
			return
		}
		if err := h(rq); err != nil {
			s.actionFailed(rq, err)
		}
	})
}

// back is where an action returns to: the form's "back" field when it is
// a path on this console, else fallback. An absolute or scheme-relative
// URL is never followed (no open redirect).
func back(rq *request, fallback string) string {
	b := rq.r.PostForm.Get("back")
	if b == "" || !strings.HasPrefix(b, "/") || strings.HasPrefix(b, "//") || strings.HasPrefix(b, "/\\") {
		return fallback
	}
	return b
}

// done redirects after a successful action, with a note for the page.
func done(rq *request, fallback, note string) error {
	http.Redirect(rq.w, rq.r, withParam(back(rq, fallback), "note", note), http.StatusSeeOther)
	return nil
}

func withParam(path, key, value string) string {
	u, err := url.Parse(path)
	if err != nil {
		return path
	}
	q := u.Query()
	q.Del("note")
	q.Del("error")
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

func (s *Server) clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: s.cfg.Secure, SameSite: http.SameSiteStrictMode})
}

func (s *Server) setSession(w http.ResponseWriter, secret string, expires time.Time) {
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: secret, Path: "/", Expires: expires,
		HttpOnly: true, Secure: s.cfg.Secure, SameSite: http.SameSiteStrictMode})
}

type signInData struct {
	Next  string
	Error string
}

func (s *Server) signInPage(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authenticate(r); err == nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	s.renderBare(w, http.StatusOK, "signin", signInData{Next: safeNext(r.URL.Query().Get("next"))})
}

// safeNext keeps a post-sign-in destination on this console.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") || strings.HasPrefix(next, "/signin") {
		return "/"
	}
	return next
}

// signIn exchanges an operator token for a session. Failures are limited
// per client address, as failed gRPC authentications are.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "malformed form", http.StatusBadRequest)
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	ip := clientIP(r)
	if !s.signIns.allowed(ip) {
		s.renderBare(w, http.StatusTooManyRequests, "signin", signInData{Next: next, Error: "too many failed sign-ins from this address; wait a minute"})
		return
	}
	secret := strings.TrimSpace(r.PostForm.Get("token"))
	who, err := s.cfg.Access.Authenticate(r.Context(), secret)
	if err != nil {
		var authErr *access.AuthError
		if !errors.As(err, &authErr) {
			s.log.WarnContext(r.Context(), "console: sign-in lookup failed", "err", err)
			s.renderBare(w, http.StatusServiceUnavailable, "signin", signInData{Next: next, Error: "the control plane could not check the token; try again"})
			return
		}
		s.signIns.failed(ip)
		s.renderBare(w, http.StatusUnauthorized, "signin", signInData{Next: next, Error: "that token does not work: " + authErr.Reason})
		return
	}
	if who.Role != store.RoleOperator {
		s.signIns.failed(ip)
		s.auditRefusal(r.Context(), who, "only operator tokens sign in to the console; this is a "+string(who.Role)+" token")
		s.renderBare(w, http.StatusForbidden, "signin", signInData{Next: next, Error: fmt.Sprintf("only operator tokens sign in to the console; this is a %s token (%s)", who.Role, who.Subject)})
		return
	}
	if err := s.startSession(w, r, who); err != nil {
		s.log.ErrorContext(r.Context(), "console: starting a session failed", "err", err)
		s.renderBare(w, http.StatusServiceUnavailable, "signin", signInData{Next: next, Error: "could not start a session: " + err.Error()})
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// startSession mints the session token, records the sign-in and sets the
// cookie. The session ends no later than the token it came from.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, parent access.Caller) error {
	now := s.cfg.Now()
	ttl := s.cfg.SessionTTL
	if !parent.ExpiresAt.IsZero() {
		// A second short of the parent's end: the token's own clock
		// reading comes later than this one.
		left := parent.ExpiresAt.Sub(now) - time.Second
		if left <= time.Second {
			return errors.New("the token expires now")
		}
		ttl = min(ttl, left)
	}
	ctx := context.WithoutCancel(r.Context())
	tok, secret, err := s.cfg.Access.Create(ctx, access.CreateParams{
		Role:        store.RoleOperator,
		Subject:     parent.Subject,
		Description: sessionDescription + " (" + clipUA(r.UserAgent()) + ")",
		TTL:         ttl,
		CreatedBy:   parent.Subject + " (" + parent.TokenID + ")",
		SessionOf:   parent.TokenID,
	})
	if err != nil {
		return err
	}
	if err := s.cfg.Access.Append(ctx, []*store.AuditEntry{{
		Who: parent.Subject, Role: parent.Role, TokenID: parent.TokenID, RPC: signInRPC,
		Target: tok.ID, Outcome: "OK", Detail: "from " + clientIP(r),
	}}); err != nil {
		s.log.ErrorContext(ctx, "console: sign-in not audited", "err", err, "who", parent.Subject, "token_id", parent.TokenID, "session", tok.ID)
	}
	s.setSession(w, secret, now.Add(ttl))
	return nil
}

func (s *Server) auditRefusal(ctx context.Context, who access.Caller, detail string) {
	e := &store.AuditEntry{Who: who.Subject, Role: who.Role, TokenID: who.TokenID, RPC: signInRPC, Outcome: "PERMISSION_DENIED", Detail: detail}
	if err := s.cfg.Access.Append(context.WithoutCancel(ctx), []*store.AuditEntry{e}); err != nil {
		s.log.WarnContext(ctx, "console: refused sign-in not audited", "err", err, "who", who.Subject)
	}
}

func clipUA(ua string) string {
	if len(ua) > 80 {
		ua = ua[:80]
	}
	if ua == "" {
		return "no user agent"
	}
	return ua
}

// signOut revokes the session's token through the API, so the sign-out is
// audited like any revocation, and drops the cookie.
func (s *Server) signOut(rq *request) error {
	_, err := s.tokens.RevokeToken(rq.ctx, &factoryv1.RevokeTokenRequest{TokenId: rq.who.TokenID})
	if err != nil {
		return err
	}
	s.clearCookie(rq.w)
	http.Redirect(rq.w, rq.r, "/signin", http.StatusSeeOther)
	return nil
}

// SignInLink returns a one-time path that signs in as the bootstrap
// operator token, for `make run` to print: the first visit needs no
// copy-paste. It works once, within linkTTL, and only while the token
// file still holds a working operator token.
func (s *Server) SignInLink() (string, error) {
	if s.cfg.TokenFile == "" {
		return "", errors.New("console: no bootstrap token file")
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	code := base64.RawURLEncoding.EncodeToString(b)
	s.linksMu.Lock()
	defer s.linksMu.Unlock()
	now := s.cfg.Now()
	for k, exp := range s.links {
		if now.After(exp) {
			delete(s.links, k)
		}
	}
	s.links[access.HashSecret(code)] = now.Add(linkTTL)
	return "/signin/link?code=" + code, nil
}

func (s *Server) signInWithLink(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	// A limited client is refused before its code is looked at, so it
	// neither learns whether the code works nor uses it up.
	ip := clientIP(r)
	if !s.signIns.allowed(ip) {
		s.renderBare(w, http.StatusTooManyRequests, "signin", signInData{Next: "/", Error: "too many failed sign-ins from this address; wait a minute"})
		return
	}
	code := r.URL.Query().Get("code")
	h := access.HashSecret(code)
	s.linksMu.Lock()
	exp, ok := s.links[h]
	delete(s.links, h) // once, used or not
	s.linksMu.Unlock()
	if !ok || s.cfg.Now().After(exp) || code == "" {
		s.signIns.failed(ip)
		s.renderBare(w, http.StatusUnauthorized, "signin", signInData{Next: "/", Error: "that sign-in link was used already or has expired; sign in with the operator token"})
		return
	}
	raw, err := os.ReadFile(s.cfg.TokenFile)
	if err != nil {
		s.renderBare(w, http.StatusUnauthorized, "signin", signInData{Next: "/", Error: "the bootstrap token file cannot be read: " + err.Error()})
		return
	}
	who, err := s.cfg.Access.Authenticate(r.Context(), strings.TrimSpace(string(raw)))
	if err != nil || who.Role != store.RoleOperator {
		s.renderBare(w, http.StatusUnauthorized, "signin", signInData{Next: "/", Error: "the bootstrap token no longer works; sign in with another operator token"})
		return
	}
	if err := s.startSession(w, r, who); err != nil {
		s.renderBare(w, http.StatusServiceUnavailable, "signin", signInData{Next: "/", Error: "could not start a session: " + err.Error()})
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// signInLimiter bounds failed sign-ins per client: a burst of 10, then
// one every 6 seconds. Successful sign-ins cost nothing. An IPv6 client is
// its /64, which one host usually holds whole.
type signInLimiter struct {
	mu   sync.Mutex
	byIP map[string]*rate.Limiter
	// overflow is shared by the clients that find the map full of others
	// still paying for their failures: many addresses can neither wipe one
	// address's record nor grow the map without bound.
	overflow  *rate.Limiter
	lastSweep time.Time
}

const (
	maxSignInPeers = 10000
	signInBurst    = 10
	signInEvery    = 6 * time.Second
)

func newSignInLimiter() *signInLimiter {
	return &signInLimiter{byIP: map[string]*rate.Limiter{}, overflow: rate.NewLimiter(rate.Every(signInEvery), signInBurst)}
}

func (l *signInLimiter) get(ip string) *rate.Limiter {
	key := ip
	if a, err := netip.ParseAddr(ip); err == nil && a.Unmap().Is6() {
		key = netip.PrefixFrom(a, 64).Masked().String()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lim, ok := l.byIP[key]; ok {
		return lim
	}
	if len(l.byIP) >= maxSignInPeers {
		// Sweeping is a pass over the map: at most once per refill of a
		// token, however many new clients arrive.
		if now := time.Now(); now.Sub(l.lastSweep) >= signInEvery {
			l.lastSweep = now
			l.forgetIdle()
		}
		if len(l.byIP) >= maxSignInPeers {
			return l.overflow
		}
	}
	lim := rate.NewLimiter(rate.Every(signInEvery), signInBurst)
	l.byIP[key] = lim
	return lim
}

// forgetIdle drops the clients whose limiter has filled up again: a new
// limiter would be the same.
func (l *signInLimiter) forgetIdle() {
	for k, lim := range l.byIP {
		if lim.Tokens() >= signInBurst {
			delete(l.byIP, k)
		}
	}
}

func (l *signInLimiter) allowed(ip string) bool { return l.get(ip).Tokens() >= 1 }
func (l *signInLimiter) failed(ip string)       { l.get(ip).Allow() }
