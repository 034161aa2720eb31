package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// What `factory work` holds to, and why.
const (
	workMaxConcurrency = 100
	// workMaxBackoff caps the wait between refused claims, so a worker
	// resumes within a few seconds of a rearm or the end of maintenance:
	// a refused claim is cheap, a fleet idle after it may run again is not.
	workMaxBackoff = 5 * time.Second
	// workPayloadEnvMax is the largest payload put in FACTORY_TASK_PAYLOAD:
	// Linux refuses an environment string over 128 KiB, and exec fails.
	workPayloadEnvMax = 64 << 10
	// workTailBytes is how much of CMD's stderr a failure carries.
	workTailBytes = 4 << 10
	// workLineMax is the longest line read as one; a longer one is split.
	// It holds a ::result line of the largest result the API takes.
	workLineMax = workResultMax + 1024
	// workResultMax is the API's limit on a task's result, in bytes.
	workResultMax = 256 << 10
	// workNoteMax is the API's limit on a progress or completion note, in
	// characters.
	workNoteMax = 4096
	// workOutputDrain is how long CMD's output may still arrive after it
	// exited, from a process outside its group that holds the pipe.
	workOutputDrain = 2 * time.Second
)

// errStopClaiming ends a slot's claims: the worker drains, or --max-tasks
// tasks are claimed.
var errStopClaiming = errors.New("no more claims")

// workOptions are `factory work`'s flags and CMD.
type workOptions struct {
	agent       string
	roles       []string
	concurrency int
	review      bool
	lease       time.Duration
	claimWait   time.Duration
	grace       time.Duration
	maxTasks    int64
	stats       bool
	argv        []string
}

func (o *workOptions) check() error {
	switch {
	case strings.TrimSpace(o.agent) == "":
		return usageErrorf("--agent (or FACTORY_AGENT) is required")
	case o.concurrency < 1 || o.concurrency > workMaxConcurrency:
		return usageErrorf("--concurrency must be 1 to %d", workMaxConcurrency)
	case o.lease < time.Second || o.lease > time.Hour:
		return usageErrorf("--lease must be 1s to 1h")
	case o.claimWait < time.Second || o.claimWait > time.Minute:
		return usageErrorf("--claim-wait must be 1s to 60s")
	case o.grace < 0:
		return usageErrorf("--grace must not be negative")
	case o.maxTasks < 0:
		return usageErrorf("--max-tasks must not be negative")
	}
	if _, err := exec.LookPath(o.argv[0]); err != nil {
		return usageErrorf("CMD: %v", err)
	}
	return nil
}

