package storetest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func (s *suite) testCreate(t *testing.T) {
	s.runCases(t, []testCase{
		{"Defaults", func(t *testing.T, h *harness) {
			now := h.now()
			changes := h.create(&store.TaskCreate{ID: "a"}, &store.TaskCreate{ID: "b", MaxAttempts: 7})
			requireIDs(t, "create changes", changeIDs(changes), []string{"a", "b"})
			for _, c := range changes {
				if c.PreviousState != store.StateUnspecified || c.Task.State != store.StateReady {
					t.Fatalf("create change for %s: %s -> %s, want UNSPECIFIED -> READY", c.Task.ID, c.PreviousState, c.Task.State)
				}
			}
			a := h.get("a")
			if d := diffTask(changes[0].Task, a); len(d) > 0 {
				t.Fatalf("returned task differs from stored:\n%s", strings.Join(d, "\n"))
			}
			if a.State != store.StateReady || a.Attempt != 0 || a.MaxAttempts != store.DefaultMaxAttempts || a.PausedByQueue {
				t.Fatalf("new task: state %s attempt %d max %d paused-by-queue %v; want READY 0 %d false",
					a.State, a.Attempt, a.MaxAttempts, a.PausedByQueue, store.DefaultMaxAttempts)
			}
			requireTime(t, "CreatedAt", a.CreatedAt, now)
			requireTime(t, "UpdatedAt", a.UpdatedAt, now)
			requireTime(t, "StateChangedAt", a.StateChangedAt, now)
			requireNoLease(t, a)
			if a.LastError != "" || a.Progress != "" {
				t.Fatalf("new task has LastError %q, Progress %q", a.LastError, a.Progress)
			}
			if b := h.get("b"); b.MaxAttempts != 7 {
				t.Fatalf("MaxAttempts = %d, want 7", b.MaxAttempts)
			}
		}},
		{"RoundTrip", func(t *testing.T, h *harness) {
			h.create(
				&store.TaskCreate{ID: "dep-1", InitialState: store.StateDone},
				&store.TaskCreate{ID: "dep-2", InitialState: store.StateDone},
			)
			h.clock.Advance(time.Second)
			runAfter := h.now().Add(time.Hour)
			// The expectation comes from a second copy, so a driver that
			// rewrote its input could not hide a dropped field.
			spec := func() *store.TaskCreate {
				return &store.TaskCreate{
					ID:           "full",
					Title:        "build the sidecar",
					Kind:         "build",
					PayloadJSON:  `{"repo":"factory","steps":[1,2,3],"nested":{"ok":true,"why":null}}`,
					Role:         "builder",
					Assignee:     "agent-b1",
					Priority:     7,
					MaxAttempts:  5,
					DependsOn:    []string{"dep-1", "dep-2"},
					ApprovalTier: 2,
					Labels:       map[string]string{"team": "core", "env": "prod"},
					RunAfter:     runAfter,
					Note:         "from the runbook",
				}
			}
			h.create(spec())
			got := h.get("full")
			in := spec()
			want := &store.Task{
				ID: in.ID, Title: in.Title, Kind: in.Kind, PayloadJSON: in.PayloadJSON, Role: in.Role,
				Assignee: in.Assignee, Priority: in.Priority, State: store.StateReady, MaxAttempts: in.MaxAttempts,
				DependsOn: in.DependsOn, ApprovalTier: in.ApprovalTier, Labels: in.Labels, Note: in.Note,
				FencingToken: got.FencingToken, RunAfter: in.RunAfter,
				CreatedAt: h.now(), UpdatedAt: h.now(), StateChangedAt: h.now(),
			}
			if d := diffTask(want, got); len(d) > 0 {
				t.Fatalf("task did not round-trip:\n%s", strings.Join(d, "\n"))
			}
			// The list must render a task exactly as Get does.
			listed := h.list(&store.TaskListParams{IDs: []string{"full"}, Limit: 10})
			if len(listed.Tasks) != 1 {
				t.Fatalf("TaskList by id returned %d tasks", len(listed.Tasks))
			}
			if d := diffTask(got, listed.Tasks[0]); len(d) > 0 {
				t.Fatalf("TaskList differs from TaskGet:\n%s", strings.Join(d, "\n"))
			}
		}},
		{"ExplicitInitialStates", func(t *testing.T, h *harness) {
			states := []store.TaskState{store.StateBacklog, store.StateReady, store.StateReview, store.StateDone, store.StateFailed, store.StatePaused}
			var batch []*store.TaskCreate
			for _, st := range states {
				batch = append(batch, &store.TaskCreate{ID: "as-" + st.String(), InitialState: st})
			}
			changes := h.create(batch...)
			for i, st := range states {
				if changes[i].Task.State != st {
					t.Fatalf("create change for %s: state %s, want %s", batch[i].ID, changes[i].Task.State, st)
				}
				got := h.requireState(batch[i].ID, st)
				if got.PausedByQueue {
					t.Fatalf("%s created with explicit state %s has PausedByQueue set", got.ID, st)
				}
			}
		}},
		{"InitialStateInProgressRejected", func(t *testing.T, h *harness) {
			_, err := h.s.TaskCreate(h.ctx, &store.TaskCreateParams{Now: h.now(), Tasks: []*store.TaskCreate{
				{ID: "ok", Title: "ok"},
				{ID: "bad", Title: "bad", InitialState: store.StateInProgress},
			}})
			requireFieldError(t, err, "initial_state")
			h.requireAbsent("ok")
			h.requireAbsent("bad")
		}},
		{"DuplicateID", func(t *testing.T, h *harness) {
			h.create(&store.TaskCreate{ID: "a", Title: "original", Priority: 1})
			before := h.get("a")
			h.clock.Advance(time.Second)
			_, err := h.s.TaskCreate(h.ctx, &store.TaskCreateParams{Now: h.now(), Tasks: []*store.TaskCreate{
				{ID: "new", Title: "new"},
				{ID: "a", Title: "impostor", Priority: 9},
			}})
			requireIs(t, err, store.ErrAlreadyExists, "create with an existing id")
			h.requireAbsent("new")
			h.requireUnchanged(before)
		}},
		{"DuplicateIDWithinBatch", func(t *testing.T, h *harness) {
			_, err := h.s.TaskCreate(h.ctx, &store.TaskCreateParams{Now: h.now(), Tasks: []*store.TaskCreate{
				{ID: "x", Title: "first"},
				{ID: "x", Title: "second"},
			}})
			requireIs(t, err, store.ErrAlreadyExists, "create the same id twice in one batch")
			h.requireAbsent("x")
		}},
		{"UnknownDependency", func(t *testing.T, h *harness) {
			h.createReady("exists")
			_, err := h.s.TaskCreate(h.ctx, &store.TaskCreateParams{Now: h.now(), Tasks: []*store.TaskCreate{
				{ID: "a", Title: "a"},
				{ID: "b", Title: "b", DependsOn: []string{"exists", "missing"}},
			}})
			requireFieldError(t, err, "depends_on")
			h.requireAbsent("a")
			h.requireAbsent("b")
		}},
		{"DependencyLaterInBatch", func(t *testing.T, h *harness) {
			// Only an earlier item may be named: a later one does not
			// exist yet when the dependent is inserted.
			_, err := h.s.TaskCreate(h.ctx, &store.TaskCreateParams{Now: h.now(), Tasks: []*store.TaskCreate{
				{ID: "b", Title: "b", DependsOn: []string{"a"}},
				{ID: "a", Title: "a"},
			}})
			requireFieldError(t, err, "depends_on")
			h.requireAbsent("a")
			h.requireAbsent("b")
		}},
		{"GetUnknown", func(t *testing.T, h *harness) {
			h.createReady("a")
			h.requireAbsent("nope")
		}},
		{"RejectionMatchesOneSentinel", func(t *testing.T, h *harness) {
			// The boundary maps an error to the first sentinel it
			// matches; a rejected create must match exactly one.
			_, err := h.s.TaskCreate(h.ctx, &store.TaskCreateParams{Now: h.now(), Tasks: []*store.TaskCreate{
				{ID: "bad", Title: "bad", InitialState: store.StateInProgress},
			}})
			for _, other := range []error{store.ErrNotFound, store.ErrAlreadyExists, store.ErrStaleLease, store.ErrIllegalTransition, store.ErrUnavailable} {
				if err == nil || errors.Is(err, other) {
					t.Fatalf("got %v, want only ErrInvalidArgument (matches %v)", err, other)
				}
			}
		}},
	})
}
