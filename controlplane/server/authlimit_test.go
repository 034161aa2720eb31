package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

// guardStore counts the token lookups that reach the store and, when
// nextHash is set, gives the next created token that hash: it stands for
// a token whose secret someone sent just before it was made.
type guardStore struct {
	store.Store
	lookups  atomic.Int64
	nextHash string
	// onLookup, when set, runs at each lookup: a lookup that takes time.
	onLookup func()
}

func (s *guardStore) TokenGetByHash(ctx context.Context, p *store.TokenGetByHashParams) (*store.Token, error) {
	s.lookups.Add(1)
	if s.onLookup != nil {
		s.onLookup()
	}
	return s.Store.TokenGetByHash(ctx, p)
}

func (s *guardStore) TokenCreate(ctx context.Context, p *store.TokenCreateParams) (*store.Token, error) {
	if s.nextHash != "" {
		p.Token.Hash, s.nextHash = s.nextHash, ""
	}
	return s.Store.TokenCreate(ctx, p)
}

type guardFixture struct {
	acc   *access.Service
	st    *guardStore
	clock *fakeClock
	auth  func(ctx context.Context) error
}

func newGuardFixture(t *testing.T, limit AuthFailLimit) *guardFixture {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	raw, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "factory.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	st := &guardStore{Store: raw}
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	// No lookup cache: every call that passes the guard reads the store.
	acc, err := access.New(access.Config{Store: st, Clock: clock, Logger: log, CacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	g := newAuthGuard(limit, acc, log)
	g.now, g.pause = clock.Now, 0
	f := g.wrap(authenticate(acc, log))
	return &guardFixture{acc: acc, st: st, clock: clock, auth: func(ctx context.Context) error {
		_, err := f(ctx)
		return err
	}}
}

// call is a call from ip carrying secret ("" sends no token).
func call(ip, secret string) context.Context {
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}})
	if secret == "" {
		return ctx
	}
	return metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+secret))
}

func requireCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: %v (%s), want %s", what, err, got, want)
	}
}

func TestUnknownSecretIsLookedUpOnce(t *testing.T) {
	fx := newGuardFixture(t, AuthFailLimit{})
	for range 50 {
		requireCode(t, "unknown secret", fx.auth(call("10.0.0.1", "no-such-secret")), codes.Unauthenticated)
	}
	if n := fx.st.lookups.Load(); n != 1 {
		t.Fatalf("50 calls with one unknown secret made %d store lookups, want 1", n)
	}
	// Past the cache's TTL the store is asked again.
	fx.clock.Advance(negativeTTL)
	requireCode(t, "unknown secret after the TTL", fx.auth(call("10.0.0.1", "no-such-secret")), codes.Unauthenticated)
	if n := fx.st.lookups.Load(); n != 2 {
		t.Fatalf("after the TTL: %d lookups, want 2", n)
	}
}

func TestTokenCreatedAfterAFailedLookupWorksAtOnce(t *testing.T) {
	fx := newGuardFixture(t, AuthFailLimit{PerSecond: 1, Burst: 1})
	ctx := context.Background()
	const secret = "sent-before-its-token-existed"
	requireCode(t, "before the token exists", fx.auth(call("10.0.0.1", secret)), codes.Unauthenticated)
	// Known bad from the cache, it keeps its reason, over the limit too.
	requireCode(t, "still unknown, from the cache", fx.auth(call("10.0.0.1", secret)), codes.Unauthenticated)
	requireCode(t, "another unknown secret over the limit", fx.auth(call("10.0.0.1", "another")), codes.ResourceExhausted)

	fx.st.nextHash = access.HashSecret(secret)
	if _, _, err := fx.acc.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "forge"}); err != nil {
		t.Fatal(err)
	}
	// No clock moves: the negative entry and the exhausted bucket are
	// both still fresh, and the new token works all the same.
	if err := fx.auth(call("10.0.0.1", secret)); err != nil {
		t.Fatalf("a token made right after its secret failed: %v, want it to work at once", err)
	}
}

