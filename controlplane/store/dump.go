package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DumpStore moves a store's whole state out and back in: DumpRead streams
// every row, DumpLoad inserts such rows as they are. Together they move a
// factory between drivers (SQLite to PostgreSQL) with nothing lost. The
// file format (JSON Lines) is controlplane/ops's business; this is the
// rows.
type DumpStore interface {
	// DumpRead calls fn with every record the store holds, all read from
	// one snapshot, in a fixed order: the queue's settings, then tasks in
	// creation order, tokens in creation order, audit entries by id, and
	// fleet events in the order the store took them, then the rows of
	// DumpTables, table by table, each in key order.
	// It stops at fn's first error and returns that error unchanged.
	DumpRead(ctx context.Context, fn func(*DumpRecord) error) error

	// DumpLoad inserts records in one transaction, all or none, by the
	// rules of LoadDump, and returns how many of each kind it stored.
	DumpLoad(ctx context.Context, params *DumpLoadParams) (*DumpCounts, error)
}

// ErrLoadRefused is a load the store's state does not allow: a store that
// is not empty without Merge, or a merge whose queue pause disagrees with
// the store's. The gRPC boundary answers FAILED_PRECONDITION.
var ErrLoadRefused = errors.New("load refused")

// DumpKind names the kind of a dump record.
type DumpKind string

// The record kinds, in the order DumpRead produces them.
const (
	DumpQueue DumpKind = "queue"
	DumpTask  DumpKind = "task"
	DumpToken DumpKind = "token"
	DumpAudit DumpKind = "audit"
	// DumpFleetEvent is one fleet event (FleetStore).
	DumpFleetEvent DumpKind = "fleet_event"
	// DumpRowKind is one row of a table in DumpTables.
	DumpRowKind DumpKind = "row"
)

// DumpRecord is one row of a dump: exactly one field is set.
type DumpRecord struct {
	Queue *QueueSettings
	Task  *Task
	Token *Token
	Audit *AuditEntry
	// FleetEvent's Attributes are nil when it has none, as a load reads
	// them back.
	FleetEvent *FleetEvent
	Row        *DumpRow
}

// Kind says which field is set ("" when none or several are).
func (r *DumpRecord) Kind() DumpKind {
	var kind DumpKind
	n := 0
	if r.Queue != nil {
		kind, n = DumpQueue, n+1
	}
	if r.Task != nil {
		kind, n = DumpTask, n+1
	}
	if r.Token != nil {
		kind, n = DumpToken, n+1
	}
	if r.Audit != nil {
		kind, n = DumpAudit, n+1
	}
	if r.FleetEvent != nil {
		kind, n = DumpFleetEvent, n+1
	}
	if r.Row != nil {
		kind, n = DumpRowKind, n+1
	}
	if n != 1 {
		return ""
	}
	return kind
}

// QueueSettings is the queue's pause switch as stored.
type QueueSettings struct {
	Paused   bool
	Reason   string
	PausedAt time.Time // zero while not paused
}

// DumpCounts counts records by kind.
type DumpCounts struct {
	Queue  int64
	Tasks  int64
	Tokens int64
	Audit  int64
	// FleetEvents counts the fleet events; a load counts only those it
	// stored, not those whose id the store held already.
	FleetEvents int64
	// Rows counts the rows of DumpTables; a load counts only those it
	// stored (a merge skips rows whose key is stored already).
	Rows int64
}

// Add counts one record of kind.
func (c *DumpCounts) Add(kind DumpKind) {
	switch kind {
	case DumpQueue:
		c.Queue++
	case DumpTask:
		c.Tasks++
	case DumpToken:
		c.Tokens++
	case DumpAudit:
		c.Audit++
	case DumpFleetEvent:
		c.FleetEvents++
	case DumpRowKind:
		c.Rows++
	}
}

// Total is the number of records counted.
func (c DumpCounts) Total() int64 {
	return c.Queue + c.Tasks + c.Tokens + c.Audit + c.FleetEvents + c.Rows
}

// DumpLoadParams is what DumpLoad inserts, and how.
type DumpLoadParams struct {
	// Records yields the records in dump order. A driver may call it more
	// than once (PostgreSQL runs a transaction again when its connection
	// was lost before COMMIT), so every call must yield the same records
	// from the start. An error it returns ends the load, which then
	// stores nothing.
	Records func(yield func(*DumpRecord) error) error

	// Merge allows a store that is not empty; see LoadDump.
	Merge bool

	// KeepTokens names tokens that may be in the store without making it
	// count as not empty: the operator token a fresh control plane makes
	// at first start, which the import itself is called with. They stay.
	KeepTokens []string
}