const workHelp = `Work turns a program into an agent: it claims tasks as --agent for the
--role(s), runs CMD once per task and reports the outcome. An idle worker
waits in its claim and is woken the moment work is READY (no polling);
--concurrency N keeps N claims in flight and N tasks running.

For each task CMD gets:
  stdin                  the task as JSON (as "task show -o json" prints it)
  FACTORY_TASK_ID        the task's id
  FACTORY_TASK_KIND      its kind
  FACTORY_TASK_TITLE     its title
  FACTORY_TASK_ATTEMPT   which claim of the task this is (1 for the first)
  FACTORY_TASK_PAYLOAD   the payload JSON (empty when over 64 KiB: read stdin)
  FACTORY_DEPENDENCY_RESULTS
                         the results of the tasks it depends on (a
                         pipeline's earlier stages), as a JSON array of
                         {"task_id", "stage", "kind", "title", "result"}
                         in depends_on order ("[]" when none; empty when
                         over 64 KiB: read dependency_results on stdin)
  FACTORY_FENCING_TOKEN  the lease's fencing token
  FACTORY_AGENT          --agent
  FACTORY_ADDR           the control plane's address
besides the worker's own environment. CMD runs in a process group of its
own, which the worker kills when it must stop CMD; whatever CMD leaves
running in it when it exits is killed too.

While CMD runs, the worker renews the lease every third of --lease. A
stdout line of CMD's that starts with "::" reports to the control plane:
  ::progress TEXT        a progress note on the task, sent at once with a
                         renewal (notes coming faster are merged: at most
                         one renewal a second carries the latest)
  ::spend KEY=VALUE ...  one LLM call's spend, for this agent and task.
                         model= and tier= (frontier, mid, local or infra)
                         are required; provider=, host=, input_tokens=,
                         output_tokens=, and cost_usd= (dollars: 0.0353)
                         or cost_micros= are optional (no cost: the control
                         plane prices the tokens). Values hold no spaces.
  ::result JSON          the task's result (at most 256 KiB): the last
                         ::result is sent with the completion, kept on the
                         task and handed to the tasks that depend on it.
                         Up to 4096 characters it is the completion note
                         too.
Each ::spend is reported with the event id TASK:TOKEN:LINE (the task's id,
the lease's fencing token, the stdout line number), so a report retried
after a cut connection counts once, and a later claim of the task makes
new ids. A line that does not parse is named on stderr and skipped. Every
other stdout line is copied to stdout as "[ID] line" (ID: the task id's
last 8 characters for a UUID), and stderr lines likewise to stderr.

CMD exiting 0 completes the task (to REVIEW with --review); any other exit
fails it, with the exit code and the last 4 KiB of stderr as its error,
and the queue retries it while attempts remain.

Fencing: when a renewal is refused (the lease expired, or an operator
requeued or killed the task), CMD's process group is killed at once, the
task is neither completed nor failed, and nothing CMD prints from then on
is reported (spend it printed before is).

While the fleet is under an emergency stop, in maintenance or over a
budget cap, claims are refused: the worker says why on stderr, once, and
claims again with a growing backoff (at most 5s) until claims work.

SIGINT or SIGTERM drains: no new claims; running tasks finish, and those
still running after --grace are killed and failed with "worker stopped:
killed after the 30s grace". The worker then exits 0.

Each task's start and end is a line on stderr (id, attempt, outcome,
duration). With -o json each finished task is instead a JSON line on
stdout (task_id, attempt, outcome, state, exit_code, duration_ms,
renewals, spend_reports, error), and CMD's stdout lines go to stderr.
Outcomes: done, review, failed, killed (after the grace), lost (the lease
was lost) and error (the outcome could not be reported). --stats ends
with the worker's own cost per task: claim answered → CMD started, CMD
exited → completion acknowledged, CMD exited → next CMD started (p50 and
p99), and CPU time per task.`

