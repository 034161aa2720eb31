package ops

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/factory/factory/controlplane/store"
	"github.com/factory/factory/controlplane/store/sqlite"
)

// A backup directory holds up to three files: the dump (always), the
// SQLite database copy (SQLite stores only) and the manifest describing
// both. Verifying one needs nothing but the directory: the dump is loaded
// into a scratch SQLite store, which is pure Go and runs anywhere the CLI
// does.
const (
	ManifestName     = "manifest.json"
	DumpFile         = "dump.jsonl"
	DatabaseFile     = "factory.db"
	ManifestFormat   = "factory-backup"
	ManifestVersion  = 1
	manifestMaxBytes = 1 << 20
)

// Manifest describes a backup directory.
type Manifest struct {
	Format           string                  `json:"format"`
	Version          int                     `json:"version"`
	CreatedAt        time.Time               `json:"created_at"`
	Driver           string                  `json:"store_driver"`
	MigrationVersion int64                   `json:"migration_version"`
	Counts           ManifestCounts          `json:"counts"`
	Files            map[string]ManifestFile `json:"files"`
}

// ManifestCounts counts the dump's records by kind.
type ManifestCounts struct {
	Queue       int64 `json:"queue"`
	Tasks       int64 `json:"tasks"`
	Tokens      int64 `json:"tokens"`
	Audit       int64 `json:"audit_entries"`
	FleetEvents int64 `json:"fleet_events"`
	// Rows counts the rows of the other tables a dump carries (spend,
	// approvals, alerts, ...).
	Rows int64 `json:"rows"`
}

// ManifestCountsOf converts store counts.
func ManifestCountsOf(n store.DumpCounts) ManifestCounts {
	return ManifestCounts{Queue: n.Queue, Tasks: n.Tasks, Tokens: n.Tokens, Audit: n.Audit, FleetEvents: n.FleetEvents, Rows: n.Rows}
}

// ManifestFile is one file's size and SHA-256 (hex).
type ManifestFile struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// HashFile returns the size and SHA-256 of the file at path.
func HashFile(path string) (ManifestFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return ManifestFile{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return ManifestFile{}, err
	}
	return ManifestFile{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// WriteManifest writes m as dir's manifest.
func WriteManifest(dir string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ManifestName), append(b, '\n'), 0o600)
}

