// Package logwatch counts regular-expression matches in a log: a file
// being appended to (tail -f: it follows truncation and rotation) or the
// output of a command (journalctl -u llama-inference -f -o cat), which is
// restarted with backoff whenever it exits.
//
// Its main use is the model-swap rate: every load of a model by an
// inference server is one match, and the control plane alerts above 20
// swaps an hour. The pattern must match once per load; in llama.cpp's log
// a bare "loading model" matches three lines per load, so the default is
// DefaultLlamaCppPattern.
package logwatch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"time"
)

// DefaultLlamaCppPattern matches the one line llama-server logs per model
// load ("srv    load_model: loading model '<path>'").
const DefaultLlamaCppPattern = `load_model: loading model`

// Spec configures one watcher (the sidecar YAML's log_watch entries).
type Spec struct {
	// Name identifies the watcher in events ("llama-swaps").
	Name string `yaml:"name"`
	// Path is a file to follow; exactly one of Path and Command is set.
	Path string `yaml:"path"`
	// Command is a program and its arguments whose output is read.
	Command []string `yaml:"command"`
	// Pattern is the regular expression counted once per matching line
	// (DefaultLlamaCppPattern when empty).
	Pattern string `yaml:"pattern"`
	// Window is the counting window (1h when zero).
	Window time.Duration `yaml:"window"`
	// ModelSwap says each match is a model load: the sidecar reports it
	// as a model_swap event besides the window counts.
	ModelSwap bool `yaml:"model_swap"`
}

// Window is one finished counting window.
type Window struct {
	Name       string
	Start, End time.Time
	Count      int
}

// Watcher follows one log.
type Watcher struct {
	spec Spec
	re   *regexp.Regexp
	// OnMatch, when set, gets every matching line.
	OnMatch func(line string)
	// OnWindow, when set, gets each window's count as it closes.
	OnWindow func(Window)
	// Poll is how often a file is checked for new lines (250ms).
	Poll time.Duration
	// MinBackoff and MaxBackoff bound the wait before restarting an
	// exited command (1s and 30s).
	MinBackoff, MaxBackoff time.Duration

	// skipFile and skipTo are the file at New and its size then: history
	// already in it is not counted (tail -f).
	skipFile os.FileInfo
	skipTo   int64

	mu      sync.Mutex
	matches []time.Time // match times within the rolling window
	start   time.Time   // the current tumbling window's start
	count   int         // matches in it
}

// New checks spec and returns its watcher.
func New(spec Spec) (*Watcher, error) {
	if spec.Name == "" {
		return nil, errors.New("logwatch: a watcher needs a name")
	}
	if (spec.Path == "") == (len(spec.Command) == 0) {
		return nil, fmt.Errorf("logwatch %s: set exactly one of path and command", spec.Name)
	}
	if spec.Pattern == "" {
		spec.Pattern = DefaultLlamaCppPattern
	}
	re, err := regexp.Compile(spec.Pattern)
	if err != nil {
		return nil, fmt.Errorf("logwatch %s: pattern: %w", spec.Name, err)
	}
	if spec.Window <= 0 {
		spec.Window = time.Hour
	}
	w := &Watcher{spec: spec, re: re, Poll: 250 * time.Millisecond, MinBackoff: time.Second, MaxBackoff: 30 * time.Second}
	if spec.Path != "" {
		if st, err := os.Stat(spec.Path); err == nil {
			w.skipFile, w.skipTo = st, st.Size()
		}
	}
	return w, nil
}

// Spec returns the watcher's spec with defaults filled in.
func (w *Watcher) Spec() Spec { return w.spec }

// Count returns the matches in the last Window (rolling).
func (w *Watcher) Count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pruneLocked(time.Now())
	return len(w.matches)
}

func (w *Watcher) pruneLocked(now time.Time) {
	cut := now.Add(-w.spec.Window)
	i := 0
	for i < len(w.matches) && !w.matches[i].After(cut) {
		i++
	}
	w.matches = w.matches[i:]
}

