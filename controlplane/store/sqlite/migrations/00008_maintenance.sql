-- The maintenance switch (runbook §11.2): one row, kept across restarts.
-- Times are INTEGER unix nanoseconds, 0 when unset.

-- +goose Up
CREATE TABLE maintenance (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    active       INTEGER NOT NULL DEFAULT 0,
    reason       TEXT    NOT NULL DEFAULT '',
    started_at   INTEGER NOT NULL DEFAULT 0,
    started_by   TEXT    NOT NULL DEFAULT '',
    -- Whether the start paused the queue, so the end resumes it.
    paused_queue INTEGER NOT NULL DEFAULT 0
);
INSERT INTO maintenance (id) VALUES (1);

-- +goose Down
DROP TABLE maintenance;
