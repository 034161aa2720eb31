-- Alert instances and silences: what fires, what an operator acked, what
-- is muted, kept so that they survive a restart and a failover between
-- replicas.

-- +goose Up
-- One row per instance of a rule, keyed by the fingerprint of its labels.
-- id changes with each new occurrence, so an ack names one occurrence.
CREATE TABLE alerts (
    rule             text             NOT NULL,
    fingerprint      text             NOT NULL,
    id               text             NOT NULL UNIQUE,
    labels           jsonb            NOT NULL DEFAULT '{}',
    state            text             NOT NULL,
    severity         text             NOT NULL DEFAULT '',
    summary          text             NOT NULL DEFAULT '',
    value            double precision NOT NULL DEFAULT 0,
    active_since     timestamptz,
    fired_at         timestamptz,
    resolved_at      timestamptz,
    last_notified_at timestamptz,
    acked_by         text             NOT NULL DEFAULT '',
    acked_at         timestamptz,
    updated_at       timestamptz,
    PRIMARY KEY (rule, fingerprint)
);
-- The retention sweep deletes resolved alerts by age.
CREATE INDEX alerts_state_resolved ON alerts (state, resolved_at);

CREATE TABLE silences (
    id         text        PRIMARY KEY,
    rule       text        NOT NULL,
    -- matchers are labels an alert must carry.
    matchers   jsonb       NOT NULL DEFAULT '{}',
    created_by text        NOT NULL,
    reason     text        NOT NULL DEFAULT '',
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX silences_ends_at ON silences (ends_at);

-- +goose Down
DROP TABLE silences;
DROP TABLE alerts;
