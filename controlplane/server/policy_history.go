package server

import (
	"fmt"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// The rows of the policy table whose requests carry fields only an
// operator may set. A task's history (attempt, last_error, progress) is
// an import's, so an operator's: an agent setting it could hide a retry
// loop or reset one.
func init() {
	for method, fields := range map[string]func(req any) []string{
		factoryv1.QueueService_CreateTask_FullMethodName: func(req any) []string {
			r, _ := req.(*factoryv1.CreateTaskRequest)
			return historyFields(r)
		},
		factoryv1.QueueService_CreateTasks_FullMethodName: func(req any) []string {
			r, _ := req.(*factoryv1.CreateTasksRequest)
			for i, t := range r.GetTasks() {
				if f := historyFields(t); len(f) > 0 {
					return []string{fmt.Sprintf("tasks[%d].%s", i, f[0])}
				}
			}
			return nil
		},
	} {
		r := rules[method]
		r.operatorFields = fields
		rules[method] = r
	}
}

// historyFields names the history fields a create request sets.
func historyFields(r *factoryv1.CreateTaskRequest) []string {
	var out []string
	if r.GetAttempt() != 0 {
		out = append(out, "attempt")
	}
	if r.GetLastError() != "" {
		out = append(out, "last_error")
	}
	if r.GetProgress() != "" {
		out = append(out, "progress")
	}
	return out
}
