package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/access"
)

// The failed-authentication limit's defaults: no honest client fails to
// authenticate twenty times a second, and a guesser at this rate needs
// longer than the universe has to find a 256-bit secret.
const (
	DefaultAuthFailRate  = 20
	DefaultAuthFailBurst = 40
)

// AuthFailLimit bounds failed authentications (missing, malformed, unknown,
// revoked or expired tokens) per peer IP address, loopback included. A
// peer over it gets RESOURCE_EXHAUSTED without a store lookup, except for
// a token that authenticated recently: a valid client sharing an address
// with a guesser keeps working.
type AuthFailLimit struct {
	// PerSecond is the sustained rate of failures; 0 turns the limit off
	// (the negative cache stays on).
	PerSecond float64
	// Burst is the bucket size; 0 means DefaultAuthFailBurst.
	Burst int
}

// WithAuthFailLimit limits failed authentications; see AuthFailLimit.
func WithAuthFailLimit(l AuthFailLimit) GRPCOption {
	return func(o *grpcOptions) { o.authFail = &l }
}

const (
	// negativeTTL is how long a secret that failed to authenticate is
	// refused without a store lookup. Any token made on this replica
	// voids the cache at once; one made on another replica (whose secret
	// nobody could have sent before it existed) or imported is seen
	// within this time.
	negativeTTL = 5 * time.Second
	// knownGoodTTL is how long a secret that authenticated stays exempt
	// from its peer's failure limit (it is still checked on every call).
	knownGoodTTL = 10 * time.Minute
	// maxAuthCache bounds each of the two secret caches; past it a cache
	// drops its expired entries, and starts over if that is not enough.
	maxAuthCache = 10000
)

// authGuard sits in front of token resolution: it answers repeated bad
// secrets from memory and limits each peer's failures.
type authGuard struct {
	perSecond float64
	burst     int
	peers     *callerLimiter // nil: no rate limit
	now       func() time.Time
	acc       *access.Service
	pause     time.Duration // AuthFailPause; tests set 0
	log       *slog.Logger

	mu   sync.Mutex
	bad  map[string]badSecret // by secret hash
	good map[string]time.Time // by secret hash: when it last authenticated
}

type badSecret struct {
	reason  string
	at      time.Time
	created uint64
}

func newAuthGuard(l AuthFailLimit, acc *access.Service, log *slog.Logger) *authGuard {
	g := &authGuard{perSecond: l.PerSecond, burst: l.Burst, now: time.Now, acc: acc, pause: AuthFailPause, log: log,
		bad: map[string]badSecret{}, good: map[string]time.Time{}}
	if g.burst <= 0 {
		g.burst = DefaultAuthFailBurst
	}
	if l.PerSecond > 0 {
		g.peers = RateLimit{PerSecond: l.PerSecond, Burst: g.burst, Key: PeerIP}.limiter(log)
	}
	return g
}

// wrap returns next guarded: next resolves the token and is reached only
// by a secret not known to be bad, from a peer under its failure limit or
// with a secret known to be good (it authenticated lately, or its token
// was just made here).
func (g *authGuard) wrap(next auth.AuthFunc) auth.AuthFunc {
	return func(ctx context.Context) (context.Context, error) {
		secret, err := bearerSecret(ctx)
		if err != nil {
			return nil, g.failed(ctx, err)
		}
		hash := access.HashSecret(secret)
		created := g.acc.TokensCreated()
		known, bad := g.lookup(hash, created)
		if bad != "" {
			return nil, g.failed(ctx, status.Error(codes.Unauthenticated, bad))
		}
		// A secret not known to be good costs a lookup, which may fail:
		// it takes one of the peer's failures before the lookup, and gets
		// it back if the secret turns out good (or the store failed).
		// Checking the bucket first and charging after let concurrent
		// calls all pass the check on the last token.
		var charge *rate.Reservation
		chargedAt := g.now()
		if !known && !g.acc.CreatedRecently(hash) {
			var ok bool
			if charge, ok = g.reserve(ctx, chargedAt); !ok {
				return nil, g.overError(ctx)
			}
		}
		out, err := next(ctx)
		if err != nil {
			if status.Code(err) != codes.Unauthenticated {
				// A store failure says nothing about the secret.
				refund(charge, chargedAt)
				return nil, err
			}
			g.remember(hash, status.Convert(err).Message(), created)
			if charge != nil {
				return nil, err // charged already
			}
			return nil, g.failed(ctx, err)
		}
		refund(charge, chargedAt)
		g.succeeded(hash)
		return out, nil
	}
}

// lookup says whether hash authenticated recently, or why it failed to
// (empty when it is not known to be bad, or a token was made since).
func (g *authGuard) lookup(hash string, created uint64) (known bool, bad string) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if b, ok := g.bad[hash]; ok {
		if b.created == created && now.Sub(b.at) < negativeTTL && !now.Before(b.at) {
			return false, b.reason
		}
		delete(g.bad, hash)
	}
	at, ok := g.good[hash]
	return ok && now.Sub(at) < knownGoodTTL, ""
}

