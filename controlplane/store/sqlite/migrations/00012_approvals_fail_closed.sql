-- Approvals fail closed: a request that waits for a person is denied by
-- silence. Requests stored before that rule may carry an agent-chosen
-- default of APPROVE (1); from now on every PENDING request defaults to
-- REJECT (2), so an upgrade cannot let an old request approve itself.

-- +goose Up
UPDATE approvals SET default_on_timeout = 2 WHERE state = 1 AND default_on_timeout = 1;

-- +goose Down
SELECT 1;
