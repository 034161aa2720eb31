-- The spend ledger: events recorded once by id, day rollups kept in the
-- same transaction, budgets, reservations, alerts raised and the emergency
-- stop. Days are 'YYYY-MM-DD' in the control plane's configured zone,
-- computed by the caller; money is bigint micro-dollars.

-- +goose Up
-- One row per LLM call (or infrastructure charge). The id is the
-- reporter's, so a retried or replayed report inserts nothing.
CREATE TABLE spend_events (
    id               text        PRIMARY KEY,
    agent            text        NOT NULL,
    host             text        NOT NULL DEFAULT '',
    model            text        NOT NULL,
    provider         text        NOT NULL DEFAULT '',
    tier             text        NOT NULL,
    input_tokens     bigint      NOT NULL DEFAULT 0,
    output_tokens    bigint      NOT NULL DEFAULT 0,
    cost_micros      bigint      NOT NULL,
    priced_by_server boolean     NOT NULL DEFAULT false,
    task_id          text        NOT NULL DEFAULT '',
    occurred_at      timestamptz NOT NULL,
    day              text        NOT NULL,
    recorded_at      timestamptz NOT NULL
);

-- Per day sums by dimension (total, agent, model, provider, tier, task and
-- the composites agent/x and tier/x): reports read only these, so a
-- month's report costs the same at ten events or ten million.
CREATE TABLE spend_daily (
    dimension     text   NOT NULL,
    day           text   NOT NULL,
    key           text   NOT NULL,
    cost_micros   bigint NOT NULL DEFAULT 0,
    events        bigint NOT NULL DEFAULT 0,
    input_tokens  bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (dimension, day, key)
);

-- Daily limits per scope; a scope without a row takes the defaults.
CREATE TABLE budgets (
    scope            text        NOT NULL,
    key              text        NOT NULL,
    target_micros    bigint      NOT NULL DEFAULT 0,
    alert_micros     bigint      NOT NULL DEFAULT 0,
    cap_micros       bigint      NOT NULL DEFAULT 0,
    emergency_micros bigint      NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);

-- Estimates held against the caps until settled or expired.
CREATE TABLE spend_reservations (
    id              text        PRIMARY KEY,
    agent           text        NOT NULL,
    tier            text        NOT NULL,
    model           text        NOT NULL DEFAULT '',
    task_id         text        NOT NULL DEFAULT '',
    estimate_micros bigint      NOT NULL,
    day             text        NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL
);
CREATE INDEX spend_reservations_day ON spend_reservations (day, expires_at);
CREATE INDEX spend_reservations_expires ON spend_reservations (expires_at);

-- An alert threshold crossed: the key makes it once per day per scope.
CREATE TABLE spend_alerts (
    day              text        NOT NULL,
    scope            text        NOT NULL,
    key              text        NOT NULL,
    threshold_micros bigint      NOT NULL,
    spent_micros     bigint      NOT NULL,
    raised_at        timestamptz NOT NULL,
    PRIMARY KEY (day, scope, key)
);

-- The emergency stop, one row, so it survives restarts; only a rearm
-- clears it.
CREATE TABLE emergency_stop (
    id           integer     PRIMARY KEY CHECK (id = 1),
    stopped      boolean     NOT NULL DEFAULT false,
    reason       text        NOT NULL DEFAULT '',
    stopped_by   text        NOT NULL DEFAULT '',
    stopped_at   timestamptz,
    paused_queue boolean     NOT NULL DEFAULT false,
    paused_tasks bigint      NOT NULL DEFAULT 0
);
INSERT INTO emergency_stop (id) VALUES (1);

-- +goose Down
DROP TABLE emergency_stop;
DROP TABLE spend_alerts;
DROP TABLE spend_reservations;
DROP TABLE budgets;
DROP TABLE spend_daily;
DROP TABLE spend_events;
