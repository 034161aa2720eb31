-- READY tasks in claim order within each role. A claim walks only the
-- roles it may take (and the empty role, which every agent may), so a
-- backlog of another role, however deep, costs it nothing; walking one
-- index in claim order and checking each row's role did.
--
-- tasks_ready_run_after keeps only the READY tasks that wait for a time
-- (run_after 0 is "at once"): every claim and creation of one that does
-- not wait then skips an index write, as PostgreSQL's (run_after IS NOT
-- NULL) already does.

-- +goose Up
CREATE INDEX tasks_ready_role ON tasks (role, priority DESC, seq) WHERE state = 2;
DROP INDEX tasks_ready;
DROP INDEX tasks_ready_run_after;
CREATE INDEX tasks_ready_run_after ON tasks (run_after) WHERE state = 2 AND run_after > 0;

-- +goose Down
DROP INDEX tasks_ready_run_after;
CREATE INDEX tasks_ready_run_after ON tasks (run_after) WHERE state = 2;
CREATE INDEX tasks_ready ON tasks (priority DESC, seq) WHERE state = 2;
DROP INDEX tasks_ready_role;
