package probe

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// fixtureEntry is one recorded response from testdata (copies of
// ../shared/fixtures/services, whose README documents each service's API).
type fixtureEntry struct {
	Status    int               `json:"status"`
	Headers   map[string]string `json:"headers"`
	Body      json.RawMessage   `json:"body"`
	BodyText  *string           `json:"body_text"`
	BodyLines []string          `json:"body_lines"`
}

// serveFixture answers every request with one recorded response.
func serveFixture(t *testing.T, file, key string) string {
	t.Helper()
	raw, err := os.ReadFile("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]fixtureEntry
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	e, ok := all[key]
	if !ok {
		t.Fatalf("%s has no %q", file, key)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range e.Headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(e.Status)
		switch {
		case e.BodyText != nil:
			_, _ = w.Write([]byte(*e.BodyText))
		case e.BodyLines != nil:
			_, _ = w.Write([]byte(strings.Join(e.BodyLines, "\n")))
		default:
			_, _ = w.Write(e.Body)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestHTTPAgainstRecordedServices(t *testing.T) {
	cases := []struct {
		file, key string
		spec      Spec
		ok        bool
		detailHas string
	}{
		{"llamacpp-health.json", "GET /health (ready)", Spec{}, true, "HTTP 200"},
		{"llamacpp-health.json", "GET /health (model still loading)", Spec{}, false, "Loading model"},
		{"nats-healthz.json", "GET /healthz", Spec{}, true, "HTTP 200"},
		{"nats-healthz.json", "GET /healthz (jetstream configured but not running)", Spec{}, false, "JetStream not enabled (10076)"},
		{"grafana-health.json", "GET /api/health", Spec{ExpectJSON: map[string]string{"database": "ok"}}, true, ""},
		{"grafana-health.json", "GET /api/health (database unreachable)", Spec{}, false, "database failing"},
		{"qdrant.json", "GET /readyz (ready)", Spec{ExpectBody: "all shards are ready"}, true, ""},
		{"qdrant.json", "GET /readyz (not ready)", Spec{}, false, "some shards are not ready"},
		{"litellm-health.json", "GET /health/liveliness", Spec{}, true, ""},
		{"litellm-health.json", "GET /health/readiness", Spec{ExpectJSON: map[string]string{"db": "connected"}}, true, ""},
		// The trap: a 200 that says "healthy" while LiteLLM cannot reach its
		// database (spend logs are lost). Only the body tells.
		{"litellm-health.json", "GET /health/readiness (database unreachable)", Spec{ExpectJSON: map[string]string{"db": "connected"}}, false, `db is "disconnected"`},
		{"litellm-health.json", "GET /health/readiness (handler raised)", Spec{}, false, "Service Unhealthy (Event loop is closed)"},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			s := c.spec
			s.Name, s.Kind, s.Target = "svc", KindHTTP, serveFixture(t, c.file, c.key)
			r := Run(context.Background(), s)
			if r.OK != c.ok || !strings.Contains(r.Detail, c.detailHas) {
				t.Errorf("ok=%v detail=%q; want ok=%v detail containing %q", r.OK, r.Detail, c.ok, c.detailHas)
			}
			if r.Latency <= 0 || r.CheckedAt.IsZero() {
				t.Errorf("timing %+v", r)
			}
		})
	}
}

func TestHTTPTimeoutAndRedirect(t *testing.T) {
	block := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(block)
	start := time.Now()
	r := Run(context.Background(), Spec{Name: "slow", Kind: KindHTTP, Target: slow.URL, Timeout: 100 * time.Millisecond})
	if r.OK || !strings.Contains(r.Detail, "no answer within 100ms") || time.Since(start) > 2*time.Second {
		t.Errorf("%+v after %s", r, time.Since(start))
	}
	redir := httptest.NewServer(http.RedirectHandler("/login", http.StatusFound))
	defer redir.Close()
	if r := Run(context.Background(), Spec{Kind: KindHTTP, Target: redir.URL}); r.OK || !strings.Contains(r.Detail, "HTTP 302") {
		t.Errorf("redirect: %+v", r)
	}
}

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if r := Run(context.Background(), Spec{Kind: KindTCP, Target: addr}); !r.OK {
		t.Errorf("open port: %+v", r)
	}
	ln.Close()
	if r := Run(context.Background(), Spec{Kind: KindTCP, Target: addr}); r.OK || !strings.Contains(r.Detail, "refused") {
		t.Errorf("closed port: %+v", r)
	}
	if r := Run(context.Background(), Spec{Kind: "smtp", Target: addr}); r.OK || !strings.Contains(r.Detail, "unknown probe kind") {
		t.Errorf("unknown kind: %+v", r)
	}
}

// fakeRedis answers RESP the way a password-protected Redis does.
func fakeRedis(t *testing.T, password string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				authed := password == ""
				for {
					var args []string
					head, err := r.ReadString('\n')
					if err != nil {
						return
					}
					n := 0
					for _, ch := range strings.TrimSpace(head[1:]) {
						n = n*10 + int(ch-'0')
					}
					for range n {
						_, _ = r.ReadString('\n')
						a, _ := r.ReadString('\n')
						args = append(args, strings.TrimSpace(a))
					}
					switch {
					case args[0] == "AUTH" && args[1] == password:
						authed = true
						_, _ = c.Write([]byte("+OK\r\n"))
					case args[0] == "AUTH":
						_, _ = c.Write([]byte("-WRONGPASS invalid username-password pair or user is disabled.\r\n"))
					case !authed:
						_, _ = c.Write([]byte("-NOAUTH Authentication required.\r\n"))
					default:
						_, _ = c.Write([]byte("+PONG\r\n"))
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestRedisAgainstFake(t *testing.T) {
	open := fakeRedis(t, "")
	if r := Run(context.Background(), Spec{Kind: KindRedis, Target: open}); !r.OK || r.Detail != "PONG" {
		t.Errorf("open: %+v", r)
	}
	locked := fakeRedis(t, "s3cret")
	if r := Run(context.Background(), Spec{Kind: KindRedis, Target: locked}); r.OK || !strings.Contains(r.Detail, "NOAUTH") {
		t.Errorf("no password: %+v", r)
	}
	r := Run(context.Background(), Spec{Kind: KindRedis, Target: "redis://:s3cret@" + locked})
	if !r.OK || strings.Contains(r.Target, "s3cret") {
		t.Errorf("with password: %+v", r)
	}
	if r := Run(context.Background(), Spec{Kind: KindRedis, Target: "redis://:wrong@" + locked}); r.OK || !strings.Contains(r.Detail, "WRONGPASS") {
		t.Errorf("wrong password: %+v", r)
	}
}

func TestRedisReal(t *testing.T) {
	url := os.Getenv("FACTORY_TEST_REDIS_URL")
	if url == "" {
		t.Skip("FACTORY_TEST_REDIS_URL not set: no real Redis to PING")
	}
	if r := Run(context.Background(), Spec{Kind: KindRedis, Target: url}); !r.OK {
		t.Errorf("%+v", r)
	}
}

func TestPostgresReal(t *testing.T) {
	dsn := os.Getenv("FACTORY_TEST_POSTGRES_URL")
	if dsn == "" {
		t.Skip("FACTORY_TEST_POSTGRES_URL not set: no real PostgreSQL to probe")
	}
	if r := Run(context.Background(), Spec{Kind: KindPostgres, Target: dsn}); !r.OK || !strings.HasPrefix(r.Detail, "ready") {
		t.Errorf("%+v", r)
	}
}

func TestPostgresDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := Run(context.Background(), Spec{Kind: KindPostgres, Target: "postgres://factory:pw@" + addr + "/factory?connect_timeout=1"})
	if r.OK || strings.Contains(r.Target, ":pw@") {
		t.Errorf("%+v", r)
	}
}

func TestGRPCHealth(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	if r := Run(context.Background(), Spec{Kind: KindGRPC, Target: ln.Addr().String()}); !r.OK || r.Detail != "SERVING" {
		t.Errorf("%+v", r)
	}
	hs.SetServingStatus("factory.v1.QueueService", healthpb.HealthCheckResponse_NOT_SERVING)
	if r := Run(context.Background(), Spec{Kind: KindGRPC, Target: ln.Addr().String(), Service: "factory.v1.QueueService"}); r.OK || !strings.Contains(r.Detail, "NOT_SERVING") {
		t.Errorf("%+v", r)
	}
}

func TestRunAllIsConcurrent(t *testing.T) {
	block := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(block)
	specs := make([]Spec, 5)
	for i := range specs {
		specs[i] = Spec{Name: string(rune('a' + i)), Kind: KindHTTP, Target: slow.URL, Timeout: 200 * time.Millisecond}
	}
	start := time.Now()
	res := RunAll(context.Background(), specs)
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Errorf("5 probes of 200ms took %s", took)
	}
	for i, r := range res {
		if r.Name != specs[i].Name || r.OK {
			t.Errorf("%d: %+v", i, r)
		}
	}
}
