package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func open(t *testing.T, path string) *Spool {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ids(evs []Event) string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return strings.Join(out, ",")
}

func appendN(t *testing.T, s *Spool, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := s.Append(Event{ID: n, Kind: "model_swap", Time: time.Unix(1_790_000_000, 0), Attributes: map[string]string{"to": n}}); err != nil {
			t.Fatalf("Append(%s): %v", n, err)
		}
	}
}

func TestSurvivesReopenUntilAckedThenTruncates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.jsonl")
	s := open(t, path)
	appendN(t, s, "a", "b", "c")
	// No Close: a kill -9 leaves the file as the fsyncs left it.
	s2 := open(t, path)
	if got := ids(s2.Pending()); got != "a,b,c" {
		t.Fatalf("after reopen pending = %s", got)
	}
	if p := s2.Pending()[1]; p.Kind != "model_swap" || p.Attributes["to"] != "b" || !p.Time.Equal(time.Unix(1_790_000_000, 0)) {
		t.Errorf("event b came back as %+v", p)
	}
	if err := s2.Ack([]string{"b", "nobody"}); err != nil {
		t.Fatal(err)
	}
	// One process holds a spool at a time: a reopen follows a close or
	// a kill.
	s2.Close()
	s3 := open(t, path)
	if got := ids(s3.Pending()); got != "a,c" {
		t.Fatalf("after acking b pending = %s", got)
	}
	if err := s3.Ack([]string{"a", "c"}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Errorf("all acked: file %v, %v; want truncated to 0", fi.Size(), err)
	}
	s3.Close()
	if s3.Len() != 0 || open(t, path).Len() != 0 {
		t.Error("events left after all were acked")
	}
}

func TestNewIDsAndDuplicateAppendsKeepOneCopy(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "spool.jsonl"))
	ev, err := s.Append(Event{Kind: "log_count"})
	if err != nil || len(ev.ID) != 36 || ev.Time.IsZero() {
		t.Fatalf("Append gave %+v, %v", ev, err)
	}
	if _, err := s.Append(ev); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 1 {
		t.Errorf("a repeated id is spooled %d times", s.Len())
	}
}

func TestTornLastLineIsSkippedOnOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.jsonl")
	s := open(t, path)
	appendN(t, s, "a", "b")
	s.Close()
	// A crash in the middle of an append: half a line, no newline.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"e":{"id":"c","kind":"model_sw`)
	f.Close()

	s2 := open(t, path)
	if got := ids(s2.Pending()); got != "a,b" || s2.Skipped != 1 {
		t.Fatalf("pending %s, skipped %d; want a,b and 1", got, s2.Skipped)
	}
	// The next append starts on a line of its own.
	appendN(t, s2, "d")
	s2.Close()
	s3 := open(t, path)
	if got := ids(s3.Pending()); got != "a,b,d" || s3.Skipped != 0 {
		t.Fatalf("after an append past the torn line: pending %s, skipped %d", got, s3.Skipped)
	}
}

func TestFullDiskIsAClearErrorAndCorruptsNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.jsonl")
	s := open(t, path)
	appendN(t, s, "a")
	before, _ := os.ReadFile(path)
	// The disk fills in the middle of the line.
	s.write = func(f *os.File, b []byte) (int, error) {
		n, _ := f.Write(b[:len(b)/2])
		return n, fmt.Errorf("write %s: %w", f.Name(), syscall.ENOSPC)
	}
	_, err := s.Append(Event{ID: "b", Kind: "model_swap"})
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "not spooled") {
		t.Fatalf("Append on a full disk: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Errorf("a failed append left %q behind", after[len(before):])
	}
	if got := ids(s.Pending()); got != "a" {
		t.Errorf("pending %s after a failed append", got)
	}
	// Space again: appends work and the file reads back whole.
	s.write = nil
	appendN(t, s, "c")
	s.Close()
	s2 := open(t, path)
	if got := ids(s2.Pending()); got != "a,c" || s2.Skipped != 0 {
		t.Errorf("reopened: pending %s, skipped %d", got, s2.Skipped)
	}
}

func TestCompactionKeepsOnlyPending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.jsonl")
	s := open(t, path)
	appendN(t, s, "keep")
	var names []string
	for i := range compactAfter + 10 {
		names = append(names, fmt.Sprint("e", i))
	}
	appendN(t, s, names...)
	if err := s.Ack(names); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if n := strings.Count(string(data), "\n"); n != 1 {
		t.Errorf("compacted file has %d lines, want 1", n)
	}
	appendN(t, s, "after")
	s.Close()
	if got := ids(open(t, path).Pending()); got != "keep,after" {
		t.Errorf("reopened after compaction: %s", got)
	}
}

// TestFilesAreTheOwnersOnly: a new spool is 0600 in a 0700 directory, a
// spool left wider is tightened on open, and a compaction keeps the mode.
func TestFilesAreTheOwnersOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "events.jsonl")
	s := open(t, path)
	appendN(t, s, "a", "b")
	mode := func(p string) os.FileMode {
		t.Helper()
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	if m := mode(dir); m != 0o700 {
		t.Errorf("spool directory %v, want 0700", m)
	}
	if m := mode(path); m != 0o600 {
		t.Errorf("new spool %v, want 0600", m)
	}
	s.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	if m := mode(path); m != 0o600 {
		t.Errorf("reopened spool %v, want it tightened to 0600", m)
	}
	if err := s.Ack([]string{"a"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if m := mode(path); m != 0o600 {
		t.Errorf("after an ack %v, want 0600", m)
	}
}
