package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// baseTime is where every test's clock starts. Whole seconds, so a driver
// that stores coarser timestamps than Go's nanoseconds still round-trips it.
var baseTime = time.Date(2031, time.March, 14, 9, 26, 53, 0, time.UTC)

// defaultLease is long enough that no test's lease expires unless the test
// moves the clock past it on purpose.
const defaultLease = time.Minute

// fakeClock is the only source of time in the suite.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward and returns the new time.
func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// Set moves the clock to t, which must not be in its past: drivers may
// assume time only moves forward.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.Before(c.now) {
		panic(fmt.Sprintf("fake clock moved backwards from %s to %s", c.now, t))
	}
	c.now = t
}

// harness is one subtest's bundle: its store, its clock, and helpers that
// fail the test on an unexpected error so each case reads as its scenario.
type harness struct {
	t     *testing.T
	s     store.Store
	ctx   context.Context
	clock *fakeClock
}

func (s *suite) setup(t *testing.T) *harness {
	t.Helper()
	st := s.newStore(t)
	if st == nil {
		t.Fatal("newStore returned nil")
	}
	return &harness{t: t, s: st, ctx: t.Context(), clock: &fakeClock{now: baseTime}}
}

func (h *harness) now() time.Time { return h.clock.Now() }

// create inserts tasks at the clock's time, filling a title when missing.
func (h *harness) create(tasks ...*store.TaskCreate) []store.TaskChange {
	h.t.Helper()
	for _, tc := range tasks {
		if tc.Title == "" {
			tc.Title = "task " + tc.ID
		}
	}
	changes, err := h.s.TaskCreate(h.ctx, &store.TaskCreateParams{Tasks: tasks, Now: h.now()})
	if err != nil {
		h.t.Fatalf("TaskCreate: %v", err)
	}
	if len(changes) != len(tasks) {
		h.t.Fatalf("TaskCreate returned %d changes for %d tasks", len(changes), len(tasks))
	}
	return changes
}

// createReady inserts plain READY tasks with the given ids.
func (h *harness) createReady(ids ...string) {
	h.t.Helper()
	tasks := make([]*store.TaskCreate, len(ids))
	for i, id := range ids {
		tasks[i] = &store.TaskCreate{ID: id}
	}
	h.create(tasks...)
}

func (h *harness) get(id string) *store.Task {
	h.t.Helper()
	task, err := h.s.TaskGet(h.ctx, id)
	if err != nil {
		h.t.Fatalf("TaskGet(%s): %v", id, err)
	}
	if task.ID != id {
		h.t.Fatalf("TaskGet(%s) returned task %s", id, task.ID)
	}
	return task
}

// requireAbsent proves a task was never written.
func (h *harness) requireAbsent(id string) {
	h.t.Helper()
	task, err := h.s.TaskGet(h.ctx, id)
	if !errors.Is(err, store.ErrNotFound) {
		h.t.Fatalf("TaskGet(%s) = %v, %v; want ErrNotFound", id, task, err)
	}
}

func (h *harness) requireState(id string, want store.TaskState) *store.Task {
	h.t.Helper()
	task := h.get(id)
	if task.State != want {
		h.t.Fatalf("task %s is %s, want %s", id, task.State, want)
	}
	return task
}

// requireUnchanged proves a failed call wrote nothing to the task.
func (h *harness) requireUnchanged(before *store.Task) {
	h.t.Helper()
	if d := diffTask(before, h.get(before.ID)); len(d) > 0 {
		h.t.Fatalf("task %s changed:\n%s", before.ID, strings.Join(d, "\n"))
	}
}

func (h *harness) claimParams(p *store.TaskClaimParams) []*store.Task {
	h.t.Helper()
	changes, err := h.s.TaskClaim(h.ctx, p)
	if err != nil {
		h.t.Fatalf("TaskClaim(%s): %v", p.Agent, err)
	}
	if len(changes) > max(p.Max, 1) {
		h.t.Fatalf("TaskClaim(%s, max %d) claimed %d tasks", p.Agent, p.Max, len(changes))
	}
	tasks := make([]*store.Task, len(changes))
	for i, c := range changes {
		if c.PreviousState != store.StateReady || c.Task.State != store.StateInProgress {
			h.t.Fatalf("claim change for %s: %s -> %s, want READY -> IN_PROGRESS", c.Task.ID, c.PreviousState, c.Task.State)
		}
		if c.Task.LeaseHolder != p.Agent {
			h.t.Fatalf("claimed task %s is held by %q, want %q", c.Task.ID, c.Task.LeaseHolder, p.Agent)
		}
		tasks[i] = c.Task
	}
	return tasks
}

// claim claims up to max tasks at the clock's time with defaultLease.
func (h *harness) claim(agent string, roles []string, max int) []*store.Task {
	h.t.Helper()
	return h.claimParams(&store.TaskClaimParams{Agent: agent, Roles: roles, Max: max, LeaseDuration: defaultLease, Now: h.now()})
}

