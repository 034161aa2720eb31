package swapwatch

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
)

type fixtureEntry struct {
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body"`
}

func loadFixture(t *testing.T, name string) map[string]fixtureEntry {
	t.Helper()
	raw, err := os.ReadFile("../../../shared/fixtures/services/" + name)
	if err != nil {
		t.Skipf("fixture: %v", err)
	}
	var m map[string]fixtureEntry
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// server answers with whichever fixture entry is current.
type server struct {
	mu  sync.Mutex
	cur fixtureEntry
}

func (s *server) set(e fixtureEntry) { s.mu.Lock(); s.cur = e; s.mu.Unlock() }

func (s *server) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	e := s.cur
	s.mu.Unlock()
	w.WriteHeader(e.Status)
	w.Write(e.Body)
}

func check(t *testing.T, w *Watcher) []Swap {
	t.Helper()
	swaps, _ := w.Check(context.Background())
	return swaps
}

func TestLlamaCppPropsModelPathChangeIsASwap(t *testing.T) {
	fx := loadFixture(t, "llamacpp-health.json")
	ready, loading := fx["GET /props (ready)"], fx["GET /props (model still loading)"]
	srv := &server{}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	w, err := New(Spec{Name: "llama", Kind: KindLlamaCpp, URL: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	srv.set(ready)
	if s := check(t, w); len(s) != 0 {
		t.Fatalf("the first reading is a baseline, got %v", s)
	}
	// A restart: loading (503), then the same model. No swap.
	srv.set(loading)
	if _, err := w.Check(context.Background()); err == nil {
		t.Error("a loading server read as ok")
	}
	srv.set(ready)
	if s := check(t, w); len(s) != 0 {
		t.Fatalf("a restart into the same model: %v", s)
	}
	// Another model.
	var body map[string]any
	json.Unmarshal(ready.Body, &body)
	from := body["model_path"].(string)
	body["model_path"] = "/srv/models/llama-3.1-8b-instruct-q8_0.gguf"
	swapped, _ := json.Marshal(body)
	srv.set(fixtureEntry{Status: 200, Body: swapped})
	s := check(t, w)
	if len(s) != 1 || s[0].From != from || s[0].To != "/srv/models/llama-3.1-8b-instruct-q8_0.gguf" || s[0].Name != "llama" {
		t.Fatalf("swap: %+v", s)
	}
}

func TestOllamaPsLoadsAreSwapsAndUnloadsAreNot(t *testing.T) {
	fx := loadFixture(t, "ollama.json")
	one := fx["GET /api/ps (one model loaded, default keep_alive)"]
	after := fx["GET /api/ps (after a swap: different model, embedder pinned with keep_alive=-1)"]
	offload := fx["GET /api/ps (partially offloaded to CPU)"]
	none := fx["GET /api/ps (nothing loaded)"]
	srv := &server{}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	w, err := New(Spec{Name: "ollama", Kind: KindOllama, URL: ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	srv.set(one)
	check(t, w)
	// qwen2.5-coder out; nomic-embed-text and llama3.1 in: two loads.
	srv.set(after)
	s := check(t, w)
	if len(s) != 2 {
		t.Fatalf("after the swap: %+v", s)
	}
	for _, sw := range s {
		if !strings.HasPrefix(sw.From, "qwen2.5-coder:32b@7e32308d") {
			t.Errorf("swap from %q", sw.From)
		}
	}
	// Everything unloads (keep_alive ran out): no swap.
	srv.set(none)
	if s := check(t, w); len(s) != 0 {
		t.Errorf("unloading: %+v", s)
	}
	// The same model and digest as before but with another context size
	// is a load from nothing.
	srv.set(offload)
	if s := check(t, w); len(s) != 1 || s[0].From != "" || !strings.HasPrefix(s[0].To, "qwen2.5-coder:32b@") {
		t.Errorf("load from nothing: %+v", s)
	}
	if s := check(t, w); len(s) != 0 {
		t.Errorf("no change: %+v", s)
	}
}
