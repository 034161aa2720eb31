package server

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/store"
)

// AuditConfig bounds the audit log.
type AuditConfig struct {
	// Window is how long identical refusals from one caller share one
	// entry; 0 means access.DefaultAuditWindow, negative one entry per
	// call.
	Window time.Duration
	// Retention deletes entries last seen longer ago; 0 keeps them
	// forever.
	Retention time.Duration
}

// runAudit flushes coalesced refusal counts on a timer (every replica
// flushes its own) and prunes the log past its retention: on the elected
// replica alone when replicas share a database, since one DELETE serves
// them all.
func runAudit(ctx context.Context, g *errgroup.Group, cfg AuditConfig, raw store.Store, acc *access.Service, log *slog.Logger) {
	g.Go(func() error { return acc.RunAuditFlush(ctx) })
	if cfg.Retention <= 0 {
		return
	}
	prune := func(ctx context.Context) error { return acc.RunAuditRetention(ctx, cfg.Retention, log) }
	if el, ok := raw.(store.Elector); ok {
		g.Go(func() error { return el.RunElected(ctx, "audit-retention", prune) })
		return
	}
	g.Go(func() error { return prune(ctx) })
}

// auditCountOf is an entry's count and last-seen time for the API: at
// least 1, and never before its time.
func auditCountOf(e *store.AuditEntry) (int64, *timestamppb.Timestamp) {
	n, last := store.AuditCounts(e)
	return n, timestamppb.New(last)
}

// RepeatedRefusalPause is how long a caller waits for the answer to a call
// it was refused within the audit window already: a client looping on a
// refusal then makes a few calls a second, not thousands, and leaves the
// CPU to everyone else. The first refusal is answered at once.
const RepeatedRefusalPause = 100 * time.Millisecond

// appendRefusal records a refusal; a repeat is answered after a pause.
// As append does, a lost entry is logged in full.
func (a *authorizer) appendRefusal(ctx context.Context, e *store.AuditEntry) {
	if a.acc == nil {
		return
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	repeat, err := a.acc.AppendRefusal(actx, e)
	cancel()
	if err != nil {
		a.log.ErrorContext(ctx, "audit entry not written", "err", err, "who", e.Who, "role", string(e.Role), "token_id", e.TokenID,
			"rpc", e.RPC, "target", e.Target, "outcome", e.Outcome, "detail", e.Detail)
	}
	if repeat {
		pauses.pause(ctx, RepeatedRefusalPause)
	}
}
