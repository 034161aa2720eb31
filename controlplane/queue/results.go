package queue

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/factory/factory/controlplane/store"
)

// Limits on results, the JSON a task's holder completes it with and the
// tasks depending on it read when they are claimed (a pipeline's stages
// handing their output on).
const (
	// MaxResultBytes bounds one task's result; the API's CompleteTask
	// rule says the same.
	MaxResultBytes = 256 << 10
	// ClaimDependencyBytes bounds the dependency results one claim (all
	// its tasks together) carries, counted as store.TaskResults counts them.
	// With ResponseBytes of tasks it stays under gRPC's default 4 MiB
	// receive limit; a result past it comes marked omitted, with its id
	// and size only, for GetTask to fetch.
	ClaimDependencyBytes = 768 << 10
	// HolderDependencyBytes bounds the dependency results GetTask gives
	// the holder of one task.
	HolderDependencyBytes = 2 << 20
)

// checkResults refuses a completion whose result is not JSON or is too
// large, naming the item in a batch ("items[2].result_json").
func checkResults(items []store.TaskCompleteItem) error {
	for i, it := range items {
		if it.ResultJSON == "" {
			continue
		}
		field := "result_json"
		if len(items) > 1 {
			field = fmt.Sprintf("items[%d].result_json", i)
		}
		switch {
		case len(it.ResultJSON) > MaxResultBytes:
			return store.InvalidField(field, "is %d bytes; at most %d", len(it.ResultJSON), MaxResultBytes)
		case !json.Valid([]byte(it.ResultJSON)):
			return store.InvalidField(field, "is not valid JSON")
		}
	}
	return nil
}

// DependencyResult is one dependency's result as its dependent's holder
// reads it.
type DependencyResult struct {
	store.TaskResult
	// Withheld marks a result not handed on because the dependency was
	// completed before the dependent was created: otherwise anyone who
	// may create tasks could read any finished task's result by making a
	// task that depends on it. A pipeline's stages all exist before the
	// first is done.
	Withheld bool
}

// DependencyResults reads the results of the dependencies of tasks, for
// their holder: one store read for all of them, at most maxBytes of
// results in all (the rest come omitted, with their sizes). The map holds,
// for each task with dependencies, their results in depends_on order; a
// dependency that no longer exists is left out.
func (s *Service) DependencyResults(ctx context.Context, tasks []*store.Task, maxBytes int64) (map[string][]DependencyResult, error) {
	var ids []string
	for _, t := range tasks {
		ids = append(ids, t.DependsOn...)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	results, err := s.store.TaskResults(ctx, &store.TaskResultsParams{IDs: ids, MaxBytes: maxBytes})
	if err != nil {
		return nil, err
	}
	byID := make(map[string]store.TaskResult, len(results))
	for _, r := range results {
		byID[r.ID] = r
	}
	out := make(map[string][]DependencyResult, len(tasks))
	for _, t := range tasks {
		for _, d := range t.DependsOn {
			r, ok := byID[d]
			if !ok {
				continue
			}
			dr := DependencyResult{TaskResult: r}
			if r.StateChangedAt.Before(t.CreatedAt) && (r.State == store.StateDone || r.State == store.StateReview) {
				dr.Withheld, dr.ResultJSON = true, ""
			}
			out[t.ID] = append(out[t.ID], dr)
		}
	}
	return out, nil
}
