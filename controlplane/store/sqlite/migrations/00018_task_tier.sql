-- Tasks name the spend tier their model calls use, so that a tier's cap
-- (or a tier turned off) keeps only that tier's tasks from being claimed
-- rather than every claim in the fleet. A task without a tier ('') is
-- never held back by a tier. A tier's budget can be turned off outright.

-- +goose Up
ALTER TABLE tasks ADD COLUMN tier TEXT NOT NULL DEFAULT '';
ALTER TABLE budgets ADD COLUMN off INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE budgets DROP COLUMN off;
ALTER TABLE tasks DROP COLUMN tier;
