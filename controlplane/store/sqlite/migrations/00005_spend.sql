-- The spend ledger: events recorded once by id, day rollups kept in the
-- same transaction, budgets, reservations, alerts raised and the emergency
-- stop. Times are INTEGER unix nanoseconds; days are 'YYYY-MM-DD' in the
-- control plane's configured zone, computed by the caller; money is
-- INTEGER micro-dollars.

-- +goose Up
-- One row per LLM call (or infrastructure charge). The id is the
-- reporter's, so a retried or replayed report inserts nothing.
CREATE TABLE spend_events (
    id               TEXT    PRIMARY KEY,
    agent            TEXT    NOT NULL,
    host             TEXT    NOT NULL DEFAULT '',
    model            TEXT    NOT NULL,
    provider         TEXT    NOT NULL DEFAULT '',
    tier             TEXT    NOT NULL,
    input_tokens     INTEGER NOT NULL DEFAULT 0,
    output_tokens    INTEGER NOT NULL DEFAULT 0,
    cost_micros      INTEGER NOT NULL,
    priced_by_server INTEGER NOT NULL DEFAULT 0,
    task_id          TEXT    NOT NULL DEFAULT '',
    occurred_at      INTEGER NOT NULL,
    day              TEXT    NOT NULL,
    recorded_at      INTEGER NOT NULL
) WITHOUT ROWID;

-- Per day sums by dimension (total, agent, model, provider, tier, task and
-- the composites agent/x and tier/x): reports read only these, so a
-- month's report costs the same at ten events or ten million.
CREATE TABLE spend_daily (
    dimension     TEXT    NOT NULL,
    day           TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    cost_micros   INTEGER NOT NULL DEFAULT 0,
    events        INTEGER NOT NULL DEFAULT 0,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dimension, day, key)
) WITHOUT ROWID;

-- Daily limits per scope; a scope without a row takes the defaults.
CREATE TABLE budgets (
    scope            TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    target_micros    INTEGER NOT NULL DEFAULT 0,
    alert_micros     INTEGER NOT NULL DEFAULT 0,
    cap_micros       INTEGER NOT NULL DEFAULT 0,
    emergency_micros INTEGER NOT NULL DEFAULT 0,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;

-- Estimates held against the caps until settled or expired.
CREATE TABLE spend_reservations (
    id              TEXT    PRIMARY KEY,
    agent           TEXT    NOT NULL,
    tier            TEXT    NOT NULL,
    model           TEXT    NOT NULL DEFAULT '',
    task_id         TEXT    NOT NULL DEFAULT '',
    estimate_micros INTEGER NOT NULL,
    day             TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX spend_reservations_day ON spend_reservations (day, expires_at);
CREATE INDEX spend_reservations_expires ON spend_reservations (expires_at);

-- An alert threshold crossed: the key makes it once per day per scope.
CREATE TABLE spend_alerts (
    day              TEXT    NOT NULL,
    scope            TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    threshold_micros INTEGER NOT NULL,
    spent_micros     INTEGER NOT NULL,
    raised_at        INTEGER NOT NULL,
    PRIMARY KEY (day, scope, key)
);

-- The emergency stop, one row, so it survives restarts; only a rearm
-- clears it.
CREATE TABLE emergency_stop (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    stopped      INTEGER NOT NULL DEFAULT 0,
    reason       TEXT    NOT NULL DEFAULT '',
    stopped_by   TEXT    NOT NULL DEFAULT '',
    stopped_at   INTEGER NOT NULL DEFAULT 0,
    paused_queue INTEGER NOT NULL DEFAULT 0,
    paused_tasks INTEGER NOT NULL DEFAULT 0
);
INSERT INTO emergency_stop (id) VALUES (1);

-- +goose Down
DROP TABLE emergency_stop;
DROP TABLE spend_alerts;
DROP TABLE spend_reservations;
DROP TABLE budgets;
DROP TABLE spend_daily;
DROP TABLE spend_events;
