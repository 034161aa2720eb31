package server

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

// openStore opens the store cfg.Store names: empty or "sqlite" for
// DATA_DIR/factory.db, "sqlite:PATH" for another file, or a postgres:// URL.
// It returns the driver's name and a description safe to log.
func openStore(ctx context.Context, cfg Config) (st store.Store, driver, where string, err error) {
	switch spec := cfg.Store; {
	case spec == "" || spec == "sqlite":
		path := filepath.Join(cfg.DataDir, "factory.db")
		st, err = sqlite.Open(ctx, sqlite.Config{Path: path, Logger: cfg.Logger})
		abs, _ := filepath.Abs(path)
		return st, "sqlite", abs, err
	case strings.HasPrefix(spec, "sqlite:"):
		path := strings.TrimPrefix(spec, "sqlite:")
		st, err = sqlite.Open(ctx, sqlite.Config{Path: path, Logger: cfg.Logger})
		return st, "sqlite", path, err
	case strings.HasPrefix(spec, "postgres://"), strings.HasPrefix(spec, "postgresql://"):
		return openPostgres(ctx, cfg)
	default:
		return nil, "", "", fmt.Errorf("store %q: want sqlite, sqlite:PATH or a postgres:// URL", spec)
	}
}
