// Package swapwatch detects model swaps from an inference server's own
// API, where it has one, instead of from its log: llama.cpp's /props
// model_path, Ollama's /api/ps set of loaded models (name and digest).
// The first reading is the baseline; each change after it is a swap.
package swapwatch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Kinds of server.
const (
	KindLlamaCpp = "llamacpp"
	KindOllama   = "ollama"
)

// Spec configures one watched server (the sidecar YAML's swap_watch).
type Spec struct {
	// Name identifies the server in events ("llama-8080").
	Name string `yaml:"name"`
	// Kind is "llamacpp" or "ollama".
	Kind string `yaml:"kind"`
	// URL is the server's base URL (http://127.0.0.1:8080).
	URL string `yaml:"url"`
	// Every is the polling interval (15s).
	Every time.Duration `yaml:"every"`
}

// Swap is one detected model change.
type Swap struct {
	// Name is the watched server's Name.
	Name string
	// From and To are the model before and after (a path for llama.cpp,
	// "name@digest" for Ollama); From is empty when nothing was loaded.
	From, To string
}

// Watcher polls one server.
type Watcher struct {
	spec   Spec
	client *http.Client
	prev   []string // the last reading; nil before the first
	seen   bool
}

// New checks spec and returns its watcher.
func New(spec Spec) (*Watcher, error) {
	if spec.Name == "" || spec.URL == "" {
		return nil, fmt.Errorf("swapwatch: name and url are required")
	}
	if spec.Kind != KindLlamaCpp && spec.Kind != KindOllama {
		return nil, fmt.Errorf("swapwatch %s: kind %q is not llamacpp or ollama", spec.Name, spec.Kind)
	}
	if spec.Every <= 0 {
		spec.Every = 15 * time.Second
	}
	return &Watcher{spec: spec, client: &http.Client{Timeout: 5 * time.Second}}, nil
}

// Check reads the server once and returns the swaps since the last
// reading. An unreachable or loading server is an error and changes
// nothing: a restart into the same model is no swap.
func (w *Watcher) Check(ctx context.Context) ([]Swap, error) {
	cur, err := w.read(ctx)
	if err != nil {
		return nil, err
	}
	prev, seen := w.prev, w.seen
	w.prev, w.seen = cur, true
	if !seen {
		return nil, nil
	}
	switch w.spec.Kind {
	case KindLlamaCpp:
		if len(prev) == 1 && len(cur) == 1 && prev[0] != cur[0] {
			return []Swap{{Name: w.spec.Name, From: prev[0], To: cur[0]}}, nil
		}
		return nil, nil
	default:
		// Each model that was not loaded before is one swap (a load);
		// models only unloading (keep_alive ran out) are none.
		var gone []string
		for _, p := range prev {
			if !slices.Contains(cur, p) {
				gone = append(gone, p)
			}
		}
		var out []Swap
		for _, c := range cur {
			if !slices.Contains(prev, c) {
				out = append(out, Swap{Name: w.spec.Name, From: strings.Join(gone, ","), To: c})
			}
		}
		return out, nil
	}
}

// Run polls every Spec.Every until ctx ends, handing each swap to onSwap
// and each failed poll to onErr (either may be nil).
func (w *Watcher) Run(ctx context.Context, onSwap func(Swap), onErr func(error)) {
	t := time.NewTicker(w.spec.Every)
	defer t.Stop()
	for {
		swaps, err := w.Check(ctx)
		if err != nil && onErr != nil {
			onErr(err)
		}
		for _, s := range swaps {
			if onSwap != nil {
				onSwap(s)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *Watcher) read(ctx context.Context) ([]string, error) {
	path := "/props"
	if w.spec.Kind == KindOllama {
		path = "/api/ps"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(w.spec.URL, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		// llama.cpp answers 503 "Loading model" until it is ready.
		return nil, fmt.Errorf("%s %s: HTTP %d", w.spec.Name, path, resp.StatusCode)
	}
	if w.spec.Kind == KindLlamaCpp {
		var p struct {
			ModelPath string `json:"model_path"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, fmt.Errorf("%s /props: %w", w.spec.Name, err)
		}
		if p.ModelPath == "" {
			return nil, fmt.Errorf("%s /props: no model_path", w.spec.Name)
		}
		return []string{p.ModelPath}, nil
	}
	var ps struct {
		Models []struct {
			Name   string `json:"name"`
			Digest string `json:"digest"`
		} `json:"models"`
	}
	if err := json.Unmarshal(body, &ps); err != nil {
		return nil, fmt.Errorf("%s /api/ps: %w", w.spec.Name, err)
	}
	out := []string{}
	for _, m := range ps.Models {
		// The digest tells a re-pulled tag (same name, new weights) apart.
		out = append(out, m.Name+"@"+m.Digest)
	}
	slices.Sort(out)
	return out, nil
}
