package cli

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// taskRun is one task in a slot: CMD running for it, its lease kept, its
// lines turned into reports, and its outcome.
type taskRun struct {
	w     *worker
	conn  *workConn
	task  *factoryv1.Task
	token int64
	short string

	claimedAt time.Time // when the claim's answer arrived
	// sinceLastExit is when the slot's previous CMD exited, when this
	// task's claim went out with that task's completion; zero otherwise.
	sinceLastExit time.Time
	startedAt     time.Time // when CMD started
	exitedAt      time.Time // when CMD exited (or failed to start)
	settledAt     time.Time // when the outcome was acknowledged

	cmd      *exec.Cmd
	startErr error
	state    *os.ProcessState

	noteSignal chan struct{} // a progress note is waiting for the renewer
	spend      chan spendLine

	// lineNo numbers CMD's stdout lines; only the stdout reader touches it.
	lineNo int
	// tail is the end of CMD's stderr; only the stderr reader touches it
	// until both readers are done.
	tail []byte

	mu            sync.Mutex
	exited        bool   // CMD was waited for: its pid may be reused
	stopWhy       string // why the worker killed CMD (the grace ran out)
	lost          bool   // the lease is gone: nothing more is reported
	lostWhy       string
	note          string // the progress note waiting to be sent
	noteWaiting   bool
	resultNote    string // the last ::result, when it fits in a note
	resultJSON    string // the last ::result
	renewals      int
	spendReports  int
	leaseExpires  time.Time // the lease's end as this worker last learnt it
	outcome       string
	outcomeState  factoryv1.TaskState
	outcomeErr    string
	finishIsFail  bool
	finishErrText string
}

// spendLine is a parsed ::spend with its stdout line number.
type spendLine struct {
	ev   *factoryv1.SpendEvent
	line int
}

func newTaskRun(w *worker, conn *workConn, task *factoryv1.Task, claimedAt time.Time) *taskRun {
	return &taskRun{
		w: w, conn: conn, task: task, token: task.GetLease().GetToken(), short: shortTaskID(task.GetId()),
		claimedAt: claimedAt, leaseExpires: claimedAt.Add(w.o.lease),
		noteSignal: make(chan struct{}, 1), spend: make(chan spendLine, 64),
	}
}

// shortTaskID is the part of a task id that tells tasks apart in a line
// prefix: for a UUIDv7 the last 8 hex digits (the first ones are the
// creation time, shared by tasks created together), else the id, cut at
// 24 characters.
func shortTaskID(id string) string {
	if len(id) == 36 && id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-' {
		return id[28:]
	}
	if utf8.RuneCountInString(id) <= 24 {
		return id
	}
	return string([]rune(id)[:23]) + "…"
}

// run runs CMD for the task until it exits, keeping the lease and
// reporting its lines meanwhile.
func (r *taskRun) run() {
	stdin, stdout, stderr, err := r.start()
	r.startedAt = time.Now()
	if err != nil {
		r.startErr = err
		r.exitedAt = r.startedAt
		return
	}
	r.w.register(r)
	defer r.w.unregister(r)
	if !r.w.a.jsonOutput() {
		r.w.logf("work: %s attempt %d/%d: started (pid %d): %s", r.task.GetId(), r.task.GetAttempt(), r.task.GetMaxAttempts(),
			r.cmd.Process.Pid, truncate(r.task.GetTitle(), 80))
	}

	stopRenewing := make(chan struct{})
	renewerDone := make(chan struct{})
	go func() {
		defer close(renewerDone)
		r.keepLease(stopRenewing)
	}()
	spendDone := make(chan struct{})
	go func() {
		defer close(spendDone)
		r.reportSpend()
	}()
	var readers sync.WaitGroup
	readers.Go(func() { readLines(stdout, r.onStdout) })
	readers.Go(func() { readLines(stderr, r.onStderr) })

	_ = r.cmd.Wait()
	r.exitedAt = time.Now()
	r.state = r.cmd.ProcessState
	r.mu.Lock()
	r.exited = true
	r.mu.Unlock()
	// Nothing CMD started outlives it: what it left in its group is
	// killed, and output still held open by a process that left the
	// group is read for a moment more.
	killProcessGroup(r.cmd.Process)
	readersDone := make(chan struct{})
	go func() {
		readers.Wait()
		close(readersDone)
	}()
	select {
	case <-readersDone:
	case <-time.After(workOutputDrain):
	}
	// Closing ends a read still waiting.
	_ = stdout.Close()
	_ = stderr.Close()
	<-readersDone
	// Unblocks the stdin writer should CMD have left its input unread
	// with a process outside its group.
	_ = stdin.Close()

	close(stopRenewing)
	<-renewerDone
	close(r.spend)
	<-spendDone
}

