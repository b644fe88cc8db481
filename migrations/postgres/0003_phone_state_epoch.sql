-- Bumped whenever the failure count is reset (approval, unlock, an expired lock), so that releasing an attempt
-- reserved before a reset cannot undo what came after it.
ALTER TABLE phone_state ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
