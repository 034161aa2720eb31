// Package proctest runs the factory's binaries as processes for tests
// that crash, restart and cut them off: it keeps each process's JSON log
// in memory to wait on and to show when a test fails, and stops it when
// the test ends.
package proctest

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Line is one JSON line of a process's log; a line that is not JSON is
// kept as {"msg": text}.
type Line map[string]any

// Str is the string at key k, or "".
func (l Line) Str(k string) string { s, _ := l[k].(string); return s }

// Proc is a process under test.
type Proc struct {
	T      testing.TB
	Name   string
	Cmd    *exec.Cmd
	Exited chan struct{}
	// FailureLines and FailureFilter choose the log lines shown when the
	// test failed: the last FailureLines (60 when 0) of those the filter
	// keeps (all when nil).
	FailureLines  int
	FailureFilter func(Line) bool

	mu    sync.Mutex
	lines []Line
	raw   []string
}

// Start runs bin with args and env added to this process's environment.
// When the test ends the process gets SIGTERM, then SIGKILL; if the test
// failed, the last lines of its log are shown (see FailureLines).
func Start(t testing.TB, name, bin string, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{T: t, Name: name, Exited: make(chan struct{})}
	p.Cmd = exec.Command(bin, args...)
	p.Cmd.Env = append(os.Environ(), env...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.Cmd.Stdout = pw
	p.Cmd.Stderr = pw
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	pw.Close()
	go p.scan(pr)
	go func() {
		_ = p.Cmd.Wait()
		close(p.Exited)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			n := p.FailureLines
			if n == 0 {
				n = 60
			}
			t.Logf("%s log (last %d lines):\n%s", p.Name, n, p.Tail(n, p.FailureFilter))
		}
	})
	return p
}

func (p *Proc) scan(f *os.File) {
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		text := sc.Text()
		var l Line
		if json.Unmarshal([]byte(text), &l) != nil {
			l = Line{"msg": text}
		}
		p.mu.Lock()
		p.lines = append(p.lines, l)
		p.raw = append(p.raw, text)
		p.mu.Unlock()
	}
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Find returns the first log line that matches.
func (p *Proc) Find(match func(Line) bool) (Line, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if match(l) {
			return l, true
		}
	}
	return nil, false
}

// Count counts the log lines that match.
func (p *Proc) Count(match func(Line) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if match(l) {
			n++
		}
	}
	return n
}

// Tail is the last n log lines that keep says to keep (all when keep is
// nil), as written.
func (p *Proc) Tail(n int, keep func(Line) bool) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for i, l := range p.lines {
		if keep == nil || keep(l) {
			out = append(out, p.raw[i])
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "\n")
}

// Alive reports whether the process still runs.
func (p *Proc) Alive() bool {
	select {
	case <-p.Exited:
		return false
	default:
		return true
	}
}

// WaitLog waits until a log line matches, and returns it.
func (p *Proc) WaitLog(what string, within time.Duration, match func(Line) bool) Line {
	p.T.Helper()
	deadline := time.After(within)
	for {
		if l, ok := p.Find(match); ok {
			return l
		}
		select {
		case <-p.Exited:
			p.T.Fatalf("%s exited while waiting for %s:\n%s", p.Name, what, p.Tail(40, nil))
		case <-deadline:
			p.T.Fatalf("%s: no %s within %s:\n%s", p.Name, what, within, p.Tail(40, nil))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Kill9 ends the process with SIGKILL, as a crash or the OOM killer would.
func (p *Proc) Kill9() {
	p.T.Helper()
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.Exited:
	case <-time.After(10 * time.Second):
		p.T.Fatalf("%s did not exit after SIGKILL", p.Name)
	}
}

// Stop asks the process to end (SIGTERM) and kills it if it has not
// within 15 s.
func (p *Proc) Stop() {
	if !p.Alive() {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited:
	case <-time.After(15 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.Exited
	}
}
