package postgres

import (
	"strconv"
	"strings"

	"github.com/factory/factory/controlplane/store"
)

// States are written into the SQL as literals so that the planner matches
// the partial indexes (WHERE state = 2) and sees constant index prefixes.
// Every statement starts with a "-- name: X" comment that names its span.
var stateLiterals = strings.NewReplacer(
	"{BACKLOG}", strconv.Itoa(int(store.StateBacklog)),
	"{READY}", strconv.Itoa(int(store.StateReady)),
	"{IN_PROGRESS}", strconv.Itoa(int(store.StateInProgress)),
	"{REVIEW}", strconv.Itoa(int(store.StateReview)),
	"{DONE}", strconv.Itoa(int(store.StateDone)),
	"{FAILED}", strconv.Itoa(int(store.StateFailed)),
	"{PAUSED}", strconv.Itoa(int(store.StatePaused)),
	"{COLS}", taskCols,
	"{T.COLS}", qualified("t", taskCols),
	"{SIZE}", sizeFull,
)

// sizeSummary and sizeFull are a task's size as byte budgets count it (see
// store.TaskSizeFixed), as a summary and in full. octet_length of a text
// reads its stored length without detoasting it; a dependency list counts
// one more byte per id than its text form, as the wire does.
var (
	sizeSummary = "(" + strconv.Itoa(store.TaskSizeFixed) + " + octet_length(title) + octet_length(kind)" +
		" + octet_length(depends_on::text) + cardinality(depends_on) + octet_length(labels::text))"
	sizeFull = "(" + sizeSummary +
		" + octet_length(payload_json) + octet_length(last_error) + octet_length(progress) + octet_length(note) + octet_length(result_json))"
)