// remember caches a failure, unless a token was made while it was looked
// up: that token may be the one this secret names.
func (g *authGuard) remember(hash, reason string, created uint64) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.good, hash)
	if g.acc.TokensCreated() != created {
		return
	}
	if len(g.bad) >= maxAuthCache {
		for h, b := range g.bad {
			if now.Sub(b.at) >= negativeTTL {
				delete(g.bad, h)
			}
		}
		if len(g.bad) >= maxAuthCache {
			clear(g.bad)
		}
	}
	g.bad[hash] = badSecret{reason: reason, at: now, created: created}
}

func (g *authGuard) succeeded(hash string) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	// Refreshed at most once a second: this runs on every call.
	if at, ok := g.good[hash]; ok && now.Sub(at) < time.Second {
		return
	}
	if len(g.good) >= maxAuthCache {
		for h, at := range g.good {
			if now.Sub(at) >= knownGoodTTL {
				delete(g.good, h)
			}
		}
		if len(g.good) >= maxAuthCache {
			clear(g.good)
		}
	}
	g.good[hash] = now
}

// reserve takes one of the call's peer's failures ahead of a lookup, at
// now; ok is false when none is left. Without a limit it takes nothing.
func (g *authGuard) reserve(ctx context.Context, now time.Time) (_ *rate.Reservation, ok bool) {
	if g.peers == nil {
		return nil, true
	}
	r := g.peers.bucket(PeerIP(ctx)).tokens.ReserveN(now, 1)
	if !r.OK() || r.DelayFrom(now) > 0 {
		r.CancelAt(now)
		return nil, false
	}
	return r, true
}

// refund gives back a failure reserve took at chargedAt for a lookup that
// did not fail. It cancels at chargedAt, not now: CancelAt restores
// nothing once the reservation's time has passed, which the lookup's own
// duration would always ensure.
func refund(r *rate.Reservation, chargedAt time.Time) {
	if r != nil {
		r.CancelAt(chargedAt)
	}
}

// failed charges one failure, known without a lookup or found by one, to
// the call's peer and returns err: the reason stays the client's to act on
// (a sidecar stops on a revoked token). Over the limit the answer waits
// AuthFailPause, so a client looping on it costs little CPU on either side.
func (g *authGuard) failed(ctx context.Context, err error) error {
	if g.peers == nil {
		return err
	}
	if !g.peers.bucket(PeerIP(ctx)).tokens.AllowN(g.now(), 1) {
		g.warnOver(ctx)
		pauses.pause(ctx, g.pause)
	}
	return err
}

// overError is the limit's refusal of a secret that would need a lookup,
// answered after AuthFailPause.
func (g *authGuard) overError(ctx context.Context) error {
	g.warnOver(ctx)
	pauses.pause(ctx, g.pause)
	return status.Errorf(codes.ResourceExhausted,
		"peer %s is over the limit of %g failed authentications/s (burst %d, --auth-fail-rate): fix the token; calls with a valid token still work",
		PeerIP(ctx), g.perSecond, g.burst)
}

// warnOver logs, once a minute per peer, that it is over the limit.
func (g *authGuard) warnOver(ctx context.Context) {
	peer := PeerIP(ctx)
	b := g.peers.bucket(peer)
	now := g.now()
	g.peers.mu.Lock()
	warn := now.Sub(b.warnedAt) >= warnEvery
	if warn {
		b.warnedAt = now
	}
	g.peers.mu.Unlock()
	if warn {
		g.log.WarnContext(ctx, "peer over the failed-authentication limit; refusing its unknown tokens without a lookup (logged once a minute)",
			"peer", peer, "auth_fail_rate", g.perSecond, "auth_fail_burst", g.burst)
	}
}

// guardAuth returns authenticate guarded by the negative cache and, when
// limit is set, the failure limit. Without an access service there is
// nothing to guard.
func guardAuth(acc *access.Service, log *slog.Logger, limit *AuthFailLimit) auth.AuthFunc {
	f := authenticate(acc, log)
	if acc == nil {
		return f
	}
	var l AuthFailLimit
	if limit != nil {
		l = *limit
	}
	return newAuthGuard(l, acc, log).wrap(f)
}

// AuthFailPause is how long a peer over the failed-authentication limit
// waits for its refusal.
const AuthFailPause = 250 * time.Millisecond

// maxPaused bounds the calls held back at once (repeated refusals and
// failed authentications over the limit); past it they are answered at
// once, so pausing can never hold more than this many goroutines.
const maxPaused = 1024

// pauses holds back answers to callers that only repeat what was refused.
var pauses = pauser{slots: make(chan struct{}, maxPaused)}

type pauser struct{ slots chan struct{} }

// pause waits d, or until ctx ends; at once when maxPaused calls already
// wait.
func (p pauser) pause(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case p.slots <- struct{}{}:
	default:
		return
	}
	defer func() { <-p.slots }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
