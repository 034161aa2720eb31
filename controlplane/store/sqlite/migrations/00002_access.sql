-- Identity and audit. Times are INTEGER unix nanoseconds, 0 when unset;
-- roles are text (operator, agent, sidecar).

-- +goose Up
-- Bearer tokens. Only the SHA-256 of a secret is kept: the secret is shown
-- once, at creation, and never written anywhere by the control plane.
CREATE TABLE tokens (
    -- seq is the creation order: the list cursor.
    seq          INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE,
    hash         TEXT    NOT NULL UNIQUE,
    role         TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    description  TEXT    NOT NULL DEFAULT '',
    created_by   TEXT    NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL DEFAULT 0,
    revoked_at   INTEGER NOT NULL DEFAULT 0,
    last_used_at INTEGER NOT NULL DEFAULT 0
);

-- The audit log: append-only, read newest first.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    time        INTEGER NOT NULL,
    who         TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    token_id    TEXT    NOT NULL,
    rpc         TEXT    NOT NULL,
    target      TEXT    NOT NULL DEFAULT '',
    before_json TEXT    NOT NULL DEFAULT '',
    after_json  TEXT    NOT NULL DEFAULT '',
    trace_id    TEXT    NOT NULL DEFAULT '',
    outcome     TEXT    NOT NULL,
    detail      TEXT    NOT NULL DEFAULT ''
);
-- "What did X do": by subject or by token, newest first.
CREATE INDEX audit_log_who ON audit_log (who, id);
CREATE INDEX audit_log_token ON audit_log (token_id, id);
-- "What happened since": a time window.
CREATE INDEX audit_log_time ON audit_log (time);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE tokens;
