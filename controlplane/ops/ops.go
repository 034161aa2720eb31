// Package ops is the maintenance domain: moving a factory's whole state
// between control planes. Export writes a dump of everything the store
// holds (tasks with every field, the queue's pause, tokens as hashes, the
// audit log); Import loads one into a store, so a factory that outgrew
// SQLite moves to PostgreSQL with nothing lost. The format is in
// format.go; the rules of a load (an empty store, or a merge that
// overwrites nothing) are store.LoadDump's.
package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/factory/factory/controlplane/store"
)

// Config configures a Service.
type Config struct {
	Store  store.Store
	Logger *slog.Logger
	// AfterImport runs after a load committed, so the queue can wake its
	// waiting claimers for the tasks that arrived.
	AfterImport func(ctx context.Context)
}

// Service exports and imports the whole state.
type Service struct {
	store       store.Store
	log         *slog.Logger
	afterImport func(ctx context.Context)
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("ops: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Service{store: cfg.Store, log: cfg.Logger, afterImport: cfg.AfterImport}, nil
}

// Export writes a dump of the whole state to w, read from one snapshot,
// and returns how many records of each kind it holds.
func (s *Service) Export(ctx context.Context, w io.Writer) (store.DumpCounts, error) {
	dw, err := NewWriter(w)
	if err != nil {
		return store.DumpCounts{}, err
	}
	if err := s.store.DumpRead(ctx, dw.Write); err != nil {
		return store.DumpCounts{}, err
	}
	return dw.Close()
}

// bootstrapCreator is the CreatedBy of the operator token a control plane
// makes at first start (access.Bootstrap).
const bootstrapCreator = "bootstrap"

// Import loads the dump in src into the store, all or nothing, and
// returns how many records of each kind it stored. src is read twice:
// once to check the whole dump before the store is touched, so a
// damaged or truncated file is refused without holding the store's
// writers back, and again for the load (which may read it once more if
// the database connection drops before COMMIT).
//
// Without merge the store must be empty (store.LoadDump), but for the
// operator token a fresh control plane made at first start: the import
// is called with it, and it stays. A malformed dump is a
// store.FieldError on "lines" naming the line.
func (s *Service) Import(ctx context.Context, src io.ReadSeeker, merge bool) (*store.DumpCounts, error) {
	// The check: the format and every record on its own, each refusal
	// naming its line.
	if err := readDump(src, func(r *store.DumpRecord, line int) error {
		return withLine(line, store.ValidateDumpRecord(r))
	}); err != nil {
		return nil, err
	}
	// The load's own refusals (a duplicate, a missing dependency) come as
	// a batch is stored, lines later, so they name the record instead.
	read := func(yield func(*store.DumpRecord) error) error {
		return readDump(src, func(r *store.DumpRecord, _ int) error { return yield(r) })
	}
	keep, err := s.bootstrapTokens(ctx)
	if err != nil {
		return nil, err
	}
	n, err := s.store.DumpLoad(ctx, &store.DumpLoadParams{Records: read, Merge: merge, KeepTokens: keep})
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "state imported", "merge", merge, "queue", n.Queue, "tasks", n.Tasks, "tokens", n.Tokens, "audit", n.Audit, "fleet_events", n.FleetEvents)
	if s.afterImport != nil {
		s.afterImport(ctx)
	}
	return n, nil
}

// readDump reads src from the start and calls fn with each record and its
// line.
func readDump(src io.ReadSeeker, fn func(r *store.DumpRecord, line int) error) error {
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return err
	}
	dr := NewReader(src)
	for {
		r, err := dr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return formatErr(err)
		}
		if err := fn(r, dr.Line()); err != nil {
			return err
		}
	}
}

// bootstrapTokens lists the tokens a load may find in an empty store.
// Tokens are few; one page holds them.
func (s *Service) bootstrapTokens(ctx context.Context) ([]string, error) {
	res, err := s.store.TokenList(ctx, &store.TokenListParams{Role: store.RoleOperator})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, t := range res.Tokens {
		if t.CreatedBy == bootstrapCreator {
			ids = append(ids, t.ID)
		}
	}
	return ids, nil
}

// formatErr makes a dump that cannot be read bad input on "lines".
func formatErr(err error) error {
	var fe *FormatError
	if errors.As(err, &fe) {
		return store.InvalidField("lines", "%s", fe.Error())
	}
	return err
}

// withLine says on which line of the dump a record was refused.
func withLine(n int, err error) error {
	if err == nil {
		return nil
	}
	var fe *store.FieldError
	if errors.As(err, &fe) && fe.Field == "records" {
		return store.InvalidField("lines", "dump line %d: %s", n, fe.Description)
	}
	return err
}

// CountsText renders counts as "1 queue, 2 tasks, 1 token, 3 audit entries,
// 4 fleet events, 5 other rows".
func CountsText(c store.DumpCounts) string {
	plural := func(n int64, one, many string) string {
		if n == 1 {
			return fmt.Sprintf("%d %s", n, one)
		}
		return fmt.Sprintf("%d %s", n, many)
	}
	return plural(c.Queue, "queue", "queues") + ", " + plural(c.Tasks, "task", "tasks") + ", " +
		plural(c.Tokens, "token", "tokens") + ", " + plural(c.Audit, "audit entry", "audit entries") + ", " + plural(c.FleetEvents, "fleet event", "fleet events") + ", " +
		plural(c.Rows, "other row", "other rows")
}
