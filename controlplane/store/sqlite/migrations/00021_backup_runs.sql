-- Scheduled backups (runbook §7.1, §11.3): one row per attempt, so every
-- replica sees when the last good backup was. Times are INTEGER unix
-- nanoseconds, 0 when unset.

-- +goose Up
CREATE TABLE backup_runs (
    id          TEXT    PRIMARY KEY,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL DEFAULT 0,
    path        TEXT    NOT NULL DEFAULT '',
    bytes       INTEGER NOT NULL DEFAULT 0,
    verified    INTEGER NOT NULL DEFAULT 0,
    error       TEXT    NOT NULL DEFAULT '',
    removed_at  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX backup_runs_by_start ON backup_runs (started_at DESC, id DESC);

-- +goose Down
DROP TABLE backup_runs;