// DumpRecords yields recs, for DumpLoadParams.Records.
func DumpRecords(recs ...*DumpRecord) func(yield func(*DumpRecord) error) error {
	return func(yield func(*DumpRecord) error) error {
		for _, r := range recs {
			if err := yield(r); err != nil {
				return err
			}
		}
		return nil
	}
}

// DumpContents is what a store holds, as far as a load cares.
type DumpContents struct {
	Tasks  bool // any task
	Tokens bool // any token other than the kept ones
	Audit  bool // any audit entry
	Paused bool // the queue is paused
	// Tables names the tables of DumpTables that hold rows.
	Tables map[string]bool
}

// holdsContent reports whether any table with Content holds rows.
func (c DumpContents) holdsContent() bool {
	for _, t := range DumpTables {
		if t.Content && c.Tables[t.Name] {
			return true
		}
	}
	return false
}

// Empty reports whether a plain (not merging) load may go ahead.
func (c DumpContents) Empty() bool {
	return !c.Tasks && !c.Tokens && !c.Audit && !c.Paused && !c.holdsContent()
}

func (c DumpContents) String() string {
	var parts []string
	if c.Tasks {
		parts = append(parts, "tasks")
	}
	if c.Tokens {
		parts = append(parts, "tokens")
	}
	if c.Audit {
		parts = append(parts, "audit entries")
	}
	if c.Paused {
		parts = append(parts, "a paused queue")
	}
	for _, t := range DumpTables {
		if t.Content && c.Tables[t.Name] {
			parts = append(parts, t.Name)
		}
	}
	return strings.Join(parts, ", ")
}

// DumpTarget is a driver's side of a load: the reads and inserts LoadDump
// makes, all inside the driver's one transaction.
type DumpTarget interface {
	// Inspect reports what the store holds; tokens named in keep do not
	// count.
	Inspect(keep []string) (DumpContents, error)
	// TasksExisting returns those of ids that name stored tasks.
	TasksExisting(ids []string) ([]string, error)
	// TokensExisting returns the ids of stored tokens whose id is in ids
	// or whose hash is in hashes.
	TokensExisting(ids, hashes []string) ([]string, error)
	// SetQueue stores the queue's settings.
	SetQueue(q *QueueSettings) error
	// InsertTasks inserts tasks in order, every field as given (their
	// creation order follows the slice), with their dependency rows.
	InsertTasks(tasks []*Task) error
	// InsertTokens inserts tokens in order, every field as given.
	InsertTokens(tokens []*Token) error
	// InsertAudit appends entries in order: with keepIDs their IDs as
	// given (and later appends continue after the largest), else new ones.
	InsertAudit(entries []*AuditEntry, keepIDs bool) error
	// InsertFleetEvents inserts events in order, every field as given,
	// skipping any whose id is stored already (as FleetEventsAppend
	// does), and returns how many it inserted.
	InsertFleetEvents(events []*FleetEvent) (int, error)
	// InsertRows inserts rows of t in order, skipping any whose key is
	// stored already, and returns how many it inserted; with replace it
	// overwrites a stored row instead (a Singleton table's one row in a
	// plain load).
	InsertRows(t *DumpTable, rows [][]any, replace bool) (int, error)
}

// dumpBatch is how many records of one kind LoadDump hands a target at
// once.
const dumpBatch = 500

