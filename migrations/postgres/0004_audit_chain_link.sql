-- How each audit event is sealed: 1 = plain SHA-256 (events written before keyed chains), 2 = HMAC-SHA256 under
-- the audit key, which the database never holds. A v1 event after a v2 one is a forgery; `otpd audit verify`
-- says so.
ALTER TABLE audit_events ADD COLUMN chain_link smallint NOT NULL DEFAULT 1 CHECK (chain_link IN (1, 2));
-- Existing rows are v1; new ones must say how they are sealed. Without a default, a replica still running the
-- previous version fails its audit append (and so the supervisor call) instead of writing an unkeyed event after
-- keyed ones, which verify would report as a forgery.
ALTER TABLE audit_events ALTER COLUMN chain_link DROP DEFAULT;
