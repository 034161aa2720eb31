-- Queue stats name the oldest READY and IN_PROGRESS task. Without an index
-- on those times, each look read every such task's row: 30 ms with 25,000
-- READY tasks, on every status call, console overview and health check.
-- These make it one index probe each.

-- +goose Up
CREATE INDEX tasks_ready_since ON tasks (state_changed_at) WHERE state = 2;
CREATE INDEX tasks_claimed_since ON tasks (claimed_at) WHERE state = 3;

-- +goose Down
DROP INDEX tasks_claimed_since;
DROP INDEX tasks_ready_since;