// start starts CMD with the task on stdin and in its environment, and
// returns the worker's ends of its stdin, stdout and stderr.
func (r *taskRun) start() (stdin, stdout, stderr *os.File, err error) {
	input, err := protoJSON(r.task)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("encode the task as JSON: %w", err)
	}
	input = append(input, '\n')
	// The worker's ends are its own pipes, not exec's copying goroutines:
	// Wait then returns when CMD exits, whatever else holds them open.
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			_ = f.Close()
		}
	}
	pipe := func() (rd, wr *os.File) {
		if err != nil {
			return nil, nil
		}
		rd, wr, err = os.Pipe()
		files = append(files, rd, wr)
		return rd, wr
	}
	stdinR, stdinW := pipe()
	stdoutR, stdoutW := pipe()
	stderrR, stderrW := pipe()
	if err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	cmd := exec.Command(r.w.o.argv[0], r.w.o.argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, stdoutW, stderrW
	cmd.Env = r.env()
	cmd.SysProcAttr = workProcAttr()
	err = cmd.Start()
	// The child has its copies; the worker keeps only its own ends.
	_ = stdinR.Close()
	_ = stdoutW.Close()
	_ = stderrW.Close()
	if err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	r.cmd = cmd
	go func() {
		// CMD need not read it all: a write it refuses ends here.
		_, _ = stdinW.Write(input)
		_ = stdinW.Close()
	}()
	return stdinW, stdoutR, stderrR, nil
}

// env is the worker's environment with the task's variables.
func (r *taskRun) env() []string {
	t := r.task
	payload := t.GetPayloadJson()
	if len(payload) > workPayloadEnvMax {
		payload = ""
	}
	// An environment string cannot hold NUL; a title might.
	clean := func(s string) string { return strings.ReplaceAll(s, "\x00", "") }
	return append(r.w.env[:len(r.w.env):len(r.w.env)],
		"FACTORY_TASK_ID="+t.GetId(),
		"FACTORY_TASK_KIND="+clean(t.GetKind()),
		"FACTORY_TASK_TITLE="+clean(t.GetTitle()),
		"FACTORY_TASK_ATTEMPT="+strconv.Itoa(int(t.GetAttempt())),
		"FACTORY_TASK_PAYLOAD="+clean(payload),
		"FACTORY_DEPENDENCY_RESULTS="+clean(dependencyResultsEnv(t)),
		"FACTORY_FENCING_TOKEN="+strconv.FormatInt(r.token, 10),
		"FACTORY_AGENT="+r.w.o.agent,
		"FACTORY_ADDR="+r.w.a.addr,
	)
}

// readLines calls fn with each line read from f, without its newline; a
// line longer than workLineMax comes in pieces.
func readLines(f *os.File, fn func(line []byte)) {
	br := bufio.NewReaderSize(f, workLineMax)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte("\n"))
			fn(bytes.TrimSuffix(line, []byte("\r")))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// onStdout acts on a directive line or copies the line to stdout (stderr
// under -o json, whose stdout is the results').
func (r *taskRun) onStdout(line []byte) {
	r.lineNo++
	if rest, ok := bytes.CutPrefix(line, []byte("::")); ok {
		verb, arg, _ := bytes.Cut(rest, []byte(" "))
		switch string(verb) {
		case "progress", "spend", "result":
			if r.isLost() {
				return
			}
			text := strings.TrimSpace(strings.ToValidUTF8(string(arg), "\uFFFD"))
			switch string(verb) {
			case "progress":
				r.setNote(text)
			case "spend":
				r.spendLine(text)
			case "result":
				r.resultLine(text)
			}
			return
		}
	}
	dst := r.w.a.stdout()
	if r.w.a.jsonOutput() {
		dst = r.w.a.stderr()
	}
	r.w.writeLine(dst, "["+r.short+"] "+string(line))
}

// onStderr keeps the tail of CMD's stderr and copies the line to stderr.
func (r *taskRun) onStderr(line []byte) {
	r.tail = append(r.tail, line...)
	r.tail = append(r.tail, '\n')
	if len(r.tail) > 2*workTailBytes {
		r.tail = append(r.tail[:0], r.tail[len(r.tail)-workTailBytes:]...)
	}
	r.w.writeLine(r.w.a.stderr(), "["+r.short+"] "+string(line))
}

