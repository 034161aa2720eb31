package access_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// countingStore counts the lookups and touches that reach the store.
type countingStore struct {
	store.Store
	lookups, touches atomic.Int64
}

func (s *countingStore) TokenGetByHash(ctx context.Context, p *store.TokenGetByHashParams) (*store.Token, error) {
	s.lookups.Add(1)
	return s.Store.TokenGetByHash(ctx, p)
}

func (s *countingStore) TokenTouch(ctx context.Context, p *store.TokenTouchParams) error {
	s.touches.Add(1)
	return s.Store.TokenTouch(ctx, p)
}

func newService(t *testing.T) (*access.Service, *countingStore, *fakeClock) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "factory.db"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cs := &countingStore{Store: st}
	clock := &fakeClock{now: time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)}
	svc, err := access.New(access.Config{Store: cs, Clock: clock, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return svc, cs, clock
}

func TestLookupsAreCachedBriefly(t *testing.T) {
	svc, cs, clock := newService(t)
	ctx := context.Background()
	tok, secret, err := svc.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "forge"})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		c, err := svc.Authenticate(ctx, secret)
		if err != nil || c.TokenID != tok.ID || c.Role != store.RoleAgent || c.Subject != "forge" {
			t.Fatalf("authenticate: %+v, %v", c, err)
		}
	}
	if n := cs.lookups.Load(); n != 1 {
		t.Fatalf("100 calls within the TTL made %d store lookups, want 1", n)
	}
	clock.Advance(access.DefaultCacheTTL)
	if _, err := svc.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if n := cs.lookups.Load(); n != 2 {
		t.Fatalf("a call after the TTL made %d lookups in all, want 2", n)
	}
	// Use is recorded at most once a minute, not once a lookup.
	if n := cs.touches.Load(); n != 1 {
		t.Fatalf("%d touches, want 1", n)
	}
	clock.Advance(time.Minute)
	if _, err := svc.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if n := cs.touches.Load(); n != 2 {
		t.Fatalf("%d touches a minute later, want 2", n)
	}
	res, err := svc.List(ctx, access.ListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Tokens[0].LastUsedAt; !got.Equal(clock.Now()) {
		t.Fatalf("LastUsedAt %s, want %s", got, clock.Now())
	}
}

