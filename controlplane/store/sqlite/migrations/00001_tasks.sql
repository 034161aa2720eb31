-- The task queue. Times are INTEGER unix nanoseconds, 0 when unset; states
-- are store.TaskState values (BACKLOG 1, READY 2, IN_PROGRESS 3, REVIEW 4,
-- DONE 5, FAILED 6, PAUSED 7); labels and depends_on are JSON text.

-- +goose Up
CREATE TABLE tasks (
    -- seq is the creation order: FIFO within a priority and the list cursor.
    seq              INTEGER PRIMARY KEY,
    id               TEXT    NOT NULL UNIQUE,
    title            TEXT    NOT NULL DEFAULT '',
    kind             TEXT    NOT NULL DEFAULT '',
    payload_json     TEXT    NOT NULL DEFAULT '',
    role             TEXT    NOT NULL DEFAULT '',
    assignee         TEXT    NOT NULL DEFAULT '',
    priority         INTEGER NOT NULL DEFAULT 0,
    state            INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    -- A copy of task_deps in creation order, so that reading a task is one
    -- row; task_deps answers the reverse question (who waits on this task).
    depends_on       TEXT    NOT NULL DEFAULT '[]',
    approval_tier    INTEGER NOT NULL DEFAULT 0,
    labels           TEXT    NOT NULL DEFAULT '{}',
    last_error       TEXT    NOT NULL DEFAULT '',
    progress         TEXT    NOT NULL DEFAULT '',
    note             TEXT    NOT NULL DEFAULT '',
    lease_holder     TEXT    NOT NULL DEFAULT '',
    fencing_token    INTEGER NOT NULL DEFAULT 0,
    lease_expires_at INTEGER NOT NULL DEFAULT 0,
    claimed_at       INTEGER NOT NULL DEFAULT 0,
    renewed_at       INTEGER NOT NULL DEFAULT 0,
    run_after        INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    state_changed_at INTEGER NOT NULL,
    paused_by_queue  INTEGER NOT NULL DEFAULT 0
);

-- The indexes are partial: each holds only the tasks in the one state it
-- serves, so a state change touches the pages of the indexes it enters or
-- leaves and no others, and DONE tasks, the bulk of the table, sit in none.

-- Claim order among READY tasks: priority DESC, then creation.
CREATE INDEX tasks_ready ON tasks (priority DESC, seq) WHERE state = 2;
-- The next backoff to end among READY tasks.
CREATE INDEX tasks_ready_run_after ON tasks (run_after) WHERE state = 2;
-- Lease rescue and stuck-task requeue: IN_PROGRESS tasks.
CREATE INDEX tasks_leased ON tasks (lease_expires_at) WHERE state = 3;
-- Queue resume: tasks the queue paused.
CREATE INDEX tasks_queue_paused ON tasks (seq) WHERE state = 7 AND paused_by_queue = 1;

-- Tasks per state, and how many of them are past their first attempt, kept
-- by triggers so that QueueStats reads seven rows instead of counting a
-- table that only grows.
CREATE TABLE task_counts (
    state    INTEGER PRIMARY KEY,
    n        INTEGER NOT NULL DEFAULT 0,
    retrying INTEGER NOT NULL DEFAULT 0
);
INSERT INTO task_counts (state) VALUES (1), (2), (3), (4), (5), (6), (7);

-- +goose StatementBegin
CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
    UPDATE task_counts SET n = n + 1, retrying = retrying + (NEW.attempt > 1) WHERE state = NEW.state;
END;
-- +goose StatementEnd

-- One statement for both rows: a trigger's statements each cost a VM run,
-- and this one fires for every claimed or completed task.
-- +goose StatementBegin
CREATE TRIGGER task_counts_update AFTER UPDATE OF state, attempt ON tasks
WHEN OLD.state <> NEW.state OR (OLD.attempt > 1) <> (NEW.attempt > 1) BEGIN
    UPDATE task_counts SET
        n = n + (state = NEW.state) - (state = OLD.state),
        retrying = retrying + (state = NEW.state AND NEW.attempt > 1) - (state = OLD.state AND OLD.attempt > 1)
    WHERE state IN (OLD.state, NEW.state);
END;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
    UPDATE task_counts SET n = n - 1, retrying = retrying - (OLD.attempt > 1) WHERE state = OLD.state;
END;
-- +goose StatementEnd

CREATE TABLE task_deps (
    task_id    TEXT    NOT NULL REFERENCES tasks (id),
    pos        INTEGER NOT NULL,
    depends_on TEXT    NOT NULL REFERENCES tasks (id),
    PRIMARY KEY (task_id, pos)
) WITHOUT ROWID;

-- Promotion: which tasks wait on the one that just reached DONE.
CREATE INDEX task_deps_depends_on ON task_deps (depends_on);

-- The queue's pause switch; exactly one row.
CREATE TABLE queue_settings (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    paused       INTEGER NOT NULL DEFAULT 0,
    pause_reason TEXT    NOT NULL DEFAULT '',
    paused_at    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO queue_settings (id) VALUES (1);

-- +goose Down
DROP TABLE queue_settings;
DROP TABLE task_counts;
DROP TABLE task_deps;
DROP TABLE tasks;
