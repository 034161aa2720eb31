package store

import (
	"context"
	"time"
)

// AuditCoalesceStore keeps the audit log bounded: a run of identical
// refusals is one entry whose count grows, and entries older than the
// retention are deleted. It is part of Store.
type AuditCoalesceStore interface {
	// AuditBump adds Add to the count of entry ID and moves its LastSeen
	// to LastSeen when that is later. An unknown ID is ErrNotFound (the
	// entry may have been pruned or replaced by an import); Add < 1 is a
	// FieldError on "add".
	AuditBump(ctx context.Context, params *AuditBumpParams) error

	// AuditPrune deletes every entry whose LastSeen is before Before and
	// returns how many it deleted. A zero Before deletes nothing.
	AuditPrune(ctx context.Context, params *AuditPruneParams) (int64, error)
}

// AuditBumpParams are AuditBump's arguments.
type AuditBumpParams struct {
	ID       int64
	Add      int64
	LastSeen time.Time
}

// AuditPruneParams are AuditPrune's arguments.
type AuditPruneParams struct {
	Before time.Time
}

// AuditCounts returns the count and last-seen time an entry is stored
// with: at least 1, and never before Time.
func AuditCounts(e *AuditEntry) (int64, time.Time) {
	n, last := e.Count, e.LastSeen
	if n < 1 {
		n = 1
	}
	if last.Before(e.Time) {
		last = e.Time
	}
	return n, last
}

// CheckAuditBump is the input check every driver's AuditBump makes.
func CheckAuditBump(p *AuditBumpParams) error {
	switch {
	case p == nil || p.ID <= 0:
		return InvalidField("id", "is required")
	case p.Add < 1:
		return InvalidField("add", "must be at least 1, got %d", p.Add)
	}
	return nil
}