// ReadManifest reads dir's manifest and checks its format.
func ReadManifest(dir string) (*Manifest, error) {
	f, err := os.Open(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var m Manifest
	dec := json.NewDecoder(io.LimitReader(f, manifestMaxBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestName, err)
	}
	if m.Format != ManifestFormat || m.Version != ManifestVersion {
		return nil, fmt.Errorf("%s: format %q version %d, want %q version %d", ManifestName, m.Format, m.Version, ManifestFormat, ManifestVersion)
	}
	if _, ok := m.Files[DumpFile]; !ok {
		return nil, fmt.Errorf("%s: lists no %s", ManifestName, DumpFile)
	}
	return &m, nil
}

// VerifyCheck is one step of a verification.
type VerifyCheck struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// VerifyReport is what VerifyBackup found.
type VerifyReport struct {
	Dir      string        `json:"dir"`
	Manifest *Manifest     `json:"manifest"`
	Checks   []VerifyCheck `json:"checks"`
}

// OK reports whether every check passed.
func (r *VerifyReport) OK() bool {
	return !slices.ContainsFunc(r.Checks, func(c VerifyCheck) bool { return !c.OK })
}

// ErrBackupInvalid is a backup that failed verification.
var ErrBackupInvalid = errors.New("backup failed verification")

// VerifyBackup checks the backup in dir without a control plane: every
// file against its checksum; the dump by loading it into a scratch SQLite
// store, whose counts must be the manifest's and whose re-export must be
// the dump byte for byte (dumps are canonical); and the database copy, when
// there is one, by PRAGMA integrity_check, its migration version, and its
// own export, which must again be the dump. A check that fails is a report
// entry; the error is ErrBackupInvalid then, or what stopped the checks.
// Nothing in dir is changed: the database copy is checked from a scratch
// copy.
func VerifyBackup(ctx context.Context, dir string, log *slog.Logger) (*VerifyReport, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	rep := &VerifyReport{Dir: dir, Manifest: m}
	add := func(name string, ok bool, format string, args ...any) {
		rep.Checks = append(rep.Checks, VerifyCheck{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	for _, name := range slices.Sorted(maps.Keys(m.Files)) {
		want := m.Files[name]
		got, err := HashFile(filepath.Join(dir, filepath.Base(name)))
		switch {
		case err != nil:
			add("checksum "+name, false, "%v", err)
		case got != want:
			add("checksum "+name, false, "%d bytes, sha256 %s; the manifest says %d bytes, sha256 %s", got.Bytes, got.SHA256, want.Bytes, want.SHA256)
		default:
			add("checksum "+name, true, "%d bytes, sha256 %s", got.Bytes, got.SHA256)
		}
	}
	if !rep.OK() {
		return rep, ErrBackupInvalid
	}
	scratch, err := os.MkdirTemp("", "factory-verify-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)

	// The dump, loaded and exported again.
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(scratch, "load.db"), Logger: log})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	svc := &Service{store: st, log: log}
	f, err := os.Open(filepath.Join(dir, DumpFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	loaded, err := svc.Import(ctx, f, false)
	if err != nil {
		add("load "+DumpFile, false, "%v", err)
		return rep, ErrBackupInvalid
	}
	if got := ManifestCountsOf(*loaded); got != m.Counts {
		add("load "+DumpFile, false, "loaded %s; the manifest counts %s", CountsText(*loaded), manifestCountsText(m.Counts))
	} else {
		add("load "+DumpFile, true, "loaded %s into a scratch store", CountsText(*loaded))
	}
	sameAsDump := func(name string, svc *Service) {
		h := sha256.New()
		if _, err := svc.Export(ctx, h); err != nil {
			add(name, false, "%v", err)
			return
		}
		got := hex.EncodeToString(h.Sum(nil))
		if want := m.Files[DumpFile].SHA256; got != want {
			add(name, false, "re-export has sha256 %s, the dump %s", got, want)
			return
		}
		add(name, true, "re-export is the dump byte for byte")
	}
	sameAsDump("re-export "+DumpFile, svc)

	if _, ok := m.Files[DatabaseFile]; ok {
		verifyDatabase(ctx, dir, scratch, m, log, add, sameAsDump)
	}
	if !rep.OK() {
		return rep, ErrBackupInvalid
	}
	return rep, nil
}

// verifyDatabase checks a scratch copy of the backup's database file.
func verifyDatabase(ctx context.Context, dir, scratch string, m *Manifest, log *slog.Logger,
	add func(name string, ok bool, format string, args ...any), sameAsDump func(string, *Service)) {
	const name = "database " + DatabaseFile
	path := filepath.Join(scratch, DatabaseFile)
	if err := copyFile(filepath.Join(dir, DatabaseFile), path); err != nil {
		add(name, false, "%v", err)
		return
	}
	st, err := sqlite.Open(ctx, sqlite.Config{Path: path, Logger: log})
	if err != nil {
		add(name, false, "open: %v", err)
		return
	}
	defer st.Close()
	ir, err := st.IntegrityCheck(ctx)
	switch {
	case err != nil:
		add(name, false, "integrity check: %v", err)
		return
	case !ir.OK:
		add(name, false, "integrity check: %v", ir.Problems)
		return
	case ir.MigrationVersion != m.MigrationVersion:
		add(name, false, "migration version %d; the manifest says %d", ir.MigrationVersion, m.MigrationVersion)
		return
	}
	add(name, true, "integrity_check ok, migration version %d", ir.MigrationVersion)
	sameAsDump("export "+DatabaseFile, &Service{store: st, log: log})
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

func manifestCountsText(c ManifestCounts) string {
	return CountsText(store.DumpCounts{Queue: c.Queue, Tasks: c.Tasks, Tokens: c.Tokens, Audit: c.Audit, FleetEvents: c.FleetEvents, Rows: c.Rows})
}
