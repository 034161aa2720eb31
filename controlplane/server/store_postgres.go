package server

import (
	"context"
	"net/url"

	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/postgres"
)

func openPostgres(ctx context.Context, cfg Config) (store.Store, string, string, error) {
	st, err := postgres.Open(ctx, postgres.Config{
		URL:            cfg.Store,
		Schema:         cfg.PostgresSchema,
		Logger:         cfg.Logger,
		TracerProvider: cfg.TracerProvider,
	})
	return st, "postgresql", redactURL(cfg.Store) + " schema " + schemaOrPublic(cfg.PostgresSchema), err
}

// redactURL drops the password so the URL can be logged.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "postgres://(unparsable URL)"
	}
	return u.Redacted()
}

func schemaOrPublic(s string) string {
	if s == "" {
		return "public"
	}
	return s
}