// claimOne claims exactly one task and fails the test if it gets another
// id than want (want "" accepts any).
func (h *harness) claimOne(agent, want string) *store.Task {
	h.t.Helper()
	got := h.claim(agent, nil, 1)
	if len(got) != 1 {
		h.t.Fatalf("%s claimed %d tasks, want 1 (%s)", agent, len(got), want)
	}
	if want != "" && got[0].ID != want {
		h.t.Fatalf("%s claimed %s, want %s", agent, got[0].ID, want)
	}
	return got[0]
}

func (h *harness) requireNoClaim(agent string, roles []string) {
	h.t.Helper()
	if got := h.claim(agent, roles, 10); len(got) > 0 {
		h.t.Fatalf("%s (roles %v) claimed %v, want nothing", agent, roles, taskIDs(got))
	}
}

func leaseOf(task *store.Task) store.LeaseRef {
	return store.LeaseRef{TaskID: task.ID, Agent: task.LeaseHolder, FencingToken: task.FencingToken}
}

// completeItem completes one lease and returns the item's own result; a
// per-item failure is in Err, never in the call's error.
func (h *harness) completeItem(item store.TaskCompleteItem) (store.TaskCompleteItemResult, []store.TaskChange) {
	h.t.Helper()
	res, err := h.s.TaskComplete(h.ctx, &store.TaskCompleteParams{Items: []store.TaskCompleteItem{item}, Now: h.now()})
	if err != nil {
		h.t.Fatalf("TaskComplete(%s): call failed: %v", item.Lease.TaskID, err)
	}
	if len(res.Results) != 1 {
		h.t.Fatalf("TaskComplete(%s): %d results for 1 item", item.Lease.TaskID, len(res.Results))
	}
	return res.Results[0], res.Changes
}

// complete completes a held task to DONE and returns the call's changes.
func (h *harness) complete(task *store.Task) []store.TaskChange {
	h.t.Helper()
	r, changes := h.completeItem(store.TaskCompleteItem{Lease: leaseOf(task)})
	if r.Err != nil {
		h.t.Fatalf("TaskComplete(%s): %v", task.ID, r.Err)
	}
	if r.Task == nil || r.Task.State != store.StateDone {
		h.t.Fatalf("TaskComplete(%s) result: %+v, want a DONE task", task.ID, r.Task)
	}
	return changes
}

// claimAndComplete takes the task through IN_PROGRESS to DONE.
func (h *harness) claimAndComplete(id string) []store.TaskChange {
	h.t.Helper()
	return h.complete(h.claimOne("agent-"+id, id))
}

func (h *harness) fail(task *store.Task, msg string, permanent bool, backoff store.BackoffFunc) []store.TaskChange {
	h.t.Helper()
	changes, err := h.s.TaskFail(h.ctx, &store.TaskFailParams{Lease: leaseOf(task), Error: msg, Permanent: permanent, Backoff: backoff, Now: h.now()})
	if err != nil {
		h.t.Fatalf("TaskFail(%s): %v", task.ID, err)
	}
	return changes
}

func (h *harness) move(id string, to store.TaskState) []store.TaskChange {
	h.t.Helper()
	changes, err := h.s.TaskMove(h.ctx, &store.TaskMoveParams{TaskID: id, To: to, Now: h.now()})
	if err != nil {
		h.t.Fatalf("TaskMove(%s -> %s): %v", id, to, err)
	}
	return changes
}

func (h *harness) rescue(backoff store.BackoffFunc) []store.TaskChange {
	h.t.Helper()
	changes, err := h.s.TaskRescueExpired(h.ctx, &store.TaskRescueExpiredParams{Backoff: backoff, Now: h.now()})
	if err != nil {
		h.t.Fatalf("TaskRescueExpired: %v", err)
	}
	return changes
}

func (h *harness) pause(reason string) []store.TaskChange {
	h.t.Helper()
	changes, err := h.s.QueuePause(h.ctx, &store.QueuePauseParams{Reason: reason, Now: h.now()})
	if err != nil {
		h.t.Fatalf("QueuePause: %v", err)
	}
	return changes
}

func (h *harness) resume() []store.TaskChange {
	h.t.Helper()
	changes, err := h.s.QueueResume(h.ctx, &store.QueueResumeParams{Now: h.now()})
	if err != nil {
		h.t.Fatalf("QueueResume: %v", err)
	}
	return changes
}

func (h *harness) stats() *store.QueueStats {
	h.t.Helper()
	st, err := h.s.QueueStats(h.ctx)
	if err != nil {
		h.t.Fatalf("QueueStats: %v", err)
	}
	return st
}

func (h *harness) list(p *store.TaskListParams) *store.TaskListResult {
	h.t.Helper()
	res, err := h.s.TaskList(h.ctx, p)
	if err != nil {
		h.t.Fatalf("TaskList(%+v): %v", p, err)
	}
	return res
}

