-- Approval requests (runbook §9) and the link from a gated task to its
-- request. States are store.ApprovalState values (PENDING 1, APPROVED 2,
-- REJECTED 3, MODIFIED 4, EXPIRED 5); decisions are store.ApprovalDecision
-- values (APPROVE 1, REJECT 2, MODIFY 3); an unset time is NULL.

-- +goose Up
CREATE TABLE approvals (
    -- seq is the creation order: the list order within a group and the
    -- list cursor.
    seq                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                 text        NOT NULL UNIQUE,
    what               text        NOT NULL,
    why                text        NOT NULL DEFAULT '',
    agent              text        NOT NULL,
    risk               smallint    NOT NULL DEFAULT 0,
    tier               integer     NOT NULL DEFAULT 0,
    kind               text        NOT NULL DEFAULT '',
    payload_json       text        NOT NULL DEFAULT '',
    payload_sha256     text        NOT NULL DEFAULT '',
    deadline           timestamptz NOT NULL,
    default_on_timeout smallint    NOT NULL,
    task_id            text        NOT NULL DEFAULT '',
    reminder_at        timestamptz,
    state              smallint    NOT NULL CHECK (state BETWEEN 1 AND 5),
    auto_approved      boolean     NOT NULL DEFAULT false,
    outcome            smallint    NOT NULL DEFAULT 0,
    decided_by         text        NOT NULL DEFAULT '',
    decided_at         timestamptz,
    reason             text        NOT NULL DEFAULT '',
    instructions       text        NOT NULL DEFAULT '',
    reminded_at        timestamptz,
    created_at         timestamptz NOT NULL
);

-- The sweeper: PENDING requests by deadline, and reminders not yet sent.
CREATE INDEX approvals_pending_deadline ON approvals (deadline) WHERE state = 1;
CREATE INDEX approvals_reminder_due ON approvals (reminder_at) WHERE state = 1 AND reminded_at IS NULL;
-- The list order: PENDING first, then the rest, each in creation order.
CREATE INDEX approvals_list ON approvals ((state <> 1), seq);
CREATE INDEX approvals_task ON approvals (task_id) WHERE task_id <> '';

-- A gated task names its request; while approval_pending is set,
-- dependency promotion passes it over.
ALTER TABLE tasks ADD COLUMN approval_id text NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN approval_pending boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE tasks DROP COLUMN approval_pending;
ALTER TABLE tasks DROP COLUMN approval_id;
DROP TABLE approvals;
