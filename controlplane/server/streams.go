package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/factory/factory/controlplane/access"
	"github.com/factory/factory/controlplane/queue"
	"github.com/factory/factory/controlplane/store"
	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// Default stream caps: far above what an honest fleet holds (a sidecar
// keeps one Connect stream, an orchestrator a handful of watches), far
// below what starves the others (thousands of streams from one token).
const (
	DefaultMaxStreamsPerToken      = 64
	DefaultMaxStreamsPerConnection = 128
)

// StreamLimits caps concurrent streams. The stream over a cap is refused
// with RESOURCE_EXHAUSTED naming the cap.
type StreamLimits struct {
	// PerToken caps the streams one token holds open on this replica,
	// across all its connections; 0 means DefaultMaxStreamsPerToken.
	PerToken int
	// PerConnection caps the streams open on one connection, whoever's
	// tokens they carry; 0 means DefaultMaxStreamsPerConnection.
	PerConnection int
}

func (l StreamLimits) withDefaults() StreamLimits {
	if l.PerToken <= 0 {
		l.PerToken = DefaultMaxStreamsPerToken
	}
	if l.PerConnection <= 0 {
		l.PerConnection = DefaultMaxStreamsPerConnection
	}
	return l
}

// WithStreamLimits sets the per-token and per-connection stream caps.
func WithStreamLimits(l StreamLimits) GRPCOption {
	return func(o *grpcOptions) { o.streams = l }
}

const (
	// tokenRecheckEvery is how often the tokens of open streams are looked
	// at again. The lookup is the cached one calls use (access.Service), so
	// a token revoked on this replica is seen at the next look and one
	// revoked on another replica once the cache entry runs out: within
	// access.DefaultCacheTTL plus this.
	tokenRecheckEvery = 250 * time.Millisecond
	// closeGrace is how long a closed stream's handler gets to return by
	// itself before the stream is ended under it (a handler blocked sending
	// to a client that does not read cannot notice).
	closeGrace = 200 * time.Millisecond
)

// streamRegistry tracks every open stream by token and connection: it
// enforces the caps, and it closes a token's streams when the token stops
// working (revoked or expired), with UNAUTHENTICATED saying why.
type streamRegistry struct {
	limits StreamLimits
	acc    *access.Service
	log    *slog.Logger

	mu       sync.Mutex
	byToken  map[string]*tokenStreams
	byConn   map[uint64]int
	checking bool // a recheck loop runs while any token has streams
}

type tokenStreams struct {
	secret  string
	streams map[*trackedStream]struct{}
	// snapshots paces the token's watch snapshots (snapshotPage).
	snapshots *rate.Limiter
}

// trackedStream is one open stream; close ends it with err as its status.
type trackedStream struct {
	cancel context.CancelCauseFunc
}

func newStreamRegistry(l StreamLimits, acc *access.Service, log *slog.Logger) *streamRegistry {
	return &streamRegistry{limits: l.withDefaults(), acc: acc, log: log, byToken: map[string]*tokenStreams{}, byConn: map[uint64]int{}}
}

// open admits a stream or refuses it over a cap.
func (r *streamRegistry) open(c access.Caller, secret string, conn uint64, cancel context.CancelCauseFunc) (*trackedStream, *rate.Limiter, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ts := r.byToken[c.TokenID]
	// The per-token cap contains the actors the control plane governs
	// (agents, sidecars). An operator is a person trusted with everything,
	// and one operator token may stand for a whole simulated fleet
	// (factory bench fleet); its streams are bounded per connection.
	if ts != nil && c.Role != store.RoleOperator && len(ts.streams) >= r.limits.PerToken {
		return nil, nil, status.Errorf(codes.ResourceExhausted,
			"too many streams: token %s (%s) already holds %d open streams on this replica, the limit (--max-streams-per-token); close one first", c.TokenID, c, r.limits.PerToken)
	}
	if conn != 0 && r.byConn[conn] >= r.limits.PerConnection {
		return nil, nil, status.Errorf(codes.ResourceExhausted,
			"too many streams: this connection already carries %d open streams, the limit (--max-streams-per-connection); open another connection or close a stream", r.limits.PerConnection)
	}
	if ts == nil {
		ts = &tokenStreams{secret: secret, streams: map[*trackedStream]struct{}{}, snapshots: rate.NewLimiter(snapshotRate, snapshotBurst)}
		r.byToken[c.TokenID] = ts
	}
	s := &trackedStream{cancel: cancel}
	ts.streams[s] = struct{}{}
	if conn != 0 {
		r.byConn[conn]++
	}
	if !r.checking && r.acc != nil {
		r.checking = true
		go r.recheckTokens()
	}
	return s, ts.snapshots, nil
}

