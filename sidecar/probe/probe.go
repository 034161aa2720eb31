// Package probe checks the local services an agentic factory host runs
// (LiteLLM, llama.cpp, Ollama, Qdrant, Neo4j, PostgreSQL, Grafana, Redis,
// NATS): HTTP GET with an expected status and body, TCP connect, Redis PING,
// PostgreSQL connect and ping, and gRPC health. Every probe has a timeout
// and reports why it failed in words an operator can act on.
package probe

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Kinds of probe.
const (
	KindHTTP     = "http"
	KindTCP      = "tcp"
	KindRedis    = "redis"
	KindPostgres = "postgres"
	KindGRPC     = "grpc"
)

// DefaultTimeout bounds a probe whose Spec sets none: a local service that
// takes longer than this to answer is unhealthy for an agent too.
const DefaultTimeout = 3 * time.Second

// Spec is one configured check.
type Spec struct {
	Name string `yaml:"name" json:"name"`
	// Kind is http, tcp, redis, postgres or grpc.
	Kind string `yaml:"kind" json:"kind"`
	// Target is a URL (http), host:port (tcp, grpc), host:port or
	// redis://[:password@]host:port (redis), or a PostgreSQL connection
	// string (postgres).
	Target string `yaml:"target" json:"target"`
	// ExpectStatus is the HTTP status that means healthy (200 by default).
	ExpectStatus int `yaml:"expect_status" json:"expect_status,omitempty"`
	// ExpectBody, when set, must occur in the HTTP body.
	ExpectBody string `yaml:"expect_body" json:"expect_body,omitempty"`
	// ExpectJSON, when set, are top-level keys of a JSON body and the string
	// each must have. Some services answer 200 while broken: LiteLLM's
	// readiness says {"status":"healthy","db":"disconnected"}.
	ExpectJSON map[string]string `yaml:"expect_json" json:"expect_json,omitempty"`
	// Headers are sent with an HTTP probe (an API key, for instance).
	Headers map[string]string `yaml:"headers" json:"-"`
	// Service is the gRPC health service name ("" asks about the server).
	Service string        `yaml:"service" json:"service,omitempty"`
	Timeout time.Duration `yaml:"timeout" json:"timeout,omitempty"`
}

// Result is one probe's outcome.
type Result struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Target string `json:"target"`
	OK     bool   `json:"ok"`
	// Detail says what was seen: the HTTP status, the service's own error
	// text ("Loading model"), the Redis reply.
	Detail    string        `json:"detail,omitempty"`
	Latency   time.Duration `json:"latency_ns"`
	CheckedAt time.Time     `json:"checked_at"`
}

// RunAll runs every probe concurrently (so N slow services cost one
// timeout, not N) and returns the results in spec order.
func RunAll(ctx context.Context, specs []Spec) []Result {
	out := make([]Result, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Go(func() { out[i] = Run(ctx, s) })
	}
	wg.Wait()
	return out
}

// Run runs one probe within its timeout.
func Run(ctx context.Context, s Spec) Result {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var detail string
	var err error
	switch s.Kind {
	case KindHTTP:
		detail, err = probeHTTP(ctx, s)
	case KindTCP:
		detail, err = probeTCP(ctx, s.Target)
	case KindRedis:
		detail, err = probeRedis(ctx, s.Target)
	case KindPostgres:
		detail, err = probePostgres(ctx, s.Target)
	case KindGRPC:
		detail, err = probeGRPC(ctx, s.Target, s.Service)
	default:
		err = fmt.Errorf("unknown probe kind %q (want http, tcp, redis, postgres or grpc)", s.Kind)
	}
	r := Result{Name: s.Name, Kind: s.Kind, Target: redact(s.Target), OK: err == nil, Detail: detail, Latency: time.Since(start), CheckedAt: start.UTC()}
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("no answer within %s: %w", timeout, err)
		}
		r.Detail = err.Error()
	}
	return r
}

// maxBody caps what an HTTP probe reads: health bodies are small, and a
// misconfigured target (a model download URL) must not be slurped.
const maxBody = 64 << 10

