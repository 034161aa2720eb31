package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestHubDeliversMatchingKindsInOrder(t *testing.T) {
	h := NewHub(8)
	all := h.Subscribe()
	defer all.Close()
	alerts := h.Subscribe(KindAlert)
	defer alerts.Close()
	ctx := context.Background()
	h.Publish(ctx, Event{Kind: KindAlert, ID: "1"})
	h.Publish(ctx, Event{Kind: KindDigest, ID: "2"})
	h.Publish(ctx, Event{Kind: KindAlert, ID: "3"})
	for _, want := range []string{"1", "2", "3"} {
		if got := (<-all.Events()).ID; got != want {
			t.Errorf("all: got %s, want %s", got, want)
		}
	}
	for _, want := range []string{"1", "3"} {
		if got := (<-alerts.Events()).ID; got != want {
			t.Errorf("alerts: got %s, want %s", got, want)
		}
	}
	select {
	case e := <-alerts.Events():
		t.Errorf("alerts subscriber got a %s event", e.Kind)
	default:
	}
}

// A subscriber that stops reading is cut off once its buffer is full; the
// publisher and the other subscribers go on.
func TestHubCutsOffASlowSubscriberNotThePublisher(t *testing.T) {
	h := NewHub(2)
	slow := h.Subscribe()
	fast := h.Subscribe()
	defer fast.Close()
	ctx := context.Background()
	for i := range 10 {
		h.Publish(ctx, Event{Kind: KindAlert, ID: strconv.Itoa(i)})
		if got := (<-fast.Events()).ID; got != strconv.Itoa(i) {
			t.Fatalf("fast subscriber got %s, want %d", got, i)
		}
	}
	select {
	case <-slow.Done():
	default:
		t.Fatal("slow subscriber was not cut off")
	}
	if !errors.Is(slow.Err(), ErrSlowSubscriber) {
		t.Errorf("slow.Err() = %v", slow.Err())
	}
	if n := h.Subscribers(); n != 1 {
		t.Errorf("%d subscribers left, want 1", n)
	}
	slow.Close() // closing a cut-off subscription is harmless
	if slow.Err() == nil {
		t.Error("Close after a cut-off forgot why it ended")
	}
}

func TestFanoutStampsOnceForEverySink(t *testing.T) {
	var got []Event
	rec := PublisherFunc(func(_ context.Context, e Event) { got = append(got, e) })
	Fanout{rec, nil, rec}.Publish(context.Background(), Event{Kind: KindDigest})
	if len(got) != 2 || got[0].ID == "" || got[0].ID != got[1].ID || got[0].Time.IsZero() {
		t.Fatalf("sinks saw %+v", got)
	}
}

// receiver is a webhook endpoint answering with the statuses in turn
// (200 once they run out) and recording each request.
type receiver struct {
	mu       sync.Mutex
	statuses []int
	reqs     []*http.Request
	bodies   [][]byte
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.bodies = append(r.bodies, body)
	status := http.StatusOK
	if len(r.statuses) > 0 {
		status, r.statuses = r.statuses[0], r.statuses[1:]
	}
	r.mu.Unlock()
	w.WriteHeader(status)
}

func (r *receiver) hits() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

type outcome struct {
	attempts int
	err      error
}

// startHooks runs Webhooks against srv with recorded (not slept) backoffs.
func startHooks(t *testing.T, srv *httptest.Server, maxAttempts int, kinds ...Kind) (*Webhooks, <-chan outcome, func() []time.Duration) {
	t.Helper()
	done := make(chan outcome, 16)
	var (
		mu     sync.Mutex
		slept  []time.Duration
		cfgErr error
	)
	w, cfgErr := NewWebhooks(WebhooksConfig{
		Hooks:       []Webhook{{Name: "chat", URL: srv.URL + "/hook", Secret: "s3cret", Kinds: kinds}},
		MaxAttempts: maxAttempts, Backoff: time.Second, MaxBackoff: 5 * time.Second,
		Client: srv.Client(), Logger: quietLogger(),
		Sleep: func(_ context.Context, d time.Duration) error {
			mu.Lock()
			slept = append(slept, d)
			mu.Unlock()
			return nil
		},
		OnDone: func(_ string, _ Event, attempts int, err error) { done <- outcome{attempts, err} },
	})
	if cfgErr != nil {
		t.Fatal(cfgErr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = w.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	return w, done, func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Duration(nil), slept...)
	}
}

func wait(t *testing.T, done <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-done:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery outcome")
		return outcome{}
	}
}

