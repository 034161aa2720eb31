package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/codes"

	"github.com/factory/factory/controlplane/ops"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// withOps is withQueue for the OpsService.
func (a *app) withOps(cmd *cobra.Command, fn func(ctx context.Context, c factoryv1.OpsServiceClient) error) error {
	ctx, span := a.opts.TracerProvider.Tracer("github.com/factory/factory/cli").Start(cmd.Context(), spanName(cmd))
	defer span.End()
	conn, err := a.dial()
	if err == nil {
		defer conn.Close()
		err = fn(ctx, factoryv1.NewOpsServiceClient(conn))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// dumpCounts is a dump's records by kind, as -o json prints them.
type dumpCounts struct {
	Queue        int64 `json:"queue"`
	Tasks        int64 `json:"tasks"`
	Tokens       int64 `json:"tokens"`
	AuditEntries int64 `json:"audit_entries"`
	FleetEvents  int64 `json:"fleet_events"`
	// Rows: the spend ledger, budgets, approvals, alerts and the rest.
	Rows int64 `json:"rows"`
}

func countsOf(c *factoryv1.DumpCounts) dumpCounts {
	return dumpCounts{Queue: c.GetQueue(), Tasks: c.GetTasks(), Tokens: c.GetTokens(), AuditEntries: c.GetAuditEntries(), FleetEvents: c.GetFleetEvents(), Rows: c.GetRows()}
}

func (c dumpCounts) String() string {
	plural := func(n int64, one, many string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %s", n, many)
	}
	return plural(c.Queue, "queue record", "queue records") + ", " + plural(c.Tasks, "task", "tasks") + ", " +
		plural(c.Tokens, "token", "tokens") + ", " + plural(c.AuditEntries, "audit entry", "audit entries") + ", " +
		plural(c.FleetEvents, "fleet event", "fleet events") + ", " + plural(c.Rows, "other row", "other rows")
}

// total is the number of records, one a dump line.
func (c dumpCounts) total() int64 {
	return c.Queue + c.Tasks + c.Tokens + c.AuditEntries + c.FleetEvents + c.Rows
}

// writeCountsTable prints counts as a KIND/RECORDS table.
func writeCountsTable(w io.Writer, c dumpCounts) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "KIND\tRECORDS")
	fmt.Fprintf(tw, "queue\t%d\n", c.Queue)
	fmt.Fprintf(tw, "tasks\t%d\n", c.Tasks)
	fmt.Fprintf(tw, "tokens\t%d\n", c.Tokens)
	fmt.Fprintf(tw, "audit entries\t%d\n", c.AuditEntries)
	fmt.Fprintf(tw, "fleet events\t%d\n", c.FleetEvents)
	return tw.Flush()
}

// exportSummaryJSON is what `export -o json` prints.
type exportSummaryJSON struct {
	File   string     `json:"file"`
	Bytes  int64      `json:"bytes"`
	Counts dumpCounts `json:"counts"`
}

