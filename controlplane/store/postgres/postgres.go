// Package postgres is the store.Store driver for PostgreSQL, the database
// that several control-plane replicas share when a factory outgrows one
// host. It is built on pgx v5 (pgxpool) and also implements the two
// interfaces replicas need from a shared database: store.ChangeFeed
// (LISTEN/NOTIFY) and store.Elector (session advisory locks).
//
// Claims take rows with FOR UPDATE SKIP LOCKED, so concurrent claimers on
// any replica never receive the same task and never wait on each other.
// The driver runs at READ COMMITTED. Every other race between replicas (a
// dependency completing while its dependent is created, two dependencies
// completing at once, a pause while a task is retried) is closed by a row
// lock that the deciding statement, or one before it, takes: a statement
// that waited for a lock sees what the holder committed. Deadlocks and
// serialization failures are retried inside the driver.
//
// Every transaction that changes tasks calls pg_notify before it commits,
// so other replicas hear about a change exactly when it becomes visible and
// never about one that rolled back. PostgreSQL serialises the commits of
// transactions that notify, which caps how many of them commit per second;
// claims and completions arriving together are therefore run as one
// transaction (see group.go), so that one commit serves many callers.
//
// A lost or refused connection is store.ErrUnavailable. A transaction that
// failed before COMMIT was sent is run again on a fresh connection a few
// times first; one whose COMMIT may have reached the server is not, since
// its outcome is unknown.
package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/factory/factory/controlplane/store"
)

// Config configures Open.
type Config struct {
	// URL is the connection string, postgres://user@host:port/db?... or
	// a key=value DSN. Required.
	URL string

	// Schema holds the driver's tables. It is created when missing and put
	// first in every connection's search_path, so that one database can
	// hold several independent queues (tests use one per store). Defaults
	// to "public".
	Schema string

	// Logger receives migration, election and change-feed messages.
	// Defaults to slog.Default().
	Logger *slog.Logger

	// TracerProvider receives a span per SQL statement, named after the
	// statement (TaskClaim, TaskComplete, ...). Defaults to the global
	// provider.
	TracerProvider trace.TracerProvider

	// ReplicaID names this replica in change notifications, so that its
	// own changes are not fed back to it. Every replica sharing a database
	// needs a different one. Defaults to host name, process id and a
	// random suffix.
	ReplicaID string

	// MaxConns bounds the connection pool. The change feed and the elector
	// each hold one more connection of their own while they run. Defaults
	// to max(8, 4*GOMAXPROCS).
	MaxConns int32
}

// maxSchemaLen leaves room in a 63-byte PostgreSQL identifier for the
// change channel's prefix.
const maxSchemaLen = 63

var schemaRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// WithDefaults returns a copy of c with unset fields given their defaults.
func (c Config) WithDefaults() Config {
	if c.Schema == "" {
		c.Schema = "public"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.ReplicaID == "" {
		c.ReplicaID = defaultReplicaID()
	}
	if c.MaxConns == 0 {
		c.MaxConns = int32(max(8, 4*runtime.GOMAXPROCS(0)))
	}
	return c
}

func (c Config) validate() error {
	switch {
	case strings.TrimSpace(c.URL) == "":
		return errors.New("postgres: Config.URL is required")
	case !schemaRE.MatchString(c.Schema) || len(c.Schema) > maxSchemaLen:
		return fmt.Errorf("postgres: Config.Schema %q must be a plain identifier (letters, digits, underscore) of at most %d bytes", c.Schema, maxSchemaLen)
	case c.Logger == nil:
		return errors.New("postgres: Config.Logger is nil (use WithDefaults)")
	case c.TracerProvider == nil:
		return errors.New("postgres: Config.TracerProvider is nil (use WithDefaults)")
	case strings.TrimSpace(c.ReplicaID) == "":
		return errors.New("postgres: Config.ReplicaID is empty (use WithDefaults)")
	case len(c.ReplicaID) > 200:
		// It travels in every notification, whose payload is bounded.
		return fmt.Errorf("postgres: Config.ReplicaID is %d bytes, at most 200", len(c.ReplicaID))
	case c.MaxConns < 1:
		return fmt.Errorf("postgres: Config.MaxConns must be at least 1, got %d", c.MaxConns)
	}
	return nil
}

func defaultReplicaID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "replica"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Store is the PostgreSQL store.Store.
type Store struct {
	pool    *pgxpool.Pool
	cfg     Config
	log     *slog.Logger
	channel string // LISTEN/NOTIFY channel of this schema

	ops *group // claims and completions; see group.go

	// life ends when the store closes; background loops (change feed,
	// elector, grouped transactions) stop with it.
	life      context.Context
	closeLife context.CancelFunc
	mu        sync.Mutex
	closed    bool
	bg        sync.WaitGroup
}

var (
	_ store.Store      = (*Store)(nil)
	_ store.ChangeFeed = (*Store)(nil)
	_ store.Elector    = (*Store)(nil)
)

// Open connects to the database, creates the schema when missing and
// migrates it to the latest version. Replicas may open the same database
// at the same time: schema creation and migrations run under locks.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		// The parse error can quote the URL, password included.
		return nil, errors.New("postgres: Config.URL is not a valid connection string")
	}
	pcfg.MaxConns = cfg.MaxConns
	if cfg.Schema != "public" {
		pcfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{cfg.Schema}.Sanitize() + ", public"
	} else {
		pcfg.ConnConfig.RuntimeParams["search_path"] = "public"
	}
	if pcfg.ConnConfig.RuntimeParams["application_name"] == "" {
		pcfg.ConnConfig.RuntimeParams["application_name"] = "factory-controlplane"
	}
	pcfg.ConnConfig.Tracer = otelpgx.NewTracer(
		otelpgx.WithTracerProvider(cfg.TracerProvider),
		otelpgx.WithSpanNameFunc(spanName),
		otelpgx.WithAttributes(attribute.String("db.namespace", cfg.Schema)),
	)

	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, dbErr("open", err)
	}
	life, closeLife := context.WithCancel(context.WithoutCancel(ctx))
	s := &Store{
		pool:      pool,
		cfg:       cfg,
		log:       cfg.Logger.With(slog.String("store", "postgres"), slog.String("schema", cfg.Schema)),
		channel:   channelName(cfg.Schema),
		life:      life,
		closeLife: closeLife,
	}
	s.ops = &group{s: s}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.log.DebugContext(ctx, "postgres store open", slog.String("replica", cfg.ReplicaID))
	return s, nil
}

// Close stops the change feed and elector loops this store runs, waits
// for them, and closes the pool. It is safe to call more than once.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.closeLife()
	s.bg.Wait()
	s.pool.Close()
	return nil
}

// goBackground registers a background loop that Close must wait for; it
// reports false once the store is closed.
func (s *Store) goBackground() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.bg.Add(1)
	return true
}

// ReplicaID is the id this store's notifications carry.
func (s *Store) ReplicaID() string { return s.cfg.ReplicaID }

// Schema is the schema the store's tables live in.
func (s *Store) Schema() string { return s.cfg.Schema }

// channelName derives the notification channel from the schema, so that
// queues in different schemas of one database do not hear each other.
func channelName(schema string) string {
	const prefix = "factory_changes_"
	if len(prefix)+len(schema) <= 63 {
		return prefix + schema
	}
	h := fnv.New64a()
	h.Write([]byte(schema))
	return fmt.Sprintf("%s%016x", prefix, h.Sum64())
}

// spanName names a statement's span after its "-- name: X" comment, or
// else after its first word (BEGIN, COMMIT, ...).
func spanName(sql string) string {
	if rest, ok := strings.CutPrefix(sql, "-- name: "); ok {
		if i := strings.IndexAny(rest, " \n"); i > 0 {
			return rest[:i]
		}
		return rest
	}
	return otelpgx.SQLOperationName(context.Background(), sql)
}
