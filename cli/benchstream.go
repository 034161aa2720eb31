package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// streamBenchAgent is one simulated agent of a --stream run: it claims and
// completes over one Work stream, sending each claim's completions and the
// next claim together, so a cycle costs one round trip.
type streamBenchAgent struct {
	// q opens the stream and hands back a task of another role, as the
	// unary agents do.
	q          factoryv1.QueueServiceClient
	run, agent string
	batch      int
	// total is how many tasks the run has: the agent claims again while
	// fewer than that have been claimed by all agents together.
	total              int64
	claimed, completed *atomic.Int64
	// empty counts claims that returned no task, completeErrs completions
	// the control plane refused; both are shared with the other agents.
	empty, completeErrs *int64
	// latencies is this agent's claim latencies: from sending a claim to
	// its response, which includes the completions sent ahead of it.
	latencies *[]time.Duration
}

// benchStream is an agent's Work stream and what it has sent that is not
// answered yet.
type benchStream struct {
	stream  grpc.BidiStreamingClient[factoryv1.WorkRequest, factoryv1.WorkResponse]
	lastRef uint64
	// completes are the refs of the completions sent and not yet answered,
	// in the order sent: the order their responses come in.
	completes []uint64
	// counts is how many tasks each of completes names.
	counts []int64
}

// work runs the agent until every task of the run is claimed, completes
// whatever it claimed, and ends its stream.
func (a *streamBenchAgent) work(ctx context.Context) error {
	// Ending the stream on every return: an error leaves it open otherwise.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.q.Work(ctx)
	if err != nil {
		return fmt.Errorf("%s: open the Work stream: %w", a.agent, err)
	}
	s := &benchStream{stream: stream}
	claimRef, sent, err := a.sendClaim(s)
	for err == nil {
		var tasks []*factoryv1.Task
		if tasks, err = a.awaitClaim(ctx, s, claimRef, sent); err != nil {
			break
		}
		if len(tasks) > 1 {
			// A batch's completions go in one transaction, as the unary
			// agents' CompleteTasks.
			err = a.sendCompleteMany(s, tasks)
		} else {
			for _, t := range tasks {
				if err = a.sendComplete(s, t); err != nil {
					break
				}
			}
		}
		// Another agent's claim may take the last tasks while this one's
		// is on its way; this one then comes back empty, and the tasks
		// it did take are completed above before the loop ends.
		if err != nil || a.claimed.Load() >= a.total {
			break
		}
		claimRef, sent, err = a.sendClaim(s)
	}
	if err != nil {
		return err
	}
	return a.finish(s)
}

// sendClaim sends the next claim and returns its ref and when it was sent.
func (a *streamBenchAgent) sendClaim(s *benchStream) (uint64, time.Time, error) {
	s.lastRef++
	ref := s.lastRef
	sent := time.Now()
	err := s.send(&factoryv1.WorkRequest{Ref: ref, Call: &factoryv1.WorkRequest_Claim{Claim: &factoryv1.ClaimTaskRequest{
		Agent: a.agent, Roles: []string{a.run}, MaxTasks: int32(a.batch), LeaseDuration: durationpb.New(5 * time.Minute),
	}}})
	if err != nil {
		return 0, sent, fmt.Errorf("%s: claim: %w", a.agent, err)
	}
	return ref, sent, nil
}

// sendComplete sends t's completion; its response is counted when it
// comes, ahead of the next claim's.
func (a *streamBenchAgent) sendComplete(s *benchStream, t *factoryv1.Task) error {
	s.lastRef++
	err := s.send(&factoryv1.WorkRequest{Ref: s.lastRef, Call: &factoryv1.WorkRequest_Complete{Complete: &factoryv1.CompleteTaskRequest{
		TaskId: t.GetId(), Agent: a.agent, FencingToken: t.GetLease().GetToken(),
	}}})
	if err != nil {
		return fmt.Errorf("%s: complete: %w", a.agent, err)
	}
	s.completes = append(s.completes, s.lastRef)
	s.counts = append(s.counts, 1)
	return nil
}

// sendCompleteMany sends the completions of tasks as one request.
func (a *streamBenchAgent) sendCompleteMany(s *benchStream, tasks []*factoryv1.Task) error {
	s.lastRef++
	items := make([]*factoryv1.CompleteTaskRequest, len(tasks))
	for i, t := range tasks {
		items[i] = &factoryv1.CompleteTaskRequest{TaskId: t.GetId(), Agent: a.agent, FencingToken: t.GetLease().GetToken()}
	}
	err := s.send(&factoryv1.WorkRequest{Ref: s.lastRef, Call: &factoryv1.WorkRequest_CompleteMany{CompleteMany: &factoryv1.CompleteTasksRequest{Items: items}}})
	if err != nil {
		return fmt.Errorf("%s: complete: %w", a.agent, err)
	}
	s.completes = append(s.completes, s.lastRef)
	s.counts = append(s.counts, int64(len(tasks)))
	return nil
}

