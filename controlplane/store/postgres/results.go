package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/factory/factory/controlplane/store"
)

// qResults reads the results of the tasks $1 names, in its order, with
// each result's size and the running total of their sizes
// (store.TaskResultSizeFixed and the texts); past the budget $2 (when not
// 0) only the id, state and size are returned.
var qResults = `-- name: TaskResults
WITH w AS (
	SELECT i.ord, t.seq, octet_length(t.result_json)::bigint AS size,
		SUM(` + strconv.Itoa(store.TaskResultSizeFixed) + ` + octet_length(t.result_json) + octet_length(t.title) + octet_length(t.kind)
			+ octet_length(t.role) + octet_length(t.labels::text)) OVER (ORDER BY i.ord)::bigint AS run
	FROM unnest($1::text[]) WITH ORDINALITY AS i(id, ord) JOIN tasks t ON t.id = i.id
), f AS (
	SELECT ord, seq, size, ($2::bigint = 0 OR run <= $2::bigint) AS fits FROM w
)
SELECT t.id, CASE WHEN f.fits THEN t.title ELSE '' END, CASE WHEN f.fits THEN t.kind ELSE '' END,
	CASE WHEN f.fits THEN t.role ELSE '' END, t.state, t.state_changed_at, CASE WHEN f.fits THEN t.labels::text ELSE '{}' END,
	f.size, NOT f.fits, CASE WHEN f.fits THEN t.result_json ELSE '' END
FROM f JOIN tasks t ON t.seq = f.seq ORDER BY f.ord`

// TaskResults implements store.Store.
func (s *Store) TaskResults(ctx context.Context, p *store.TaskResultsParams) ([]store.TaskResult, error) {
	var ids []string
	for _, id := range store.UniqueIDs(p.IDs) {
		if pgText(id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	var out []store.TaskResult
	err := s.read(ctx, "TaskResults", func(ctx context.Context) error {
		out = out[:0]
		rs, err := s.pool.Query(ctx, qResults, ids, max(p.MaxBytes, 0))
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var (
				r       store.TaskResult
				state   int16
				changed time.Time
				labels  string
			)
			if err := rs.Scan(&r.ID, &r.Title, &r.Kind, &r.Role, &state, &changed, &labels, &r.ResultBytes, &r.Omitted, &r.ResultJSON); err != nil {
				return err
			}
			r.State, r.StateChangedAt = store.TaskState(state), changed.UTC()
			if labels != "{}" && labels != "" {
				if err := json.Unmarshal([]byte(labels), &r.Labels); err != nil {
					return fmt.Errorf("task %s: labels: %w", r.ID, err)
				}
			}
			out = append(out, r)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
