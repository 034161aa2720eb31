-- What an operator grants beyond a token's role: the task roles an agent
-- token may claim, and which host's sidecar may act for which agent.
-- Times are INTEGER unix nanoseconds.

-- +goose Up
-- A token's grant of task roles, sorted and comma-separated; '' grants
-- none and '*' every role. Agent tokens made before grants existed claimed
-- any role, so they keep '*' until an operator narrows it
-- (factory token grant).
ALTER TABLE tokens ADD COLUMN roles TEXT NOT NULL DEFAULT '';
UPDATE tokens SET roles = '*' WHERE role = 'agent';

-- Placements: the host an agent runs on, as an operator placed it. Its
-- sidecar may declare the agent and report its spend; no other may.
CREATE TABLE agent_placements (
    agent     TEXT    PRIMARY KEY,
    host      TEXT    NOT NULL,
    placed_by TEXT    NOT NULL DEFAULT '',
    placed_at INTEGER NOT NULL
);
-- "Which agents may this host declare": one query per Hello.
CREATE INDEX agent_placements_host ON agent_placements (host, agent);

-- +goose Down
DROP TABLE agent_placements;
ALTER TABLE tokens DROP COLUMN roles;
