package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// --watch shows a read-only view (status, nodes, agents, gpu, queue stats,
// alerts, health) again every --interval until Ctrl-C, as watch(1) runs a
// command. On a terminal each snapshot replaces the last in place under a
// header line. Into a pipe or a file the snapshots follow each other a
// blank line apart, and with -o json each is one JSON document on one
// line, so a script reads the watch as a stream of documents.

const (
	defaultWatchInterval = 2 * time.Second
	// minWatchInterval keeps a watch from turning into a busy loop
	// against the control plane.
	minWatchInterval = time.Second
)

// Terminal control for the redraw: home the cursor, clear what is left of
// each line written over, and clear below the last one. Writing over the
// previous frame instead of clearing the screen first does not flicker.
const (
	cursorHome     = "\x1b[H"
	clearLineRest  = "\x1b[K"
	clearBelowRest = "\x1b[J"
)

// watchFlags are a view's --watch and --interval.
type watchFlags struct {
	enabled  bool
	interval time.Duration
}

// addWatchFlags gives cmd --watch and --interval (defaulting to interval),
// and refuses an interval under minWatchInterval as a usage error before
// the command runs.
func addWatchFlags(cmd *cobra.Command, interval time.Duration) *watchFlags {
	f := &watchFlags{}
	cmd.Flags().BoolVar(&f.enabled, "watch", false, "show this again every --interval until Ctrl-C (redrawn in place on a terminal; -o json: one document per line)")
	cmd.Flags().DurationVar(&f.interval, "interval", interval, fmt.Sprintf("with --watch: time between snapshots (at least %s)", minWatchInterval))
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if f.interval < minWatchInterval {
			return usageErrorf("--interval %s: must be at least %s", f.interval, minWatchInterval)
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
	return f
}

// renderFunc fetches a view and writes it to w, in the output format asked
// for.
type renderFunc func(ctx context.Context, w io.Writer) error

// view shows what render writes, once or (with --watch) until ctx ends,
// painted by paint (which may be nil) when the output is styled.
func (a *app) view(ctx context.Context, cmd *cobra.Command, wf *watchFlags, paint func(string) string, render renderFunc) error {
	if paint == nil || !a.tableOutput() || !a.styled() {
		paint = nil
	}
	if wf == nil || !wf.enabled {
		if paint == nil {
			return render(ctx, a.stdout())
		}
		snap, err := a.snapshot(ctx, render)
		if err != nil {
			return err
		}
		_, err = io.WriteString(a.rawStdout(), paint(snap))
		return err
	}
	return a.watch(ctx, cmd, wf, paint, render)
}

// snapshot renders one view into a string, escaped exactly as a.stdout()
// would escape it: what is written raw after it is only the CLI's own
// colour and cursor codes.
func (a *app) snapshot(ctx context.Context, render renderFunc) (string, error) {
	var buf bytes.Buffer
	if err := render(ctx, a.stdoutInto(&buf)); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// stdoutInto is a writer into buf that is a.stdout() in all but its
// destination: the same escaping, the same -o format for the writers.
func (a *app) stdoutInto(buf *bytes.Buffer) io.Writer {
	w := newSafeWriter(buf, a.jsonOutput)
	if out, ok := a.out.(*safeWriter); ok {
		w.format = out.format
	}
	return w
}

// watch renders the view every interval until ctx ends (Ctrl-C), which is
// a success. A first round that fails fails the command (a wrong address
// or token is not worth watching); a later failure is shown in place of
// the snapshot, or on stderr when not on a terminal, and the watch goes
// on, so a control plane's restart does not end it.
func (a *app) watch(ctx context.Context, cmd *cobra.Command, wf *watchFlags, paint func(string) string, render renderFunc) error {
	// A stream of data (JSON, YAML, a template's lines) is for a program
	// even when a terminal shows it.
	redraw := a.terminal() && a.tableOutput()
	title := fmt.Sprintf("Every %s: %s   (Ctrl-C to stop)", wf.interval, strings.TrimSpace(cmd.CommandPath()))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for round := 0; ; round++ {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		snap, err := a.snapshot(ctx, render)
		switch {
		case err != nil && interrupted(ctx):
			return nil
		case err != nil && round == 0:
			return err
		case err != nil && !redraw:
			fmt.Fprintf(a.stderr(), "error: %s\n", describeError(err))
		case err != nil:
			snap = "error: " + escapeTerminal(describeError(err)) + "\n"
		case paint != nil:
			snap = paint(snap)
		}
		if err == nil || redraw {
			if err := a.writeSnapshot(snap, round, redraw, title); err != nil {
				return err
			}
		}
		timer.Reset(wf.interval)
	}
}

// writeSnapshot prints one round: redrawn under the header on a terminal,
// one line of JSON with -o json, a YAML document of its own with -o yaml,
// else after a blank line from the last.
func (a *app) writeSnapshot(snap string, round int, redraw bool, title string) error {
	out := a.rawStdout()
	var b strings.Builder
	switch {
	case redraw:
		b.WriteString(cursorHome)
		frame := title + "   " + time.Now().Format("15:04:05") + "\n\n" + snap
		for line := range strings.SplitSeq(strings.TrimSuffix(frame, "\n"), "\n") {
			b.WriteString(line + clearLineRest + "\n")
		}
		b.WriteString(clearBelowRest)
	case a.output == outputJSON:
		var line bytes.Buffer
		if err := json.Compact(&line, []byte(snap)); err != nil {
			return fmt.Errorf("watch: snapshot is not one JSON document: %w", err)
		}
		b.Write(line.Bytes())
		b.WriteByte('\n')
	case round > 0 && a.output == outputYAML:
		b.WriteString("---\n" + snap)
	default:
		if round > 0 {
			b.WriteString("\n")
		}
		b.WriteString(snap)
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// interrupted reports that ctx ended; a call's DEADLINE_EXCEEDED can
// arrive a moment before ctx.Err() says so.
func interrupted(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}
