package sqlite

import "github.com/factory/factory/controlplane/store"

// qKeepHistory gives a task just inserted the history an import brings.
const qKeepHistory = `UPDATE tasks SET attempt = ?, last_error = ?, progress = ? WHERE id = ?`

// keepHistory writes the History of the tasks that have one (imports);
// new work has none and costs nothing here.
func (w *wtx) keepHistory(tasks []*store.TaskCreate) error {
	for _, c := range tasks {
		if c.History.IsZero() {
			continue
		}
		if _, err := w.exec(qKeepHistory, c.History.Attempt, c.History.LastError, c.History.Progress, c.ID); err != nil {
			return err
		}
	}
	return nil
}
