-- The task queue. States are store.TaskState values; an unset time is NULL.
-- Every object is created unqualified: the driver puts its schema first in
-- search_path, so one database can hold several independent queues.

-- +goose Up
CREATE TABLE tasks (
    -- seq is the creation order: FIFO within a priority and the list cursor.
    seq              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               text        NOT NULL UNIQUE,
    title            text        NOT NULL DEFAULT '',
    kind             text        NOT NULL DEFAULT '',
    -- Text, not jsonb: the payload reads back byte for byte as it was given.
    payload_json     text        NOT NULL DEFAULT '',
    role             text        NOT NULL DEFAULT '',
    assignee         text        NOT NULL DEFAULT '',
    priority         integer     NOT NULL DEFAULT 0,
    state            smallint    NOT NULL CHECK (state BETWEEN 1 AND 7),
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL,
    -- A copy of task_deps in the order given, so that reading a task is one
    -- row; task_deps answers the reverse question (who waits on this task).
    depends_on       text[]      NOT NULL DEFAULT '{}',
    approval_tier    integer     NOT NULL DEFAULT 0,
    labels           jsonb       NOT NULL DEFAULT '{}',
    last_error       text        NOT NULL DEFAULT '',
    progress         text        NOT NULL DEFAULT '',
    note             text        NOT NULL DEFAULT '',
    lease_holder     text        NOT NULL DEFAULT '',
    -- Kept when a lease ends: the next claim adds one to it, so a token is
    -- never handed out twice for the same task.
    fencing_token    bigint      NOT NULL DEFAULT 0,
    lease_expires_at timestamptz,
    claimed_at       timestamptz,
    renewed_at       timestamptz,
    run_after        timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    state_changed_at timestamptz NOT NULL,
    paused_by_queue  boolean     NOT NULL DEFAULT false
);

-- Every claim and completion rewrites a row, so the table churns like a
-- queue: vacuum it (which prunes the claim index of claimed tasks) and
-- refresh its statistics well before the defaults would.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- The claim order among READY tasks. Partial indexes stay as small as the
-- set they serve, and a row outside the set costs them nothing on update.
CREATE INDEX tasks_ready ON tasks (priority DESC, seq) WHERE state = 2;
-- The next backoff to end among READY tasks.
CREATE INDEX tasks_ready_run_after ON tasks (run_after) WHERE state = 2 AND run_after IS NOT NULL;
-- Lease rescue and the stuck-task sweep: IN_PROGRESS tasks by expiry.
CREATE INDEX tasks_in_progress ON tasks (lease_expires_at) WHERE state = 3;
-- Queue resume: the tasks the queue itself paused.
CREATE INDEX tasks_paused_by_queue ON tasks (seq) WHERE state = 7 AND paused_by_queue;

CREATE TABLE task_deps (
    task_id    text    NOT NULL REFERENCES tasks (id),
    pos        integer NOT NULL,
    depends_on text    NOT NULL REFERENCES tasks (id),
    PRIMARY KEY (task_id, pos)
);

-- Promotion: which tasks wait on the one that just reached DONE.
CREATE INDEX task_deps_depends_on ON task_deps (depends_on);

-- The queue's pause switch; exactly one row.
CREATE TABLE queue_settings (
    id           integer     PRIMARY KEY CHECK (id = 1),
    paused       boolean     NOT NULL DEFAULT false,
    pause_reason text        NOT NULL DEFAULT '',
    paused_at    timestamptz
);
INSERT INTO queue_settings (id) VALUES (1);

-- +goose Down
DROP TABLE queue_settings;
DROP TABLE task_deps;
DROP TABLE tasks;
