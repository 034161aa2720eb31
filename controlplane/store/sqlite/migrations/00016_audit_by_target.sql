-- "What happened to X": one target's history (a task's, a token's, the
-- queue's), newest first, without walking the whole audit log.

-- +goose Up
CREATE INDEX audit_log_target ON audit_log (target, id);

-- +goose Down
DROP INDEX audit_log_target;