// stderrTail is the last workTailBytes of CMD's stderr, as valid text.
func (r *taskRun) stderrTail() string {
	b := r.tail
	if len(b) > workTailBytes {
		b = b[len(b)-workTailBytes:]
		// Start at a whole character.
		for i := 0; i < utf8.UTFMax && i < len(b) && !utf8.RuneStart(b[i]); i++ {
			b = b[1:]
		}
	}
	return strings.ToValidUTF8(strings.TrimRight(string(b), "\n"), "\uFFFD")
}

func (r *taskRun) isLost() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lost
}

// setNote makes text the note the next renewal carries and wakes the
// renewer.
func (r *taskRun) setNote(text string) {
	r.mu.Lock()
	r.note, r.noteWaiting = cutRunes(text, workNoteMax), true
	r.mu.Unlock()
	select {
	case r.noteSignal <- struct{}{}:
	default:
	}
}

// takeNote returns the waiting note, if any, and clears it.
func (r *taskRun) takeNote() (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	note, ok := r.note, r.noteWaiting
	r.note, r.noteWaiting = "", false
	return note, ok
}

// putBackNote keeps a note whose renewal failed, unless a newer one came.
func (r *taskRun) putBackNote(note string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.noteWaiting {
		r.note, r.noteWaiting = note, true
	}
}

func (r *taskRun) noteIsWaiting() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.noteWaiting
}

func (r *taskRun) spendLine(text string) {
	ev, err := parseSpendLine(text)
	if err != nil {
		r.w.logf("work: %s line %d: ::spend skipped: %v", r.task.GetId(), r.lineNo, err)
		return
	}
	ev.Id = spendEventID(r.task.GetId(), r.token, r.lineNo)
	ev.Agent = r.w.o.agent
	ev.TaskId = r.task.GetId()
	ev.OccurredAt = timestamppb.Now()
	r.spend <- spendLine{ev: ev, line: r.lineNo}
}

func (r *taskRun) resultLine(text string) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(text)); err != nil {
		r.w.logf("work: %s line %d: ::result skipped: not JSON: %v", r.task.GetId(), r.lineNo, err)
		return
	}
	if n := compact.Len(); n > workResultMax {
		r.w.logf("work: %s line %d: ::result skipped: %d bytes, over the %d a result holds", r.task.GetId(), r.lineNo, n, workResultMax)
		return
	}
	note := compact.String()
	if utf8.RuneCount(compact.Bytes()) > workNoteMax {
		note = "" // too long for a note; the result holds it
	}
	r.mu.Lock()
	r.resultNote, r.resultJSON = note, compact.String()
	r.mu.Unlock()
}

// spendEventID names a ::spend line for good: the task, its claim (the
// fencing token grows with every claim, and unlike the attempt is never
// reset by a requeue) and the line. Too long for the API's 128
// characters, the task id is replaced by its hash.
func spendEventID(taskID string, token int64, line int) string {
	id := fmt.Sprintf("%s:%d:%d", taskID, token, line)
	if len(id) <= 128 {
		return id
	}
	sum := sha256.Sum256([]byte(taskID))
	return fmt.Sprintf("%s:%d:%d", hex.EncodeToString(sum[:20]), token, line)
}

// parseSpendLine reads the KEY=VALUE fields of a ::spend line.
func parseSpendLine(text string) (*factoryv1.SpendEvent, error) {
	ev := &factoryv1.SpendEvent{}
	seen := map[string]bool{}
	count := func(key, v string) (int64, error) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%s=%q: want a whole number, 0 or more", key, v)
		}
		return n, nil
	}
	for _, field := range strings.Fields(text) {
		key, v, ok := strings.Cut(field, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not KEY=VALUE", field)
		}
		if seen[key] {
			return nil, fmt.Errorf("%s given twice", key)
		}
		seen[key] = true
		var err error
		switch key {
		case "model":
			ev.Model = v
		case "provider":
			ev.Provider = v
		case "host":
			ev.Host = v
		case "tier":
			ev.Tier, err = parseTier(v)
		case "input_tokens":
			ev.InputTokens, err = count(key, v)
		case "output_tokens":
			ev.OutputTokens, err = count(key, v)
		case "cost_usd":
			var c int64
			if c, err = parseDollars(v); err == nil {
				ev.CostMicros = &c
			}
		case "cost_micros":
			var c int64
			if c, err = count(key, v); err == nil {
				ev.CostMicros = &c
			}
		default:
			return nil, fmt.Errorf("unknown key %q (want model, tier, provider, host, input_tokens, output_tokens, cost_usd, cost_micros)", key)
		}
		if err != nil {
			return nil, err
		}
	}
	switch {
	case ev.GetModel() == "":
		return nil, errors.New("model= is required")
	case ev.GetTier() == factoryv1.SpendTier_SPEND_TIER_UNSPECIFIED:
		return nil, fmt.Errorf("tier= is required (%s)", strings.Join(tierNames, ", "))
	case seen["cost_usd"] && seen["cost_micros"]:
		return nil, errors.New("give cost_usd= or cost_micros=, not both")
	}
	return ev, nil
}

