// Package console is the operator console: the factory in a browser, served
// by the control plane itself.
//
// It is an adapter, like the gRPC server, and it speaks to the domain
// through the very same API, in process: every page reads and every action
// changes through the control plane's gRPC services, called with the
// session's own token. So the policy table, request validation, rate
// limits, revocation and the audit log are the ones every other client
// meets, and they cannot drift apart; there is no second path to the store.
//
// A session is a short-lived operator token minted when an operator signs
// in with his own token (access.CreateParams.SessionOf names the parent, so
// revoking the parent revokes every session made from it). Its secret lives
// only in an HttpOnly, SameSite=Strict cookie; signing out revokes it.
// Every state-changing request carries a CSRF token derived from the
// session, and cross-origin requests are refused before that.
//
// Pages are server-rendered HTML with a little script: a page listens to
// /events (server-sent events fed by the API's watch streams) and re-fetches
// its own content when something it shows has changed.
package console

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/factory/factory/controlplane/access"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

//go:embed web
var webFS embed.FS

// DefaultSessionTTL is how long a console session lasts unless its parent
// token expires first: a working day, so the 7am approval and the evening
// look at spend need one sign-in.
const DefaultSessionTTL = 12 * time.Hour

// Config configures New.
type Config struct {
	// Conn reaches the control plane's gRPC API; the server wires an
	// in-process connection to its own gRPC server.
	Conn grpc.ClientConnInterface
	// Access checks sessions and signs operators in; sessions are tokens.
	Access *access.Service
	// Secure is set when the console is served over TLS: cookies are then
	// Secure and carry the __Host- prefix.
	Secure bool
	// SessionTTL bounds a session; 0 means DefaultSessionTTL.
	SessionTTL time.Duration
	// TokenFile is the bootstrap operator token's file; a one-time sign-in
	// link (SignInLink) signs in as that token. Empty: no links.
	TokenFile string
	Logger    *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// WithDefaults returns a copy with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.SessionTTL <= 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Server serves the console.
type Server struct {
	cfg       Config
	log       *slog.Logger
	pages     *pageSet
	static    http.Handler
	queue     factoryv1.QueueServiceClient
	budget    factoryv1.BudgetServiceClient
	approvals factoryv1.ApprovalServiceClient
	fleet     factoryv1.FleetServiceClient
	ops       factoryv1.OpsServiceClient
	tokens    factoryv1.AccessServiceClient

	signIns *signInLimiter

	linksMu sync.Mutex
	links   map[string]time.Time // one-time sign-in codes (hashed) → expiry
}

// New returns a console server.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if cfg.Conn == nil || cfg.Access == nil {
		return nil, errors.New("console: Config.Conn and Config.Access are required")
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	static, err := fs.Sub(webFS, "web/static")
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		pages:     pages,
		static:    http.StripPrefix("/static/", http.FileServerFS(static)),
		queue:     factoryv1.NewQueueServiceClient(cfg.Conn),
		budget:    factoryv1.NewBudgetServiceClient(cfg.Conn),
		approvals: factoryv1.NewApprovalServiceClient(cfg.Conn),
		fleet:     factoryv1.NewFleetServiceClient(cfg.Conn),
		ops:       factoryv1.NewOpsServiceClient(cfg.Conn),
		tokens:    factoryv1.NewAccessServiceClient(cfg.Conn),
		signIns:   newSignInLimiter(),
		links:     map[string]time.Time{},
	}, nil
}

// Handler returns the console's routes. Every page and action but signing
// in needs a session; every POST needs the session's CSRF token and must
// come from the console's own origin.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", s.staticFiles())
	mux.HandleFunc("GET /signin", s.signInPage)
	mux.HandleFunc("POST /signin", s.signIn)
	mux.HandleFunc("GET /signin/link", s.signInWithLink)
	mux.Handle("POST /signout", s.action(s.signOut))
	mux.Handle("GET /events", s.session(s.events))
	mux.Handle("GET /{$}", s.page(s.overview))
	s.routeTasks(mux)
	s.routeApprovals(mux)
	s.routeSpend(mux)
	s.routeFleet(mux)
	s.routeAlerts(mux)
	// The cross-origin check runs before anything else: a POST another
	// site makes the browser send is refused whatever cookie it carries.
	cop := http.NewCrossOriginProtection()
	return securityHeaders(cop.Handler(mux))
}

// Serve serves the console on lis until ctx ends, then shuts down within
// grace. tlsCfg, when set, serves HTTPS.
func (s *Server) Serve(ctx context.Context, lis net.Listener, tlsCfg *tls.Config, grace time.Duration) error {
	hs := &http.Server{
		Handler: s.Handler(),
		// No ReadTimeout: its deadline would end /events streams (the
		// server cancels a request whose connection read times out).
		// Headers are bounded here, bodies by maxFormBytes.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	if tlsCfg != nil {
		c := tlsCfg.Clone()
		// HTTP/2, so the event streams of many open pages share one
		// connection instead of using up the browser's six.
		c.NextProtos = []string{"h2", "http/1.1"}
		// A browser does not present the client certificates mutual TLS
		// asks gRPC callers for unless one is installed; the rule is the
		// same as gRPC's, so the same config applies.
		lis = tls.NewListener(lis, c)
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("console: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

func (s *Server) staticFiles() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Assets change only with the binary; the build's stamp in the URL
		// would allow immutable caching, a day is enough for a phone.
		w.Header().Set("Cache-Control", "public, max-age=86400")
		s.static.ServeHTTP(w, r)
	})
}

// securityHeaders keeps pages out of frames and other origins' scripts out
// of pages: everything the console runs or loads is its own.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}