// qualified prefixes every column of a column list with a table alias.
func qualified(alias, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

func q(s string) string { return stateLiterals.Replace(s) }

// Sets of values (ids, items, rows to write) travel as typed arrays read
// with unnest, so a batch is one statement with a fixed text that stays
// prepared on every connection, whatever its size.
var (
	qGetByID = q(`-- name: TaskGet
SELECT {COLS} FROM tasks WHERE id = $1`)

	qGetByIDs = q(`-- name: TaskGetMany
SELECT {COLS} FROM tasks WHERE id = ANY($1::text[])`)

	// qEnded and qSetEnded read and record the lease a completion or a
	// failure ended (store.EndedLease). qEnded runs only for calls already
	// refused, to tell a repeat from a stale holder.
	qEnded = `-- name: TaskEnded
SELECT id, ended_holder, ended_token FROM tasks WHERE id = ANY($1::text[])`
	qSetEnded = `-- name: TaskSetEnded
UPDATE tasks SET ended_holder = $2, ended_token = $3 WHERE seq = $1`

	qGetForUpdate = q(`-- name: TaskLock
SELECT {COLS} FROM tasks WHERE id = $1 FOR UPDATE`)

	qGetManyForUpdate = q(`-- name: TaskLockMany
SELECT {COLS} FROM tasks WHERE id = ANY($1::text[]) ORDER BY seq FOR UPDATE`)

	// qStatesShare reads the tasks a new batch names (its own ids and its
	// dependencies) and share-locks them: a dependency cannot reach DONE
	// until the new dependent is committed, so that completion sees the
	// dependent and promotes it.
	qStatesShare = q(`-- name: TaskCreateLookup
SELECT id, state FROM tasks WHERE id = ANY($1::text[]) FOR SHARE`)

	// qPausedShare reads the pause switch and share-locks it, so a pause
	// (which updates it) waits for every transaction that decided from
	// the old value, and then sees the tasks they moved to READY.
	qPausedShare = `-- name: QueuePausedLock
SELECT paused FROM queue_settings WHERE id = 1 FOR SHARE`

	qInsertTasks = q(`-- name: TaskInsert
INSERT INTO tasks (id, title, kind, payload_json, role, assignee, priority, state, max_attempts, depends_on,
	approval_tier, labels, note, run_after, created_at, updated_at, state_changed_at, paused_by_queue, approval_id,
	approval_pending, tier)
SELECT u.id, u.title, u.kind, u.payload_json, u.role, u.assignee, u.priority, u.state, u.max_attempts,
	ARRAY(SELECT jsonb_array_elements_text(u.depends_on::jsonb)), u.approval_tier, u.labels::jsonb, u.note, u.run_after,
	$15, $15, $15, u.paused_by_queue, u.approval_id, u.approval_pending, u.tier
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::smallint[], $9::int[],
	$10::text[], $11::int[], $12::text[], $13::text[], $14::timestamptz[], $16::boolean[], $17::text[], $18::boolean[],
	$19::text[])
	WITH ORDINALITY AS u(id, title, kind, payload_json, role, assignee, priority, state, max_attempts,
		depends_on, approval_tier, labels, note, run_after, paused_by_queue, approval_id, approval_pending, tier, ord)
ORDER BY u.ord
RETURNING {COLS}`)

	qInsertDeps = `-- name: TaskInsertDeps
INSERT INTO task_deps (task_id, pos, depends_on) SELECT * FROM unnest($1::text[], $2::int[], $3::text[])`

	// qIndexPlans keeps the rest of a claim or completion transaction on
	// index lookups. Queue tables swing between a handful and many
	// thousands of READY or IN_PROGRESS tasks faster than statistics
	// follow; with stale statistics the planner fetches every READY row
	// and sorts them for each claim of one task, or hashes every
	// IN_PROGRESS task to complete one, which turns a burst of work into
	// quadratic time. The claim order is an index's order and every join
	// here starts from a short list of keys, so index scans and nested
	// loops are always right.
	qIndexPlans = `-- name: IndexPlans
SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
	set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)`

	// qClaim picks and takes the tasks in one statement. It walks
	// tasks_ready_role once per role the claim may take ($4, which the
	// caller gives with the empty role, every agent's, and without
	// repeats), each walk in claim order and stopped by its LIMIT, and
	// merges them: a backlog of a role the claimer does not take is never
	// read. SKIP LOCKED passes over rows another claimer has just locked
	// instead of waiting for it, so concurrent claimers take different
	// tasks; a walk locks up to $5 rows, and those the merge leaves are
	// free again at commit. Of the candidates it takes those whose running
	// size, in claim order, stays within the byte budget $6, and the first
	// one whatever its size when $7 is set, so that a claim never commits
	// more than its response can carry. $8 are the tiers whose tasks the
	// claim leaves (store.TaskClaimParams.ExcludeTiers): a filter on the
	// rows a walk reads, so the walks stay index scans in claim order.
	qClaim = q(`-- name: TaskClaim
UPDATE tasks SET state = {IN_PROGRESS}, attempt = attempt + 1, fencing_token = fencing_token + 1,
	lease_holder = $1, claimed_at = $2, renewed_at = $2, lease_expires_at = $3,
	updated_at = $2, state_changed_at = $2, paused_by_queue = false
WHERE seq = ANY(ARRAY(
	SELECT seq FROM (
		SELECT seq, size, sum(size) OVER (ORDER BY priority DESC, seq) AS run FROM (
			SELECT w.seq, w.priority, w.size FROM unnest($4::text[]) AS r(role) CROSS JOIN LATERAL (
				SELECT seq, priority, {SIZE} AS size FROM tasks
				WHERE state = {READY} AND role = r.role
					AND (run_after IS NULL OR run_after <= $2::timestamptz)
					AND (assignee = '' OR assignee = $1::text)
					AND tier <> ALL($8::text[])
				ORDER BY priority DESC, seq
				LIMIT $5
				FOR UPDATE SKIP LOCKED) AS w
			ORDER BY w.priority DESC, w.seq
			LIMIT $5) AS picked) AS sized
	WHERE run <= $6::bigint OR (run = size AND $7::boolean)))
RETURNING {COLS}`)

	// qLockAgents takes the transaction's lock on each of the agents whose
	// leases it counts ($1, lock keys in ascending order), so that claims
	// for one agent on any replica count and claim one after another.
	qLockAgents = `-- name: TaskClaimLockAgents
SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k`

	// qHeldBy counts the leases each of the agents $1 holds, one probe of
	// the partial index tasks_held_by per agent (with lease_holder =
	// ANY($1) and stale statistics the planner may read every
	// IN_PROGRESS task through another partial index instead).
	qHeldBy = q(`-- name: TaskClaimHeldBy
SELECT a.agent, h.n FROM unnest($1::text[]) AS a(agent) CROSS JOIN LATERAL (
	SELECT count(*) AS n FROM tasks WHERE state = {IN_PROGRESS} AND lease_holder <> '' AND lease_holder = a.agent) AS h`)

	// qClaimPick locks the candidates of several claims made together: the
	// head of the queue for the union of their filters, walked per role
	// as in qClaim ($2 names the empty role and no role twice). Which
	// claim takes which candidate is decided in Go (see claimMany), and
	// qClaimTake takes them. $5 are the tiers every one of the claims
	// leaves; each claim's own are applied in Go.
	qClaimPick = q(`-- name: TaskClaimPick
SELECT w.seq, w.id, w.role, w.assignee, w.run_after, w.size, w.tier FROM unnest($2::text[]) AS r(role) CROSS JOIN LATERAL (
	SELECT seq, priority, id, role, assignee, run_after, {SIZE} AS size, tier FROM tasks
	WHERE state = {READY} AND role = r.role
		AND (run_after IS NULL OR run_after <= $1::timestamptz)
		AND (assignee = '' OR assignee = ANY($3::text[]))
		AND tier <> ALL($5::text[])
	ORDER BY priority DESC, seq
	LIMIT $4
	FOR UPDATE SKIP LOCKED) AS w
ORDER BY w.priority DESC, w.seq
LIMIT $4`)

	qClaimTake = q(`-- name: TaskClaimTake
UPDATE tasks t SET state = {IN_PROGRESS}, attempt = t.attempt + 1, fencing_token = t.fencing_token + 1,
	lease_holder = u.agent, claimed_at = u.now, renewed_at = u.now, lease_expires_at = u.expires,
	updated_at = u.now, state_changed_at = u.now, paused_by_queue = false
FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS u(seq, agent, now, expires)
WHERE t.seq = u.seq
RETURNING {T.COLS}`)

	// qComplete completes every item whose lease holds, in one statement.
	// When a task is named more than once, the first item whose lease
	// holds wins, as if the items ran in order. It also locks the BACKLOG
	// dependents of the tasks it moves to DONE: a completion of another
	// of their dependencies then waits for this one to commit, and its
	// promotion check (a later statement) sees this task DONE. Without
	// the lock, two dependencies completing at once could each miss the
	// other and leave the dependent in BACKLOG for good.
	qComplete = q(`-- name: TaskComplete
WITH items AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::boolean[], $5::text[], $6::timestamptz[], $7::text[])
		WITH ORDINALITY AS i(id, agent, token, review, note, now, result, ord)
), win AS (
	-- A subquery per item, so the lookup is always by id, however many
	-- tasks are IN_PROGRESS.
	SELECT DISTINCT ON (i.id) i.id, i.agent, i.token, i.review, i.note, i.now, i.result, i.ord
	FROM items i
	WHERE (SELECT t.state = {IN_PROGRESS} AND t.fencing_token = i.token AND t.lease_holder = i.agent
			AND t.lease_expires_at > i.now
		FROM tasks t WHERE t.id = i.id)
	ORDER BY i.id, i.ord
), done AS (
	-- The ended lease is kept for repeats of the call (see
	-- store.EndedLease); the right-hand sides read the row as it was.
	UPDATE tasks t SET state = CASE WHEN w.review THEN {REVIEW} ELSE {DONE} END,
		ended_holder = t.lease_holder, ended_token = t.fencing_token,
		lease_holder = '', lease_expires_at = NULL, claimed_at = NULL, renewed_at = NULL,
		note = CASE WHEN w.note <> '' THEN w.note ELSE t.note END,
		result_json = CASE WHEN w.result <> '' THEN w.result ELSE t.result_json END,
		updated_at = w.now, state_changed_at = w.now
	FROM win w
	-- The lease is checked again here because a row changed since the
	-- snapshot is re-read before it is updated. "state + 0" keeps the
	-- planner off the IN_PROGRESS index, which it would scan whole when
	-- statistics think it small; the lookup must be by id.
	WHERE t.id = w.id AND t.state + 0 = {IN_PROGRESS} AND t.fencing_token = w.token AND t.lease_holder = w.agent
		AND t.lease_expires_at > w.now
	RETURNING w.ord, {T.COLS}
), blocked AS (
	SELECT b.seq FROM tasks b
	WHERE b.state = {BACKLOG}
		AND b.id IN (SELECT d.task_id FROM task_deps d JOIN done ON d.depends_on = done.id WHERE done.state = {DONE})
	FOR UPDATE OF b
)
SELECT done.ord, (SELECT count(*) FROM blocked), {COLS} FROM done`)

	// qLockDependents is qComplete's dependent lock for a move to DONE.
	qLockDependents = q(`-- name: TaskLockDependents
SELECT count(*) FROM (
	SELECT seq FROM tasks
	WHERE state = {BACKLOG} AND id IN (SELECT task_id FROM task_deps WHERE depends_on = $1)
	FOR UPDATE) AS b`)

	// qPromote moves the BACKLOG dependents of tasks that just reached DONE
	// once all their dependencies are DONE and no approval is pending; to
	// PAUSED while the queue is. It runs as a statement of its own, after the dependents were
	// locked, so its snapshot includes every completion that committed
	// before the lock was granted.
	qPromote = q(`-- name: TaskPromote
UPDATE tasks t SET state = CASE WHEN q.paused THEN {PAUSED} ELSE {READY} END, paused_by_queue = q.paused,
	updated_at = $1, state_changed_at = $1
FROM (SELECT paused FROM queue_settings WHERE id = 1 FOR SHARE) AS q
WHERE t.state = {BACKLOG} AND NOT t.approval_pending
	AND t.id IN (SELECT task_id FROM task_deps WHERE depends_on = ANY($2::text[]))
	AND NOT EXISTS (
		SELECT 1 FROM task_deps d JOIN tasks x ON x.id = d.depends_on
		WHERE d.task_id = t.id AND x.state <> {DONE})
RETURNING {T.COLS}`)

	// qRenew looks the task up by id only ("state + 0": see qComplete).
	qRenew = q(`-- name: TaskRenew
UPDATE tasks SET lease_expires_at = $5, renewed_at = $4, updated_at = $4,
	progress = CASE WHEN $6::text <> '' THEN $6::text ELSE progress END
WHERE id = $1 AND state + 0 = {IN_PROGRESS} AND fencing_token = $2 AND lease_holder = $3 AND lease_expires_at > $4
RETURNING {COLS}`)

	// qSave writes back the mutable columns of rows changed in Go: one
	// statement whatever the count.
	qSave = `-- name: TaskSave
UPDATE tasks t SET priority = u.priority, state = u.state, attempt = u.attempt, last_error = u.last_error,
	progress = u.progress, note = u.note, lease_holder = u.lease_holder, fencing_token = u.fencing_token,
	lease_expires_at = u.lease_expires_at, claimed_at = u.claimed_at, renewed_at = u.renewed_at,
	run_after = u.run_after, updated_at = u.updated_at, state_changed_at = u.state_changed_at,
	paused_by_queue = u.paused_by_queue
FROM unnest($1::bigint[], $2::int[], $3::smallint[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[],
	$9::bigint[], $10::timestamptz[], $11::timestamptz[], $12::timestamptz[], $13::timestamptz[],
	$14::timestamptz[], $15::timestamptz[], $16::boolean[])
	AS u(seq, priority, state, attempt, last_error, progress, note, lease_holder, fencing_token,
		lease_expires_at, claimed_at, renewed_at, run_after, updated_at, state_changed_at, paused_by_queue)
WHERE t.seq = u.seq`

	qSetPriority = q(`-- name: TaskSetPriority
UPDATE tasks SET priority = $2, updated_at = $3 WHERE id = $1 RETURNING {COLS}`)

	qExpired = q(`-- name: TaskRescueExpired
SELECT {COLS} FROM tasks WHERE state = {IN_PROGRESS} AND lease_expires_at <= $1 ORDER BY seq FOR UPDATE`)

	qStuck = q(`-- name: TaskRequeueStuck
SELECT {COLS} FROM tasks WHERE state = {IN_PROGRESS} AND renewed_at <= $1 ORDER BY seq FOR UPDATE`)

	qNextRunAfter = q(`-- name: TaskNextRunAfter
SELECT min(run_after) FROM tasks WHERE state = {READY} AND run_after > $1`)

	// The pause switch is updated in a statement before the tasks move, so
	// that the task update's snapshot includes every task moved to READY
	// by a transaction that read the switch before it flipped.
	qPauseSet = `-- name: QueuePause
UPDATE queue_settings SET paused = true, pause_reason = $1, paused_at = $2 WHERE id = 1 AND NOT paused`
	qPauseTasks = q(`-- name: QueuePauseTasks
UPDATE tasks SET state = {PAUSED}, paused_by_queue = true, updated_at = $1, state_changed_at = $1
WHERE state = {READY} RETURNING {COLS}`)
	qResumeSet = `-- name: QueueResume
UPDATE queue_settings SET paused = false, pause_reason = '', paused_at = NULL WHERE id = 1`
	qResumeTasks = q(`-- name: QueueResumeTasks
UPDATE tasks SET state = {READY}, paused_by_queue = false, updated_at = $1, state_changed_at = $1
WHERE state = {PAUSED} AND paused_by_queue RETURNING {COLS}`)

	// qStats is one statement, so every figure comes from one snapshot.
	qStats = q(`-- name: QueueStats
WITH c AS (SELECT state, count(*) AS n FROM tasks GROUP BY state)
SELECT
	COALESCE((SELECT array_agg(state ORDER BY state) FROM c), '{}'),
	COALESCE((SELECT array_agg(n ORDER BY state) FROM c), '{}'),
	(SELECT min(state_changed_at) FROM tasks WHERE state = {READY}),
	(SELECT min(claimed_at) FROM tasks WHERE state = {IN_PROGRESS}),
	(SELECT count(*) FROM tasks WHERE state <> {DONE} AND attempt > 1),
	s.paused, s.pause_reason
FROM queue_settings s WHERE s.id = 1`)

	// qNotify sends one transaction's notifications in order, in one
	// statement.
	qNotify = `-- name: Notify
SELECT count(pg_notify($1, p)) FROM unnest($2::text[]) AS p`
)
