-- Scheduled backups (runbook §7.1, §11.3): one row per attempt, so every
-- replica sees when the last good backup was.

-- +goose Up
CREATE TABLE backup_runs (
    id          text        PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    path        text        NOT NULL DEFAULT '',
    bytes       bigint      NOT NULL DEFAULT 0,
    verified    boolean     NOT NULL DEFAULT false,
    error       text        NOT NULL DEFAULT '',
    removed_at  timestamptz
);
CREATE INDEX backup_runs_by_start ON backup_runs (started_at DESC, id DESC);

-- +goose Down
DROP TABLE backup_runs;
