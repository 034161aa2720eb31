-- Fleet events that must not be lost (model swaps, log-watch counts).

-- +goose Up
-- One row per event. id is chosen by the sidecar and is the dedup key: a
-- sidecar replays its unacked events after a reconnect, and the insert
-- ignores an id it already holds.
CREATE TABLE fleet_events (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         text        NOT NULL UNIQUE,
    host       text        NOT NULL,
    kind       text        NOT NULL,
    time       timestamptz NOT NULL,
    attributes jsonb       NOT NULL DEFAULT '{}'
);
-- The swap rate per host and "what happened on this host lately".
CREATE INDEX fleet_events_host_kind_time ON fleet_events (host, kind, time);
CREATE INDEX fleet_events_time ON fleet_events (time);

-- +goose Down
DROP TABLE fleet_events;