// LoadDump applies a load's rules, for drivers' DumpLoad, which call it
// inside their transaction:
//
//   - A store is empty when it holds no task, no audit entry and no token
//     but those in KeepTokens, and its queue is not paused. A load into an
//     empty store stores every record as it is: the queue's settings, the
//     tasks (creation order, attempts, leases, fencing tokens and every
//     time kept), the tokens and the audit entries with their ids.
//   - A store that is not empty is refused (ErrLoadRefused) unless Merge.
//     A merge overwrites nothing: a task, token or token hash that exists
//     is ErrAlreadyExists naming it. The merged tasks queue behind the
//     stored ones, in their own order. The dump's queue pause must agree
//     with the store's (else ErrLoadRefused), and the store's pause reason
//     stands. Audit entries are appended with new ids unless the store had
//     none.
//   - Fleet events do not make a store non-empty, and a fleet event whose
//     id is stored already is skipped, not refused, in a plain load or a
//     merge alike: FleetEventsAppend is insert-or-ignore on id (a sidecar
//     replays unacked events), so a control plane that sidecars reached
//     before the import may already hold some of the dump's events, and
//     an event with the same id is the same event.
//   - Rows of DumpTables are inserted as they are, except that a merge
//     keeps the store's row where the key is taken (and the store's
//     Singleton rows), and a merge of a NoMerge table into a store that
//     holds rows of it is refused: spend ledgers do not merge.
//   - Every record must be well formed (ValidateDumpRecord), ids must not
//     repeat within the dump (fleet event ids included), a task's dependencies must come earlier in
//     the dump or be stored already, and audit ids must grow.
func LoadDump(p *DumpLoadParams, x DumpTarget) (*DumpCounts, error) {
	if p == nil || p.Records == nil {
		return nil, InvalidField("records", "are missing")
	}
	have, err := x.Inspect(p.KeepTokens)
	if err != nil {
		return nil, err
	}
	if !have.Empty() && !p.Merge {
		return nil, fmt.Errorf("%w: this store is not empty (it holds %s); load into an empty store, or merge", ErrLoadRefused, have)
	}
	l := &loader{
		x:          x,
		have:       have,
		merging:    !have.Empty(),
		checkToken: have.Tokens || len(p.KeepTokens) > 0,
		tasks:      map[string]bool{},
		tokenIDs:   map[string]bool{},
		hashes:     map[string]bool{},
		keepAudit:  !have.Audit,
		events:     map[string]bool{},
	}
	err = p.Records(func(r *DumpRecord) error {
		if r == nil {
			return InvalidField("records", "a record is missing")
		}
		if err := ValidateDumpRecord(r); err != nil {
			return err
		}
		if len(l.batch) > 0 && (r.Kind() != l.batch[0].Kind() || len(l.batch) >= dumpBatch ||
			(r.Row != nil && r.Row.Table != l.batch[0].Row.Table)) {
			if err := l.flush(); err != nil {
				return err
			}
		}
		l.batch = append(l.batch, r)
		return nil
	})
	if err == nil {
		err = l.flush()
	}
	if err != nil {
		return nil, err
	}
	return &l.counts, nil
}

// loader is one LoadDump's progress.
type loader struct {
	x          DumpTarget
	have       DumpContents
	merging    bool
	checkToken bool // the store holds tokens a dump's may collide with

	batch     []*DumpRecord // consecutive records of one kind
	counts    DumpCounts
	queueSeen bool
	tasks     map[string]bool // ids of the dump's tasks so far
	tokenIDs  map[string]bool
	hashes    map[string]bool
	keepAudit bool            // audit ids are stored as given
	lastAudit int64           // the dump's last audit id
	events    map[string]bool // ids of the dump's fleet events so far
	rowTable  string          // the table of the rows so far
	rowKeys   map[string]bool // keys of that table's rows so far
	tablesIn  map[string]bool // tables whose rows have come and gone
}

func (l *loader) flush() error {
	if len(l.batch) == 0 {
		return nil
	}
	defer func() { l.batch = l.batch[:0] }()
	switch l.batch[0].Kind() {
	case DumpQueue:
		return l.queue()
	case DumpTask:
		return l.taskBatch()
	case DumpToken:
		return l.tokenBatch()
	case DumpAudit:
		return l.auditBatch()
	case DumpFleetEvent:
		return l.fleetBatch()
	case DumpRowKind:
		return l.rowBatch()
	}
	return nil
}

func (l *loader) rowBatch() error {
	t := DumpTableNamed(l.batch[0].Row.Table)
	if t.Name != l.rowTable {
		if l.tablesIn == nil {
			l.tablesIn = map[string]bool{}
		}
		if l.tablesIn[t.Name] {
			return InvalidField("records", "the rows of table %s are not together in the dump", t.Name)
		}
		l.tablesIn[t.Name] = true
		l.rowTable, l.rowKeys = t.Name, map[string]bool{}
		if l.merging && t.NoMerge && l.have.Tables[t.Name] {
			return fmt.Errorf("%w: both this store and the dump hold %s, which cannot be merged (the spend ledger would count events twice or not at all); import into a store without one",
				ErrLoadRefused, t.Name)
		}
	}
	rows := make([][]any, len(l.batch))
	for i, r := range l.batch {
		key := fmt.Sprintf("%q", r.Row.Values[:t.Key])
		if l.rowKeys[key] {
			return InvalidField("records", "%s appears twice in the dump", r.Row.KeyString(t))
		}
		l.rowKeys[key] = true
		rows[i] = r.Row.Values
	}
	n, err := l.x.InsertRows(t, rows, t.Singleton && !l.merging)
	if err != nil {
		return err
	}
	l.counts.Rows += int64(n)
	return nil
}