func (r *streamRegistry) done(tokenID string, conn uint64, s *trackedStream) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ts := r.byToken[tokenID]; ts != nil {
		delete(ts.streams, s)
		if len(ts.streams) == 0 {
			delete(r.byToken, tokenID)
		}
	}
	if conn != 0 {
		if r.byConn[conn]--; r.byConn[conn] <= 0 {
			delete(r.byConn, conn)
		}
	}
}

// closeToken ends every open stream of the token with err.
func (r *streamRegistry) closeToken(tokenID string, err error) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	ts := r.byToken[tokenID]
	if ts == nil {
		return 0
	}
	for s := range ts.streams {
		s.cancel(err)
	}
	return len(ts.streams)
}

// recheckTokens looks at the tokens of the open streams again and again,
// and closes the streams of those that stopped working. It ends when no
// stream is open (the next open starts it again).
func (r *streamRegistry) recheckTokens() {
	tick := time.NewTicker(tokenRecheckEvery)
	defer tick.Stop()
	for range tick.C {
		r.mu.Lock()
		if len(r.byToken) == 0 {
			r.checking = false
			r.mu.Unlock()
			return
		}
		secrets := make(map[string]string, len(r.byToken))
		for id, ts := range r.byToken {
			secrets[id] = ts.secret
		}
		r.mu.Unlock()
		for id, secret := range secrets {
			r.recheck(id, secret)
		}
	}
}

// recheckToken looks at one token's streams at once: called on the
// replica that revoked it, so they close before the revoke is answered.
func (r *streamRegistry) recheckToken(tokenID string) {
	r.mu.Lock()
	ts := r.byToken[tokenID]
	r.mu.Unlock()
	if ts != nil && r.acc != nil {
		r.recheck(tokenID, ts.secret)
	}
}

func (r *streamRegistry) recheck(tokenID, secret string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := r.acc.Authenticate(ctx, secret)
	var ae *access.AuthError
	switch {
	case errors.As(err, &ae):
		if n := r.closeToken(tokenID, status.Error(codes.Unauthenticated, ae.Reason)); n > 0 {
			r.log.Info("closed the streams of a token that stopped working", "token_id", tokenID, "streams", n, "reason", ae.Reason)
		}
	case err != nil:
		// The store could not say: the streams stay until it can (a
		// flaky database must not cut every sidecar off); the token's
		// next call is refused if it really was revoked.
		r.log.Warn("rechecking the token of open streams failed", "token_id", tokenID, "err", err)
	}
}

// intercept is the stream interceptor: after authentication, it admits the
// stream under the caps, gives the handler a context that the registry (or
// the handler, through closeStream) can end with a status, and makes sure
// a closed stream ends even when its handler is blocked in a send.
func (r *streamRegistry) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	c, ok := access.FromContext(ss.Context())
	if !ok {
		return status.Error(codes.Unauthenticated, missingToken)
	}
	secret, _ := bearerSecret(ss.Context())
	conn := connID(ss.Context())
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	s, snapshots, err := r.open(c, secret, conn, cancel)
	if err != nil {
		return err
	}
	defer r.done(c.TokenID, conn, s)
	ctx = context.WithValue(ctx, streamCloserKey{}, cancel)
	ctx = context.WithValue(ctx, snapshotLimiterKey{}, snapshots)
	wrapped := &closableStream{WrappedServerStream: middleware.WrapServerStream(ss)}
	wrapped.WrappedContext = ctx

	result := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				r.log.ErrorContext(ctx, "panic in stream handler", "method", info.FullMethod, "panic", fmt.Sprint(p))
				result <- status.Error(codes.Internal, "internal error (the control plane's log has the cause)")
			}
		}()
		result <- handler(srv, wrapped)
	}()
	select {
	case err := <-result:
		if why := closedBecause(ctx); why != nil {
			return why
		}
		return err
	case <-ctx.Done():
	}
	why := closedBecause(ctx)
	if why == nil {
		// The client went away; the handler notices on its own.
		return <-result
	}
	select {
	case <-result:
	case <-time.After(closeGrace):
		// Returning ends the stream under the handler: its blocked send
		// fails, and it returns in its own time.
	}
	return why
}

