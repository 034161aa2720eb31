-- Telemetry history: downsampled past readings of each host, pruned by age.

-- +goose Up
-- One row per stored reading. reading is the telemetry as JSON text, kept
-- opaque so the reading's shape can grow without a migration.
CREATE TABLE telemetry_samples (
    seq     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host    text        NOT NULL,
    time    timestamptz NOT NULL,
    reading text        NOT NULL
);
-- A host's history over a window.
CREATE INDEX telemetry_samples_host_time ON telemetry_samples (host, time);
-- The retention sweep deletes by age across hosts.
CREATE INDEX telemetry_samples_time ON telemetry_samples (time);

-- +goose Down
DROP TABLE telemetry_samples;