// line handles one line of the log.
func (w *Watcher) line(text string, now time.Time) {
	if !w.re.MatchString(text) {
		return
	}
	w.mu.Lock()
	w.matches = append(w.matches, now)
	w.pruneLocked(now)
	w.count++
	w.mu.Unlock()
	if w.OnMatch != nil {
		w.OnMatch(text)
	}
}

// closeWindow ends the current tumbling window at now.
func (w *Watcher) closeWindow(now time.Time) {
	w.mu.Lock()
	win := Window{Name: w.spec.Name, Start: w.start, End: now, Count: w.count}
	w.start, w.count = now, 0
	w.mu.Unlock()
	if w.OnWindow != nil {
		w.OnWindow(win)
	}
}

// Run follows the log until ctx ends, closing a window every Window.
func (w *Watcher) Run(ctx context.Context) error {
	w.mu.Lock()
	w.start = time.Now()
	w.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(w.spec.Window)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				w.closeWindow(now)
			}
		}
	}()
	if w.spec.Path != "" {
		return w.tail(ctx)
	}
	return w.command(ctx)
}

// tail follows spec.Path like tail -F: it skips what a file held when New
// ran (history is not a new swap), reads a file created later from its
// start, starts over when the file shrinks (truncation), and moves to the
// new file when the path names another one (rotation), after reading what
// was left in the old one.
func (w *Watcher) tail(ctx context.Context) error {
	var (
		f       *os.File
		partial []byte
	)
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	buf := make([]byte, 64<<10)
	drain := func() {
		for {
			n, err := f.Read(buf)
			if n > 0 {
				partial = append(partial, buf[:n]...)
				for {
					i := bytes.IndexByte(partial, '\n')
					if i < 0 {
						break
					}
					w.line(string(bytes.TrimRight(partial[:i], "\r")), time.Now())
					partial = partial[i+1:]
				}
			}
			if err != nil || n == 0 {
				return
			}
		}
	}
	for {
		if f == nil {
			nf, err := os.Open(w.spec.Path)
			if err == nil {
				f = nf
				if w.skipFile != nil && sameFile(f, w.skipFile) {
					_, _ = f.Seek(w.skipTo, io.SeekStart)
				}
				w.skipFile = nil
				partial = nil
			}
		}
		if f != nil {
			if off, err := f.Seek(0, io.SeekCurrent); err == nil {
				if st, err := f.Stat(); err == nil && st.Size() < off {
					_, _ = f.Seek(0, io.SeekStart) // truncated: read it again from the top
					partial = nil
				}
			}
			drain()
			if cur, err := os.Stat(w.spec.Path); err != nil || !sameFile(f, cur) {
				// Rotated or removed: the old file is done once drained.
				f.Close()
				f = nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(w.Poll):
		}
	}
}

func sameFile(f *os.File, cur os.FileInfo) bool {
	st, err := f.Stat()
	return err == nil && os.SameFile(st, cur)
}

// command runs spec.Command and reads its output, restarting it with
// exponential backoff whenever it exits; a run that lasted a minute
// starts the backoff over.
func (w *Watcher) command(ctx context.Context) error {
	backoff := w.MinBackoff
	for {
		started := time.Now()
		w.runCommand(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > time.Minute {
			backoff = w.MinBackoff
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, w.MaxBackoff)
	}
}

func (w *Watcher) runCommand(ctx context.Context) {
	cmd := exec.CommandContext(ctx, w.spec.Command[0], w.spec.Command[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return
	}
	if err := cmd.Start(); err != nil {
		return
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		w.line(sc.Text(), time.Now())
	}
	// A line too long for the scanner ends the scan; drain the rest so the
	// command is not left blocked on a full pipe.
	_, _ = io.Copy(io.Discard, out)
	_ = cmd.Wait() // an exit is expected: the loop restarts it
}