func newExportCommand(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "export FILE",
		Short: "Write a dump of the control plane's whole state",
		Long: `Export writes the control plane's whole state to FILE ("-" for stdout): the
queue's pause switch and reason; every task with every field (id, state,
attempt, lease holder, fencing token and expiry, run_after, dependencies,
labels, payload, errors, notes, every timestamp); every access token, as
the hash of its secret (never the secret); the audit log; and the fleet
events sidecars reported (model swaps, log-watch counts). It is read
from one snapshot while the factory keeps working. "factory import" loads
it into another control plane, such as one on PostgreSQL.

The dump is JSON Lines: a header {"format":"factory-dump","version":1},
one line per record, and an end line counting them, so a cut-short file is
refused on import. It is canonical: two exports of the same state are the
same bytes, whichever store (SQLite or PostgreSQL) wrote them. Times are
RFC 3339 UTC with microseconds, the finest both stores keep.

FILE must not exist unless --force; it is written to a temporary file
beside it and renamed into place once whole. Progress and a summary, with
the time of the export, go to stderr: on a terminal one line redrawn in
place, elsewhere a line every 5 s at most (FACTORY_PROGRESS_INTERVAL, a Go
duration, changes that; 0 writes one per update). The dump holds every
task's payload and every token's hash: keep it as private as the database.`,
		Example: `  factory export factory.dump
  factory export - | gzip > factory.dump.gz
  factory export factory.dump --force -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			if path != "-" && !force {
				if _, err := os.Stat(path); err == nil {
					// Exit 1 with one line: the command line was fine.
					return fmt.Errorf("%s exists: pass --force to replace it", path)
				} else if !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			var (
				out    io.Writer = a.rawStdout()
				tmp    *os.File
				counts *factoryv1.DumpCounts
				n      int64
			)
			if path != "-" {
				var err error
				// Beside FILE, so the rename is atomic; never half a dump
				// under FILE's name.
				tmp, err = os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.partial")
				if err != nil {
					return err
				}
				defer func() {
					tmp.Close()
					os.Remove(tmp.Name())
				}()
				out = tmp
			}
			bw := bufio.NewWriterSize(out, 1<<20)
			// The snapshot is taken as the call starts: that is the
			// export's time.
			started := time.Now().UTC()
			p := a.newProgress("exporting", "record", "records")
			defer p.stop()
			err := a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				stream, err := c.ExportState(ctx, &factoryv1.ExportStateRequest{})
				if err != nil {
					return err
				}
				for {
					m, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						return nil
					}
					if err != nil {
						return err
					}
					k, err := bw.WriteString(m.GetLines())
					if err != nil {
						return err
					}
					n += int64(k)
					if m.GetCounts() != nil {
						counts = m.GetCounts()
					}
					p.add(dumpRecords(m.GetLines()), int64(k))
				}
			})
			if err != nil {
				return err
			}
			if counts == nil {
				return errors.New("the export ended without its counts: the dump is incomplete")
			}
			if err := bw.Flush(); err != nil {
				return err
			}
			if tmp != nil {
				if err := tmp.Sync(); err != nil {
					return err
				}
				if err := tmp.Close(); err != nil {
					return err
				}
				if err := os.Rename(tmp.Name(), path); err != nil {
					return err
				}
			}
			c := countsOf(counts)
			p.finish("exported %s (%s) to %s at %s in %s", c, byteSize(n), streamName(path, "stdout"),
				started.Format(time.RFC3339), p.elapsed())
			if path != "-" {
				if a.jsonOutput() {
					return writeJSON(a.stdout(), exportSummaryJSON{File: path, Bytes: n, Counts: c})
				}
				return writeCountsTable(a.stdout(), c)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace FILE if it exists")
	return cmd
}

// importSummaryJSON is what `import -o json` prints.
type importSummaryJSON struct {
	File   string     `json:"file"`
	Merge  bool       `json:"merge"`
	Bytes  int64      `json:"bytes"`
	Loaded dumpCounts `json:"loaded"`
}

// importChunk is how much of a dump one ImportState message carries, well
// under the server's 3 MiB limit per message.
const importChunk = 1 << 20

func newImportCommand(a *app) *cobra.Command {
	var merge bool
	cmd := &cobra.Command{
		Use:   "import FILE [--merge]",
		Short: "Load a dump made by \"factory export\" into the control plane",
		Long: `Import loads a dump ("-" reads stdin) into the control plane's store, all or
nothing: tasks keep their ids, states, attempts, leases, fencing tokens,
creation order (so FIFO order holds) and every time; the queue keeps its
pause; tokens keep working, because their hashes move with them; the audit
log keeps its entries and ids; fleet events keep their ids and order.
Waiting agents are woken for the tasks that arrive. The import itself is
recorded in the audit log.

The store must be empty: a control plane fresh on its database, holding
only the operator token it made at first start (which stays, so the
import can be run with it). Fleet events do not count: sidecars may
report to the new control plane before the import, and a fleet event
whose id is already stored is skipped, as a sidecar's replay of it is.
Otherwise it is refused, unless --merge: then nothing is overwritten (a
task or token that exists is an error naming it), the merged tasks queue
behind those already there, audit entries are appended, and the dump's
queue pause must match this one's.

A damaged, truncated or unknown dump is refused naming the line, before
anything is written. Progress and a summary go to stderr, as for export.`,
		Example: `  factory --addr pg-host:7420 import factory.dump
  gunzip -c factory.dump.gz | factory import -
  factory import other-factory.dump --merge -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			var (
				in   io.Reader = os.Stdin
				size int64     = -1
			)
			if path != "-" {
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				defer f.Close()
				if info, err := f.Stat(); err == nil {
					size = info.Size()
				}
				in = f
			}
			br := bufio.NewReaderSize(in, 1<<20)
			// A quick look at the header, so a wrong file is named here
			// rather than after it was uploaded.
			if err := checkDumpHeader(br, streamName(path, "stdin")); err != nil {
				return err
			}
			var (
				sent int64
				resp *factoryv1.ImportStateResponse
			)
			p := a.newProgress("importing", "record", "records")
			defer p.stop()
			p.setSize(size)
			err := a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				stream, err := c.ImportState(ctx)
				if err != nil {
					return err
				}
				ch := &chunker{br: br, max: importChunk}
				first := true
				for {
					chunk, err := ch.next()
					if err != nil {
						return err
					}
					if chunk == "" {
						break
					}
					if err := stream.Send(&factoryv1.ImportStateRequest{Lines: chunk, Merge: first && merge}); err != nil {
						if errors.Is(err, io.EOF) {
							break // the server answered early; CloseAndRecv says why
						}
						return err
					}
					first = false
					sent += int64(len(chunk))
					p.add(dumpRecords(chunk), int64(len(chunk)))
				}
				// The server spools the upload, then checks and loads it:
				// the counts stop while the clock goes on.
				p.setPhase("loading")
				resp, err = stream.CloseAndRecv()
				return err
			})
			if err != nil {
				return err
			}
			loaded := countsOf(resp.GetLoaded())
			verb := "imported"
			if merge {
				verb = "merged"
			}
			p.finish("%s %s (%s) from %s in %s", verb, p.count(loaded.total()), byteSize(sent), streamName(path, "stdin"), p.elapsed())
			if a.jsonOutput() {
				return writeJSON(a.stdout(), importSummaryJSON{File: path, Merge: merge, Bytes: sent, Loaded: loaded})
			}
			fmt.Fprintf(a.stdout(), "%s %s from %s\n", verb, loaded, streamName(path, "stdin"))
			return writeCountsTable(a.stdout(), loaded)
		},
	}
	cmd.Flags().BoolVar(&merge, "merge", false, "load into a store that is not empty, overwriting nothing")
	return cmd
}

