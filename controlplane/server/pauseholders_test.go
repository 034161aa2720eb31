package server

import (
	"context"
	"testing"

	factoryv1 "github.com/factory/factory/gen/factory/v1"
)

// TestMaintenanceAndEmergencyStopLeaveThePauseToTheLastOne: maintenance and
// the emergency stop both pause the queue; whichever ends first must leave
// READY work paused for the other, and the last one to end resumes it, in
// either order.
func TestMaintenanceAndEmergencyStopLeaveThePauseToTheLastOne(t *testing.T) {
	for _, order := range []string{"maintenance ends first", "stop rearmed first"} {
		t.Run(order, func(t *testing.T) {
			b := setup(t, nil)
			ctx := context.Background()
			ops := factoryv1.NewOpsServiceClient(b.conn)
			budget := factoryv1.NewBudgetServiceClient(b.conn)
			create(t, b, &factoryv1.CreateTaskRequest{TaskId: "work", Title: "work"})
			state := func() factoryv1.TaskState {
				t.Helper()
				got, err := b.client.GetTask(ctx, &factoryv1.GetTaskRequest{TaskId: "work"})
				if err != nil {
					t.Fatal(err)
				}
				return got.GetTask().GetState()
			}

			if _, err := ops.StartMaintenance(ctx, &factoryv1.StartMaintenanceRequest{Reason: "db upgrade"}); err != nil {
				t.Fatal(err)
			}
			if _, err := budget.EmergencyStop(ctx, &factoryv1.EmergencyStopRequest{Reason: "runaway agent"}); err != nil {
				t.Fatal(err)
			}
			endMaintenance := func() {
				if _, err := ops.EndMaintenance(ctx, &factoryv1.EndMaintenanceRequest{}); err != nil {
					t.Fatal(err)
				}
			}
			rearm := func() {
				if _, err := budget.RearmEmergencyStop(ctx, &factoryv1.RearmEmergencyStopRequest{Note: "fixed"}); err != nil {
					t.Fatal(err)
				}
			}
			first, last := endMaintenance, rearm
			if order == "stop rearmed first" {
				first, last = rearm, endMaintenance
			}
			first()
			if s := state(); s != factoryv1.TaskState_TASK_STATE_PAUSED {
				t.Fatalf("after the first switch went off, while the other is on: %s, want PAUSED", s)
			}
			last()
			if s := state(); s != factoryv1.TaskState_TASK_STATE_READY {
				t.Fatalf("after both went off: %s, want READY", s)
			}
		})
	}
}