// closedBecause is the status a stream was closed with, or nil when its
// context ended for another reason (the client cancelled).
func closedBecause(ctx context.Context) error {
	cause := context.Cause(ctx)
	if _, ok := status.FromError(cause); ok && cause != nil {
		return cause
	}
	return nil
}

type streamCloserKey struct{}

// closeStream ends the stream whose context ctx is with err (a status
// error), even when its handler is blocked sending; it reports whether ctx
// belongs to such a stream.
func closeStream(ctx context.Context, err error) bool {
	cancel, ok := ctx.Value(streamCloserKey{}).(context.CancelCauseFunc)
	if ok {
		cancel(err)
	}
	return ok
}

// closableStream refuses to carry messages once its stream was closed: a
// revoked token's message that arrives after the close is not handed to
// the handler, so nothing it sends afterwards is stored.
type closableStream struct {
	*middleware.WrappedServerStream
}

func (s *closableStream) RecvMsg(m any) error {
	if err := s.WrappedServerStream.RecvMsg(m); err != nil {
		return err
	}
	if why := closedBecause(s.Context()); why != nil {
		return why
	}
	return nil
}

func (s *closableStream) SendMsg(m any) error {
	if why := closedBecause(s.Context()); why != nil {
		return why
	}
	return s.WrappedServerStream.SendMsg(m)
}

// connTagger numbers connections, so streams can be counted per
// connection: the peer address is no key (bufconn and proxies share one).
type connTagger struct{ next atomic.Uint64 }

type connIDKey struct{}

func (t *connTagger) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return context.WithValue(ctx, connIDKey{}, t.next.Add(1))
}
func (*connTagger) HandleConn(context.Context, stats.ConnStats) {}
func (*connTagger) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return ctx
}
func (*connTagger) HandleRPC(context.Context, stats.RPCStats) {}

// connID is the connection a call came on; 0 when unknown.
func connID(ctx context.Context) uint64 {
	id, _ := ctx.Value(connIDKey{}).(uint64)
	return id
}

// Watch snapshots are paced: a stream's snapshot may be the whole queue,
// and one token opening many watches must not turn the replica into a
// snapshot server for it. Each token's snapshots share snapshotRate tasks
// a second after a burst of snapshotBurst (a watcher of a queue of a
// thousand tasks syncs at once, one of 10,000 in about 5 s), and at most
// len(snapshotSlots) pages are read at once per replica.
const (
	snapshotRate     = 2000
	snapshotBurst    = 1000
	snapshotPageSize = 200
)

var snapshotSlots = make(chan struct{}, 4)

type snapshotLimiterKey struct{}

// snapshotPage reads one page of a snapshot when the caller's pace and a
// slot allow. The slot is held for the read only: a client that does not
// read blocks its own sends, never another watcher's snapshot.
func snapshotPage[T any](ctx context.Context, read func() (T, error)) (T, error) {
	var zero T
	if lim, ok := ctx.Value(snapshotLimiterKey{}).(*rate.Limiter); ok {
		if err := lim.WaitN(ctx, snapshotPageSize); err != nil {
			return zero, status.FromContextError(ctx.Err()).Err()
		}
	}
	select {
	case snapshotSlots <- struct{}{}:
		defer func() { <-snapshotSlots }()
	case <-ctx.Done():
		return zero, status.FromContextError(ctx.Err()).Err()
	}
	return read()
}

// preEncoded is a message marshalled once and sent on many streams: a task
// event goes to every watcher as the same bytes, so encoding it once takes
// the fan-out's main cost off each stream. The server's codec passes it
// through.
type preEncoded struct{ b []byte }

// Marshal is the proto codec's, except that a preEncoded is sent as is.
func (c lenientCodec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(*preEncoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(p.b)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// encodedEvent is a task event's WatchTasksResponse, encoded once for all
// watchers; when encoding fails, the message itself (each stream then
// reports the error).
func encodedEvent(e queue.Event) any {
	return e.Memo(func() any {
		msg := &factoryv1.WatchTasksResponse{
			Type: eventType(e.Type), Task: taskToProto(e.Task),
			PreviousState: factoryv1.TaskState(e.PreviousState), Time: timestamppb.New(e.Time), Cursor: e.Cursor,
		}
		b, err := proto.Marshal(msg)
		if err != nil {
			return msg
		}
		return &preEncoded{b: b}
	})
}
