-- A claim counts the leases its agent already holds, to cap them
-- (queue.Config.MaxLeasesPerAgent). Without an index on the holder that
-- count read every IN_PROGRESS task on every claim; this makes it one
-- probe of the agent's own leases. The second condition (every lease has
-- a holder) keeps the index out of the plans of other IN_PROGRESS lookups,
-- such as the oldest claim's, which tasks_claimed_since serves.

-- +goose Up
CREATE INDEX tasks_held_by ON tasks (lease_holder) WHERE state = 3 AND lease_holder <> '';

-- +goose Down
DROP INDEX tasks_held_by;
