-- Supervisors (team leads, auditors, admins) and the hash-chained audit log.

CREATE TABLE supervisors (
    name        TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('supervisor', 'auditor', 'admin')),
    token_hash  TEXT NOT NULL UNIQUE,                        -- SHA-256 (hex) of the bearer token
    created_at  INTEGER NOT NULL,
    disabled_at INTEGER
) STRICT;

CREATE TABLE audit_events (
    seq             INTEGER PRIMARY KEY CHECK (seq > 0),     -- 1, 2, 3, … without gaps
    id              TEXT NOT NULL UNIQUE,
    at              INTEGER NOT NULL,
    actor_name      TEXT NOT NULL,
    actor_role      TEXT NOT NULL,
    action          TEXT NOT NULL,
    phone_masked    TEXT,
    phone_key       TEXT,                                    -- HMAC-SHA256 of the E.164 number
    ticket_id       TEXT,
    reason          TEXT,
    contact_channel TEXT,
    contact_matched INTEGER,
    outcome         TEXT NOT NULL CHECK (outcome IN ('granted', 'denied')),
    detail          TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL UNIQUE
) STRICT;

CREATE INDEX audit_by_actor ON audit_events (actor_name, action, at);
CREATE INDEX audit_by_phone ON audit_events (phone_key, at);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