func TestWebhookBodyHeadersAndSignature(t *testing.T) {
	rec := &receiver{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	w, done, _ := startHooks(t, srv, 3)
	at := time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC)
	w.Publish(context.Background(), Event{Kind: KindAlert, ID: "evt-1", Time: at, Title: "FIRING: disk_usage",
		Text: "disk on gpu-1 is 91% full", Attributes: map[string]string{"rule": "disk_usage", "host": "gpu-1"}})
	if o := wait(t, done); o.err != nil || o.attempts != 1 {
		t.Fatalf("delivery: %+v", o)
	}
	req, body := rec.reqs[0], rec.bodies[0]
	if req.Method != http.MethodPost || req.URL.Path != "/hook" || req.Header.Get("Content-Type") != "application/json" {
		t.Errorf("request %s %s %s", req.Method, req.URL.Path, req.Header.Get("Content-Type"))
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	if got["id"] != "evt-1" || got["kind"] != "alert" || got["time"] != "2026-11-27T04:00:00Z" || got["title"] != "FIRING: disk_usage" ||
		got["text"] != "disk on gpu-1 is 91% full" || got["attributes"].(map[string]any)["host"] != "gpu-1" || len(got) != 6 {
		t.Errorf("body %s", body)
	}
	if req.Header.Get(HeaderEvent) != "alert" || req.Header.Get(HeaderDelivery) != "evt-1" {
		t.Errorf("event headers %q %q", req.Header.Get(HeaderEvent), req.Header.Get(HeaderDelivery))
	}
	if ts, err := strconv.ParseInt(req.Header.Get(HeaderTimestamp), 10, 64); err != nil || ts <= 0 {
		t.Errorf("timestamp header %q", req.Header.Get(HeaderTimestamp))
	}
	// The receiver's check, done independently of Sign.
	sig := req.Header.Get(HeaderSignature)
	if !Verify("s3cret", body, sig) || Verify("wrong", body, sig) || Verify("s3cret", append(body, ' '), sig) {
		t.Errorf("signature %q does not verify the body with the secret only", sig)
	}
	if want := "sha256=" + hmacHex(t, "s3cret", body); sig != want {
		t.Errorf("signature %q, want %q", sig, want)
	}
}

func TestWebhookRetries5xxAnd429WithBackoff(t *testing.T) {
	rec := &receiver{statuses: []int{500, 503, 429}}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	w, done, slept := startHooks(t, srv, 5)
	w.Publish(context.Background(), Event{Kind: KindAlert, ID: "evt"})
	if o := wait(t, done); o.err != nil || o.attempts != 4 {
		t.Fatalf("delivery: %+v, want success on the 4th attempt", o)
	}
	if got, want := slept(), []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}; !equalDurations(got, want) {
		t.Errorf("backoffs %v, want %v", got, want)
	}
	// Every attempt is the same delivery.
	for i, r := range rec.reqs {
		if r.Header.Get(HeaderDelivery) != "evt" || string(rec.bodies[i]) != string(rec.bodies[0]) {
			t.Errorf("attempt %d differs", i+1)
		}
	}
}

// A 429's Retry-After (in seconds) sets the wait, capped at MaxBackoff.
func TestWebhookHonoursRetryAfter(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
		case 2:
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}))
	defer srv.Close()
	w, done, slept := startHooks(t, srv, 5)
	w.Publish(context.Background(), Event{Kind: KindAlert, ID: "evt"})
	if o := wait(t, done); o.err != nil || o.attempts != 3 {
		t.Fatalf("delivery: %+v, want success on the 3rd attempt", o)
	}
	if got, want := slept(), []time.Duration{3 * time.Second, 5 * time.Second}; !equalDurations(got, want) {
		t.Errorf("backoffs %v, want %v (Retry-After, then capped at MaxBackoff)", got, want)
	}
}

func TestWebhookGivesUpAfterMaxAttempts(t *testing.T) {
	rec := &receiver{statuses: []int{500, 500, 500, 500, 500, 500, 500, 500}}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	w, done, slept := startHooks(t, srv, 5)
	w.Publish(context.Background(), Event{Kind: KindAlert, ID: "evt"})
	o := wait(t, done)
	if o.err == nil || o.attempts != 5 || rec.hits() != 5 {
		t.Fatalf("delivery: %+v after %d requests, want failure after 5", o, rec.hits())
	}
	// Doubling, capped at MaxBackoff.
	if got, want := slept(), []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second}; !equalDurations(got, want) {
		t.Errorf("backoffs %v, want %v", got, want)
	}
}

