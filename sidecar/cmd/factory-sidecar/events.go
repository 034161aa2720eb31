package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/factory/factory/sidecar/logwatch"
	"github.com/factory/factory/sidecar/spool"
	"github.com/factory/factory/sidecar/swapwatch"
)

// Event kinds, as the control plane's fleet domain names them.
const (
	kindModelSwap = "model_swap"
	kindLogCount  = "log_count"
)

// spoolPath is where events wait for the control plane's ack: the config's
// spool.path, else systemd's StateDirectory, else the user's state dir.
func (c config) spoolPath() (string, error) {
	if c.Spool.Path != "" {
		return c.Spool.Path, nil
	}
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		return filepath.Join(d, "events.jsonl"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no spool path: set spool.path in the config: %w", err)
	}
	return filepath.Join(home, ".local", "state", "factory-sidecar", "events.jsonl"), nil
}

// hasEvents reports whether anything produces events, so a sidecar that
// only sends telemetry needs no spool file.
func (c config) hasEvents() bool {
	return c.Spool.Path != "" || len(c.LogWatch) > 0 || len(c.SwapWatch) > 0
}

// startEventSources opens the spool and starts the log and swap watchers,
// which append to it. The returned stop waits for them and closes it.
func startEventSources(ctx context.Context, cfg config, log *slog.Logger) (*spool.Spool, func(), error) {
	if !cfg.hasEvents() {
		return nil, func() {}, nil
	}
	path, err := cfg.spoolPath()
	if err != nil {
		return nil, nil, err
	}
	sp, err := spool.Open(path)
	if err != nil {
		return nil, nil, err
	}
	if sp.Skipped > 0 {
		log.Warn("spool: skipped unreadable lines (a write cut short by a crash or a full disk)", "path", path, "lines", sp.Skipped)
	}
	emit := func(kind string, attrs map[string]string) {
		if _, err := sp.Append(spool.Event{Kind: kind, Time: time.Now(), Attributes: attrs}); err != nil {
			log.Error("an event could not be spooled and is lost", "kind", kind, "err", err)
		}
	}
	var watchers []*logwatch.Watcher
	for _, spec := range cfg.LogWatch {
		w, err := logwatch.New(spec)
		if err != nil {
			sp.Close()
			return nil, nil, err
		}
		spec := w.Spec()
		w.OnWindow = func(win logwatch.Window) {
			emit(kindLogCount, map[string]string{"watcher": win.Name, "count": strconv.Itoa(win.Count),
				"window": spec.Window.String(), "start": win.Start.UTC().Format(time.RFC3339)})
		}
		if spec.ModelSwap {
			w.OnMatch = func(line string) {
				emit(kindModelSwap, map[string]string{"source": "log:" + spec.Name, "line": truncate(line, 1024)})
			}
		}
		watchers = append(watchers, w)
	}
	var swaps []*swapwatch.Watcher
	for _, spec := range cfg.SwapWatch {
		w, err := swapwatch.New(spec)
		if err != nil {
			sp.Close()
			return nil, nil, err
		}
		swaps = append(swaps, w)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, w := range watchers {
		wg.Go(func() { _ = w.Run(ctx) })
	}
	for i, w := range swaps {
		name := cfg.SwapWatch[i].Name
		wg.Go(func() {
			w.Run(ctx, func(s swapwatch.Swap) {
				emit(kindModelSwap, map[string]string{"source": "api:" + s.Name, "from": s.From, "to": s.To})
			}, func(err error) { log.Debug("swap watch poll failed", "server", name, "err", err) })
		})
	}
	return sp, func() {
		cancel()
		wg.Wait()
		sp.Close()
	}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