// awaitClaim counts the answers to the completions sent ahead of the claim
// ref, then takes the claim's own: it returns the claimed tasks of the
// run, having handed back any other and counted those it keeps as claimed.
func (a *streamBenchAgent) awaitClaim(ctx context.Context, s *benchStream, ref uint64, sent time.Time) ([]*factoryv1.Task, error) {
	for {
		resp, err := s.stream.Recv()
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("the control plane ended the stream with the claim (ref %d) unanswered", ref)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: claim: %w", a.agent, err)
		}
		if len(s.completes) > 0 {
			if err := a.countComplete(s, resp); err != nil {
				return nil, err
			}
			continue
		}
		if resp.GetRef() != ref {
			return nil, fmt.Errorf("%s: claim: a response with ref %d where the claim's (ref %d) was due", a.agent, resp.GetRef(), ref)
		}
		*a.latencies = append(*a.latencies, time.Since(sent))
		var claimed []*factoryv1.Task
		switch r := resp.GetResult().(type) {
		case *factoryv1.WorkResponse_Claim:
			claimed = r.Claim.GetTasks()
		case *factoryv1.WorkResponse_Error:
			return nil, fmt.Errorf("%s: claim: %w", a.agent, workErr(r.Error))
		default:
			return nil, fmt.Errorf("%s: claim: a %T answers the claim (ref %d)", a.agent, r, ref)
		}
		tasks, err := keepBenchTasks(ctx, a.q, a.run, claimed)
		if err != nil {
			return nil, err
		}
		if len(claimed) == 0 {
			// Everything left is held by other agents; the loop ends
			// once their claims are counted.
			atomic.AddInt64(a.empty, 1)
		}
		a.claimed.Add(int64(len(tasks)))
		return tasks, nil
	}
}

// countComplete takes resp as the answer to the oldest unanswered
// completion: completed, or refused (counted as the unary path counts a
// refused item).
func (a *streamBenchAgent) countComplete(s *benchStream, resp *factoryv1.WorkResponse) error {
	ref := s.completes[0]
	if resp.GetRef() != ref {
		return fmt.Errorf("%s: complete: a response with ref %d where the completion's (ref %d) was due", a.agent, resp.GetRef(), ref)
	}
	n := s.counts[0]
	s.completes, s.counts = s.completes[1:], s.counts[1:]
	switch r := resp.GetResult().(type) {
	case *factoryv1.WorkResponse_Complete:
		a.completed.Add(1)
	case *factoryv1.WorkResponse_CompleteMany:
		for _, res := range r.CompleteMany.GetResults() {
			if res.GetErrorCode() == "" {
				a.completed.Add(1)
			} else {
				atomic.AddInt64(a.completeErrs, 1)
			}
		}
	case *factoryv1.WorkResponse_Error:
		atomic.AddInt64(a.completeErrs, n)
	default:
		return fmt.Errorf("%s: complete: a %T answers the completion (ref %d)", a.agent, r, ref)
	}
	return nil
}

// finish closes the sending side and counts the answers to the
// completions still unanswered, until the control plane ends the stream.
func (a *streamBenchAgent) finish(s *benchStream) error {
	if err := s.stream.CloseSend(); err != nil {
		return fmt.Errorf("%s: close the Work stream: %w", a.agent, err)
	}
	for {
		resp, err := s.stream.Recv()
		if errors.Is(err, io.EOF) {
			if len(s.completes) > 0 {
				return fmt.Errorf("%s: complete: the control plane ended the stream with %d completion(s) unanswered", a.agent, len(s.completes))
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: complete: %w", a.agent, err)
		}
		if len(s.completes) == 0 {
			return fmt.Errorf("%s: a response with ref %d after every request was answered", a.agent, resp.GetRef())
		}
		if err := a.countComplete(s, resp); err != nil {
			return err
		}
	}
}

// send sends req. A stream the control plane ended refuses sends with
// io.EOF; its status, the reason, comes with Recv.
func (s *benchStream) send(req *factoryv1.WorkRequest) error {
	err := s.stream.Send(req)
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		_, err := s.stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("the control plane ended the stream")
		}
		if err != nil {
			return err
		}
	}
}

// workErr is the status a WorkError carries, as the unary call would have
// returned it.
func workErr(e *factoryv1.WorkError) error {
	code := e.GetCode()
	if code == int32(codes.OK) {
		// An error that says OK would read as no error at all.
		code = int32(codes.Unknown)
	}
	return status.FromProto(&spb.Status{Code: code, Message: e.GetMessage(), Details: e.GetDetails()}).Err()
}

// streamNote is note for a --stream run and nothing otherwise.
func streamNote(stream bool, note string) string {
	if stream {
		return note
	}
	return ""
}