func TestAuthenticateSaysWhy(t *testing.T) {
	svc, _, clock := newService(t)
	ctx := context.Background()
	_, expiring, err := svc.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "brief", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	revokedTok, revoked, err := svc.Create(ctx, access.CreateParams{Role: store.RoleAgent, Subject: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Revoke(ctx, revokedTok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, expiring); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	clock.Advance(time.Minute)
	for secret, want := range map[string]string{
		"":                     "missing token",
		"fct_nothing":          "unknown token",
		revoked:                "was revoked at",
		expiring:               "expired at 2031-03-14T09:01:00Z",
		expiring + "-tampered": "unknown token",
	} {
		_, err := svc.Authenticate(ctx, secret)
		var ae *access.AuthError
		if !errors.As(err, &ae) || !strings.Contains(ae.Reason, want) {
			t.Errorf("secret %q: got %v, want an AuthError saying %q", secret, err, want)
		}
	}
}

// A console session must die with the token it was made from, at once on
// the replica that revoked it, although its lookup is cached.
func TestRevokeEndsItsSessionsAtOnce(t *testing.T) {
	svc, cs, _ := newService(t)
	ctx := context.Background()
	op, opSecret, err := svc.Create(ctx, access.CreateParams{Role: store.RoleOperator, Subject: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := svc.Create(ctx, access.CreateParams{Role: store.RoleOperator, Subject: "night-shift"})
	if err != nil {
		t.Fatal(err)
	}
	session := func(parent *store.Token) (*store.Token, string) {
		t.Helper()
		tok, secret, err := svc.Create(ctx, access.CreateParams{Role: store.RoleOperator, Subject: parent.Subject,
			TTL: 12 * time.Hour, SessionOf: parent.ID, CreatedBy: "console"})
		if err != nil {
			t.Fatal(err)
		}
		if tok.SessionOf != parent.ID {
			t.Fatalf("session made with SessionOf %q", tok.SessionOf)
		}
		return tok, secret
	}
	mine, mineSecret := session(op)
	_, spareSecret := session(op)
	_, theirSecret := session(other)
	for _, secret := range []string{opSecret, mineSecret, spareSecret, theirSecret} {
		if _, err := svc.Authenticate(ctx, secret); err != nil {
			t.Fatal(err)
		}
	}
	lookups := cs.lookups.Load()

	// Signing one session out leaves the token and its other sessions.
	if _, err := svc.Revoke(ctx, mine.ID); err != nil {
		t.Fatal(err)
	}
	requireRevoked(t, svc, mineSecret)
	for _, secret := range []string{opSecret, spareSecret, theirSecret} {
		if _, err := svc.Authenticate(ctx, secret); err != nil {
			t.Fatalf("after signing one session out: %v", err)
		}
	}

	// No time passes: every lookup below would come from the cache but
	// for the revoke.
	if _, err := svc.Revoke(ctx, op.ID); err != nil {
		t.Fatal(err)
	}
	requireRevoked(t, svc, opSecret)
	requireRevoked(t, svc, spareSecret)
	if _, err := svc.Authenticate(ctx, theirSecret); err != nil {
		t.Fatalf("a session of another token after the revoke: %v", err)
	}
	// mine, op and spare were read again; their session stayed cached.
	if n := cs.lookups.Load() - lookups; n != 3 {
		t.Fatalf("%d store lookups after the revokes, want 3", n)
	}
}

func requireRevoked(t *testing.T, svc *access.Service, secret string) {
	t.Helper()
	_, err := svc.Authenticate(context.Background(), secret)
	var ae *access.AuthError
	if !errors.As(err, &ae) || !strings.Contains(ae.Reason, "was revoked at") {
		t.Fatalf("got %v, want an AuthError saying the token was revoked", err)
	}
}

func TestCreateChecksItsInput(t *testing.T) {
	svc, _, _ := newService(t)
	ctx := context.Background()
	for field, p := range map[string]access.CreateParams{
		"role":       {Role: "admin", Subject: "x"},
		"subject":    {Role: store.RoleAgent, Subject: "two words"},
		"expires_in": {Role: store.RoleAgent, Subject: "x", TTL: -time.Second},
		"roles":      {Role: store.RoleSidecar, Subject: "gpu-01", Roles: []string{"builder"}},
		"session_of": {Role: store.RoleOperator, Subject: "ops", SessionOf: "not a token id"},
	} {
		_, _, err := svc.Create(ctx, p)
		var fe *store.FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("%+v: got %v, want a FieldError on %s", p, err, field)
		}
	}
}

func TestBootstrapMakesAnOperatorOnlyWhenThereIsNone(t *testing.T) {
	svc, _, _ := newService(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	path, created, err := svc.Bootstrap(ctx, dir)
	if err != nil || !created {
		t.Fatalf("first bootstrap: %v, created %v", err, created)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v", info, err)
	}
	raw, _ := os.ReadFile(path)
	secret := strings.TrimSpace(string(raw))
	c, err := svc.Authenticate(ctx, secret)
	if err != nil || c.Role != store.RoleOperator || c.Subject != access.BootstrapSubject {
		t.Fatalf("the file's token: %+v, %v", c, err)
	}

	if _, created, err := svc.Bootstrap(ctx, dir); err != nil || created {
		t.Fatalf("second bootstrap: %v, created %v", err, created)
	}
	if again, _ := os.ReadFile(path); string(again) != string(raw) {
		t.Fatal("second bootstrap rewrote the file")
	}

	// Locked out (every operator token revoked): a restart makes a new one.
	if _, err := svc.Revoke(ctx, c.TokenID); err != nil {
		t.Fatal(err)
	}
	if _, created, err := svc.Bootstrap(ctx, dir); err != nil || !created {
		t.Fatalf("bootstrap with no working operator token: %v, created %v", err, created)
	}
	if again, _ := os.ReadFile(path); string(again) == string(raw) {
		t.Fatal("the new operator token did not replace the file")
	}
}

func TestNoteIsANoOpOutsideAnAuditedCall(t *testing.T) {
	ctx := context.Background()
	access.Note(ctx, "t1", nil, map[string]string{"state": "READY"})
	if access.Auditing(ctx) {
		t.Fatal("a plain context is audited")
	}
	ctx, rec := access.WithRecord(ctx)
	if !access.Auditing(ctx) {
		t.Fatal("a context with a record is not audited")
	}
	access.Note(ctx, "t1", map[string]string{"state": "READY"}, map[string]any{"state": "FAILED", "attempt": 2})
	got := rec.Changes()
	if len(got) != 1 || got[0].Target != "t1" || got[0].Before != `{"state":"READY"}` || got[0].After != `{"attempt":2,"state":"FAILED"}` {
		t.Fatalf("changes: %+v", got)
	}
}

func TestSecretsAreRandomAndHashed(t *testing.T) {
	a, err := access.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := access.NewSecret()
	if a == b || !strings.HasPrefix(a, access.SecretPrefix) || len(a) != len(access.SecretPrefix)+43 {
		t.Fatalf("secrets %q, %q", a, b)
	}
	if h := access.HashSecret(a); len(h) != 64 || strings.Contains(h, a) || h == access.HashSecret(b) {
		t.Fatalf("hash %q", h)
	}
}

// A token whose file could not be written is revoked, so the next start
// makes one again rather than leaving nobody an operator token.
func TestBootstrapThatCannotWriteItsFileRevokesTheToken(t *testing.T) {
	svc, _, _ := newService(t)
	ctx := context.Background()
	dir := t.TempDir()
	blocker := filepath.Join(dir, access.OperatorTokenFile, "in-the-way")
	if err := os.MkdirAll(blocker, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Bootstrap(ctx, dir); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("bootstrap onto a directory: %v", err)
	}
	if res, err := svc.List(ctx, access.ListParams{}); err != nil || len(res.Tokens) != 0 {
		t.Fatalf("working tokens after the failed bootstrap: %v, %v", res, err)
	}
	if err := os.RemoveAll(filepath.Join(dir, access.OperatorTokenFile)); err != nil {
		t.Fatal(err)
	}
	if _, created, err := svc.Bootstrap(ctx, dir); err != nil || !created {
		t.Fatalf("bootstrap once the path is free: %v, created %v", err, created)
	}
}
