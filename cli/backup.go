package cli

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/factory/factory/controlplane/ops"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// backupSummaryJSON is what `backup -o json` prints.
type backupSummaryJSON struct {
	Dir      string        `json:"dir"`
	Manifest *ops.Manifest `json:"manifest"`
}

func newBackupCommand(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup DIR",
		Short: "Take a consistent online backup of the control plane's store",
		Long: `Backup takes a snapshot of the whole store while the factory keeps working
(runbook §7) and writes it to DIR (created if missing; it must not hold a
backup already):

  factory.db     SQLite stores only: a copy made with VACUUM INTO, checked
                 with PRAGMA integrity_check before it is sent
  dump.jsonl     the state as a dump ("factory export" format), read from
                 the same snapshot
  manifest.json  format version, created_at, the store's driver and
                 migration version, counts per record kind, and the size
                 and SHA-256 of each file

On PostgreSQL the dump is the backup (read from one snapshot); pg_dump
remains the tool for the database itself.

Check a backup with "factory backup verify DIR"; load it with
"factory restore DIR".`,
		Example: `  factory backup /srv/backups/factory-$(date +%F)
  factory backup ./nightly -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			m, err := a.backup(cmd, dir)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSON(a.stdout(), backupSummaryJSON{Dir: dir, Manifest: m})
			}
			fmt.Fprintf(a.stdout(), "backup of a %s store (schema version %d) written to %s\n", m.Driver, m.MigrationVersion, dir)
			for _, name := range []string{ops.DatabaseFile, ops.DumpFile} {
				if f, ok := m.Files[name]; ok {
					fmt.Fprintf(a.stdout(), "  %-10s %10s  sha256 %s\n", name, byteSize(f.Bytes), f.SHA256)
				}
			}
			_, err = fmt.Fprintf(a.stdout(), "  %s\n", manifestCounts(m.Counts))
			return err
		},
	}
	cmd.AddCommand(newBackupVerifyCommand(a))
	return cmd
}

// hashedFile is a file being written with its SHA-256 kept on the way.
type hashedFile struct {
	f *os.File
	w *bufio.Writer
	h hash.Hash
	n int64
}

func createHashed(path string) (*hashedFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	return &hashedFile{f: f, w: bufio.NewWriterSize(f, 1<<20), h: sha256.New()}, nil
}

func (f *hashedFile) Write(p []byte) (int, error) {
	f.h.Write(p)
	f.n += int64(len(p))
	return f.w.Write(p)
}

// close flushes, syncs and closes the file and returns its entry.
func (f *hashedFile) close() (ops.ManifestFile, error) {
	err := f.w.Flush()
	if err == nil {
		err = f.f.Sync()
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	return ops.ManifestFile{Bytes: f.n, SHA256: hex.EncodeToString(f.h.Sum(nil))}, err
}

// backup streams a backup into dir and writes its manifest last, so a
// directory with a manifest holds a whole backup.
func (a *app) backup(cmd *cobra.Command, dir string) (_ *ops.Manifest, err error) {
	// The command line was fine; the directory is not: a short error and
	// exit 1, not the usage text. Backup never overwrites, so there is no
	// flag to name; checked before the call so nothing is streamed in vain.
	if _, err := os.Stat(filepath.Join(dir, ops.ManifestName)); err == nil {
		return nil, fmt.Errorf("%s already holds a backup (%s): back up into a new directory", dir, ops.ManifestName)
	}
	for _, name := range []string{ops.DatabaseFile, ops.DumpFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return nil, fmt.Errorf("%s already holds %s (a backup cut short?): back up into a new directory", dir, name)
		}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	var created []string
	defer func() {
		if err != nil {
			for _, p := range created {
				os.Remove(p)
			}
		}
	}()
	open := func(name string) (*hashedFile, error) {
		path := filepath.Join(dir, name)
		f, err := createHashed(path)
		if err != nil {
			return nil, err
		}
		created = append(created, path)
		return f, nil
	}
	m := &ops.Manifest{Format: ops.ManifestFormat, Version: ops.ManifestVersion, Files: map[string]ops.ManifestFile{}}
	p := a.newProgress("backing up", "record", "records")
	defer p.stop()
	err = a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
		stream, err := c.Backup(ctx, &factoryv1.BackupRequest{})
		if err != nil {
			return err
		}
		var db, dump *hashedFile
		defer func() {
			// Only reached on failure with files open: close what is left.
			for _, f := range []*hashedFile{db, dump} {
				if f != nil {
					f.f.Close()
				}
			}
		}()
		var counts *factoryv1.DumpCounts
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if h := msg.GetHeader(); h != nil {
				m.CreatedAt = h.GetCreatedAt().AsTime()
				m.Driver, m.MigrationVersion = h.GetDriver(), h.GetMigrationVersion()
				if h.GetHasDatabase() {
					if db, err = open(ops.DatabaseFile); err != nil {
						return err
					}
				}
				if dump, err = open(ops.DumpFile); err != nil {
					return err
				}
			}
			if b := msg.GetDatabase(); len(b) > 0 {
				if db == nil {
					return errors.New("the server sent database bytes without announcing a database")
				}
				if _, err := db.Write(b); err != nil {
					return err
				}
				p.add(0, int64(len(b)))
			}
			if l := msg.GetDumpLines(); l != "" {
				if dump == nil {
					return errors.New("the server sent the dump before its header")
				}
				if _, err := io.WriteString(dump, l); err != nil {
					return err
				}
				p.add(dumpRecords(l), int64(len(l)))
			}
			if msg.GetCounts() != nil {
				counts = msg.GetCounts()
			}
		}
		if dump == nil || counts == nil {
			return errors.New("the backup stream ended early; nothing usable was written")
		}
		for name, f := range map[string]**hashedFile{ops.DatabaseFile: &db, ops.DumpFile: &dump} {
			if *f == nil {
				continue
			}
			entry, err := (*f).close()
			*f = nil
			if err != nil {
				return err
			}
			m.Files[name] = entry
		}
		n := countsOf(counts)
		m.Counts = ops.ManifestCounts{Queue: n.Queue, Tasks: n.Tasks, Tokens: n.Tokens, Audit: n.AuditEntries, FleetEvents: n.FleetEvents, Rows: n.Rows}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := ops.WriteManifest(dir, m); err != nil {
		return nil, err
	}
	var written int64
	for _, f := range m.Files {
		written += f.Bytes
	}
	p.finish("backed up %s (%s) to %s in %s", p.count(manifestCounts(m.Counts).total()), byteSize(written), dir, p.elapsed())
	return m, nil
}

// manifestCounts is a manifest's counts as a dump's.
func manifestCounts(c ops.ManifestCounts) dumpCounts {
	return dumpCounts{Queue: c.Queue, Tasks: c.Tasks, Tokens: c.Tokens, AuditEntries: c.Audit, FleetEvents: c.FleetEvents, Rows: c.Rows}
}

func newBackupVerifyCommand(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "verify DIR",
		Short: "Check a backup: checksums, a trial restore, the database's integrity",
		Long: `Verify checks the backup in DIR without a control plane:

  - every file's size and SHA-256 against the manifest;
  - the dump, by restoring it into a temporary SQLite store: the counts
    must be the manifest's, and exporting that store again must give the
    dump back byte for byte;
  - the database copy (SQLite backups), from a temporary copy: PRAGMA
    integrity_check, its migration version, and its own export, which must
    again be the dump.

Nothing in DIR is changed. It exits 1 when any check fails.`,
		Example: `  factory backup verify /srv/backups/factory-2026-11-27`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := ops.VerifyBackup(cmd.Context(), args[0], nil)
			if rep == nil {
				return err
			}
			if a.jsonOutput() {
				if werr := writeJSON(a.stdout(), rep); werr != nil {
					return werr
				}
			} else {
				tw := newTable(a.stdout())
				fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL")
				for _, c := range rep.Checks {
					res := "ok"
					if !c.OK {
						res = "FAILED"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, res, c.Detail)
				}
				if werr := tw.Flush(); werr != nil {
					return werr
				}
			}
			if err != nil {
				return &runError{err: fmt.Errorf("%s: %w", args[0], err)}
			}
			if !a.jsonOutput() {
				fmt.Fprintf(a.stdout(), "backup %s is good: %s store, %d tasks\n", args[0], rep.Manifest.Driver, rep.Manifest.Counts.Tasks)
			}
			return nil
		},
	}
}

// restoreSummaryJSON is what `restore -o json` prints.
type restoreSummaryJSON struct {
	Dir    string     `json:"dir"`
	Merge  bool       `json:"merge"`
	Loaded dumpCounts `json:"loaded"`
}

func newRestoreCommand(a *app) *cobra.Command {
	var merge, skipVerify bool
	cmd := &cobra.Command{
		Use:   "restore DIR [--merge]",
		Short: "Load a backup into the running control plane",
		Long: `Restore verifies the backup in DIR (as "backup verify" does; --skip-verify
skips it), then loads its dump into the running control plane, all or
nothing, by the rules of "factory import": the store must be empty (a
fresh control plane, holding only the operator token its first start
made), unless --merge, which overwrites nothing.

Offline, a SQLite backup can instead be restored by copying its file:
stop the control plane, copy DIR/factory.db to DATA_DIR/factory.db
(removing any factory.db-wal and factory.db-shm there), and start it.`,
		Example: `  factory restore /srv/backups/factory-2026-11-27
  factory --addr pg-host:7420 restore ./nightly -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			p := a.newProgress("restoring", "record", "records")
			defer p.stop()
			var manifest *ops.Manifest
			if !skipVerify {
				// The trial restore takes about as long as the restore:
				// the line says what the wait is for.
				p.setPhase("verifying the backup")
				rep, err := ops.VerifyBackup(cmd.Context(), dir, nil)
				if err != nil {
					p.stop()
					if rep != nil {
						for _, c := range rep.Checks {
							if !c.OK {
								fmt.Fprintf(a.stderr(), "verify: %s: %s\n", c.Name, c.Detail)
							}
						}
					}
					return &runError{err: fmt.Errorf("%s: %w; nothing was restored", dir, err)}
				}
				manifest = rep.Manifest
				p.setPhase("")
			} else {
				m, err := ops.ReadManifest(dir)
				if err != nil {
					return err
				}
				manifest = m
			}
			p.setTotal(manifestCounts(manifest.Counts).total())
			p.setSize(manifest.Files[ops.DumpFile].Bytes)
			f, err := os.Open(filepath.Join(dir, ops.DumpFile))
			if err != nil {
				return err
			}
			defer f.Close()
			var (
				resp *factoryv1.ImportStateResponse
				sent int64
			)
			err = a.withOps(cmd, func(ctx context.Context, c factoryv1.OpsServiceClient) error {
				stream, err := c.ImportState(ctx)
				if err != nil {
					return err
				}
				ch := &chunker{br: bufio.NewReaderSize(f, 1<<20), max: importChunk}
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
				p.setPhase("loading")
				resp, err = stream.CloseAndRecv()
				return err
			})
			if err != nil {
				return err
			}
			loaded := countsOf(resp.GetLoaded())
			p.finish("restored %s (%s) from %s in %s", p.count(loaded.total()), byteSize(sent), dir, p.elapsed())
			if a.jsonOutput() {
				return writeJSON(a.stdout(), restoreSummaryJSON{Dir: dir, Merge: merge, Loaded: loaded})
			}
			_, err = fmt.Fprintf(a.stdout(), "restored from %s: %s\n", dir, loaded)
			return err
		},
	}
	cmd.Flags().BoolVar(&merge, "merge", false, "load into a store that is not empty, overwriting nothing")
	cmd.Flags().BoolVar(&skipVerify, "skip-verify", false, "load without verifying the backup first")
	return cmd
}
