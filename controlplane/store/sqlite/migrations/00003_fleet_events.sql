-- Fleet events that must not be lost (model swaps, log-watch counts).
-- Times are INTEGER unix nanoseconds.

-- +goose Up
-- One row per event. id is chosen by the sidecar and is the dedup key: a
-- sidecar replays its unacked events after a reconnect, and the insert
-- ignores an id it already holds.
CREATE TABLE fleet_events (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    host       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    time       INTEGER NOT NULL,
    -- attributes is a JSON object of strings.
    attributes TEXT    NOT NULL DEFAULT '{}'
);
-- The swap rate per host and "what happened on this host lately".
CREATE INDEX fleet_events_host_kind_time ON fleet_events (host, kind, time);
CREATE INDEX fleet_events_time ON fleet_events (time);

-- +goose Down
DROP TABLE fleet_events;
