-- Selective pauses (PauseQueue with a filter): each pause is a row of
-- queue_pauses, and each task it moved to PAUSED a row of task_pauses. A
-- task that leaves PAUSED (an operator moved it) is no longer held: the
-- trigger drops its row, so resuming the pause leaves it alone.

-- +goose Up
CREATE TABLE queue_pauses (
    id         TEXT    PRIMARY KEY,
    reason     TEXT    NOT NULL DEFAULT '',
    filter     TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);

CREATE TABLE task_pauses (
    task_id  TEXT NOT NULL PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    pause_id TEXT NOT NULL REFERENCES queue_pauses (id) ON DELETE CASCADE
);
CREATE INDEX task_pauses_pause ON task_pauses (pause_id);

-- +goose StatementBegin
CREATE TRIGGER task_pauses_release AFTER UPDATE OF state ON tasks
WHEN OLD.state = 7 AND NEW.state <> 7 BEGIN
    DELETE FROM task_pauses WHERE task_id = NEW.id;
END;
-- +goose StatementEnd

-- +goose Down
DROP TRIGGER task_pauses_release;
DROP TABLE task_pauses;
DROP TABLE queue_pauses;
