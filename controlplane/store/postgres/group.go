package postgres

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/factory/factory/controlplane/store"
)

// PostgreSQL commits transactions that called pg_notify one at a time (it
// holds a database-wide lock from before the commit record is flushed
// until after), so with one transaction per call the notifying commit
// rate, a few hundred to a thousand per second on ordinary disks, would
// cap the claim and completion rate. The hot calls, TaskClaim and
// TaskComplete, therefore go through a group: the calls that arrive while
// earlier ones are in flight run together as a single transaction. Under
// load one commit serves many callers; a lone caller runs at once, as it
// would without the group.
//
// Each call keeps its meaning. All calls in a transaction were in flight
// at the same time, so running them in any order is a valid history: the
// completions run first (as one list of items, in arrival order), then
// the claims one after another, each seeing the effects of those before
// it. Calls that run together commit together, so a failure of the
// transaction fails them all; the driver retries lost races and lost
// connections as it does for any transaction.

// groupRequest is one caller's call in a group.
type groupRequest interface {
	base() *request
	// size is how much of a transaction's budget the call takes: claims
	// count the tasks they ask for, completions their items.
	size() int
}

// request is what every grouped call carries.
type request struct {
	ctx  context.Context
	done chan struct{}
	err  error
	// abandoned is set when the caller stopped waiting; a call not yet
	// started is then skipped.
	abandoned atomic.Bool
}

func (r *request) base() *request { return r }

func newRequest(ctx context.Context) request {
	return request{ctx: ctx, done: make(chan struct{})}
}

func (r *claimReq) size() int    { return r.p.Max }
func (r *completeReq) size() int { return len(r.p.Items) }

// group batches claims and completions.
type group struct {
	s *Store

	mu      sync.Mutex
	queue   []groupRequest
	running int

	// Counters for benchmarks: transactions run and calls they served.
	txs, calls atomic.Int64
}

const (
	// groupRunners is how many grouped transactions may be in flight at
	// once: one executing while another waits to commit.
	groupRunners = 2
	// groupBudget bounds one transaction's work.
	groupBudget = 1000
	// groupTimeout bounds one grouped transaction, which no single
	// caller's context governs.
	groupTimeout = time.Minute
)

// do runs r, alone or with others, and waits for its outcome.
func (g *group) do(r groupRequest) error {
	b := r.base()
	g.mu.Lock()
	g.queue = append(g.queue, r)
	if g.running < groupRunners {
		g.running++
		go g.flush()
	}
	g.mu.Unlock()
	select {
	case <-b.done:
		return b.err
	case <-b.ctx.Done():
		b.abandoned.Store(true)
		// The call may be running: its outcome (tasks claimed, say) is
		// then unknown to the caller, as for any call cut off in flight.
		select {
		case <-b.done:
			return b.err
		default:
			return b.ctx.Err()
		}
	}
}

