package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// The headers of a webhook delivery.
const (
	HeaderEvent     = "X-Factory-Event"
	HeaderDelivery  = "X-Factory-Delivery"
	HeaderSignature = "X-Factory-Signature"
	HeaderTimestamp = "X-Factory-Timestamp"
)

// Webhook is one receiver of events.
type Webhook struct {
	// Name identifies it in logs.
	Name string `yaml:"name"`
	// URL receives a POST per event.
	URL string `yaml:"url"`
	// Secret keys the X-Factory-Signature HMAC; empty sends no signature.
	Secret string `yaml:"secret"`
	// Kinds, when set, are the only kinds it receives.
	Kinds []Kind `yaml:"kinds"`
}

// WebhooksConfig configures NewWebhooks.
type WebhooksConfig struct {
	Hooks []Webhook
	// QueueSize is how many events per hook may wait for delivery (1024);
	// an event that finds the queue full is dropped and logged, because
	// Publish never blocks.
	QueueSize int
	// MaxAttempts is how many times a delivery is tried (5).
	MaxAttempts int
	// Backoff is the wait after the first failed attempt (1s); it doubles
	// after each, up to MaxBackoff (1m).
	Backoff    time.Duration
	MaxBackoff time.Duration
	// Timeout bounds each attempt (10s).
	Timeout time.Duration
	// Client sends the requests (a new http.Client).
	Client *http.Client
	Logger *slog.Logger
	// Sleep waits between attempts; tests record the waits instead.
	Sleep func(ctx context.Context, d time.Duration) error
	// OnDone, when set, hears each delivery's outcome: nil, or why it gave up.
	OnDone func(hook string, e Event, attempts int, err error)
}

// WithDefaults returns a copy with every unset field at its default.
func (c WebhooksConfig) WithDefaults() WebhooksConfig {
	if c.QueueSize <= 0 {
		c.QueueSize = 1024
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if c.Backoff <= 0 {
		c.Backoff = time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = time.Minute
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Client == nil {
		c.Client = &http.Client{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	return c
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Validate checks the hooks.
func (c WebhooksConfig) Validate() error {
	for i, h := range c.Hooks {
		u, err := url.Parse(h.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("webhook %d (%s): url %q must be an http or https URL", i, h.Name, h.URL)
		}
	}
	return nil
}

// Webhooks delivers events to the configured hooks as signed JSON POSTs,
// from a queue per hook drained by its own worker, so one slow receiver
// delays no other and never the publisher.
type Webhooks struct {
	cfg    WebhooksConfig
	queues []chan Event

	runOnce sync.Once
}

// NewWebhooks returns the deliverer; Run starts its workers.
func NewWebhooks(cfg WebhooksConfig) (*Webhooks, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for i := range cfg.Hooks {
		if cfg.Hooks[i].Name == "" {
			cfg.Hooks[i].Name = "webhook-" + strconv.Itoa(i+1)
		}
	}
	w := &Webhooks{cfg: cfg, queues: make([]chan Event, len(cfg.Hooks))}
	for i := range w.queues {
		w.queues[i] = make(chan Event, cfg.QueueSize)
	}
	return w, nil
}

// Publish implements Publisher: it queues e for every hook that wants it.
func (w *Webhooks) Publish(_ context.Context, e Event) {
	e = Stamp(e, time.Now)
	for i, h := range w.cfg.Hooks {
		if len(h.Kinds) > 0 && !slices.Contains(h.Kinds, e.Kind) {
			continue
		}
		select {
		case w.queues[i] <- e:
		default:
			w.cfg.Logger.Warn("webhook queue full: event dropped", "webhook", h.Name, "event", e.ID, "kind", string(e.Kind))
			if w.cfg.OnDone != nil {
				w.cfg.OnDone(h.Name, e, 0, errors.New("queue full"))
			}
		}
	}
}

// Run delivers queued events until ctx ends. Call it once.
func (w *Webhooks) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	w.runOnce.Do(func() {
		for i := range w.cfg.Hooks {
			wg.Go(func() { w.work(ctx, i) })
		}
	})
	wg.Wait()
	return nil
}

func (w *Webhooks) work(ctx context.Context, i int) {
	h := w.cfg.Hooks[i]
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-w.queues[i]:
			attempts, err := w.deliver(ctx, h, e)
			if err != nil && ctx.Err() == nil {
				w.cfg.Logger.Warn("webhook delivery failed", "webhook", h.Name, "event", e.ID, "kind", string(e.Kind),
					"attempts", attempts, "err", err)
			}
			if w.cfg.OnDone != nil {
				w.cfg.OnDone(h.Name, e, attempts, err)
			}
		}
	}
}

// Body is the JSON a webhook receives.
type Body struct {
	ID         string            `json:"id"`
	Kind       Kind              `json:"kind"`
	Time       time.Time         `json:"time"`
	Title      string            `json:"title"`
	Text       string            `json:"text"`
	Attributes map[string]string `json:"attributes"`
}

// Sign returns the X-Factory-Signature value of body under secret.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether signature is body's under secret, in constant
// time: what a receiver written in Go calls.
func Verify(secret string, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(signature))
}

// errPermanent marks a refusal that a retry cannot change.
type errPermanent struct{ error }

func (w *Webhooks) deliver(ctx context.Context, h Webhook, e Event) (int, error) {
	attrs := e.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	body, err := json.Marshal(Body{ID: e.ID, Kind: e.Kind, Time: e.Time.UTC(), Title: e.Title, Text: e.Text, Attributes: attrs})
	if err != nil {
		return 0, err
	}
	wait := w.cfg.Backoff
	for attempt := 1; ; attempt++ {
		retryAfter, err := w.attempt(ctx, h, e, body)
		if err == nil {
			return attempt, nil
		}
		var perm errPermanent
		if errors.As(err, &perm) || attempt >= w.cfg.MaxAttempts || ctx.Err() != nil {
			return attempt, err
		}
		d := wait
		if retryAfter > d {
			d = min(retryAfter, w.cfg.MaxBackoff)
		}
		if err := w.cfg.Sleep(ctx, d); err != nil {
			return attempt, err
		}
		wait = min(2*wait, w.cfg.MaxBackoff)
	}
}

// attempt makes one POST. A network error, a 5xx or a 429 is worth another
// try (with the 429's Retry-After, when it gives seconds); another 4xx is
// permanent.
func (w *Webhooks) attempt(ctx context.Context, h Webhook, e Event, body []byte) (retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return 0, errPermanent{err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "factory-controlplane")
	req.Header.Set(HeaderEvent, string(e.Kind))
	req.Header.Set(HeaderDelivery, e.ID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(time.Now().Unix(), 10))
	if h.Secret != "" {
		req.Header.Set(HeaderSignature, Sign(h.Secret, body))
	}
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode < 300:
		return 0, nil
	case resp.StatusCode == http.StatusTooManyRequests:
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			retryAfter = time.Duration(s) * time.Second
		}
		return retryAfter, fmt.Errorf("%s answered %s", h.Name, resp.Status)
	case resp.StatusCode >= 500:
		return 0, fmt.Errorf("%s answered %s", h.Name, resp.Status)
	default:
		return 0, errPermanent{fmt.Errorf("%s refused the event: %s", h.Name, resp.Status)}
	}
}