func TestRevokedTokenStaysRefused(t *testing.T) {
	fx := newGuardFixture(t, AuthFailLimit{PerSecond: 20, Burst: 40})
	ctx := context.Background()
	tok, secret, err := fx.acc.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "forge"})
	if err != nil {
		t.Fatal(err)
	}
	if err := fx.auth(call("10.0.0.1", secret)); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	if _, err := fx.acc.Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	requireCode(t, "right after the revoke", fx.auth(call("10.0.0.1", secret)), codes.Unauthenticated)
	// Neither the negative cache nor having been good once lets it back.
	for range 30 {
		requireCode(t, "revoked, from the cache", fx.auth(call("10.0.0.1", secret)), codes.Unauthenticated)
	}
	fx.clock.Advance(negativeTTL + time.Second)
	requireCode(t, "revoked, after the cache's TTL", fx.auth(call("10.0.0.1", secret)), codes.Unauthenticated)
	// A token made meanwhile voids the cache; the revoked one still fails.
	if _, _, err := fx.acc.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "other"}); err != nil {
		t.Fatal(err)
	}
	requireCode(t, "revoked, after another token was made", fx.auth(call("10.0.0.1", secret)), codes.Unauthenticated)
}

// TestValidTokensSpendNoFailures: a valid token the guard does not know
// yet (made on another replica) costs its peer none of its failures, however
// long its lookup takes: the failure taken ahead of the lookup goes back.
// Agents behind one address starting together must not lock each other out.
func TestValidTokensSpendNoFailures(t *testing.T) {
	fx := newGuardFixture(t, AuthFailLimit{PerSecond: 1, Burst: 2})
	fx.st.onLookup = func() { fx.clock.Advance(time.Millisecond) }
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	elsewhere, err := access.New(access.Config{Store: fx.st, Clock: fx.clock, Logger: log, CacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		_, secret, err := elsewhere.Create(context.Background(), access.CreateParams{Role: store.RoleAgent, Subject: fmt.Sprintf("agent-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if err := fx.auth(call("127.0.0.1", secret)); err != nil {
			t.Fatalf("valid token %d of 5 from one peer: %v", i, err)
		}
	}
	// The burst is whole: two guesses are looked up, the third is not.
	for i := range 2 {
		requireCode(t, "guess within the burst", fx.auth(call("127.0.0.1", fmt.Sprintf("guess-%d", i))), codes.Unauthenticated)
	}
	requireCode(t, "guess past the burst", fx.auth(call("127.0.0.1", "guess-x")), codes.ResourceExhausted)
}

func TestFailedAuthenticationsAreLimitedPerPeer(t *testing.T) {
	fx := newGuardFixture(t, AuthFailLimit{PerSecond: 20, Burst: 40})
	ctx := context.Background()
	_, good, err := fx.acc.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "calm"})
	if err != nil {
		t.Fatal(err)
	}
	// The calm client, on loopback like the guesser, authenticates first.
	if err := fx.auth(call("127.0.0.1", good)); err != nil {
		t.Fatal(err)
	}
	before := fx.st.lookups.Load()
	refused := 0
	for i := range 1000 {
		err := fx.auth(call("127.0.0.1", fmt.Sprintf("guess-%d", i)))
		switch status.Code(err) {
		case codes.Unauthenticated:
		case codes.ResourceExhausted:
			refused++
		default:
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if refused != 1000-40 {
		t.Fatalf("%d of 1000 guesses in no time refused by the limit, want all past the burst of 40", refused)
	}
	if n := fx.st.lookups.Load() - before; n != 40 {
		t.Fatalf("1000 guesses made %d store lookups, want 40 (the burst)", n)
	}
	err = fx.auth(call("127.0.0.1", "guess-x"))
	requireCode(t, "guess over the limit", err, codes.ResourceExhausted)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "127.0.0.1") || !strings.Contains(msg, "20 failed authentications/s (burst 40") {
		t.Fatalf("refusal %q does not name the peer and the limit", msg)
	}
	// A failure known without a lookup keeps its reason (a client acts on
	// it), and costs no store work either.
	requireCode(t, "missing token over the limit", fx.auth(call("127.0.0.1", "")), codes.Unauthenticated)
	if n := fx.st.lookups.Load() - before; n != 40 {
		t.Fatalf("after the missing token: %d lookups, want still 40", n)
	}

	// The valid token from the same address still works (the fixture
	// has no lookup cache: each call reads the store); so does another
	// peer.
	if err := fx.auth(call("127.0.0.1", good)); err != nil {
		t.Fatalf("valid token from a peer over the limit: %v", err)
	}
	requireCode(t, "another peer", fx.auth(call("10.9.9.9", "guess-y")), codes.Unauthenticated)

	// The bucket refills at the stated rate.
	fx.clock.Advance(time.Second)
	for i := range 20 {
		requireCode(t, "after a second", fx.auth(call("127.0.0.1", fmt.Sprintf("later-%d", i))), codes.Unauthenticated)
	}
	requireCode(t, "past the refill", fx.auth(call("127.0.0.1", "later-x")), codes.ResourceExhausted)
}
