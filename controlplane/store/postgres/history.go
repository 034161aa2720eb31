package postgres

import (
	"github.com/jackc/pgx/v5"

	"github.com/factory/factory/controlplane/store"
)

// qKeepHistory gives tasks just inserted the history an import brings.
const qKeepHistory = `-- name: TaskKeepHistory
UPDATE tasks SET attempt = u.attempt, last_error = u.last_error, progress = u.progress
FROM unnest($1::text[], $2::int[], $3::text[], $4::text[]) AS u(id, attempt, last_error, progress)
WHERE tasks.id = u.id`

// queueHistory queues the write of the History of the tasks that have one
// (imports), after their insert; new work has none and sends nothing.
func queueHistory(b *pgx.Batch, tasks []*store.TaskCreate) {
	var (
		ids, errs, progress []string
		attempts            []int32
	)
	for _, c := range tasks {
		if c.History.IsZero() {
			continue
		}
		ids, attempts = append(ids, c.ID), append(attempts, c.History.Attempt)
		errs, progress = append(errs, c.History.LastError), append(progress, c.History.Progress)
	}
	if len(ids) > 0 {
		b.Queue(qKeepHistory, ids, attempts, errs, progress)
	}
}

// withHistory sets the History on the inserted rows, as queueHistory
// wrote it.
func withHistory(rows []*row, tasks []*store.TaskCreate) {
	byID := make(map[string]store.TaskHistory)
	for _, c := range tasks {
		if !c.History.IsZero() {
			byID[c.ID] = c.History
		}
	}
	if len(byID) == 0 {
		return
	}
	for _, r := range rows {
		if h, ok := byID[r.t.ID]; ok {
			r.t.Attempt, r.t.LastError, r.t.Progress = h.Attempt, h.LastError, h.Progress
		}
	}
}
