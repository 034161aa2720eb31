package queue

import (
	"strconv"
	"testing"
	"time"

	"github.com/factory/factory/controlplane/store"
)

func claimed(id string, token int64, at time.Time) store.TaskChange {
	return store.TaskChange{Task: &store.Task{ID: id, State: store.StateInProgress, FencingToken: token, ClaimedAt: at}, PreviousState: store.StateReady}
}

// Claim times leave with their lease however it ends, here or on another
// replica, and stay bounded when leases end where this replica cannot see.
func TestClaimTimesForgetEndedLeasesAndStayBounded(t *testing.T) {
	var c claimTimes
	t0 := time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)
	c.note([]store.TaskChange{claimed("a", 1, t0), claimed("b", 1, t0), claimed("c", 4, t0)})
	if at, ok := c.take("a", 2); ok {
		t.Fatalf("a stale token took %v", at)
	}
	if at, ok := c.take("a", 1); !ok || !at.Equal(t0) {
		t.Fatalf("take a = %v %v", at, ok)
	}
	if _, ok := c.take("a", 1); ok {
		t.Fatal("a taken twice")
	}
	// b is rescued here; c is completed on another replica.
	c.note([]store.TaskChange{{Task: &store.Task{ID: "b", State: store.StateReady}, PreviousState: store.StateInProgress}})
	c.forgetRemote([]store.RemoteChange{{TaskID: "c", PreviousState: store.StateInProgress, State: store.StateDone}})
	if len(c.m) != 0 {
		t.Fatalf("left behind: %v", c.m)
	}

	// Full of day-old claims whose ends this replica never saw: a new
	// claim evicts them.
	for i := range maxClaimTimes {
		c.note([]store.TaskChange{claimed(strconv.Itoa(i), 1, t0)})
	}
	now := t0.Add(25 * time.Hour)
	c.note([]store.TaskChange{claimed("new", 1, now)})
	if at, ok := c.take("new", 1); !ok || !at.Equal(now) || len(c.m) != 0 {
		t.Fatalf("new claim %v %v; %d left", at, ok, len(c.m))
	}
}
