package store

import "context"

// The interfaces below are implemented by drivers whose database several
// control-plane replicas share (PostgreSQL). A store without them serves a
// single replica: its own in-process signals are the whole truth.

// ChangeFeed delivers the task changes other replicas commit, so that
// waiting claimers everywhere wake when a task becomes READY and watch
// streams on every replica see every event.
type ChangeFeed interface {
	// ListenChanges calls fn with each batch of changes committed by other
	// replicas (never this one's own), in commit order, until ctx ends. It
	// reconnects by itself after a lost connection; after a reconnect it
	// calls fn with Resync set, because changes may have been missed.
	ListenChanges(ctx context.Context, fn func(batch ChangeBatch)) error
}

// ChangeBatch is what one transaction on another replica changed.
type ChangeBatch struct {
	Changes []RemoteChange
	// Resync says that notifications may have been lost (the listener
	// reconnected): wake every claimer and let watchers know.
	Resync bool
}

// RemoteChange names one changed task; the payload travels by id because a
// notification is small and a task is not.
type RemoteChange struct {
	TaskID        string
	PreviousState TaskState // StateUnspecified for a new task
	State         TaskState
}

// Elector runs background duties (lease rescue, later approval expiry,
// alert evaluation, the digest) on exactly one replica at a time.
type Elector interface {
	// RunElected runs fn while this replica holds the named lock. When the
	// lock (or the connection holding it) is lost, fn's context is
	// cancelled; RunElected then keeps trying to take the lock again, so
	// duty moves to a live replica within seconds of one dying. It returns
	// when ctx ends.
	RunElected(ctx context.Context, name string, fn func(ctx context.Context) error) error
}
