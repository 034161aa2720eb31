package server

import (
	"context"
	"errors"

	"github.com/factory/factory/controlplane/store"
)

func openPostgres(ctx context.Context, cfg Config) (store.Store, string, string, error) {
	return nil, "", "", errors.New("postgres store: not built yet")
}
