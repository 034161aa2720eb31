package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// existenceLookups bounds the GetTask calls an import has in flight while
// it finds out which of its tasks exist.
const existenceLookups = 16

// taskExistence answers, from the server, whether task ids exist, asking
// about each id once.
type taskExistence struct {
	ctx   context.Context
	q     factoryv1.QueueServiceClient
	mu    sync.Mutex
	known map[string]bool
}

func newTaskExistence(ctx context.Context, q factoryv1.QueueServiceClient) *taskExistence {
	return &taskExistence{ctx: ctx, q: q, known: map[string]bool{}}
}

// load looks ids up, several at a time.
func (e *taskExistence) load(ids []string) error {
	g, ctx := errgroup.WithContext(e.ctx)
	g.SetLimit(existenceLookups)
	for _, id := range ids {
		g.Go(func() error {
			ok, err := e.lookup(ctx, id)
			if err != nil {
				return fmt.Errorf("checking whether task %s exists: %w", id, err)
			}
			e.mu.Lock()
			e.known[id] = ok
			e.mu.Unlock()
			return nil
		})
	}
	return g.Wait()
}

func (e *taskExistence) lookup(ctx context.Context, id string) (bool, error) {
	_, err := e.q.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: id})
	if isCode(err, codes.NotFound) {
		return false, nil
	}
	return err == nil, err
}

// has reports what load found about id.
func (e *taskExistence) has(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.known[id]
}

// exists is has for an id load was not given: it asks the server.
func (e *taskExistence) exists(id string) (bool, error) {
	e.mu.Lock()
	ok, seen := e.known[id]
	e.mu.Unlock()
	if seen {
		return ok, nil
	}
	ok, err := e.lookup(e.ctx, id)
	if err == nil {
		e.mu.Lock()
		e.known[id] = ok
		e.mu.Unlock()
	}
	return ok, err
}

// printImportHistory says what an import kept and dropped of the tasks'
// history, and what it skipped as existing.
func printImportHistory(w io.Writer, sum importSummary) {
	if sum.SkippedExisting > 0 {
		fmt.Fprintf(w, "skipped %d file(s) whose task exists on the server already (--skip-existing)\n", sum.SkippedExisting)
	}
	if sum.HistoryKept > 0 {
		verb := "kept"
		if sum.DryRun {
			verb = "to keep"
		}
		fmt.Fprintf(w, "attempt, last_error and progress %s from %d file(s)\n", verb, sum.HistoryKept)
	}
	if len(sum.Dropped) > 0 {
		fields := make([]string, 0, len(sum.Dropped))
		for f := range sum.Dropped {
			fields = append(fields, f)
		}
		sort.Strings(fields)
		parts := make([]string, len(fields))
		for i, f := range fields {
			parts[i] = fmt.Sprintf("%s in %d file(s)", f, sum.Dropped[f])
		}
		fmt.Fprintf(w, "dropped, as the API cannot set them: %s\n", strings.Join(parts, ", "))
	}
}