// flush runs queued calls until none are left.
func (g *group) flush() {
	for {
		g.mu.Lock()
		var (
			batch []groupRequest
			spent int
			n     int
		)
		for ; n < len(g.queue); n++ {
			r := g.queue[n]
			if r.base().abandoned.Load() {
				r.base().err = r.base().ctx.Err()
				close(r.base().done)
				continue
			}
			if len(batch) > 0 && spent+r.size() > groupBudget {
				break
			}
			batch = append(batch, r)
			spent += r.size()
		}
		g.queue = g.queue[n:]
		if len(batch) == 0 {
			g.running--
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()

		g.txs.Add(1)
		g.calls.Add(int64(len(batch)))
		err := g.runBatch(batch)
		for _, r := range batch {
			if err != nil {
				r.base().err = err
			}
			close(r.base().done)
		}
	}
}

func (g *group) runBatch(batch []groupRequest) error {
	// The first caller's context carries the trace the statements are
	// recorded under; none of the callers may cancel work the others
	// share.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(batch[0].base().ctx), groupTimeout)
	defer cancel()
	stop := context.AfterFunc(g.s.life, cancel)
	defer stop()
	return g.s.runGroup(ctx, batch)
}

// runGroup runs grouped calls in one transaction.
func (s *Store) runGroup(ctx context.Context, reqs []groupRequest) error {
	var (
		claims    []*claimReq
		completes []*completeReq
	)
	for _, r := range reqs {
		switch r := r.(type) {
		case *claimReq:
			claims = append(claims, r)
		case *completeReq:
			completes = append(completes, r)
		}
	}
	op := "TaskClaim"
	switch {
	case len(claims) == 0:
		op = "TaskComplete"
	case len(completes) > 0:
		op = "TaskComplete+TaskClaim"
	}
	cs := newCompletion(completes)
	err := s.inTx(ctx, op, func(t *txn) error {
		t.changes = t.changes[:0]
		for _, r := range claims {
			r.out, r.n, r.capErr = nil, r.p.Max, nil
		}
		b := t.batch()
		b.Queue(qIndexPlans)
		caps := queueCaps(b, s.cfg.Schema, claims)
		if cs != nil {
			cs.queue(b)
		}
		// Capped claims go through the pick, so that the room their
		// agents have left, counted in this round trip, is applied in Go
		// before anything is taken.
		many := len(claims) > 1 || (len(claims) == 1 && caps != nil)
		var (
			picks []claimPick
			limit int
		)
		switch {
		case many:
			if caps != nil {
				caps.queueCount(b)
			}
			limit = queueClaimPick(b, claims, &picks)
		case len(claims) == 1:
			queueClaim(b, claims[0], claims[0].n, claims[0].budget(), true)
		}
		if err := t.send(b); err != nil {
			return err
		}
		if cs != nil {
			if err := cs.finish(t); err != nil {
				return err
			}
		}
		var take func(*pgx.Batch)
		if many {
			run := claims
			if caps != nil {
				run = caps.apply(claims)
			}
			var err error
			if take, err = claimMany(t, run, picks, limit); err != nil {
				return err
			}
		} else if len(claims) == 1 {
			announceClaims(t, claims[0].out)
		}
		// In the common case the last writes (the claims' take) go in the
		// round trip that commits.
		if take != nil {
			return t.commit(take)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range claims {
		if r.capErr != nil {
			r.err = r.capErr
		}
	}
	return nil
}

// leaseCaps is one transaction's view of the capped agents' leases.
type leaseCaps struct {
	agents []string
	held   map[string]int
}

// queueCaps adds to b, for the claims with MaxHeld, the lock on each of
// their agents, so that no other transaction claims for them until this
// one ends. It comes first in the transaction: the locks, taken in one
// order by every transaction and before any row lock, cannot deadlock.
// nil when no claim is capped.
func queueCaps(b *pgx.Batch, schema string, claims []*claimReq) *leaseCaps {
	var agents []string
	for _, r := range claims {
		if r.p.MaxHeld > 0 && !slices.Contains(agents, r.p.Agent) {
			agents = append(agents, r.p.Agent)
		}
	}
	if len(agents) == 0 {
		return nil
	}
	keys := make([]int64, len(agents))
	for i, a := range agents {
		keys[i] = lockID("leases/"+a, schema)
	}
	slices.Sort(keys)
	b.Queue(qLockAgents, keys)
	return &leaseCaps{agents: agents, held: make(map[string]int, len(agents))}
}

// queueCount adds the count of the leases each agent holds.
func (c *leaseCaps) queueCount(b *pgx.Batch) {
	clear(c.held)
	b.Queue(qHeldBy, c.agents).Query(func(rs pgx.Rows) error {
		var (
			agent string
			n     int
		)
		_, err := pgx.ForEachRow(rs, []any{&agent, &n}, func() error {
			c.held[agent] = n
			return nil
		})
		return err
	})
}

// apply sets each capped claim's n to what it may still take, claims by
// one agent sharing its room in arrival order. A claim left no room gets
// capErr and is not run; apply returns the others.
func (c *leaseCaps) apply(claims []*claimReq) []*claimReq {
	used := maps.Clone(c.held)
	run := make([]*claimReq, 0, len(claims))
	for _, r := range claims {
		if r.p.MaxHeld > 0 {
			held := used[r.p.Agent]
			n, err := r.p.LeaseRoom(held, r.n)
			if err != nil {
				r.capErr = err
				continue
			}
			r.n = n
			used[r.p.Agent] = held + n
		}
		run = append(run, r)
	}
	return run
}

// announceClaims records claimed rows as changes.
func announceClaims(t *txn, rows []*row) {
	for _, r := range rows {
		t.changes = append(t.changes, store.RemoteChange{TaskID: r.t.ID, PreviousState: store.StateReady, State: store.StateInProgress})
	}
}

// completion is the completions of one group, run as one list of items.
type completion struct {
	reqs  []*completeReq
	items []completeItem
	now   time.Time

	ids, agents, notes, results []string
	tokens                      []int64
	reviews                     []bool
	nows                        []time.Time

	// Filled by each attempt of the transaction.
	won     map[string]completeWin // task id -> the item that completed it
	blocked int64                  // BACKLOG dependents locked
}

// completeItem is one item of one call, placed in the group's list.
type completeItem struct {
	req   *completeReq
	idx   int
	lease store.LeaseRef
}

// completeWin is a task one item of the list completed.
type completeWin struct {
	ord int // the item's position in the list, from 1
	row *row
}

func newCompletion(reqs []*completeReq) *completion {
	if len(reqs) == 0 {
		return nil
	}
	c := &completion{reqs: reqs}
	for _, r := range reqs {
		// Each item is checked against its own call's Now; promotions,
		// which the calls share, are dated with the latest.
		if r.now.After(c.now) {
			c.now = r.now
		}
		for i, it := range r.p.Items {
			if r.bad[i] != nil {
				continue
			}
			c.items = append(c.items, completeItem{req: r, idx: i, lease: it.Lease})
			c.ids, c.agents, c.tokens = append(c.ids, it.Lease.TaskID), append(c.agents, it.Lease.Agent), append(c.tokens, it.Lease.FencingToken)
			c.reviews, c.notes, c.nows = append(c.reviews, it.Review), append(c.notes, it.Note), append(c.nows, r.now)
			c.results = append(c.results, it.ResultJSON)
		}
	}
	return c
}

// queue adds the completing statement to b.
func (c *completion) queue(b *pgx.Batch) {
	c.won, c.blocked = make(map[string]completeWin, len(c.items)), 0
	b.Queue(qComplete, c.ids, c.agents, c.tokens, c.reviews, c.notes, c.nows, c.results).Query(func(rs pgx.Rows) error {
		defer rs.Close()
		for rs.Next() {
			var ord, n int64
			r, err := scanRow(rs, &ord, &n)
			if err != nil {
				return err
			}
			c.won[r.t.ID] = completeWin{ord: int(ord), row: r}
			c.blocked = max(c.blocked, n)
		}
		return rs.Err()
	})
}

// finish promotes dependents, explains the items that lost, and fills
// every call's result.
func (c *completion) finish(t *txn) error {
	var promoted []*row
	if c.blocked > 0 {
		var doneIDs []string
		for id, w := range c.won {
			if w.row.t.State == store.StateDone {
				doneIDs = append(doneIDs, id)
			}
		}
		var err error
		if promoted, err = t.rows(qPromote, c.now, doneIDs); err != nil {
			return err
		}
		bySeq(promoted)
	}

	// Items that lost need the task as it is now to say why.
	var missing []string
	for i, it := range c.items {
		if w, ok := c.won[it.lease.TaskID]; !ok || w.ord != i+1 {
			missing = append(missing, it.lease.TaskID)
		}
	}
	current := make(map[string]*row)
	ended := make(map[string]store.EndedLease)
	if len(missing) > 0 {
		var rows []*row
		b := t.batch()
		queueRows(b, &rows, qGetByIDs, missing)
		queueEnded(b, ended, missing)
		if err := t.send(b); err != nil {
			return err
		}
		for _, r := range rows {
			current[r.t.ID] = r
		}
	}

	for _, r := range c.reqs {
		r.res = &store.TaskCompleteResult{Results: make([]store.TaskCompleteItemResult, len(r.p.Items))}
		for i, err := range r.bad {
			r.res.Results[i].Err = err
		}
	}
	for i, it := range c.items {
		res := &it.req.res.Results[it.idx]
		w, ok := c.won[it.lease.TaskID]
		// found is the task as the item finds it and endedLease the lease
		// a completion or failure of it last ended, when the item may be a
		// repeat of that call.
		var (
			found      *store.Task
			endedLease store.EndedLease
		)
		switch {
		case ok && w.ord == i+1:
			res.Task = w.row.t.Clone()
			it.req.res.Changes = append(it.req.res.Changes, store.TaskChange{Task: w.row.t.Clone(), PreviousState: store.StateInProgress})
			continue
		case ok && w.ord < i+1:
			// An earlier item completed the task.
			win := c.items[w.ord-1].lease
			found, endedLease = w.row.t, store.EndedLease{Holder: win.Agent, FencingToken: win.FencingToken}
			res.Err = store.CheckLease(w.row.t, it.lease, it.req.now)
		case ok:
			// A later item completed the task; until then it was held
			// under that item's lease.
			held := w.row.t.Clone()
			win := c.items[w.ord-1].lease
			held.State, held.LeaseHolder, held.FencingToken = store.StateInProgress, win.Agent, win.FencingToken
			res.Err = store.CheckLease(held, it.lease, it.req.now)
		case current[it.lease.TaskID] == nil:
			res.Err = notFound(it.lease.TaskID)
		default:
			found, endedLease = current[it.lease.TaskID].t, ended[it.lease.TaskID]
			res.Err = store.CheckLease(found, it.lease, it.req.now)
		}
		if res.Err != nil && found != nil {
			res.Err = store.CheckCompleteReplay(found, endedLease, it.req.p.Items[it.idx], res.Err)
			if res.Err == nil {
				res.Task, res.Replay = found.Clone(), true
				continue
			}
		}
		if res.Err == nil {
			// The lease holds now but did not when the statement ran.
			res.Err = fmt.Errorf("task %s: %w: the lease changed while the call ran", it.lease.TaskID, store.ErrStaleLease)
		}
	}

	// A promoted task is credited to the call that completed the last of
	// its dependencies in the list.
	for _, pr := range promoted {
		last := 0
		for _, d := range pr.t.DependsOn {
			if w, ok := c.won[d]; ok && w.row.t.State == store.StateDone {
				last = max(last, w.ord)
			}
		}
		owner := c.reqs[0]
		if last > 0 {
			owner = c.items[last-1].req
		}
		owner.res.Changes = append(owner.res.Changes, store.TaskChange{Task: pr.t.Clone(), PreviousState: store.StateBacklog})
	}
	for _, r := range c.reqs {
		t.announce(r.res.Changes)
	}
	return nil
}

// queueClaim queues one claim of up to n tasks within budget bytes,
// appended to r.out; first lets the first task come whatever its size.
func queueClaim(b *pgx.Batch, r *claimReq, n int, budget int64, first bool) {
	queueRows(b, &r.out, qClaim, r.p.Agent, r.now, norm(r.now.Add(r.p.LeaseDuration)), claimRoles(r.p.Roles), n, budget, first,
		excludeTiers(r.p.ExcludeTiers))
}

// budget is the claim's byte budget, unbounded when it names none.
func (r *claimReq) budget() int64 {
	if r.p.MaxBytes <= 0 {
		return math.MaxInt64
	}
	return r.p.MaxBytes
}

// claimPick is a candidate for several claims.
type claimPick struct {
	seq                      int64
	id, role, assignee, tier string
	runAfter                 pgtype.Timestamptz
	size                     int64
}

// queueClaimPick locks the candidates for claims: the first
// sum(Max) READY tasks that any of them may take. It returns that sum,
// the pick's limit.
func queueClaimPick(b *pgx.Batch, claims []*claimReq, picks *[]claimPick) (limit int) {
	var (
		latest time.Time
		roles  []string
		agents []string
		total  int
		// shared are the tiers every claim excludes.
		shared = excludeTiers(claims[0].p.ExcludeTiers)
	)
	for _, r := range claims {
		shared = slices.DeleteFunc(shared, func(t string) bool { return !slices.Contains(r.p.ExcludeTiers, t) })
		if r.now.After(latest) {
			latest = r.now
		}
		roles = append(roles, r.p.Roles...)
		agents = append(agents, r.p.Agent)
		total += r.n
	}
	roles = claimRoles(roles)
	*picks = nil
	b.Queue(qClaimPick, latest, roles, agents, total, shared).Query(func(rs pgx.Rows) error {
		var p claimPick
		_, err := pgx.ForEachRow(rs, []any{&p.seq, &p.id, &p.role, &p.assignee, &p.runAfter, &p.size, &p.tier}, func() error {
			*picks = append(*picks, p)
			return nil
		})
		return err
	})
	return total
}

// claimMany hands the locked candidates out as the claims would have taken
// them one after another: each, in arrival order, takes the first
// candidates it may take that the claims before it left, until the next
// would not fit its byte budget. The candidates
// are a prefix of the queue for the union of the claims' filters, so this
// is exact unless a claim came up short while the prefix was cut off at
// its limit (by tasks assigned to other agents, say); such a claim then
// runs on its own for the rest, after the others took theirs.
//
// It announces the claims and returns the statement that takes the
// candidates, to be sent with COMMIT; or, when some claim must go on on
// its own, it runs everything itself and returns nil. limit is the pick's
// (see queueClaimPick); each claim takes at most its n.
func claimMany(t *txn, claims []*claimReq, picks []claimPick, limit int) (func(*pgx.Batch), error) {
	taken := make([]bool, len(picks))
	owner := make(map[int64]*claimReq, len(picks))
	var (
		seqs    []int64
		agents  []string
		nows    []time.Time
		expires []time.Time
		short   []*claimReq
		used    = make(map[*claimReq]int64, len(claims))
	)
	for _, r := range claims {
		got, full := 0, false
		for i, p := range picks {
			if got == r.n {
				break
			}
			if taken[i] || !r.mayTake(p) {
				continue
			}
			if got > 0 && used[r]+p.size > r.budget() {
				full = true
				break
			}
			taken[i] = true
			got++
			used[r] += p.size
			owner[p.seq] = r
			seqs, agents = append(seqs, p.seq), append(agents, r.p.Agent)
			nows, expires = append(nows, r.now), append(expires, norm(r.now.Add(r.p.LeaseDuration)))
			t.changes = append(t.changes, store.RemoteChange{TaskID: p.id, PreviousState: store.StateReady, State: store.StateInProgress})
		}
		if got < r.n && !full && len(picks) == limit {
			short = append(short, r)
		}
	}
	var rows []*row
	take := func(b *pgx.Batch) {
		if len(seqs) == 0 {
			return
		}
		b.Queue(qClaimTake, seqs, agents, nows, expires).Query(func(rs pgx.Rows) error {
			var err error
			if rows, err = scanRows(rs); err != nil {
				return err
			}
			for _, row := range rows {
				r := owner[row.seq]
				r.out = append(r.out, row)
			}
			return nil
		})
	}
	if len(short) == 0 {
		return take, nil
	}
	b := t.batch()
	take(b)
	if err := t.send(b); err != nil {
		return nil, err
	}
	before := make([]int, len(short))
	for i, r := range short {
		before[i] = len(r.out)
	}
	b = t.batch()
	for _, r := range short {
		queueClaim(b, r, r.n-len(r.out), r.budget()-used[r], len(r.out) == 0)
	}
	if err := t.send(b); err != nil {
		return nil, err
	}
	for i, r := range short {
		announceClaims(t, r.out[before[i]:])
	}
	return nil, nil
}

// mayTake applies one claim's filters to a candidate.
func (r *claimReq) mayTake(p claimPick) bool {
	switch {
	case p.runAfter.Valid && p.runAfter.Time.After(r.now):
		return false
	case p.assignee != "" && p.assignee != r.p.Agent:
		return false
	case p.role != "" && !slices.Contains(r.p.Roles, p.role):
		return false
	case p.tier != "" && slices.Contains(r.p.ExcludeTiers, p.tier):
		return false
	}
	return true
}

// excludeTiers is a claim's excluded tiers as its statement takes them:
// never a NULL array, which would exclude every task.
func excludeTiers(tiers []string) []string {
	if tiers == nil {
		return []string{}
	}
	return slices.Clone(tiers)
}

// claimRoles is the roles a claim walks (see qClaim): the empty role,
// which every agent may take, then each of roles once.
func claimRoles(roles []string) []string {
	out := make([]string, 1, 1+len(roles))
	out = append(out, roles...)
	slices.Sort(out[1:])
	// The empty role sorts first, so Compact leaves one of it, at 0.
	return slices.Compact(out)
}
