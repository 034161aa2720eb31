-- Selective pauses (PauseQueue with a filter): each pause is a row of
-- queue_pauses, and each task it moved to PAUSED a row of task_pauses. A
-- task that leaves PAUSED (an operator moved it) is no longer held: the
-- trigger drops its row, so resuming the pause leaves it alone.

-- +goose Up
CREATE TABLE queue_pauses (
    id         text        PRIMARY KEY,
    reason     text        NOT NULL DEFAULT '',
    filter     text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL
);

CREATE TABLE task_pauses (
    task_id  text NOT NULL PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    pause_id text NOT NULL REFERENCES queue_pauses (id) ON DELETE CASCADE
);
CREATE INDEX task_pauses_pause ON task_pauses (pause_id);

-- +goose StatementBegin
CREATE FUNCTION task_pauses_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_pauses WHERE task_id = NEW.id;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER task_pauses_release AFTER UPDATE OF state ON tasks
FOR EACH ROW WHEN (OLD.state = 7 AND NEW.state <> 7) EXECUTE FUNCTION task_pauses_release();

-- +goose Down
DROP TRIGGER task_pauses_release ON tasks;
DROP FUNCTION task_pauses_release();
DROP TABLE task_pauses;
DROP TABLE queue_pauses;
