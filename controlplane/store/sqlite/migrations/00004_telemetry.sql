-- Telemetry history: downsampled past readings of each host, pruned by age.
-- Times are INTEGER unix nanoseconds.

-- +goose Up
-- One row per stored reading. reading is the telemetry as JSON, kept
-- opaque so the reading's shape can grow without a migration.
CREATE TABLE telemetry_samples (
    seq     INTEGER PRIMARY KEY,
    host    TEXT    NOT NULL,
    time    INTEGER NOT NULL,
    reading TEXT    NOT NULL
);
-- A host's history over a window.
CREATE INDEX telemetry_samples_host_time ON telemetry_samples (host, time);
-- The retention sweep deletes by age across hosts.
CREATE INDEX telemetry_samples_time ON telemetry_samples (time);

-- +goose Down
DROP TABLE telemetry_samples;
