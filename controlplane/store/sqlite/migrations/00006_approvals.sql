-- Approval requests (runbook §9) and the link from a gated task to its
-- request. Times are INTEGER unix nanoseconds, 0 when unset; states are
-- store.ApprovalState values (PENDING 1, APPROVED 2, REJECTED 3, MODIFIED 4,
-- EXPIRED 5); decisions are store.ApprovalDecision values (APPROVE 1,
-- REJECT 2, MODIFY 3).

-- +goose Up
CREATE TABLE approvals (
    -- seq is the creation order: the list order within a group and the
    -- list cursor.
    seq                INTEGER PRIMARY KEY,
    id                 TEXT    NOT NULL UNIQUE,
    what               TEXT    NOT NULL,
    why                TEXT    NOT NULL DEFAULT '',
    agent              TEXT    NOT NULL,
    risk               INTEGER NOT NULL DEFAULT 0,
    tier               INTEGER NOT NULL DEFAULT 0,
    kind               TEXT    NOT NULL DEFAULT '',
    payload_json       TEXT    NOT NULL DEFAULT '',
    payload_sha256     TEXT    NOT NULL DEFAULT '',
    deadline           INTEGER NOT NULL,
    default_on_timeout INTEGER NOT NULL,
    task_id            TEXT    NOT NULL DEFAULT '',
    reminder_at        INTEGER NOT NULL DEFAULT 0,
    state              INTEGER NOT NULL,
    auto_approved      INTEGER NOT NULL DEFAULT 0,
    outcome            INTEGER NOT NULL DEFAULT 0,
    decided_by         TEXT    NOT NULL DEFAULT '',
    decided_at         INTEGER NOT NULL DEFAULT 0,
    reason             TEXT    NOT NULL DEFAULT '',
    instructions       TEXT    NOT NULL DEFAULT '',
    reminded_at        INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL
);

-- The sweeper: PENDING requests by deadline, and reminders not yet sent.
CREATE INDEX approvals_pending_deadline ON approvals (deadline) WHERE state = 1;
CREATE INDEX approvals_reminder_due ON approvals (reminder_at) WHERE state = 1 AND reminder_at > 0 AND reminded_at = 0;
-- The list order: PENDING first, then the rest, each in creation order.
CREATE INDEX approvals_list ON approvals ((state <> 1), seq);
CREATE INDEX approvals_task ON approvals (task_id) WHERE task_id <> '';

-- A gated task names its request; while approval_pending is set,
-- dependency promotion passes it over.
ALTER TABLE tasks ADD COLUMN approval_id TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN approval_pending INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE tasks DROP COLUMN approval_pending;
ALTER TABLE tasks DROP COLUMN approval_id;
DROP TABLE approvals;
