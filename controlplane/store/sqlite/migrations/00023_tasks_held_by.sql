-- A claim counts the leases its agent already holds, to cap them
-- (queue.Config.MaxLeasesPerAgent). Without an index on the holder that
-- count read every IN_PROGRESS task on every claim; this makes it one
-- probe of the agent's own leases.

-- +goose Up
CREATE INDEX tasks_held_by ON tasks (lease_holder) WHERE state = 3;

-- +goose Down
DROP INDEX tasks_held_by;
