-- Supervisors (team leads, auditors, admins) and the hash-chained audit log.

CREATE TABLE supervisors (
    name        text PRIMARY KEY,
    role        text NOT NULL CHECK (role IN ('supervisor', 'auditor', 'admin')),
    token_hash  text NOT NULL UNIQUE,                        -- SHA-256 (hex) of the bearer token
    created_at  timestamptz NOT NULL,
    disabled_at timestamptz
);

CREATE TABLE audit_events (
    seq             bigint PRIMARY KEY CHECK (seq > 0),      -- 1, 2, 3, … without gaps
    id              uuid NOT NULL UNIQUE,
    at              timestamptz NOT NULL,
    actor_name      text NOT NULL,
    actor_role      text NOT NULL,
    action          text NOT NULL,
    phone_masked    text,
    phone_key       text,                                    -- HMAC-SHA256 of the E.164 number
    ticket_id       text,
    reason          text,
    contact_channel text,
    contact_matched boolean,
    outcome         text NOT NULL CHECK (outcome IN ('granted', 'denied')),
    detail          text NOT NULL,
    prev_hash       text NOT NULL,
    hash            text NOT NULL UNIQUE
);

CREATE INDEX audit_by_actor ON audit_events (actor_name, action, at);
CREATE INDEX audit_by_phone ON audit_events (phone_key, at);

-- Append-only: UPDATE, DELETE and TRUNCATE are rejected for every role while these triggers are enabled. The table
-- owner (or a superuser) can disable them; the hash chain is what reveals such changes (`otpd audit verify`).
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % rejected', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