// noBackoff makes a retried task claimable at once.
func noBackoff(int32) time.Duration { return 0 }

// recordingBackoff is a linear backoff that remembers which attempts it
// was asked about, to prove the driver passes the failed attempt's number.
type recordingBackoff struct {
	mu       sync.Mutex
	step     time.Duration
	attempts []int32
}

func (b *recordingBackoff) fn(attempt int32) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.attempts = append(b.attempts, attempt)
	return time.Duration(attempt) * b.step
}

func (b *recordingBackoff) calls() []int32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.attempts)
}

func taskIDs(tasks []*store.Task) []string {
	ids := make([]string, len(tasks))
	for i, task := range tasks {
		ids[i] = task.ID
	}
	return ids
}

func changeIDs(changes []store.TaskChange) []string {
	ids := make([]string, len(changes))
	for i, c := range changes {
		ids[i] = c.Task.ID
	}
	return ids
}

func findChange(changes []store.TaskChange, id string) (store.TaskChange, int, bool) {
	for i, c := range changes {
		if c.Task != nil && c.Task.ID == id {
			return c, i, true
		}
	}
	return store.TaskChange{}, -1, false
}

// requireChange finds id among changes and checks its before and after
// states.
func requireChange(t *testing.T, changes []store.TaskChange, id string, from, to store.TaskState) store.TaskChange {
	t.Helper()
	c, _, ok := findChange(changes, id)
	if !ok {
		t.Fatalf("changes %v do not include %s", changeIDs(changes), id)
	}
	if c.PreviousState != from || c.Task.State != to {
		t.Fatalf("change for %s: %s -> %s, want %s -> %s", id, c.PreviousState, c.Task.State, from, to)
	}
	return c
}

// requireSameIDs compares id sets, ignoring order.
func requireSameIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	g, w := slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(g, w) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// requireIDs compares id lists, order included.
func requireIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func requireIs(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want one matching %v", what, err, target)
	}
}

// requireFieldError checks the error the gRPC boundary turns into
// InvalidArgument with a field violation naming field.
func requireFieldError(t *testing.T, err error, field string) {
	t.Helper()
	if !errors.Is(err, store.ErrInvalidArgument) {
		t.Fatalf("got error %v, want one matching ErrInvalidArgument", err)
	}
	var fe *store.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *store.FieldError", err, err)
	}
	if fe.Field != field {
		t.Fatalf("FieldError.Field = %q, want %q (%v)", fe.Field, field, err)
	}
}

func requireTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Fatalf("%s = %s, want %s", what, fmtTime(got), fmtTime(want))
	}
}

// requireNoLease checks a task whose lease ended: lease fields are set only
// while IN_PROGRESS (the token stays, as the last lease's).
func requireNoLease(t *testing.T, task *store.Task) {
	t.Helper()
	if task.LeaseHolder != "" || !task.LeaseExpiresAt.IsZero() || !task.ClaimedAt.IsZero() || !task.RenewedAt.IsZero() {
		t.Fatalf("task %s (%s) still has lease fields: holder %q, expires %s, claimed %s, renewed %s",
			task.ID, task.State, task.LeaseHolder, fmtTime(task.LeaseExpiresAt), fmtTime(task.ClaimedAt), fmtTime(task.RenewedAt))
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "(zero)"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// diffTask lists every field in which got differs from want. Times compare
// by instant, nil and empty collections are equal, depends_on compares as a
// set, and payloads compare as JSON values (a driver may store jsonb).
func diffTask(want, got *store.Task) []string {
	var diffs []string
	wv, gv := reflect.ValueOf(want).Elem(), reflect.ValueOf(got).Elem()
	for i := range wv.NumField() {
		name := wv.Type().Field(i).Name
		w, g := wv.Field(i).Interface(), gv.Field(i).Interface()
		if !sameField(name, w, g) {
			diffs = append(diffs, fmt.Sprintf("  %s: was %s, now %s", name, fmtValue(w), fmtValue(g)))
		}
	}
	return diffs
}

func sameField(name string, want, got any) bool {
	switch w := want.(type) {
	case time.Time:
		return w.Equal(got.(time.Time))
	case []string:
		return slices.Equal(slices.Sorted(slices.Values(w)), slices.Sorted(slices.Values(got.([]string))))
	case map[string]string:
		return maps.Equal(w, got.(map[string]string))
	}
	if name == "PayloadJSON" {
		return sameJSON(want.(string), got.(string))
	}
	return reflect.DeepEqual(want, got)
}

func sameJSON(a, b string) bool {
	if a == b {
		return true
	}
	var av, bv any
	if json.Unmarshal([]byte(a), &av) != nil || json.Unmarshal([]byte(b), &bv) != nil {
		return false
	}
	return reflect.DeepEqual(av, bv)
}

func fmtValue(v any) string {
	if tm, ok := v.(time.Time); ok {
		return fmtTime(tm)
	}
	return fmt.Sprintf("%#v", v)
}
