-- The maintenance switch (runbook §11.2): one row, kept across restarts.

-- +goose Up
CREATE TABLE maintenance (
    id           integer     PRIMARY KEY CHECK (id = 1),
    active       boolean     NOT NULL DEFAULT false,
    reason       text        NOT NULL DEFAULT '',
    started_at   timestamptz,
    started_by   text        NOT NULL DEFAULT '',
    -- Whether the start paused the queue, so the end resumes it.
    paused_queue boolean     NOT NULL DEFAULT false
);
INSERT INTO maintenance (id) VALUES (1);

-- +goose Down
DROP TABLE maintenance;
