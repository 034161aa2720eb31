-- Alert instances and silences: what fires, what an operator acked, what
-- is muted, kept so that they survive a restart and a failover.
-- Times are INTEGER unix nanoseconds, 0 for unset.

-- +goose Up
-- One row per instance of a rule, keyed by the fingerprint of its labels.
-- id changes with each new occurrence, so an ack names one occurrence.
CREATE TABLE alerts (
    rule             TEXT    NOT NULL,
    fingerprint      TEXT    NOT NULL,
    id               TEXT    NOT NULL UNIQUE,
    -- labels is a JSON object of strings.
    labels           TEXT    NOT NULL DEFAULT '{}',
    state            TEXT    NOT NULL,
    severity         TEXT    NOT NULL DEFAULT '',
    summary          TEXT    NOT NULL DEFAULT '',
    value            REAL    NOT NULL DEFAULT 0,
    active_since     INTEGER NOT NULL DEFAULT 0,
    fired_at         INTEGER NOT NULL DEFAULT 0,
    resolved_at      INTEGER NOT NULL DEFAULT 0,
    last_notified_at INTEGER NOT NULL DEFAULT 0,
    acked_by         TEXT    NOT NULL DEFAULT '',
    acked_at         INTEGER NOT NULL DEFAULT 0,
    updated_at       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (rule, fingerprint)
);
-- The retention sweep deletes resolved alerts by age.
CREATE INDEX alerts_state_resolved ON alerts (state, resolved_at);

CREATE TABLE silences (
    id         TEXT    PRIMARY KEY,
    rule       TEXT    NOT NULL,
    -- matchers is a JSON object of strings: labels an alert must carry.
    matchers   TEXT    NOT NULL DEFAULT '{}',
    created_by TEXT    NOT NULL,
    reason     TEXT    NOT NULL DEFAULT '',
    starts_at  INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX silences_ends_at ON silences (ends_at);

-- +goose Down
DROP TABLE silences;
DROP TABLE alerts;
