package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/factory/factory/controlplane/store"
)

// qResults reads the results of the tasks named by a JSON array (?1), in
// its order, with each result's size and the running total of their
// sizes (store.TaskResultSizeFixed and the texts); past the budget ?2
// (when not 0) only the id, state and size are read. octet_length reads
// a text's length from the record header without loading the text.
var qResults = `WITH ids(pos, id) AS (SELECT key, value FROM json_each(?1)),
	w AS (SELECT ids.pos, t.seq, octet_length(t.result_json) AS size,
		SUM(` + strconv.Itoa(store.TaskResultSizeFixed) + ` + octet_length(t.result_json) + octet_length(t.title) + octet_length(t.kind)
			+ octet_length(t.role) + octet_length(t.labels)) OVER (ORDER BY ids.pos) AS run
		FROM ids JOIN tasks t ON t.id = ids.id),
	f AS (SELECT pos, seq, size, ?2 = 0 OR run <= ?2 AS fits FROM w)
SELECT t.id, CASE WHEN f.fits THEN t.title ELSE '' END, CASE WHEN f.fits THEN t.kind ELSE '' END,
	CASE WHEN f.fits THEN t.role ELSE '' END, t.state, t.state_changed_at, CASE WHEN f.fits THEN t.labels ELSE '{}' END,
	f.size, NOT f.fits, CASE WHEN f.fits THEN t.result_json ELSE '' END
FROM f JOIN tasks t ON t.seq = f.seq ORDER BY f.pos`

// TaskResults implements store.Store.
func (s *Store) TaskResults(ctx context.Context, p *store.TaskResultsParams) ([]store.TaskResult, error) {
	ids := store.UniqueIDs(p.IDs)
	if len(ids) == 0 {
		return nil, nil
	}
	const op = "TaskResults"
	st, err := s.rs.get(ctx, qResults)
	if err != nil {
		return nil, dbErr(op, err)
	}
	rs, err := st.QueryContext(ctx, jsonText(ids), max(p.MaxBytes, 0))
	if err != nil {
		return nil, dbErr(op, err)
	}
	defer rs.Close()
	var out []store.TaskResult
	for rs.Next() {
		var (
			r       store.TaskResult
			state   int64
			changed int64
			labels  string
		)
		if err := rs.Scan(&r.ID, &r.Title, &r.Kind, &r.Role, &state, &changed, &labels, &r.ResultBytes, &r.Omitted, &r.ResultJSON); err != nil {
			return nil, dbErr(op, err)
		}
		r.State, r.StateChangedAt = store.TaskState(state), fromNanos(changed)
		if labels != "{}" && labels != "" {
			if err := json.Unmarshal([]byte(labels), &r.Labels); err != nil {
				return nil, fmt.Errorf("task %s: labels: %w", r.ID, err)
			}
		}
		out = append(out, r)
	}
	return out, dbErr(op, rs.Err())
}
