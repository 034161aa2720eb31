package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// DefaultAuditWindow is how long identical refusals share one audit entry.
// A caller looping on a refused call writes one entry a minute instead of
// one per call; the entry's count says how many calls it stands for.
const DefaultAuditWindow = time.Minute

// AuditFlushEvery is how often RunAuditFlush writes the counts gathered
// in memory: a crash loses at most this much of them. A normal stop loses
// none (FlushAudit runs after the server has stopped).
const AuditFlushEvery = time.Second

// maxOpenRuns bounds the runs kept in memory. Past it a refusal is written
// as an entry of its own: the log grows, nothing is dropped.
const maxOpenRuns = 10000

// runKey is what makes two refusals identical: the same caller (token and
// subject), call, target, outcome and reason.
type runKey struct {
	tokenID, who                 string
	role                         store.Role
	rpc, target, outcome, detail string
}

func keyOf(e *store.AuditEntry) runKey {
	return runKey{tokenID: e.TokenID, who: e.Who, role: e.Role, rpc: e.RPC, target: e.Target, outcome: e.Outcome, detail: e.Detail}
}

// run is one stored entry still taking repeats. settled is set once its
// first append has finished; id is the entry's, 0 if that append failed.
// pending calls are not in the store yet; they happened between
// pendingFirst and last.
type run struct {
	key          runKey
	id           int64
	settled      bool
	first, last  time.Time
	pending      int64
	pendingFirst time.Time
	template     store.AuditEntry
}

func (r *run) add(n int64, first, last time.Time) {
	if r.pending == 0 || first.Before(r.pendingFirst) {
		r.pendingFirst = first
	}
	r.pending += n
	r.last = later(r.last, last)
}

// coalescer turns a stream of identical refusals into one entry per window.
// The first refusal is written at once (an operator sees it, and a crash
// cannot lose it); repeats only count in memory until a flush adds them to
// that entry with AuditBump.
type coalescer struct {
	window time.Duration
	mu     sync.Mutex
	runs   map[runKey]*run
	// closed are runs whose window passed with repeats not yet flushed.
	closed []*run
}

func (c *coalescer) init(window time.Duration) {
	if window == 0 {
		window = DefaultAuditWindow
	}
	c.window, c.runs = window, map[runKey]*run{}
}

func (c *coalescer) on() bool { return c.window > 0 }

// AppendRefusal records one refused call (stamping its time when unset)
// and reports whether it repeats one recorded within the audit window:
// the caller is looping on a refusal, and the gRPC layer answers it
// after a pause. Without coalescing every refusal is new.
func (s *Service) AppendRefusal(ctx context.Context, e *store.AuditEntry) (repeat bool, err error) {
	if e.Time.IsZero() {
		e.Time = s.clock.Now()
	}
	if !s.audit.on() {
		return false, s.store.AuditAppend(ctx, &store.AuditAppendParams{Entries: []*store.AuditEntry{e}})
	}
	return s.refusal(ctx, e)
}

// refusal records one refused call, as a new entry or a repeat.
func (s *Service) refusal(ctx context.Context, e *store.AuditEntry) (repeat bool, err error) {
	c := &s.audit
	k := keyOf(e)
	c.mu.Lock()
	r, ok := c.runs[k]
	if ok && e.Time.Sub(r.first) < c.window && !e.Time.Before(r.first) {
		r.add(1, e.Time, e.Time)
		c.mu.Unlock()
		return true, nil
	}
	var mine *run
	if ok || len(c.runs) < maxOpenRuns {
		if ok && r.pending > 0 {
			c.closed = append(c.closed, r)
		}
		// Taken before the append, so repeats arriving meanwhile count
		// here instead of each making an entry.
		mine = &run{key: k, first: e.Time, last: e.Time, template: *e}
		c.runs[k] = mine
	}
	c.mu.Unlock()

	err = s.store.AuditAppend(ctx, &store.AuditAppendParams{Entries: []*store.AuditEntry{e}})
	if mine != nil {
		c.mu.Lock()
		mine.settled = true
		if err == nil {
			mine.id = e.ID
		}
		c.mu.Unlock()
	}
	return false, err
}