func probeHTTP(ctx context.Context, s Spec) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Target, nil)
	if err != nil {
		return "", err
	}
	for k, v := range s.Headers {
		req.Header.Set(k, v)
	}
	res, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	if err != nil {
		return "", fmt.Errorf("HTTP %d, body unreadable: %w", res.StatusCode, err)
	}
	want := s.ExpectStatus
	if want == 0 {
		want = http.StatusOK
	}
	if res.StatusCode != want {
		return "", fmt.Errorf("HTTP %d, want %d: %s", res.StatusCode, want, serviceError(body))
	}
	if s.ExpectBody != "" && !strings.Contains(string(body), s.ExpectBody) {
		return "", fmt.Errorf("HTTP %d but body lacks %q: %s", res.StatusCode, s.ExpectBody, snippet(body))
	}
	if len(s.ExpectJSON) > 0 {
		var obj map[string]any
		if err := json.Unmarshal(body, &obj); err != nil {
			return "", fmt.Errorf("HTTP %d but body is not a JSON object: %s", res.StatusCode, snippet(body))
		}
		for k, v := range s.ExpectJSON {
			if got := fmt.Sprint(obj[k]); got != v {
				return "", fmt.Errorf("HTTP %d but %s is %q, want %q", res.StatusCode, k, got, v)
			}
		}
	}
	return fmt.Sprintf("HTTP %d", res.StatusCode), nil
}

// httpClient never follows redirects: a health URL that redirects (to a
// login page, typically) is misconfigured, and following it would report
// the login page's 200 as healthy.
var httpClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// serviceError pulls the service's own words out of an error body: the
// shapes of llama.cpp ({"error":{"message":"Loading model"}}), NATS
// ({"error":"JetStream not enabled (10076)"}), FastAPI ({"detail":...}) and
// Grafana ({"database":"failing"}); anything else is shown as a snippet.
func serviceError(body []byte) string {
	var obj map[string]any
	if json.Unmarshal(body, &obj) == nil {
		switch e := obj["error"].(type) {
		case map[string]any:
			if m, ok := e["message"].(string); ok {
				return m
			}
		case string:
			return e
		}
		if d, ok := obj["detail"].(string); ok {
			return d
		}
		if db, ok := obj["database"].(string); ok && db != "ok" {
			return "database " + db
		}
	}
	return snippet(body)
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}

func probeTCP(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	c.Close()
	return "connected", nil
}

// probeRedis speaks just enough RESP for AUTH and PING, so the sidecar needs
// no Redis client library for one command.
func probeRedis(ctx context.Context, target string) (string, error) {
	addr, password := target, ""
	if strings.Contains(target, "://") {
		u, err := url.Parse(target)
		if err != nil {
			return "", err
		}
		addr = u.Host
		if p, ok := u.User.Password(); ok {
			password = p
		}
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), "6379")
		}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	r := bufio.NewReader(c)
	cmd := func(args ...string) (string, error) {
		var b strings.Builder
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
		if _, err := io.WriteString(c, b.String()); err != nil {
			return "", err
		}
		line, err := r.ReadString('\n')
		return strings.TrimRight(line, "\r\n"), err
	}
	if password != "" {
		if reply, err := cmd("AUTH", password); err != nil {
			return "", err
		} else if reply != "+OK" {
			return "", fmt.Errorf("AUTH refused: %s", reply)
		}
	}
	reply, err := cmd("PING")
	if err != nil {
		return "", err
	}
	if reply != "+PONG" {
		// -NOAUTH (a password is needed), -LOADING (still reading its
		// dataset) and the like: the server's own words say which.
		return "", fmt.Errorf("PING answered %s", reply)
	}
	return "PONG", nil
}

func probePostgres(ctx context.Context, dsn string) (string, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.Ping(ctx); err != nil {
		return "", err
	}
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return "", err
	}
	if inRecovery {
		// Reachable but read-only: fine for a replica, and worth saying.
		return "ready (standby)", nil
	}
	return "ready", nil
}

func probeGRPC(ctx context.Context, target, service string) (string, error) {
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	res, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return "", err
	}
	if res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return "", fmt.Errorf("health says %s", res.GetStatus())
	}
	return "SERVING", nil
}

// redact drops a password from a URL-shaped target so results can be
// printed and sent to the control plane.
func redact(target string) string {
	u, err := url.Parse(target)
	if err != nil || u.User == nil {
		return target
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
