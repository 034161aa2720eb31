package store

// An agent whose CompleteTask or FailTask reply was lost cannot tell
// whether the call took effect; it retries with the same lease. Once the
// call has ended the lease, CheckLease refuses the retry, which would look
// exactly like being fenced out. Drivers therefore remember which lease a
// completion or failure ended (EndedLease) and, only when CheckLease has
// refused a call, ask the rules below whether the call repeats the one that
// ended it: then it answers as the first call did, changing nothing.

// EndedLease is the lease a completion or a failure ended: its holder and
// token. A claim, release, rescue or operator move leaves it as it was, so
// it names the task's current FencingToken only while the task is where
// that completion or failure put it (until the next claim).
type EndedLease struct {
	Holder       string
	FencingToken int64
}

// endedBy reports whether ref is the lease that a completion or failure
// ended on t and nothing has claimed t since.
func (e EndedLease) endedBy(t *Task, ref LeaseRef) bool {
	return e.Holder != "" && e.Holder == ref.Agent && e.FencingToken == ref.FencingToken && t.FencingToken == ref.FencingToken
}

// CheckCompleteReplay decides a completion that CheckLease refused with
// refused: nil when it repeats the completion that ended the task's last
// lease (same holder, same token, the task still where that completion put
// it, asking for the same state, note and result), so the caller answers with the
// task as it is. A repeat asking for something else is ErrStaleLease
// saying what differs; anything else is refused unchanged.
func CheckCompleteReplay(t *Task, ended EndedLease, it TaskCompleteItem, refused error) error {
	if !ended.endedBy(t, it.Lease) {
		return refused
	}
	want := StateDone
	if it.Review {
		want = StateReview
	}
	switch {
	case t.State != StateDone && t.State != StateReview:
		// A failure ended this lease, or an operator moved the task on.
		return refused
	case t.State != want:
		return leaseErr(it.Lease, "this lease was already completed and the task is now %s; the repeated completion asks for %s", t.State, want)
	case it.Note != "" && it.Note != t.Note:
		return leaseErr(it.Lease, "this lease was already completed with a different note")
	case it.ResultJSON != "" && it.ResultJSON != t.ResultJSON:
		return leaseErr(it.Lease, "this lease was already completed with a different result")
	}
	return nil
}

// CheckFailReplay decides a failure that CheckLease refused with refused:
// nil when it repeats the failure that ended the task's last lease (same
// holder, same token, the task still READY, PAUSED or FAILED as that
// failure left it, with the same error and permanence), so the caller
// answers with the task as it is. A repeat that differs is ErrStaleLease
// saying what differs; anything else is refused unchanged.
func CheckFailReplay(t *Task, ended EndedLease, p *TaskFailParams, refused error) error {
	if !ended.endedBy(t, p.Lease) {
		return refused
	}
	switch {
	case t.State != StateReady && t.State != StatePaused && t.State != StateFailed:
		// A completion ended this lease, or an operator moved the task on.
		return refused
	case t.LastError != p.Error:
		return leaseErr(p.Lease, "this lease already failed with a different error")
	case p.Permanent && t.State != StateFailed:
		return leaseErr(p.Lease, "this lease already failed and the task is now %s, not FAILED; the repeated failure is permanent", t.State)
	case !p.Permanent && t.State == StateFailed && t.Attempt < t.MaxAttempts:
		return leaseErr(p.Lease, "this lease already failed and the task is now FAILED with attempts left; the repeated failure is retryable")
	}
	return nil
}
