-- The lease a completion or failure ended: its holder and token. A repeat
-- of that call by the same holder with the same token (its reply was lost)
-- is answered as the first call was instead of as a stale lease.

-- +goose Up
ALTER TABLE tasks ADD COLUMN ended_holder TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN ended_token INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE tasks DROP COLUMN ended_token;
ALTER TABLE tasks DROP COLUMN ended_holder;
