-- Identity and audit. Roles are text (operator, agent, sidecar); an unset
-- time is NULL.

-- +goose Up
-- Bearer tokens. Only the SHA-256 of a secret is kept: the secret is shown
-- once, at creation, and never written anywhere by the control plane.
CREATE TABLE tokens (
    -- seq is the creation order: the list cursor.
    seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text        NOT NULL UNIQUE,
    hash         text        NOT NULL UNIQUE,
    role         text        NOT NULL CHECK (role IN ('operator', 'agent', 'sidecar')),
    subject      text        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    created_by   text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

-- The audit log: append-only, read newest first.
CREATE TABLE audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time        timestamptz NOT NULL,
    who         text        NOT NULL,
    role        text        NOT NULL,
    token_id    text        NOT NULL,
    rpc         text        NOT NULL,
    target      text        NOT NULL DEFAULT '',
    before_json text        NOT NULL DEFAULT '',
    after_json  text        NOT NULL DEFAULT '',
    trace_id    text        NOT NULL DEFAULT '',
    outcome     text        NOT NULL,
    detail      text        NOT NULL DEFAULT ''
);
-- "What did X do": by subject or by token, newest first.
CREATE INDEX audit_log_who ON audit_log (who, id);
CREATE INDEX audit_log_token ON audit_log (token_id, id);
-- "What happened since": a time window.
CREATE INDEX audit_log_time ON audit_log (time);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE tokens;
