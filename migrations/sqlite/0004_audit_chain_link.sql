-- How each audit event is sealed: 1 = plain SHA-256 (events written before keyed chains), 2 = HMAC-SHA256 under
-- the audit key, which the database never holds. A v1 event after a v2 one is a forgery; `otpd audit verify`
-- says so.
ALTER TABLE audit_events ADD COLUMN chain_link INTEGER NOT NULL DEFAULT 1 CHECK (chain_link IN (1, 2));