func TestWebhookDoesNotRetryOther4xx(t *testing.T) {
	for _, status := range []int{400, 401, 404, 410} {
		rec := &receiver{statuses: []int{status}}
		srv := httptest.NewServer(rec)
		w, done, slept := startHooks(t, srv, 5)
		w.Publish(context.Background(), Event{Kind: KindAlert, ID: "evt"})
		o := wait(t, done)
		if o.err == nil || o.attempts != 1 || rec.hits() != 1 || len(slept()) != 0 {
			t.Errorf("status %d: %+v after %d requests, want one refused attempt", status, o, rec.hits())
		}
		srv.Close()
	}
}

func TestWebhookRetriesNetworkErrors(t *testing.T) {
	rec := &receiver{}
	srv := httptest.NewServer(rec)
	url := srv.URL
	srv.Close() // nothing listens there now
	w, err := NewWebhooks(WebhooksConfig{Hooks: []Webhook{{URL: url}}, MaxAttempts: 3, Logger: quietLogger(),
		Sleep: func(context.Context, time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	attempts, err := w.deliver(context.Background(), w.cfg.Hooks[0], Event{Kind: KindAlert, ID: "x"})
	if err == nil || attempts != 3 {
		t.Errorf("deliver to a closed port: %d attempts, %v; want 3 and an error", attempts, err)
	}
}

func TestWebhookKindsFilter(t *testing.T) {
	rec := &receiver{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	w, done, _ := startHooks(t, srv, 1, KindApproval)
	w.Publish(context.Background(), Event{Kind: KindAlert, ID: "skip"})
	w.Publish(context.Background(), Event{Kind: KindApproval, ID: "take"})
	wait(t, done)
	if rec.hits() != 1 || rec.reqs[0].Header.Get(HeaderDelivery) != "take" {
		t.Errorf("hook with kinds [approval] got %d requests", rec.hits())
	}
}

func TestWebhookConfigRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "not a url", "http://"} {
		if _, err := NewWebhooks(WebhooksConfig{Hooks: []Webhook{{URL: u}}}); err == nil {
			t.Errorf("url %q accepted", u)
		}
	}
}

// Publish must return at once even when the receiver hangs and the queue
// is full.
func TestWebhookPublishNeverBlocks(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	w, err := NewWebhooks(WebhooksConfig{Hooks: []Webhook{{URL: srv.URL}}, QueueSize: 2, Logger: quietLogger(), Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Run(ctx) }()
	returned := make(chan struct{})
	go func() {
		for range 100 {
			w.Publish(ctx, Event{Kind: KindAlert})
		}
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish blocked on a hanging receiver")
	}
}

func hmacHex(t *testing.T, secret string, body []byte) string {
	t.Helper()
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// BenchmarkHubPublish is one event fanned out to 16 subscribers; their
// buffers are drained outside the timer, so it measures the publisher's
// cost alone.
func BenchmarkHubPublish(b *testing.B) {
	const buffer = 1024
	h := NewHub(buffer)
	ctx := context.Background()
	subs := make([]*Subscription, 16)
	for i := range subs {
		subs[i] = h.Subscribe()
		defer subs[i].Close()
	}
	e := Event{Kind: KindAlert, ID: "x", Title: "t"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%buffer == buffer-1 {
			b.StopTimer()
			for _, s := range subs {
				for len(s.Events()) > 0 {
					<-s.Events()
				}
			}
			b.StartTimer()
		}
		h.Publish(ctx, e)
	}
	b.StopTimer()
	if n := h.Subscribers(); n != len(subs) {
		b.Errorf("%d subscribers left, want %d", n, len(subs))
	}
}

// A receiver that does not answer within the per-attempt timeout is a
// failed attempt, retried like a network error.
func TestWebhookAttemptTimeout(t *testing.T) {
	release := make(chan struct{})
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	w, err := NewWebhooks(WebhooksConfig{Hooks: []Webhook{{URL: srv.URL}}, MaxAttempts: 3, Timeout: 50 * time.Millisecond,
		Client: srv.Client(), Logger: quietLogger(), Sleep: func(context.Context, time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	attempts, err := w.deliver(context.Background(), w.cfg.Hooks[0], Event{Kind: KindAlert, ID: "slow"})
	if !errors.Is(err, context.DeadlineExceeded) || attempts != 3 || hits.Load() != 3 {
		t.Errorf("deliver to a hanging receiver: %d attempts (%d requests), %v", attempts, hits.Load(), err)
	}
}