// reportSpend sends the ::spend events in order. One that fails for the
// connection's sake is sent again under the same id, so it counts once.
func (r *taskRun) reportSpend() {
	for s := range r.spend {
		b := backoff.NewExponentialBackOff()
		b.InitialInterval = 200 * time.Millisecond
		b.MaxInterval = workMaxBackoff
		_, err := backoff.Retry(r.w.ctx, func() (*factoryv1.ReportSpendResponse, error) {
			resp, err := r.w.budget.ReportSpend(r.w.ctx, &factoryv1.ReportSpendRequest{Event: s.ev})
			if err != nil && !retryable(err) {
				return nil, backoff.Permanent(err)
			}
			return resp, err
		}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(time.Minute))
		if err != nil {
			r.w.logf("work: %s line %d: spend not recorded: %s", r.task.GetId(), s.line, describeError(err))
			continue
		}
		r.mu.Lock()
		r.spendReports++
		r.mu.Unlock()
	}
}

// keepLease renews the lease every third of its length, and sooner to
// carry a progress note (at most one a second), until stop closes or the
// lease is lost. A renewal refused for the connection's sake is retried
// while the lease may still hold; past its end, or refused by the
// control plane, the lease is lost.
func (r *taskRun) keepLease(stop <-chan struct{}) {
	interval := r.w.o.lease / 3
	gap := min(time.Second, interval)
	retry := leaseRetryBackOff(interval)
	next := r.claimedAt.Add(interval)
	var lastTry time.Time
	for {
		due := next
		if r.noteIsWaiting() {
			due = minTime(due, lastTry.Add(gap))
		}
		t := time.NewTimer(time.Until(due))
		select {
		case <-stop:
			t.Stop()
			return
		case <-r.noteSignal:
			t.Stop()
			continue
		case <-t.C:
		}
		note, hadNote := r.takeNote()
		lastTry = time.Now()
		err := r.renew(note, stop)
		if err == nil {
			retry.Reset()
			next = lastTry.Add(interval)
			continue
		}
		if hadNote {
			r.putBackNote(note)
		}
		select {
		case <-stop:
			return
		default:
		}
		if !retryable(err) {
			r.lose("the lease is lost: " + describeError(err))
			return
		}
		if r.expires().Before(time.Now()) {
			r.lose("the lease ran out: no renewal got through: " + describeError(err))
			return
		}
		next = time.Now().Add(retry.NextBackOff())
	}
}

// leaseRetryBackOff paces the retries of a lease renewal that failed for
// the connection's sake, for a lease renewed every interval: the first
// soon, the later ones jittered, so that sessions cut off together do not
// come back together, and at most about half an interval apart, so that
// several tries fit before the lease runs out. factory work and factory
// mcp both renew by it.
func leaseRetryBackOff(interval time.Duration) *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = max(interval/2, b.InitialInterval)
	return b
}

// renew sends one renewal and waits for its answer.
func (r *taskRun) renew(note string, stop <-chan struct{}) error {
	sent := time.Now()
	call := r.conn.send(&factoryv1.WorkRequest{Call: &factoryv1.WorkRequest_Renew{Renew: &factoryv1.RenewLeaseRequest{
		TaskId: r.task.GetId(), Agent: r.w.o.agent, FencingToken: r.token,
		LeaseDuration: durationpb.New(r.w.o.lease), Progress: note,
	}}})
	timeout := max(time.Second, min(r.w.a.timeout, time.Until(r.expires())))
	if _, err := r.conn.wait(call, timeout, stop); err != nil {
		return err
	}
	r.mu.Lock()
	r.renewals++
	r.leaseExpires = sent.Add(r.w.o.lease)
	r.mu.Unlock()
	return nil
}

func (r *taskRun) expires() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leaseExpires
}

// lose marks the lease lost and kills CMD: from now on nothing it prints
// is reported, and the task is neither completed nor failed.
func (r *taskRun) lose(why string) {
	r.mu.Lock()
	if r.lost {
		r.mu.Unlock()
		return
	}
	r.lost, r.lostWhy = true, why
	exited := r.exited
	r.mu.Unlock()
	if !exited {
		killProcessGroup(r.cmd.Process)
	}
}

