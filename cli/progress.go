package cli

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/factory/factory/controlplane/ops"
)

// The long commands (export, import, backup, restore, queue export and
// queue import) show how far they are on stderr, never on stdout, which
// may carry the dump itself or the JSON a script reads. On a terminal one
// line is redrawn in place every progressRedrawInterval, from a ticker, so
// the clock moves even while the command waits on the server. Anywhere
// else (a pipe, a CI log, cron's mail) a line is written at most every
// progressLineInterval: a long import leaves a few lines showing it was
// alive, not thousands, and a short one none. Either way the command ends
// with one summary line, written whatever stderr is.

// progressIntervalEnv overrides progressLineInterval off a terminal with a
// Go duration ("1s"); "0" writes a line on every update. It is a knob for
// tests and for logs that want more or fewer lines; a value that does not
// parse, or is negative, leaves the default.
const progressIntervalEnv = "FACTORY_PROGRESS_INTERVAL"

const (
	progressRedrawInterval = 200 * time.Millisecond
	progressLineInterval   = 5 * time.Second
)

// progressReporter counts what a long command moved (records and bytes)
// and shows it on stderr. The loops that move data only call add; the
// reporter decides when to write. stop must be called on every path,
// which clears a redrawn line so an error message starts on its own.
type progressReporter struct {
	w         io.Writer // progress lines: raw stderr on a terminal, the escaping writer elsewhere
	summaryTo io.Writer // the summary, through the escaping writer: it may name a user's path
	redraw    bool
	every     time.Duration // 0: a line on every update
	verb      string        // "importing"
	one, many string        // what is counted: "record", "records"
	start     time.Time

	mu      sync.Mutex
	records int64
	total   int64 // records expected; 0 when unknown
	bytes   int64
	size    int64  // bytes expected; 0 when unknown
	phase   string // what the command waits on, such as "loading"
	drawn   bool   // a redrawn line is on the screen
	stopped bool

	quit   chan struct{}
	ticker sync.WaitGroup
}

// stderrTerminal reports whether standard error is a terminal that
// understands a carriage return and "erase to end of line".
func (a *app) stderrTerminal() bool {
	return isTerminal(a.opts.Stderr) && os.Getenv("TERM") != "dumb"
}

// progressInterval is how often progress is written off a terminal.
func progressInterval() time.Duration {
	if v := strings.TrimSpace(os.Getenv(progressIntervalEnv)); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			return d
		}
	}
	return progressLineInterval
}

// newProgress starts a reporter for a command that is verb-ing (the
// "importing" of "importing: 12,345 records, 3.2 MiB, 4.1 s") things
// named one and many.
func (a *app) newProgress(verb, one, many string) *progressReporter {
	p := &progressReporter{w: a.stderr(), summaryTo: a.stderr(), every: progressInterval(),
		verb: verb, one: one, many: many, start: time.Now(), quit: make(chan struct{})}
	if a.stderrTerminal() {
		// Raw stderr: the escaping writer would print \r and ESC as
		// text, and the line holds nothing from the server.
		p.w, p.redraw, p.every = a.opts.Stderr, true, progressRedrawInterval
	}
	if p.every > 0 {
		p.ticker.Add(1)
		go p.tick()
	}
	return p
}

func (p *progressReporter) tick() {
	defer p.ticker.Done()
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			return
		case now := <-t.C:
			p.mu.Lock()
			p.drawLocked(now)
			p.mu.Unlock()
		}
	}
}

// add counts records and bytes that went through.
func (p *progressReporter) add(records, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.records += records
	p.bytes += bytes
	if p.every == 0 {
		p.drawLocked(time.Now())
	}
}

// setTotal sets how many records the command expects, once it knows.
func (p *progressReporter) setTotal(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total = n
}

// setSize sets how many bytes the command expects, once it knows.
func (p *progressReporter) setSize(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.size = n
}

// setPhase names what the command is waiting on ("" for nothing), so a
// line that does not move says why.
func (p *progressReporter) setPhase(phase string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phase = phase
	if p.every == 0 {
		p.drawLocked(time.Now())
	}
}

func (p *progressReporter) drawLocked(now time.Time) {
	if p.stopped {
		return
	}
	line := p.lineLocked(now)
	if p.redraw {
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
		p.drawn = true
		return
	}
	fmt.Fprintln(p.w, line)
}

// lineLocked is "importing: 12,345 records, 3.2 MiB of 8.0 MiB, 4.1 s",
// with what the command waits on before the time when it waits.
func (p *progressReporter) lineLocked(now time.Time) string {
	var b strings.Builder
	b.WriteString(p.verb)
	b.WriteString(": ")
	if p.total > 0 {
		b.WriteString(groupDigits(p.records) + " of ")
		b.WriteString(p.countLocked(p.total))
	} else {
		b.WriteString(p.countLocked(p.records))
	}
	if p.bytes > 0 {
		b.WriteString(", " + byteSize(p.bytes))
		if p.size > 0 {
			b.WriteString(" of " + byteSize(p.size))
		}
	}
	if p.phase != "" {
		b.WriteString(", " + p.phase)
	}
	b.WriteString(", " + seconds(now.Sub(p.start)))
	return b.String()
}

func (p *progressReporter) countLocked(n int64) string {
	if n == 1 {
		return "1 " + p.one
	}
	return groupDigits(n) + " " + p.many
}

// count renders n of what the reporter counts: "12,345 records".
func (p *progressReporter) count(n int64) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.countLocked(n)
}

// elapsed is the time since the reporter started, as the summary says it.
func (p *progressReporter) elapsed() string {
	return seconds(time.Since(p.start))
}

// stop ends the reporting and clears a redrawn line. It may be called
// more than once.
func (p *progressReporter) stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
	p.mu.Unlock()
	close(p.quit)
	p.ticker.Wait()
}

// finish stops the reporting and writes the summary line in its place.
func (p *progressReporter) finish(format string, args ...any) {
	p.stop()
	fmt.Fprintf(p.summaryTo, format+"\n", args...)
}

// dumpRecords counts the records in a piece of a dump: its whole lines,
// less the header and the end line, which count the records rather than
// being ones. A line cut across two pieces counts in the piece that ends
// it.
func dumpRecords(lines string) int64 {
	n := int64(strings.Count(lines, "\n"))
	if strings.HasPrefix(lines, `{"format":"`+ops.Format+`"`) {
		n--
	}
	// JSON escapes a quote inside a string, so this text starts a line
	// only where the end line is.
	const end = `{"kind":"end"`
	if strings.HasPrefix(lines, end) || strings.Contains(lines, "\n"+end) {
		n--
	}
	return max(n, 0)
}

// groupDigits writes n with thousands separators: 12,345.
func groupDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	sign := ""
	if n < 0 {
		sign, s = "-", s[1:]
	}
	if len(s) <= 3 {
		return sign + s
	}
	var b strings.Builder
	b.WriteString(sign)
	head := len(s) % 3
	if head > 0 {
		b.WriteString(s[:head])
	}
	for i := head; i < len(s); i += 3 {
		if b.Len() > len(sign) {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// seconds renders a duration as progress shows it: "4.1 s".
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
}
