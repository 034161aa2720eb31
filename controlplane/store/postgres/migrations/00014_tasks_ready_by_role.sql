-- READY tasks in claim order within each role. A claim walks only the
-- roles it may take (and the empty role, which every agent may), so a
-- backlog of another role, however deep, costs it nothing; walking one
-- index in claim order and checking each row's role did.

-- +goose Up
CREATE INDEX tasks_ready_role ON tasks (role, priority DESC, seq) WHERE state = 2;
DROP INDEX tasks_ready;

-- +goose Down
CREATE INDEX tasks_ready ON tasks (priority DESC, seq) WHERE state = 2;
DROP INDEX tasks_ready_role;