// stop kills CMD for the worker's own reason (the grace ran out).
func (r *taskRun) stop(why string) {
	r.mu.Lock()
	if r.lost || r.exited || r.stopWhy != "" {
		r.mu.Unlock()
		return
	}
	r.stopWhy = why
	r.mu.Unlock()
	killProcessGroup(r.cmd.Process)
}

// finishRequest is the completion or failure CMD's end calls for, or nil
// when the lease is lost.
func (r *taskRun) finishRequest() *factoryv1.WorkRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lost {
		r.outcome, r.outcomeErr = "lost", r.lostWhy
		return nil
	}
	fail := func(text string) *factoryv1.WorkRequest {
		r.finishIsFail = true
		r.finishErrText = cutBytes(strings.ToValidUTF8(text, "\uFFFD"), 64<<10)
		return &factoryv1.WorkRequest{Call: &factoryv1.WorkRequest_Fail{Fail: &factoryv1.FailTaskRequest{
			TaskId: r.task.GetId(), Agent: r.w.o.agent, FencingToken: r.token, Error: r.finishErrText,
		}}}
	}
	switch {
	case r.startErr != nil:
		return fail("CMD did not start: " + r.startErr.Error())
	case r.stopWhy != "":
		return fail(r.withTail(r.stopWhy))
	case r.state.Success():
		return &factoryv1.WorkRequest{Call: &factoryv1.WorkRequest_Complete{Complete: &factoryv1.CompleteTaskRequest{
			TaskId: r.task.GetId(), Agent: r.w.o.agent, FencingToken: r.token, Review: r.w.o.review, Note: r.resultNote,
			ResultJson: r.resultJSON,
		}}}
	}
	return fail(r.withTail(exitText(r.state)))
}

// withTail is text with the tail of CMD's stderr below it.
func (r *taskRun) withTail(text string) string {
	if tail := r.stderrTail(); tail != "" {
		return text + "; stderr ends:\n" + tail
	}
	return text + " (nothing on stderr)"
}

// exitText says how CMD ended.
func exitText(st *os.ProcessState) string {
	if code := st.ExitCode(); code >= 0 {
		return fmt.Sprintf("CMD exited with code %d", code)
	}
	return "CMD ended by " + st.String()
}

// settle waits for the answer to the finishing request, sending it again
// on a new stream while the connection is what fails (a repeated
// completion or failure is answered as the first was).
func (r *taskRun) settle(req *factoryv1.WorkRequest, first *workCall) {
	defer func() { r.settledAt = time.Now() }()
	if req == nil {
		return
	}
	call := first
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = workMaxBackoff
	resp, err := backoff.Retry(r.w.ctx, func() (*factoryv1.WorkResponse, error) {
		if call == nil {
			call = r.conn.send(req)
		}
		resp, err := r.conn.wait(call, r.w.a.timeout, nil)
		call = nil
		if err != nil && !retryable(err) {
			return nil, backoff.Permanent(err)
		}
		return resp, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(max(r.w.o.lease, time.Minute)))
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case errCode(err) == codes.FailedPrecondition:
		r.outcome, r.outcomeErr = "lost", "the control plane refused the outcome: "+describeError(err)
	case err != nil:
		r.outcome, r.outcomeErr = "error", "could not report the outcome: "+describeError(err)
	case r.finishIsFail:
		r.outcomeState = resp.GetFail().GetTask().GetState()
		r.outcome, r.outcomeErr = "failed", r.finishErrText
		if r.stopWhy != "" {
			r.outcome = "killed"
		}
	default:
		r.outcomeState = resp.GetComplete().GetTask().GetState()
		r.outcome = "done"
		if r.outcomeState == factoryv1.TaskState_TASK_STATE_REVIEW {
			r.outcome = "review"
		}
	}
}

// result is the finished task as -o json prints it.
func (r *taskRun) result() workResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := workResult{
		TaskID: r.task.GetId(), Kind: r.task.GetKind(), Attempt: r.task.GetAttempt(), FencingToken: r.token,
		Outcome: r.outcome, ExitCode: -1, Renewals: r.renewals, SpendReports: r.spendReports, Error: r.outcomeErr,
		DurationMS: float64(r.settledAt.Sub(r.claimedAt).Microseconds()) / 1000,
	}
	if r.outcomeState != factoryv1.TaskState_TASK_STATE_UNSPECIFIED {
		res.State = r.outcomeState.String()
	}
	if r.state != nil {
		res.ExitCode = r.state.ExitCode()
	}
	return res
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// cutRunes shortens s to at most n characters.
func cutRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}

// cutBytes shortens s to at most n bytes, at a character's start.
func cutBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
