package access

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// Record collects what one audited call changed. The gRPC layer puts one
// in the context of every call it will audit; handlers fill it with Note
// because only they know what the call acted on; the gRPC layer then
// appends one audit entry per note once the call has succeeded.
type Record struct {
	mu    sync.Mutex
	notes []Change
}

// Change is one noted change: the target and its state before and after,
// as JSON.
type Change struct {
	Target, Before, After string
}

type recordKey struct{}

// WithRecord returns ctx carrying a new record, and the record.
func WithRecord(ctx context.Context) (context.Context, *Record) {
	r := &Record{}
	return context.WithValue(ctx, recordKey{}, r), r
}

// Auditing reports whether the call behind ctx is audited, so a handler
// can skip reading a "before" state nobody will record.
func Auditing(ctx context.Context) bool {
	_, ok := ctx.Value(recordKey{}).(*Record)
	return ok
}

// Note records that the call changed target from before to after. Each
// is encoded as JSON; nil is left empty. On a call that is not audited
// it does nothing, so handlers call it unconditionally.
func Note(ctx context.Context, target string, before, after any) {
	r, ok := ctx.Value(recordKey{}).(*Record)
	if !ok {
		return
	}
	c := Change{Target: target, Before: jsonOf(before), After: jsonOf(after)}
	r.mu.Lock()
	r.notes = append(r.notes, c)
	r.mu.Unlock()
}

// Changes returns what was noted, in order.
func (r *Record) Changes() []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Change(nil), r.notes...)
}

func jsonOf(v any) string {
	if v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		// Only plain data is noted; say what broke rather than lose the
		// entry.
		b, _ = json.Marshal(map[string]string{"unencodable": err.Error()})
	}
	return string(b)
}

// Append appends entries to the audit log, stamping any without a time.
// A refusal (any outcome but OK) that repeats one from the same caller
// within the audit window is not a new entry: it adds to the count of the
// entry the first one made (see coalescer).
func (s *Service) Append(ctx context.Context, entries []*store.AuditEntry) error {
	now := s.clock.Now()
	direct := entries[:0:0]
	var errs []error
	for _, e := range entries {
		if e.Time.IsZero() {
			e.Time = now
		}
		if !s.audit.on() || e.Outcome == "OK" || e.Count > 1 {
			direct = append(direct, e)
			continue
		}
		if _, err := s.refusal(ctx, e); err != nil {
			errs = append(errs, err)
		}
	}
	if len(direct) > 0 {
		errs = append(errs, s.store.AuditAppend(ctx, &store.AuditAppendParams{Entries: direct}))
	}
	return errors.Join(errs...)
}

// AuditListParams filters and pages ListAudit.
type AuditListParams struct {
	Since     time.Time
	Who       string
	Target    string
	PageSize  int
	PageToken string
}

// ListAudit returns audit entries, newest first. Counts this replica has
// not flushed yet are flushed first, so a listing is exact here.
func (s *Service) ListAudit(ctx context.Context, p AuditListParams) (*store.AuditListResult, error) {
	s.FlushAudit(ctx)
	return s.store.AuditList(ctx, &store.AuditListParams{Since: p.Since, Who: p.Who, Target: p.Target, Limit: pageSize(p.PageSize), Cursor: p.PageToken})
}

// Now is the service's clock, for callers stamping entries themselves.
func (s *Service) Now() time.Time { return s.clock.Now() }
