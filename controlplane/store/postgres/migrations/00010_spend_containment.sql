-- Spend containment: event ids are the reporting agent's own (one agent
-- cannot take another's id), rollup sums stay below a ceiling per agent and
-- day, and an operator can void an event by appending a reversal.

-- +goose Up
-- Events are keyed by (agent, id): the same id sent by two agents is two
-- events.
ALTER TABLE spend_events DROP CONSTRAINT spend_events_pkey;
ALTER TABLE spend_events ADD PRIMARY KEY (agent, id);

-- bigint arithmetic already refuses to overflow ("bigint out of range"),
-- failing the report that would. The agent ceiling (10^15 micro-dollars,
-- $1,000,000,000 a day, store.MaxAgentDayMicros) keeps one agent from
-- filling the shared rows (total, tier, model) every other agent's report
-- adds to. Sums already past it are clamped, so the check holds for every
-- row.
UPDATE spend_daily SET cost_micros = 1000000000000000 WHERE dimension = 'agent' AND cost_micros > 1000000000000000;
ALTER TABLE spend_daily ADD CONSTRAINT spend_daily_agent_ceiling
    CHECK (dimension <> 'agent' OR cost_micros <= 1000000000000000);

-- A void: the reversal of one event, appended by an operator. The event
-- stays in spend_events; its amounts are taken off the rollups of its day
-- when the void is stored, so reports, budgets and the emergency stop see
-- the net. The key makes a second void of the same event impossible.
CREATE TABLE spend_voids (
    agent         text        NOT NULL,
    event_id      text        NOT NULL,
    day           text        NOT NULL,
    cost_micros   bigint      NOT NULL,
    input_tokens  bigint      NOT NULL,
    output_tokens bigint      NOT NULL,
    reason        text        NOT NULL,
    voided_by     text        NOT NULL,
    voided_at     timestamptz NOT NULL,
    PRIMARY KEY (agent, event_id)
);

-- +goose Down
DROP TABLE spend_voids;
ALTER TABLE spend_daily DROP CONSTRAINT spend_daily_agent_ceiling;
-- Ids were global before: of events sharing an id, the first agent's (by
-- name) is kept.
DELETE FROM spend_events e USING spend_events f WHERE e.id = f.id AND e.agent > f.agent;
ALTER TABLE spend_events DROP CONSTRAINT spend_events_pkey;
ALTER TABLE spend_events ADD PRIMARY KEY (id);
