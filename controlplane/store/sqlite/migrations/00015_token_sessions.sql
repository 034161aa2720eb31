-- Console sessions: the operator console signs an operator in by making a
-- short-lived operator token, a session, from the token the operator
-- presented. A session must not outlive that token, so it names it, and
-- revoking a token revokes its sessions in the same transaction.

-- +goose Up
-- The id of the token this session was made from; '' for every token that
-- is not a session, which all tokens made before sessions existed are.
ALTER TABLE tokens ADD COLUMN session_of TEXT NOT NULL DEFAULT '';
-- A revoke finds the token's sessions here. Only sessions are indexed:
-- the other tokens, all of them '', would only fatten it.
CREATE INDEX tokens_session_of ON tokens (session_of) WHERE session_of <> '';

-- +goose Down
DROP INDEX tokens_session_of;
ALTER TABLE tokens DROP COLUMN session_of;
