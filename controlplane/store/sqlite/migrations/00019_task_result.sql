-- A task's result: the JSON its holder completed it with, handed to the
-- tasks that depend on it when they are claimed (a pipeline's stages).

-- +goose Up
ALTER TABLE tasks ADD COLUMN result_json TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE tasks DROP COLUMN result_json;
