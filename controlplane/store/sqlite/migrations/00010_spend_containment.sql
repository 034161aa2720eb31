-- Spend containment: event ids are the reporting agent's own (one agent
-- cannot take another's id), rollup sums stay exact integers below a
-- ceiling per agent and day, and an operator can void an event by
-- appending a reversal.

-- +goose Up
-- Events are keyed by (agent, id): the same id sent by two agents is two
-- events. SQLite cannot change a primary key in place, so the table is
-- rebuilt.
CREATE TABLE spend_events_v10 (
    agent            TEXT    NOT NULL,
    id               TEXT    NOT NULL,
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
    recorded_at      INTEGER NOT NULL,
    PRIMARY KEY (agent, id)
) WITHOUT ROWID;
INSERT INTO spend_events_v10 (agent, id, host, model, provider, tier, input_tokens, output_tokens, cost_micros,
    priced_by_server, task_id, occurred_at, day, recorded_at)
SELECT agent, id, host, model, provider, tier, input_tokens, output_tokens, cost_micros,
    priced_by_server, task_id, occurred_at, day, recorded_at FROM spend_events;
DROP TABLE spend_events;
ALTER TABLE spend_events_v10 RENAME TO spend_events;

-- The rollups refuse what SQLite would otherwise do silently: turn a sum
-- past the int64 range into a REAL. An addition that overflows yields a
-- REAL, which the integer checks reject, so the report fails and nothing
-- of it is kept. The agent ceiling (10^15 micro-dollars, $1,000,000,000 a
-- day, store.MaxAgentDayMicros) keeps one agent from filling the shared
-- rows (total, tier, model) that every other agent's report adds to.
-- Sums already past the range (stored as REAL before this version) are
-- clamped, so the checks hold for every row.
CREATE TABLE spend_daily_v10 (
    dimension     TEXT    NOT NULL,
    day           TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    cost_micros   INTEGER NOT NULL DEFAULT 0,
    events        INTEGER NOT NULL DEFAULT 0,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dimension, day, key),
    CONSTRAINT spend_daily_integer CHECK (typeof(cost_micros) = 'integer' AND typeof(events) = 'integer'
        AND typeof(input_tokens) = 'integer' AND typeof(output_tokens) = 'integer'),
    CONSTRAINT spend_daily_agent_ceiling CHECK (dimension <> 'agent' OR cost_micros <= 1000000000000000)
) WITHOUT ROWID;
INSERT INTO spend_daily_v10 (dimension, day, key, cost_micros, events, input_tokens, output_tokens)
SELECT dimension, day, key,
    CASE WHEN dimension = 'agent' THEN MIN(CAST(cost_micros AS INTEGER), 1000000000000000) ELSE CAST(cost_micros AS INTEGER) END,
    CAST(events AS INTEGER), CAST(input_tokens AS INTEGER), CAST(output_tokens AS INTEGER)
FROM spend_daily;
DROP TABLE spend_daily;
ALTER TABLE spend_daily_v10 RENAME TO spend_daily;

-- A void: the reversal of one event, appended by an operator. The event
-- stays in spend_events; its amounts are taken off the rollups of its day
-- when the void is stored, so reports, budgets and the emergency stop see
-- the net. The key makes a second void of the same event impossible.
CREATE TABLE spend_voids (
    agent         TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    day           TEXT    NOT NULL,
    cost_micros   INTEGER NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    reason        TEXT    NOT NULL,
    voided_by     TEXT    NOT NULL,
    voided_at     INTEGER NOT NULL,
    PRIMARY KEY (agent, event_id)
) WITHOUT ROWID;

-- +goose Down
DROP TABLE spend_voids;
CREATE TABLE spend_daily_v9 (
    dimension     TEXT    NOT NULL,
    day           TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    cost_micros   INTEGER NOT NULL DEFAULT 0,
    events        INTEGER NOT NULL DEFAULT 0,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dimension, day, key)
) WITHOUT ROWID;
INSERT INTO spend_daily_v9 SELECT dimension, day, key, cost_micros, events, input_tokens, output_tokens FROM spend_daily;
DROP TABLE spend_daily;
ALTER TABLE spend_daily_v9 RENAME TO spend_daily;
-- Ids were global before: of events sharing an id, the first agent's
-- (by name) is kept.
CREATE TABLE spend_events_v9 (
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
INSERT OR IGNORE INTO spend_events_v9 (id, agent, host, model, provider, tier, input_tokens, output_tokens, cost_micros,
    priced_by_server, task_id, occurred_at, day, recorded_at)
SELECT id, agent, host, model, provider, tier, input_tokens, output_tokens, cost_micros,
    priced_by_server, task_id, occurred_at, day, recorded_at FROM spend_events ORDER BY agent;
DROP TABLE spend_events;
ALTER TABLE spend_events_v9 RENAME TO spend_events;
