-- Repeated identical refusals share one audit row: count is how many calls
-- it stands for, time the first and last_seen the last of them. Retention
-- deletes by last_seen.

-- +goose Up
ALTER TABLE audit_log ADD COLUMN count bigint NOT NULL DEFAULT 1,
    ADD COLUMN last_seen timestamptz;
UPDATE audit_log SET last_seen = time;
ALTER TABLE audit_log ALTER COLUMN last_seen SET NOT NULL;
CREATE INDEX audit_log_last_seen ON audit_log (last_seen);

-- +goose Down
DROP INDEX audit_log_last_seen;
ALTER TABLE audit_log DROP COLUMN last_seen, DROP COLUMN count;
