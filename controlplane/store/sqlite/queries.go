package sqlite

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/factory/factory/controlplane/store"
)

// States are written into the SQL as literals so that the planner sees
// constant index prefixes.
var stateLiterals = strings.NewReplacer(
	"{BACKLOG}", strconv.Itoa(int(store.StateBacklog)),
	"{READY}", strconv.Itoa(int(store.StateReady)),
	"{IN_PROGRESS}", strconv.Itoa(int(store.StateInProgress)),
	"{REVIEW}", strconv.Itoa(int(store.StateReview)),
	"{DONE}", strconv.Itoa(int(store.StateDone)),
	"{FAILED}", strconv.Itoa(int(store.StateFailed)),
	"{PAUSED}", strconv.Itoa(int(store.StatePaused)),
	"{COLS}", taskCols,
	"{SIZE}", sizeFull,
)

// sizeSummary and sizeFull are a task's size as byte budgets count it (see
// store.TaskSizeFixed), as a summary and in full. octet_length reads a
// text's length from the record header without loading the text.
var (
	sizeSummary = "(" + strconv.Itoa(store.TaskSizeFixed) +
		" + octet_length(title) + octet_length(kind) + octet_length(depends_on) + octet_length(labels))"
	sizeFull = "(" + sizeSummary +
		" + octet_length(payload_json) + octet_length(last_error) + octet_length(progress) + octet_length(note) + octet_length(result_json))"
)

func q(s string) string { return stateLiterals.Replace(s) }

// Sets of keys (ids, roles, states) travel as one JSON array parameter read
// with json_each, so such a statement has one text that stays prepared,
// whatever the set's size. Rows to write travel as bound VALUES lists (see
// batchSQL): unpacking many columns per row from JSON costs more than the
// write.
var (
	qGetByID = q(`SELECT {COLS} FROM tasks WHERE id = ?`)
	qStates  = q(`SELECT id, state FROM tasks WHERE id IN (SELECT value FROM json_each(?))`)

	// qEnded and qSetEnded read and record the lease a completion or a
	// failure ended (store.EndedLease). qEnded runs only for a call
	// already refused, to tell a repeat from a stale holder.
	qEnded    = `SELECT ended_holder, ended_token FROM tasks WHERE id = ?`
	qSetEnded = `UPDATE tasks SET ended_holder = ?, ended_token = ? WHERE seq = ?`

	// qSetResult records a completion's result where qComplete did not
	// (a task named again by a later item of the same call).
	qSetResult = `UPDATE tasks SET result_json = ? WHERE seq = ?`

	// qPromote moves the BACKLOG dependents of tasks that just reached DONE
	// once all their dependencies are DONE and no approval is pending; to
	// PAUSED while the queue is. The dependents are found through task_deps; the unary + keeps the
	// planner from scanning every BACKLOG task instead.
	qPromote = q(`UPDATE tasks SET
		state = CASE (SELECT paused FROM queue_settings WHERE id = 1) WHEN 1 THEN {PAUSED} ELSE {READY} END,
		paused_by_queue = (SELECT paused FROM queue_settings WHERE id = 1),
		updated_at = ?1, state_changed_at = ?1
	WHERE +state = {BACKLOG} AND approval_pending = 0
		AND id IN (SELECT task_id FROM task_deps WHERE depends_on IN (SELECT value FROM json_each(?2)))
		AND NOT EXISTS (
			SELECT 1 FROM task_deps d JOIN tasks t ON t.id = d.depends_on
			WHERE d.task_id = tasks.id AND t.state <> {DONE})
	RETURNING {COLS}`)

	qSetPriority = q(`UPDATE tasks SET priority = ?, updated_at = ? WHERE id = ? RETURNING {COLS}`)
	// The sweeps read the IN_PROGRESS tasks only; for ORDER BY seq the
	// planner would rather scan the whole table in rowid order.
	qExpired = q(`SELECT {COLS} FROM tasks INDEXED BY tasks_leased
	WHERE state = {IN_PROGRESS} AND lease_expires_at <= ? ORDER BY seq`)
	qStuck = q(`SELECT {COLS} FROM tasks INDEXED BY tasks_leased
	WHERE state = {IN_PROGRESS} AND renewed_at <= ? ORDER BY seq`)

	qPaused      = `SELECT paused, pause_reason FROM queue_settings WHERE id = 1`
	qPauseSet    = `UPDATE queue_settings SET paused = 1, pause_reason = ?, paused_at = ? WHERE id = 1`
	qResumeSet   = `UPDATE queue_settings SET paused = 0, pause_reason = '', paused_at = 0 WHERE id = 1`
	qPauseTasks  = q(`UPDATE tasks SET state = {PAUSED}, paused_by_queue = 1, updated_at = ?1, state_changed_at = ?1 WHERE state = {READY} RETURNING {COLS}`)
	qResumeTasks = q(`UPDATE tasks SET state = {READY}, paused_by_queue = 0, updated_at = ?1, state_changed_at = ?1
	WHERE state = {PAUSED} AND paused_by_queue = 1 RETURNING {COLS}`)

	// The leases one agent holds, for the claim's cap: one probe of the
	// partial tasks_held_by.
	qHeldBy = q(`SELECT COUNT(*) FROM tasks INDEXED BY tasks_held_by WHERE state = {IN_PROGRESS} AND lease_holder <> '' AND lease_holder = ?`)

	// run_after > 0 lets the planner use the partial tasks_ready_run_after.
	qNextRunAfter = q(`SELECT MIN(run_after) FROM tasks WHERE state = {READY} AND run_after > 0 AND run_after > ?`)
)