func (l *loader) queue() error {
	for _, r := range l.batch {
		if l.queueSeen {
			return InvalidField("records", "the dump holds more than one queue record")
		}
		l.queueSeen = true
		q := r.Queue
		if l.merging {
			if q.Paused != l.have.Paused {
				fix := "resume"
				if q.Paused {
					fix = "pause"
				}
				return fmt.Errorf("%w: the dump's queue is %s but this one is %s; %s this queue first, then merge",
					ErrLoadRefused, pausedWord(q.Paused), pausedWord(l.have.Paused), fix)
			}
			// The pause agrees; the store's own reason and time stand.
			continue
		}
		if err := l.x.SetQueue(q); err != nil {
			return err
		}
		l.counts.Queue++
	}
	return nil
}

func pausedWord(paused bool) string {
	if paused {
		return "paused"
	}
	return "not paused"
}

func (l *loader) taskBatch() error {
	tasks := make([]*Task, len(l.batch))
	ids := make([]string, len(l.batch))
	// unknown are dependencies on tasks not earlier in the dump: they
	// must be stored already.
	var unknown []string
	isUnknown := map[string]bool{}
	for i, r := range l.batch {
		t := r.Task
		if l.tasks[t.ID] {
			return InvalidField("records", "task %s appears twice in the dump", t.ID)
		}
		for _, d := range t.DependsOn {
			if !l.tasks[d] && !isUnknown[d] {
				isUnknown[d] = true
				unknown = append(unknown, d)
			}
		}
		l.tasks[t.ID] = true
		tasks[i], ids[i] = t, t.ID
	}
	if l.have.Tasks {
		taken, err := l.x.TasksExisting(ids)
		if err != nil {
			return err
		}
		if len(taken) > 0 {
			return fmt.Errorf("task %q is already in this store (a merge overwrites nothing): %w", firstInOrder(ids, taken), ErrAlreadyExists)
		}
	}
	if len(unknown) > 0 {
		stored := map[string]bool{}
		if l.have.Tasks {
			found, err := l.x.TasksExisting(unknown)
			if err != nil {
				return err
			}
			for _, id := range found {
				stored[id] = true
			}
		}
		for _, t := range tasks {
			for _, d := range t.DependsOn {
				if isUnknown[d] && !stored[d] {
					return InvalidField("records", "task %s depends on %s, which is neither earlier in the dump nor in this store", t.ID, d)
				}
			}
		}
	}
	if err := l.x.InsertTasks(tasks); err != nil {
		return err
	}
	l.counts.Tasks += int64(len(tasks))
	return nil
}

func (l *loader) tokenBatch() error {
	tokens := make([]*Token, len(l.batch))
	ids := make([]string, len(l.batch))
	hashes := make([]string, len(l.batch))
	for i, r := range l.batch {
		t := r.Token
		switch {
		case l.tokenIDs[t.ID]:
			return InvalidField("records", "token %s appears twice in the dump", t.ID)
		case l.hashes[t.Hash]:
			return InvalidField("records", "token %s has the same secret hash as an earlier token in the dump", t.ID)
		}
		l.tokenIDs[t.ID], l.hashes[t.Hash] = true, true
		tokens[i], ids[i], hashes[i] = t, t.ID, t.Hash
	}
	if l.checkToken {
		taken, err := l.x.TokensExisting(ids, hashes)
		if err != nil {
			return err
		}
		if len(taken) > 0 {
			return fmt.Errorf("token %q, or a token with the same secret, is already in this store (a merge overwrites nothing): %w", taken[0], ErrAlreadyExists)
		}
	}
	if err := l.x.InsertTokens(tokens); err != nil {
		return err
	}
	l.counts.Tokens += int64(len(tokens))
	return nil
}

func (l *loader) auditBatch() error {
	entries := make([]*AuditEntry, len(l.batch))
	for i, r := range l.batch {
		e := r.Audit
		if e.ID <= l.lastAudit {
			return InvalidField("records", "audit entry %d comes after entry %d: ids must grow", e.ID, l.lastAudit)
		}
		l.lastAudit = e.ID
		entries[i] = e
	}
	if err := l.x.InsertAudit(entries, l.keepAudit); err != nil {
		return err
	}
	l.counts.Audit += int64(len(entries))
	return nil
}

func (l *loader) fleetBatch() error {
	events := make([]*FleetEvent, len(l.batch))
	for i, r := range l.batch {
		e := r.FleetEvent
		if l.events[e.ID] {
			// A stored duplicate is skipped, but one within the dump means
			// the dump itself is damaged.
			return InvalidField("records", "fleet event %s appears twice in the dump", e.ID)
		}
		l.events[e.ID] = true
		events[i] = e
	}
	n, err := l.x.InsertFleetEvents(events)
	if err != nil {
		return err
	}
	l.counts.FleetEvents += int64(n)
	return nil
}

