package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/stats"

	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// claimDelivery hands back claims whose response was never sent. ClaimTask
// commits its claim before the response goes out; when the response cannot
// be sent (the client went away, or the message is over the send limit)
// the tasks would stay IN_PROGRESS under a lease nobody knows of, an
// attempt used, until the lease expires. gRPC tells only stats handlers
// that sending failed (in the call's End), so the release happens here:
// the tasks go back to READY at once with their attempt given back.
type claimDelivery struct {
	q   *queue.Service
	log *slog.Logger
}

// releaseTimeout bounds the release of an undelivered claim, which runs
// after the call's own context has ended.
const releaseTimeout = 10 * time.Second

var _ stats.Handler = (*claimDelivery)(nil)

// pendingClaim holds what a ClaimTask call claimed until its End.
type pendingClaim struct {
	mu    sync.Mutex
	tasks []*store.Task
}

type pendingClaimKey struct{}

// noteClaimed records the tasks a ClaimTask call is about to send, so that
// claimDelivery can hand them back if the send fails. Outside a call that
// claimDelivery tagged it does nothing.
func noteClaimed(ctx context.Context, tasks []*store.Task) {
	if p, ok := ctx.Value(pendingClaimKey{}).(*pendingClaim); ok {
		p.mu.Lock()
		p.tasks = append(p.tasks, tasks...)
		p.mu.Unlock()
	}
}

func (d *claimDelivery) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if info.FullMethodName != factoryv1.QueueService_ClaimTask_FullMethodName {
		return ctx
	}
	return context.WithValue(ctx, pendingClaimKey{}, &pendingClaim{})
}

func (d *claimDelivery) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok || end.Error == nil {
		return
	}
	p, ok := ctx.Value(pendingClaimKey{}).(*pendingClaim)
	if !ok {
		return
	}
	p.mu.Lock()
	tasks := p.tasks
	p.tasks = nil
	p.mu.Unlock()
	if len(tasks) == 0 {
		return
	}
	releaseUndelivered(ctx, d.q, d.log, tasks, end.Error)
}

// releaseUndelivered hands back tasks a claim took whose response could
// not be sent (sendErr), on a context of its own: the call's has ended.
func releaseUndelivered(ctx context.Context, q *queue.Service, log *slog.Logger, tasks []*store.Task, sendErr error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	released, err := q.Release(rctx, tasks)
	if err != nil {
		log.ErrorContext(rctx, "claim response not delivered and its tasks not released; their leases will expire", "tasks", len(tasks), "send_err", sendErr, "err", err)
		return
	}
	log.WarnContext(rctx, "claim response not delivered; tasks released", "claimed", len(tasks), "released", len(released), "send_err", sendErr)
}

func (d *claimDelivery) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (d *claimDelivery) HandleConn(context.Context, stats.ConnStats) {}