// writerQueries are prepared on the writer at Open; batch statements are
// prepared on first use.
var writerQueries = []string{
	qGetByID, qStates, claimSQL(1), claimOneSQL(1), qPromote,
	qSetPriority, qExpired, qStuck, qPaused, qPauseSet, qResumeSet, qPauseTasks, qResumeTasks,
}

// maxBatchRows caps the rows of one VALUES list (SQLite allows 32766 bound
// parameters; 64 rows of the widest list use 1,152). Bigger batches are
// split, and each distinct row count is one prepared statement.
const maxBatchRows = 64

// insertCols are the columns a new task sets; the rest keep their defaults.
const insertCols = 21

var (
	qInsertTasks = batchSQL(`INSERT INTO tasks (id, title, kind, payload_json, role, assignee, priority, state,
		max_attempts, depends_on, approval_tier, labels, note, run_after, created_at, updated_at, state_changed_at,
		paused_by_queue, approval_id, approval_pending, tier) VALUES `, insertCols, "")
	qInsertDeps = batchSQL(`INSERT INTO task_deps (task_id, pos, depends_on) VALUES `, 3, "")

	// qComplete ends the leases its rows name, each to the state it gives
	// (REVIEW or DONE) with its note and result when not empty, where the lease is
	// still good: CheckLease's rule, in SQL, so that the common case is one
	// statement. The returned flag says whether some task depends on the
	// row, so that promotion is looked for only then. The first parameter
	// is Now; the rows' placeholders come after it. The ended lease is
	// kept for repeats of the call (see store.EndedLease); the right-hand
	// sides read the row as it was before the update.
	qComplete = batchSQL(`UPDATE tasks SET state = v.column4,
		note = CASE WHEN v.column5 = '' THEN tasks.note ELSE v.column5 END,
		result_json = CASE WHEN v.column6 = '' THEN tasks.result_json ELSE v.column6 END,
		ended_holder = tasks.lease_holder, ended_token = tasks.fencing_token,
		lease_holder = '', lease_expires_at = 0, claimed_at = 0, renewed_at = 0,
		updated_at = ?1, state_changed_at = ?1
	FROM (VALUES `, 6, q(`) AS v
	WHERE tasks.id = v.column1 AND tasks.state = {IN_PROGRESS} AND tasks.fencing_token = v.column2
		AND tasks.lease_holder = v.column3 AND tasks.lease_expires_at > ?1
	RETURNING {COLS}, EXISTS (SELECT 1 FROM task_deps WHERE depends_on = tasks.id)`))

	// qSave writes back every column a task's life changes, keyed by seq.
	qSave = batchSQL(`UPDATE tasks SET priority = v.column2, state = v.column3, attempt = v.column4,
		last_error = v.column5, progress = v.column6, note = v.column7, lease_holder = v.column8,
		fencing_token = v.column9, lease_expires_at = v.column10, claimed_at = v.column11,
		renewed_at = v.column12, run_after = v.column13, updated_at = v.column14,
		state_changed_at = v.column15, paused_by_queue = v.column16
	FROM (VALUES `, saveCols, `) AS v WHERE tasks.seq = v.column1`)
)

// batchSQL returns a function giving the statement text for n rows of cols
// placeholders each, between head and tail. Texts are built once per n.
func batchSQL(head string, cols int, tail string) func(n int) string {
	texts := make([]string, maxBatchRows+1)
	for n := 1; n <= maxBatchRows; n++ {
		var b strings.Builder
		b.WriteString(head)
		for i := range n {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?")
			b.WriteString(strings.Repeat(", ?", cols-1))
			b.WriteString(")")
		}
		b.WriteString(tail)
		texts[n] = b.String()
	}
	return func(n int) string { return texts[n] }
}