// FlushAudit writes the repeats counted in memory to their entries and
// forgets runs whose window has passed. Failures are logged and the counts
// kept for the next flush; it never fails the caller.
func (s *Service) FlushAudit(ctx context.Context) {
	c := &s.audit
	if !c.on() {
		return
	}
	type bump struct {
		key         runKey
		id          int64
		n           int64
		first, last time.Time
		template    store.AuditEntry
	}
	now := s.clock.Now()
	var todo []bump
	take := func(r *run) {
		// A run whose first append is still in flight keeps its repeats
		// until it has an id.
		if r.pending > 0 && r.settled {
			todo = append(todo, bump{key: r.key, id: r.id, n: r.pending, first: r.pendingFirst, last: r.last, template: r.template})
			r.pending = 0
		}
	}
	c.mu.Lock()
	for k, r := range c.runs {
		take(r)
		if r.pending == 0 && r.settled && now.Sub(r.first) >= c.window {
			delete(c.runs, k)
		}
	}
	open := c.closed[:0]
	for _, r := range c.closed {
		if take(r); r.pending > 0 {
			open = append(open, r)
		}
	}
	clear(c.closed[len(open):])
	c.closed = open
	c.mu.Unlock()

	for _, b := range todo {
		err := errors.New("its entry was never written")
		if b.id != 0 {
			err = s.store.AuditBump(ctx, &store.AuditBumpParams{ID: b.id, Add: b.n, LastSeen: b.last})
		}
		if err == nil {
			continue
		}
		if errors.Is(err, store.ErrNotFound) {
			b.id = 0
		}
		if b.id == 0 {
			// The entry is gone (pruned, replaced by an import, or never
			// written): the repeats become an entry of their own.
			e := b.template
			e.ID, e.Time, e.LastSeen, e.Count = 0, b.first, b.last, b.n
			err = s.store.AuditAppend(ctx, &store.AuditAppendParams{Entries: []*store.AuditEntry{&e}})
			if err == nil {
				continue
			}
		}
		s.keepPending(b.key, b.id, b.n, b.first, b.last, b.template)
		s.log.ErrorContext(ctx, "audit counts not written; kept for the next flush", "err", err, "who", b.template.Who,
			"token_id", b.template.TokenID, "rpc", b.template.RPC, "target", b.template.Target, "outcome", b.template.Outcome,
			"detail", b.template.Detail, "count", b.n)
	}
}

// keepPending puts counts a flush could not write back for the next
// flush: a bump of entry id again, or an entry of their own when id is 0.
func (s *Service) keepPending(k runKey, id, n int64, first, last time.Time, template store.AuditEntry) {
	c := &s.audit
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &run{key: k, id: id, settled: true, first: first, last: last, template: template}
	r.add(n, first, last)
	c.closed = append(c.closed, r)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// RunAuditFlush flushes every AuditFlushEvery until ctx ends. It does not
// flush at the end: calls may still be refused while the server stops, so
// the caller flushes once more after that (see FlushAudit).
func (s *Service) RunAuditFlush(ctx context.Context) error {
	if !s.audit.on() {
		return nil
	}
	t := time.NewTicker(AuditFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.FlushAudit(ctx)
		}
	}
}

// DefaultAuditRetention is how long audit entries are kept after they were
// last seen.
const DefaultAuditRetention = 90 * 24 * time.Hour

// auditPruneEvery is how often RunAuditRetention prunes: often enough that
// nothing outlives the retention by more than an hour, rarely enough that
// the delete is a batch, not a trickle.
const auditPruneEvery = time.Hour

// PruneAudit deletes the entries last seen more than retention ago and
// returns how many. A retention of 0 or less keeps everything.
func (s *Service) PruneAudit(ctx context.Context, retention time.Duration) (int64, error) {
	if retention <= 0 {
		return 0, nil
	}
	n, err := s.store.AuditPrune(ctx, &store.AuditPruneParams{Before: s.clock.Now().Add(-retention)})
	if err != nil {
		return 0, fmt.Errorf("prune the audit log: %w", err)
	}
	return n, nil
}

// RunAuditRetention prunes at once and then every hour (or every
// retention, when shorter) until ctx ends. A retention of 0 or less keeps
// everything and returns at once. A failed prune is logged and retried on
// the next tick.
func (s *Service) RunAuditRetention(ctx context.Context, retention time.Duration, log *slog.Logger) error {
	if retention <= 0 {
		return nil
	}
	t := time.NewTicker(min(auditPruneEvery, retention))
	defer t.Stop()
	for {
		n, err := s.PruneAudit(ctx, retention)
		switch {
		case err != nil && ctx.Err() == nil:
			log.WarnContext(ctx, "pruning the audit log failed", "err", err)
		case n > 0:
			log.InfoContext(ctx, "pruned the audit log", "deleted", n, "retention", retention.String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