// firstInOrder returns the first of ids that is in subset.
func firstInOrder(ids, subset []string) string {
	for _, id := range ids {
		if slices.Contains(subset, id) {
			return id
		}
	}
	return subset[0]
}

// ValidateDumpRecord checks that a record could have come from a store:
// required fields set, a known state and role, lease fields only on an
// IN_PROGRESS task. Its error is a FieldError on "records" naming the
// record.
func ValidateDumpRecord(r *DumpRecord) error {
	switch r.Kind() {
	case DumpQueue:
		q := r.Queue
		if !q.Paused && (q.Reason != "" || !q.PausedAt.IsZero()) {
			return InvalidField("records", "queue: a pause reason or time on a queue that is not paused")
		}
	case DumpTask:
		return validateDumpTask(r.Task)
	case DumpToken:
		t := r.Token
		switch {
		case t.ID == "":
			return InvalidField("records", "a token without an id")
		case t.Hash == "":
			return InvalidField("records", "token %s: no secret hash", t.ID)
		case !t.Role.Valid():
			return InvalidField("records", "token %s: unknown role %q", t.ID, t.Role)
		case t.Subject == "":
			return InvalidField("records", "token %s: no subject", t.ID)
		case t.CreatedAt.IsZero():
			return InvalidField("records", "token %s: no created_at", t.ID)
		case len(t.Roles) > 0 && t.Role != RoleAgent:
			return InvalidField("records", "token %s: a %s token with roles; only agent tokens carry them", t.ID, t.Role)
		}
		roles, err := NormalizeRoles(t.Roles)
		if err != nil {
			return InvalidField("records", "token %s: %v", t.ID, err)
		}
		if len(t.Roles) > 0 && !slices.Equal(roles, t.Roles) {
			return InvalidField("records", "token %s: roles %v are not sorted and unique", t.ID, t.Roles)
		}
		if err := checkSessionOf(t); err != nil {
			return InvalidField("records", "token %s: %v", t.ID, err)
		}
	case DumpAudit:
		e := r.Audit
		switch {
		case e.ID <= 0:
			return InvalidField("records", "audit entry with id %d: ids start at 1", e.ID)
		case e.Time.IsZero():
			return InvalidField("records", "audit entry %d: no time", e.ID)
		}
	case DumpFleetEvent:
		e := r.FleetEvent
		switch {
		case e.ID == "":
			return InvalidField("records", "a fleet event without an id")
		case e.Host == "":
			return InvalidField("records", "fleet event %s: no host", e.ID)
		case e.Kind == "":
			return InvalidField("records", "fleet event %s: no kind", e.ID)
		case e.Time.IsZero():
			return InvalidField("records", "fleet event %s: no time", e.ID)
		}
	case DumpRowKind:
		return validateDumpRow(r.Row)
	default:
		return InvalidField("records", "a record must hold exactly one of queue, task, token, audit entry, fleet event or table row")
	}
	return nil
}

func validateDumpTask(t *Task) error {
	bad := func(format string, args ...any) error {
		return InvalidField("records", "task %s: %s", t.ID, fmt.Sprintf(format, args...))
	}
	switch {
	case t.ID == "":
		return InvalidField("records", "a task without an id")
	case !t.State.Valid():
		return bad("unknown state %s", t.State)
	case t.Attempt < 0:
		return bad("attempt %d is negative", t.Attempt)
	case t.MaxAttempts < 1:
		return bad("max_attempts %d: at least 1", t.MaxAttempts)
	case t.FencingToken < 0:
		return bad("fencing_token %d is negative", t.FencingToken)
	case t.CreatedAt.IsZero() || t.UpdatedAt.IsZero() || t.StateChangedAt.IsZero():
		return bad("created_at, updated_at and state_changed_at are required")
	case t.PausedByQueue && t.State != StatePaused:
		return bad("paused_by_queue on a %s task", t.State)
	}
	leased := t.LeaseHolder != "" || !t.LeaseExpiresAt.IsZero() || !t.ClaimedAt.IsZero() || !t.RenewedAt.IsZero()
	switch {
	case t.State == StateInProgress && (t.LeaseHolder == "" || t.LeaseExpiresAt.IsZero()):
		return bad("IN_PROGRESS without a lease holder and expiry")
	case t.State != StateInProgress && leased:
		return bad("lease fields on a %s task: a lease exists only while IN_PROGRESS", t.State)
	}
	for _, d := range t.DependsOn {
		switch {
		case d == "":
			return bad("an empty dependency id")
		case d == t.ID:
			return bad("depends on itself")
		}
	}
	return nil
}