// claimSQL picks and takes the tasks of a claim in one statement; the
// IMMEDIATE transaction around it holds the write lock from the start, so
// no other claim sees the same READY rows. It walks tasks_ready_role once
// per role the claim may take (roles params from ?6; the first is the
// empty role, which every agent may take), each walk in claim order and
// stopped by its LIMIT, and merges the walks: a backlog of a role the
// claimer does not take is never read. The parameter after the roles is
// the tiers the claim must leave, a JSON array ('[]' for none): a filter
// on the rows each walk reads, not a change of index. INDEXED BY keeps the planner off
// tasks_ready_run_after, which would sort every READY task. Of the merged
// candidates it takes those whose running size, in claim order, stays
// within the byte budget ?5 (and always the first), so that a claim never
// commits more than its response can carry. ?1 is the agent, ?2 now, ?3
// the lease's end, ?4 how many.
//
// There is one text per count of roles (see claimRoleSlots), prepared on
// first use.
func claimSQL(roles int) string {
	claimTexts.once.Do(func() {
		for n := 1; n <= len(claimTexts.texts)-1; n++ {
			walks := make([]string, n)
			for i := range walks {
				walks[i] = fmt.Sprintf(`SELECT * FROM (SELECT seq, priority, {SIZE} AS size FROM tasks INDEXED BY tasks_ready_role
					WHERE state = {READY} AND role = ?%d AND run_after <= ?2 AND (assignee = '' OR assignee = ?1)
						AND tier NOT IN (SELECT value FROM json_each(?%d))
					ORDER BY priority DESC, seq LIMIT ?4)`, 6+i, 6+n)
			}
			claimTexts.texts[n] = q(`UPDATE tasks SET state = {IN_PROGRESS}, attempt = attempt + 1, fencing_token = fencing_token + 1,
		lease_holder = ?1, claimed_at = ?2, renewed_at = ?2, lease_expires_at = ?3,
		updated_at = ?2, state_changed_at = ?2, paused_by_queue = 0
	WHERE seq IN (
		SELECT seq FROM (
			SELECT seq, size, SUM(size) OVER (ORDER BY priority DESC, seq) AS run FROM (
				SELECT seq, priority, size FROM (` + strings.Join(walks, "\n\t\t\t\tUNION ALL ") + `)
				ORDER BY priority DESC, seq LIMIT ?4))
		WHERE run <= ?5 OR run = size)
	RETURNING {COLS}`)
		}
	})
	return claimTexts.texts[roles]
}

// claimOneSQL is claimSQL for a claim of one task, the common case: the
// same walks, one row each, without the running sizes (the first task
// comes whatever its size). Its parameters are claimSQL's; ?4 and ?5 go
// unused.
func claimOneSQL(roles int) string {
	claimTexts.onceOne.Do(func() {
		for n := 1; n <= len(claimTexts.one)-1; n++ {
			walks := make([]string, n)
			for i := range walks {
				walks[i] = fmt.Sprintf(`SELECT * FROM (SELECT seq, priority FROM tasks INDEXED BY tasks_ready_role
					WHERE state = {READY} AND role = ?%d AND run_after <= ?2 AND (assignee = '' OR assignee = ?1)
						AND tier NOT IN (SELECT value FROM json_each(?%d))
					ORDER BY priority DESC, seq LIMIT 1)`, 6+i, 6+n)
			}
			claimTexts.one[n] = q(`UPDATE tasks SET state = {IN_PROGRESS}, attempt = attempt + 1, fencing_token = fencing_token + 1,
		lease_holder = ?1, claimed_at = ?2, renewed_at = ?2, lease_expires_at = ?3,
		updated_at = ?2, state_changed_at = ?2, paused_by_queue = 0
	WHERE seq = (
		SELECT seq FROM (` + strings.Join(walks, "\n\t\t\tUNION ALL ") + `)
		ORDER BY priority DESC, seq LIMIT 1)
	RETURNING {COLS}`)
		}
	})
	return claimTexts.one[roles]
}

var claimTexts struct {
	once, onceOne sync.Once
	texts, one    [maxClaimSlots + 1]string
}

// maxClaimSlots is the most role walks one claim statement makes: the
// empty role and up to store.MaxClaimRoles others.
const maxClaimSlots = 1 + store.MaxClaimRoles

// claimRoleSlots is the role parameters of a claim: the empty role, then
// each of roles once. Their count picks the statement; it is rounded up to
// a power of two (padded with a name no task role can have) so that a
// handful of texts serves every claim.
func claimRoleSlots(roles []string) []any {
	out := make([]any, 1, 1+len(roles))
	out[0] = ""
	seen := make(map[string]bool, len(roles))
	for _, r := range roles {
		if r == "" || seen[r] {
			continue
		}
		seen[r] = true
		out = append(out, r)
	}
	n := 1
	for n < len(out) {
		n *= 2
	}
	n = min(n, maxClaimSlots)
	for len(out) < n {
		out = append(out, store.AnyRole)
	}
	return out
}
