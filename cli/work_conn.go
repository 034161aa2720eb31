package cli

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// workConn is one slot's Work stream. The control plane answers requests
// in the order they were sent, so each request waits in a queue for its
// own answer, and any goroutine may send (the slot its claims and
// completions, the renewer its renewals). A broken stream fails every
// request waiting on it, and the next request opens a new stream.
type workConn struct {
	ctx context.Context
	q   factoryv1.QueueServiceClient

	mu  sync.Mutex
	cur *workStream
	ref uint64
}

// workStream is one opened Work stream and the requests it owes answers.
type workStream struct {
	stream grpc.BidiStreamingClient[factoryv1.WorkRequest, factoryv1.WorkResponse]
	cancel context.CancelFunc

	mu      sync.Mutex
	pending []*workCall
	err     error // why the stream ended; nil while it is open
}

// workCall is one request: done closes when its answer, or the error that
// stands for it, is in.
type workCall struct {
	ref    uint64
	stream *workStream
	done   chan struct{}
	resp   *factoryv1.WorkResponse
	err    error
}

func newWorkConn(ctx context.Context, q factoryv1.QueueServiceClient) *workConn {
	return &workConn{ctx: ctx, q: q}
}

// send sends req (setting its ref) and returns the call to wait on.
func (c *workConn) send(req *factoryv1.WorkRequest) *workCall {
	call := &workCall{done: make(chan struct{})}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.cur
	if s == nil || s.ended() {
		var err error
		if s, err = c.open(); err != nil {
			c.cur = nil
			call.finish(nil, err)
			return call
		}
		c.cur = s
	}
	c.ref++
	req.Ref = c.ref
	call.ref, call.stream = c.ref, s
	if !s.enqueue(call) {
		return call
	}
	if err := s.stream.Send(req); err != nil {
		// A stream the control plane ended refuses sends with io.EOF and
		// says why through Recv, which then fails every call waiting on
		// it, this one included; any other error broke it here.
		if !errors.Is(err, io.EOF) {
			s.fail(err)
		}
		c.cur = nil
	}
	return call
}

func (c *workConn) open() (*workStream, error) {
	ctx, cancel := context.WithCancel(c.ctx)
	stream, err := c.q.Work(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &workStream{stream: stream, cancel: cancel}
	go s.read()
	return s, nil
}

// wait waits for call's answer, at most timeout, or until stop closes
// (nil: never). A stream that does not answer in time is given up, so
// the next request goes on a new one.
func (c *workConn) wait(call *workCall, timeout time.Duration, stop <-chan struct{}) (*factoryv1.WorkResponse, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-call.done:
		return call.result()
	case <-t.C:
		err := status.Errorf(codes.DeadlineExceeded, "no answer from the control plane in %s", timeout)
		if call.stream != nil {
			call.stream.fail(err)
		}
		return nil, err
	case <-stop:
		return nil, status.Error(codes.Canceled, "no longer waited for")
	}
}

// abort ends the current stream; what waits on it fails with CANCELED.
func (c *workConn) abort() {
	c.mu.Lock()
	s := c.cur
	c.cur = nil
	c.mu.Unlock()
	if s != nil {
		s.fail(status.Error(codes.Canceled, "the worker ended the Work stream"))
	}
}

// read hands each answer to the oldest call waiting, until the stream
// ends.
func (s *workStream) read() {
	for {
		resp, err := s.stream.Recv()
		if errors.Is(err, io.EOF) {
			err = status.Error(codes.Unavailable, "the control plane ended the Work stream")
		}
		if err != nil {
			s.fail(err)
			return
		}
		s.mu.Lock()
		if len(s.pending) == 0 || s.pending[0].ref != resp.GetRef() {
			s.mu.Unlock()
			s.fail(status.Errorf(codes.Internal, "the Work stream answered ref %d out of turn", resp.GetRef()))
			return
		}
		call := s.pending[0]
		s.pending = s.pending[1:]
		s.mu.Unlock()
		call.finish(resp, nil)
	}
}

// enqueue adds call to the calls waiting for an answer; false (call
// failed with the stream's error) when the stream already ended.
func (s *workStream) enqueue(call *workCall) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		call.finish(nil, s.err)
		return false
	}
	s.pending = append(s.pending, call)
	return true
}

func (s *workStream) ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err != nil
}

// fail ends the stream: every call waiting fails with err (the first
// error, when it already ended).
func (s *workStream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	err = s.err
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	s.cancel()
	for _, call := range pending {
		call.finish(nil, err)
	}
}

func (c *workCall) finish(resp *factoryv1.WorkResponse, err error) {
	c.resp, c.err = resp, err
	close(c.done)
}

// result is the call's answer, or its error: the stream's, or the one
// the control plane answered with (as the unary call would return it).
func (c *workCall) result() (*factoryv1.WorkResponse, error) {
	if c.err != nil {
		return nil, c.err
	}
	if e := c.resp.GetError(); e != nil {
		return nil, workErr(e)
	}
	return c.resp, nil
}