// checkDumpHeader peeks at the first line: it must be a dump's header.
func checkDumpHeader(br *bufio.Reader, name string) error {
	head, err := br.Peek(256)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return err
	}
	if i := bytes.IndexByte(head, '\n'); i >= 0 {
		head = head[:i]
	}
	var h struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	}
	if json.Unmarshal(head, &h) != nil || h.Format != ops.Format {
		return fmt.Errorf("%s is not a factory dump: its first line is not {\"format\":%q,...} (make one with \"factory export\")", name, ops.Format)
	}
	if h.Version != ops.Version {
		return fmt.Errorf("%s is a version %d dump; this factory reads version %d", name, h.Version, ops.Version)
	}
	return nil
}

// chunker cuts a dump into ImportState messages: whole lines, up to max
// bytes each; a line longer than that is cut at a character boundary
// (the server joins the pieces), since a message's text must be UTF-8.
type chunker struct {
	br      *bufio.Reader
	max     int
	pending []byte // the start of the next chunk
	eof     bool
}

// next returns the next chunk; "" once the input is done.
func (c *chunker) next() (string, error) {
	buf := c.pending
	c.pending = nil
	for !c.eof && len(buf) < c.max {
		line, err := c.br.ReadSlice('\n')
		buf = append(buf, line...)
		switch {
		case errors.Is(err, io.EOF):
			c.eof = true
		case err != nil && !errors.Is(err, bufio.ErrBufferFull):
			return "", err
		}
	}
	if len(buf) <= c.max {
		return string(buf), nil
	}
	cut := bytes.LastIndexByte(buf[:c.max], '\n') + 1
	if cut == 0 {
		cut = c.max
		for cut > 0 && !utf8.RuneStart(buf[cut]) {
			cut--
		}
		if cut == 0 {
			cut = c.max
		}
	}
	c.pending = append([]byte(nil), buf[cut:]...)
	return string(buf[:cut]), nil
}

// streamName names FILE in messages: "-" is the standard stream.
func streamName(path, std string) string {
	if path == "-" {
		return std
	}
	return path
}

// byteSize renders a size for people: 12.3 MiB.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
