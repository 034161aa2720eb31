package logwatch

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

const fixture = "../../../shared/fixtures/services/llamacpp-model-load.log"

func readFixture(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(fixture)
	if err != nil {
		t.Skipf("fixture: %v", err)
	}
	return b
}

func appendTo(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func start(t *testing.T, spec Spec) (*Watcher, *atomic.Int32) {
	t.Helper()
	w, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	w.Poll, w.MinBackoff, w.MaxBackoff = 10*time.Millisecond, 10*time.Millisecond, 50*time.Millisecond
	var matches atomic.Int32
	w.OnMatch = func(string) { matches.Add(1) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return w, &matches
}

func waitCount(t *testing.T, what string, got func() int32, want int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for got() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d matches, want %d", what, got(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The fixture holds two model loads. The default pattern counts one match
// per load; the bare "loading model" counts three lines per load (main:,
// load_model: and load_tensors:), which would triple the swap rate.
func TestDefaultPatternCountsOnePerLoadInTheRealLlamaCppLog(t *testing.T) {
	log := readFixture(t)
	for _, c := range []struct {
		pattern string
		want    int32
	}{{"", 2}, {"loading model", 6}} {
		path := filepath.Join(t.TempDir(), "llama.log")
		// History already in the file is not counted: tail -f.
		appendTo(t, path, log)
		w, matches := start(t, Spec{Name: "llama", Path: path, Pattern: c.pattern})
		appendTo(t, path, log)
		waitCount(t, "pattern "+c.pattern, matches.Load, c.want)
		if w.Count() != int(c.want) {
			t.Errorf("rolling count %d, want %d", w.Count(), c.want)
		}
	}
}

func TestFollowsTruncationAndRotation(t *testing.T) {
	log := readFixture(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "llama.log")
	// The file does not exist yet: once created it is read from the start.
	_, matches := start(t, Spec{Name: "llama", Path: path})
	appendTo(t, path, log)
	waitCount(t, "created", matches.Load, 2)

	// copytruncate: the file shrinks and fills again, with the first load
	// only, so it stays shorter than before whenever the watcher looks.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	firstLoad := log[:bytes.Index(log, []byte("load_tensors:"))]
	appendTo(t, path, firstLoad)
	waitCount(t, "after truncation", matches.Load, 3)

	// Rotation: the old file moves away, a new one takes its name.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendTo(t, path, log)
	waitCount(t, "after rotation", matches.Load, 5)
}

// A command that exits (journalctl restarted, a crash) is run again.
func TestCommandIsRestartedWhenItExits(t *testing.T) {
	abs, err := filepath.Abs(fixture)
	if err != nil {
		t.Fatal(err)
	}
	readFixture(t)
	_, matches := start(t, Spec{Name: "journal", Command: []string{"cat", abs}})
	deadline := time.Now().Add(10 * time.Second)
	for matches.Load() < 6 { // three runs of two loads
		if time.Now().After(deadline) {
			t.Fatalf("%d matches after 10s: the command was not restarted", matches.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWindowsAndRollingCount(t *testing.T) {
	w, err := New(Spec{Name: "swaps", Path: "/dev/null", Window: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var got []Window
	w.OnWindow = func(win Window) { got = append(got, win) }
	now := time.Now()
	w.start = now.Add(-time.Hour)
	w.line("srv    load_model: loading model '/m/a.gguf'", now.Add(-90*time.Minute))
	w.line("main: loading model", now)
	w.line("srv    load_model: loading model '/m/b.gguf'", now)
	if c := w.Count(); c != 1 {
		t.Errorf("rolling count %d, want 1 (the old match is out of the hour)", c)
	}
	w.closeWindow(now)
	w.closeWindow(now.Add(time.Hour))
	if len(got) != 2 || got[0].Count != 2 || got[1].Count != 0 || got[0].Name != "swaps" || !got[1].Start.Equal(now) {
		t.Errorf("windows %+v", got)
	}
	if _, err := New(Spec{Name: "x"}); err == nil {
		t.Error("a spec with neither path nor command was accepted")
	}
	if _, err := New(Spec{Name: "x", Path: "p", Pattern: "("}); err == nil {
		t.Error("a bad pattern was accepted")
	}
}