func newWorkCommand(a *app) *cobra.Command {
	o := workOptions{}
	cmd := &cobra.Command{
		Use:   "work --agent A --role R [--concurrency N] [--review] -- CMD [ARG...]",
		Short: "Run a program for every task claimed: an agent without glue",
		Long:  workHelp,
		Example: `  factory work --agent forge --role builder -- ./build-task.sh
  factory work --agent forge --role builder --concurrency 4 --review -- python3 agent.py
  FACTORY_AGENT=tester-1 factory work --role tester --lease 2m -o json -- sh -c 'make check >&2'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.argv = args
			if err := o.check(); err != nil {
				return err
			}
			return newWorker(a, o).run(cmd)
		},
	}
	// CMD's own flags are CMD's: flag parsing stops at the first argument.
	cmd.Flags().SetInterspersed(false)
	f := cmd.Flags()
	f.StringVar(&o.agent, "agent", envOr("FACTORY_AGENT", ""), "the agent's name (env FACTORY_AGENT; required)")
	f.StringSliceVar(&o.roles, "role", nil, "a role the agent can take (repeatable)")
	f.IntVar(&o.concurrency, "concurrency", 1, "tasks run at once, each with its own claim (1 to 100)")
	f.BoolVar(&o.review, "review", false, "send finished work to REVIEW for a human check instead of DONE")
	f.DurationVar(&o.lease, "lease", 5*time.Minute, "lease length, renewed every third of it while CMD runs (1s to 1h)")
	f.DurationVar(&o.claimWait, "claim-wait", 30*time.Second, "how long one claim waits on an empty queue before it is made again (1s to 60s); new work wakes it at once")
	f.DurationVar(&o.grace, "grace", 30*time.Second, "on SIGINT or SIGTERM, how long running tasks may finish before they are killed and failed")
	f.Int64Var(&o.maxTasks, "max-tasks", 0, "claim at most this many tasks, then exit once they are finished (0: no limit)")
	f.BoolVar(&o.stats, "stats", false, "at exit, print the worker's overhead and CPU time per task")
	return cmd
}

// worker runs `factory work`: concurrency slots, each claiming a task on
// its own Work stream, running CMD for it and finishing it.
type worker struct {
	a      *app
	o      workOptions
	env    []string
	queue  factoryv1.QueueServiceClient
	budget factoryv1.BudgetServiceClient
	// ctx carries every call. Unlike the command's context it outlives a
	// drain, so tasks still running renew, report and finish.
	ctx context.Context

	// outMu keeps lines whole: slots, CMDs' output and logs share the
	// writers.
	outMu sync.Mutex

	// reserved counts the claims made or in flight, against --max-tasks.
	reserved atomic.Int64

	refusalMu sync.Mutex
	refusal   string // why claims are refused, as last logged; "" while they work

	runningMu sync.Mutex
	running   map[*taskRun]struct{}
	// killedWhy is set once the grace ran out: a task that starts after
	// (its claim crossed the drain) is stopped at once.
	killedWhy string

	stats workStats
}

func newWorker(a *app, o workOptions) *worker {
	return &worker{a: a, o: o, env: os.Environ(), running: map[*taskRun]struct{}{}}
}

func (w *worker) run(cmd *cobra.Command) error {
	conn, err := w.a.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	w.queue = factoryv1.NewQueueServiceClient(conn)
	w.budget = factoryv1.NewBudgetServiceClient(conn)
	ctx, cancel := context.WithCancel(context.WithoutCancel(cmd.Context()))
	defer cancel()
	w.ctx = ctx
	w.stats.begin()

	// A task with no role is anyone's; one with a role only its role's.
	roles := "tasks that need no role"
	if len(w.o.roles) > 0 {
		roles = "tasks of role " + strings.Join(w.o.roles, ", ")
	}
	w.logf("work: %s takes %s, %d at a time; lease %s, renewed every %s; CMD: %s",
		w.o.agent, roles, w.o.concurrency, w.o.lease, w.o.lease/3, strings.Join(w.o.argv, " "))

	// The drain begins with a signal, or with a slot's fatal error (a
	// claim no wait can cure), which drains the others.
	drain, stopClaiming := context.WithCancelCause(cmd.Context())
	defer stopClaiming(nil)
	var g errgroup.Group
	for range w.o.concurrency {
		g.Go(func() error {
			err := w.slot(drain)
			if err != nil {
				stopClaiming(err)
			}
			return err
		})
	}
	slotsDone := make(chan struct{})
	graceDone := make(chan struct{})
	go func() {
		defer close(graceDone)
		w.enforceGrace(drain, slotsDone)
	}()
	err = g.Wait()
	close(slotsDone)
	<-graceDone
	if w.o.stats {
		w.printStats()
	}
	w.logf("work: %s stopped after %d task(s)", w.o.agent, w.stats.count())
	return err
}

// enforceGrace waits for the drain; then it gives the running tasks
// --grace to finish and kills those still running.
func (w *worker) enforceGrace(drain context.Context, slotsDone <-chan struct{}) {
	select {
	case <-slotsDone:
		return
	case <-drain.Done():
	}
	select {
	case <-slotsDone:
		return
	default:
	}
	why := "signal"
	if cause := context.Cause(drain); cause != nil && !errors.Is(cause, context.Canceled) {
		why = describeError(cause)
	}
	w.logf("work: stopping (%s): no new claims; %d running task(s) get %s to finish", why, w.runningCount(), w.o.grace)
	t := time.NewTimer(w.o.grace)
	defer t.Stop()
	select {
	case <-slotsDone:
	case <-t.C:
		w.killRunning(fmt.Sprintf("worker stopped: killed after the %s grace", w.o.grace))
	}
}

// slot claims and runs one task at a time until the drain or --max-tasks.
func (w *worker) slot(drain context.Context) error {
	conn := newWorkConn(w.ctx, w.queue)
	defer conn.abort()
	var ahead *workCall
	var lastExit time.Time
	for {
		task, claimed, pipelined, err := w.claim(drain, conn, ahead)
		ahead = nil
		switch {
		case errors.Is(err, errStopClaiming):
			return nil
		case err != nil:
			return err
		case task == nil:
			lastExit = time.Time{}
			continue
		}
		r := newTaskRun(w, conn, task, claimed)
		if pipelined && !lastExit.IsZero() {
			r.sinceLastExit = lastExit
		}
		ahead = w.work(drain, r)
		lastExit = r.exitedAt
	}
}

func (w *worker) claimRequest() *factoryv1.WorkRequest {
	return &factoryv1.WorkRequest{Call: &factoryv1.WorkRequest_Claim{Claim: &factoryv1.ClaimTaskRequest{
		Agent: w.o.agent, Roles: w.o.roles, MaxTasks: 1,
		Wait: durationpb.New(w.o.claimWait), LeaseDuration: durationpb.New(w.o.lease),
	}}}
}

// reserve counts a claim against --max-tasks; false once the worker
// drains or has claimed them all.
func (w *worker) reserve(drain context.Context) bool {
	if drain.Err() != nil {
		return false
	}
	if w.o.maxTasks > 0 && w.reserved.Add(1) > w.o.maxTasks {
		w.reserved.Add(-1)
		return false
	}
	return true
}

func (w *worker) unreserve() {
	if w.o.maxTasks > 0 {
		w.reserved.Add(-1)
	}
}

// claim returns the next task, or nil when a claim's wait ended empty.
// ahead is a claim already sent (with the last completion). A refusal
// that waiting cures (emergency stop, maintenance, a budget cap, the
// control plane unreachable) is logged once and claimed again after a
// backoff; any other error is the worker's end. claimed is when the task
// arrived; pipelined says it came from ahead, at the first try.
func (w *worker) claim(drain context.Context, conn *workConn, ahead *workCall) (task *factoryv1.Task, claimed time.Time, pipelined bool, err error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.MaxInterval = workMaxBackoff
	first := ahead != nil
	task, err = backoff.Retry(drain, func() (*factoryv1.Task, error) {
		call := ahead
		ahead = nil
		if call == nil {
			first = false
			if !w.reserve(drain) {
				return nil, backoff.Permanent(errStopClaiming)
			}
			call = conn.send(w.claimRequest())
		}
		t, err := w.awaitClaim(drain, conn, call)
		if t == nil {
			w.unreserve()
		}
		switch {
		case err == nil:
			w.claimsAccepted()
			return t, nil
		case errors.Is(err, errStopClaiming):
			return nil, backoff.Permanent(err)
		case claimRetryable(err):
			return nil, err
		}
		return nil, backoff.Permanent(fmt.Errorf("claim as %s: %w", w.o.agent, err))
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0), backoff.WithNotify(func(err error, _ time.Duration) {
		w.claimsRefused(err)
	}))
	if err != nil && drain.Err() != nil {
		return nil, time.Time{}, false, errStopClaiming
	}
	return task, time.Now(), first, err
}

// awaitClaim waits for a claim's answer. The drain ends the stream, which
// ends the claim's wait on the control plane; a task it claimed but could
// not send goes back to READY there at once, and one whose answer arrived
// all the same is run.
func (w *worker) awaitClaim(drain context.Context, conn *workConn, call *workCall) (*factoryv1.Task, error) {
	// A claim is answered when its wait ends at the latest; past that and
	// --timeout, the connection is taken for dead and the stream given up.
	late := time.NewTimer(w.o.claimWait + w.a.timeout)
	defer late.Stop()
	select {
	case <-call.done:
	case <-late.C:
		if call.stream != nil {
			call.stream.fail(status.Errorf(codes.DeadlineExceeded, "no answer to a claim in %s", w.o.claimWait+w.a.timeout))
		}
		<-call.done
	case <-drain.Done():
		conn.abort()
		<-call.done
	}
	resp, err := call.result()
	if err != nil {
		if drain.Err() != nil {
			return nil, errStopClaiming
		}
		return nil, err
	}
	claim := resp.GetClaim()
	if claim == nil {
		return nil, status.Errorf(codes.Internal, "the Work stream answered a claim with a %T", resp.GetResult())
	}
	if len(claim.GetTasks()) == 0 {
		if drain.Err() != nil {
			return nil, errStopClaiming
		}
		return nil, nil
	}
	return claim.GetTasks()[0], nil
}

// work runs one task and finishes it, sending the slot's next claim with
// the completion so that a task costs one round trip; it returns that
// claim, or nil when the slot claims no more.
func (w *worker) work(drain context.Context, r *taskRun) *workCall {
	r.run()
	req := r.finishRequest()
	var finish, ahead *workCall
	if req != nil {
		finish = r.conn.send(req)
	}
	if w.reserve(drain) {
		ahead = r.conn.send(w.claimRequest())
	}
	r.settle(req, finish)
	w.report(r)
	return ahead
}

// claimsRefused logs why claims are refused, once per reason.
func (w *worker) claimsRefused(err error) {
	why := refusalText(err)
	w.refusalMu.Lock()
	changed := why != w.refusal
	w.refusal = why
	w.refusalMu.Unlock()
	if changed {
		w.logf("work: %s", why)
	}
}

// claimsAccepted logs the end of a refusal.
func (w *worker) claimsAccepted() {
	w.refusalMu.Lock()
	was := w.refusal
	w.refusal = ""
	w.refusalMu.Unlock()
	if was != "" {
		w.logf("work: claims accepted again; resuming")
	}
}

// claimRetryable says whether a refused claim is worth making again
// later: the refusals that end by themselves or by an operator's hand
// (emergency stop, maintenance, a budget cap, a rate limit) and a control
// plane out of reach. A refused token, a role not granted or an invalid
// request is not: no wait cures it.
func claimRetryable(err error) bool {
	switch errCode(err) {
	case codes.ResourceExhausted, codes.FailedPrecondition:
		return true
	}
	return retryable(err)
}

// retryable says whether a call that failed may succeed when sent again
// as it is: the control plane or the connection failed, not the request.
func retryable(err error) bool {
	switch errCode(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted,
		codes.Canceled, codes.Internal, codes.Unknown:
		return true
	}
	return false
}

// errCode is the gRPC code err carries; a context's end counts as the
// code a call ended by it gets.
func errCode(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	st := unwrapStatus(err)
	if st == nil {
		return codes.Unknown
	}
	return status.Code(st)
}

// refusalText says why a claim was refused, and what the worker does.
func refusalText(err error) string {
	st, _ := status.FromError(unwrapStatus(err))
	msg := st.Message()
	if msg == "" {
		msg = err.Error()
	}
	switch st.Code() {
	case codes.ResourceExhausted:
		for _, d := range st.Details() {
			qf, ok := d.(*errdetails.QuotaFailure)
			if !ok {
				continue
			}
			for _, v := range qf.GetViolations() {
				if v.GetSubject() == "emergency-stop" {
					return "fleet stopped by the emergency stop: " + emergencyReason(v.GetDescription()) + "; waiting for an operator to rearm it"
				}
				return fmt.Sprintf("claims refused by %s: %s; waiting", v.GetSubject(), v.GetDescription())
			}
		}
		return "claims refused for now: " + msg + "; waiting"
	case codes.FailedPrecondition:
		if strings.Contains(msg, "maintenance") {
			return "factory in maintenance: " + msg + "; waiting for it to end"
		}
		return "claims refused: " + msg + "; waiting"
	}
	return "control plane unreachable: " + msg + "; retrying"
}

// emergencyReason is the operator's reason inside the emergency stop's
// refusal ("the fleet is under an emergency stop (REASON); an operator
// must rearm it ..."), or the whole text when it reads otherwise.
func emergencyReason(description string) string {
	rest, ok := strings.CutPrefix(description, "the fleet is under an emergency stop (")
	if !ok {
		return description
	}
	if i := strings.LastIndex(rest, "); an operator"); i >= 0 {
		return rest[:i]
	}
	return description
}

// logf writes one line to stderr.
func (w *worker) logf(format string, args ...any) {
	w.writeLine(w.a.stderr(), fmt.Sprintf(format, args...))
}

// writeLine writes s and a newline to dst in one piece.
func (w *worker) writeLine(dst io.Writer, s string) {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	_, _ = io.WriteString(dst, s+"\n")
}

func (w *worker) register(r *taskRun) {
	w.runningMu.Lock()
	w.running[r] = struct{}{}
	why := w.killedWhy
	w.runningMu.Unlock()
	if why != "" {
		r.stop(why)
	}
}

func (w *worker) unregister(r *taskRun) {
	w.runningMu.Lock()
	delete(w.running, r)
	w.runningMu.Unlock()
}

func (w *worker) runningCount() int {
	w.runningMu.Lock()
	defer w.runningMu.Unlock()
	return len(w.running)
}

// killRunning stops every running CMD, and any that starts from now on.
func (w *worker) killRunning(why string) {
	w.runningMu.Lock()
	w.killedWhy = why
	runs := make([]*taskRun, 0, len(w.running))
	for r := range w.running {
		runs = append(runs, r)
	}
	w.runningMu.Unlock()
	if len(runs) > 0 {
		w.logf("work: grace of %s over: killing %d running task(s)", w.o.grace, len(runs))
	}
	for _, r := range runs {
		r.stop(why)
	}
}

// workResult is one finished task, as -o json prints it.
type workResult struct {
	TaskID       string  `json:"task_id"`
	Kind         string  `json:"kind"`
	Attempt      int32   `json:"attempt"`
	FencingToken int64   `json:"fencing_token"`
	Outcome      string  `json:"outcome"`
	State        string  `json:"state"`
	ExitCode     int     `json:"exit_code"`
	DurationMS   float64 `json:"duration_ms"`
	Renewals     int     `json:"renewals"`
	SpendReports int     `json:"spend_reports"`
	Error        string  `json:"error"`
}

// report prints a finished task's line and counts it.
func (w *worker) report(r *taskRun) {
	res := r.result()
	w.stats.finished(r)
	if w.a.jsonOutput() {
		b, err := json.Marshal(res)
		if err == nil {
			w.writeLine(w.a.stdout(), string(b))
		}
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "work: %s attempt %d/%d: %s in %s", res.TaskID, res.Attempt, r.task.GetMaxAttempts(), res.Outcome,
		(time.Duration(res.DurationMS * float64(time.Millisecond))).Round(time.Millisecond))
	var details []string
	if res.ExitCode >= 0 && r.startErr == nil {
		details = append(details, fmt.Sprintf("exit %d", res.ExitCode))
	}
	details = append(details, plural(res.Renewals, "renewal"))
	if res.SpendReports > 0 {
		details = append(details, plural(res.SpendReports, "spend report"))
	}
	fmt.Fprintf(&b, " (%s)", strings.Join(details, ", "))
	if res.Error != "" {
		b.WriteString(": " + briefError(res.Error))
	}
	w.writeLine(w.a.stderr(), b.String())
}

// briefError is an outcome's error on one line: a failure's stderr tail
// (the task's last error keeps it whole) shortened to its last line.
func briefError(text string) string {
	head, tail, ok := strings.Cut(text, "; stderr ends:\n")
	if !ok {
		first, _, _ := strings.Cut(text, "\n")
		return first
	}
	last := tail[strings.LastIndexByte(tail, '\n')+1:]
	return fmt.Sprintf("%s; stderr ends: %s", head, truncate(last, 200))
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
