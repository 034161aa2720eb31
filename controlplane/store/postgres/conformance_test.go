package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/storetest"
)

// testURL is the database the tests use; unset, they are skipped.
func testURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("FACTORY_TEST_POSTGRES_URL")
	if url == "" {
		t.Skip("FACTORY_TEST_POSTGRES_URL is not set; to run the PostgreSQL tests, point it at a database they may " +
			"create schemas in, e.g. FACTORY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	return url
}

// testSchema creates nothing, but returns a fresh schema name and drops
// that schema (with everything in it) when the test ends.
func testSchema(t testing.TB, url string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "factory_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// openTest opens a store in schema, closed when the test ends.
func openTest(t testing.TB, url, schema string, cfg Config) *Store {
	t.Helper()
	cfg.URL, cfg.Schema = url, schema
	if cfg.MaxConns == 0 {
		// Tests run in parallel against one server; keep each store small.
		cfg.MaxConns = 4
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	url := testURL(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTest(t, url, testSchema(t, url), Config{})
	})
}
