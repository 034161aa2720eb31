package server

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"golang.org/x/time/rate"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

// CallerKey names the caller a call is charged to for rate limiting.
type CallerKey func(ctx context.Context) string

// PeerIP keys callers by the IP address they connect from. The port is left
// out: a caller opening many connections still gets one bucket.
func PeerIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host
	}
	return p.Addr.String()
}

// RateLimit is a token bucket per caller: each caller may make PerSecond
// calls a second on average and Burst at once. A refused call gets
// RESOURCE_EXHAUSTED naming the limit. Opening a stream counts as one call.
type RateLimit struct {
	// PerSecond is the sustained rate; 0 turns the limit off.
	PerSecond float64
	// Burst is the bucket size; 0 means PerSecond rounded up.
	Burst int
	// Key names the caller; nil means PeerIP. Once calls carry tokens this
	// becomes the token's id, so agents behind one address don't share a
	// bucket.
	Key CallerKey
}

// rateLimited exempts health checks: a load balancer or the sidecar probing
// liveness must never be told the server is unhealthy because a noisy
// neighbour spent the bucket.
var rateLimited = selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
	return c.Service != healthpb.Health_ServiceDesc.ServiceName
})

func (r RateLimit) limiter(log *slog.Logger) *callerLimiter {
	if r.PerSecond <= 0 {
		return nil
	}
	burst := r.Burst
	if burst <= 0 {
		burst = int(math.Ceil(r.PerSecond))
	}
	key := r.Key
	if key == nil {
		key = PeerIP
	}
	return &callerLimiter{perSecond: r.PerSecond, burst: burst, key: key, log: log, buckets: map[string]*bucket{}, sweepAt: minSweep}
}

const (
	// minSweep is how many callers the limiter tracks before it first drops
	// idle ones.
	minSweep = 1024
	// warnEvery spaces out the warnings about one caller: a flood of
	// refusals must not turn into a flood of log lines.
	warnEvery = time.Minute
)

// callerLimiter implements the ratelimit middleware's Limiter with one
// token bucket per caller.
type callerLimiter struct {
	perSecond float64
	burst     int
	key       CallerKey
	log       *slog.Logger

	mu      sync.Mutex
	buckets map[string]*bucket
	sweepAt int
}

type bucket struct {
	tokens   *rate.Limiter
	warnedAt time.Time // guarded by callerLimiter.mu
}

// Limit refuses the call when its caller's bucket is empty.
func (l *callerLimiter) Limit(ctx context.Context) error {
	key := l.key(ctx)
	b := l.bucket(key)
	if b.tokens.Allow() {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	warn := now.Sub(b.warnedAt) >= warnEvery
	if warn {
		b.warnedAt = now
	}
	l.mu.Unlock()
	if warn {
		l.log.WarnContext(ctx, "caller over the rate limit; refusing its calls (logged once a minute)", "caller", key, "rate_limit", l.perSecond, "burst", l.burst)
	}
	return fmt.Errorf("caller %s is over the rate limit of %g requests/s (burst %d)", key, l.perSecond, l.burst)
}

func (l *callerLimiter) bucket(key string) *bucket {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.sweepAt {
			l.sweep(time.Now())
		}
		b = &bucket{tokens: rate.NewLimiter(rate.Limit(l.perSecond), l.burst)}
		l.buckets[key] = b
	}
	return b
}

// sweep forgets callers whose buckets have refilled: a full bucket behaves
// exactly like a new one, so dropping it changes nothing but memory. The
// next sweep waits until the map has doubled, which keeps the cost per
// call constant however many callers come and go.
func (l *callerLimiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, k)
		}
	}
	l.sweepAt = max(2*len(l.buckets), minSweep)
}
