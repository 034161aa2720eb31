-- Repeated identical refusals share one audit row: count is how many calls
-- it stands for, time the first and last_seen the last of them. Retention
-- deletes by last_seen. Times are INTEGER unix nanoseconds.

-- +goose Up
ALTER TABLE audit_log ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit_log ADD COLUMN last_seen INTEGER NOT NULL DEFAULT 0;
UPDATE audit_log SET last_seen = time;
CREATE INDEX audit_log_last_seen ON audit_log (last_seen);

-- +goose Down
DROP INDEX audit_log_last_seen;
ALTER TABLE audit_log DROP COLUMN last_seen;
ALTER TABLE audit_log DROP COLUMN count;
