-- The lease a completion or failure ended: its holder and token. A repeat
-- of that call by the same holder with the same token (its reply was lost)
-- is answered as the first call was instead of as a stale lease. Constant
-- defaults: adding the columns rewrites no rows.

-- +goose Up
ALTER TABLE tasks ADD COLUMN ended_holder text NOT NULL DEFAULT '',
    ADD COLUMN ended_token bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE tasks DROP COLUMN ended_token, DROP COLUMN ended_holder;
