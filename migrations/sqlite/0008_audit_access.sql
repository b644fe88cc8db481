-- Where each supervisor call came from, in its audit events (개인정보의 안전성 확보조치 기준 제8조): the client
-- address (through --trusted-proxies), the mutual-TLS client certificate's subject and SHA-256 fingerprint, the
-- sign-in session and, for console calls, the browser's user agent. Events that carry any of them are sealed with
-- link v4 (v3 plus these fields). SQLite cannot widen the CHECK on chain_link (1, 2, 3) in place, so the table is
-- rebuilt with the same columns plus the new ones, as 0006 did; the previous release reads and writes it as before.
CREATE TABLE audit_events_v4 (
    seq                 INTEGER PRIMARY KEY CHECK (seq > 0),
    id                  TEXT NOT NULL UNIQUE,
    at                  INTEGER NOT NULL,
    actor_name          TEXT NOT NULL,
    actor_role          TEXT NOT NULL,
    action              TEXT NOT NULL,
    phone_masked        TEXT,
    phone_key           TEXT,
    ticket_id           TEXT,
    reason              TEXT,
    contact_channel     TEXT,
    contact_matched     INTEGER,
    outcome             TEXT NOT NULL CHECK (outcome IN ('granted', 'denied')),
    detail              TEXT NOT NULL,
    prev_hash           TEXT NOT NULL,
    hash                TEXT NOT NULL UNIQUE,
    chain_link          INTEGER NOT NULL DEFAULT 1 CHECK (chain_link IN (1, 2, 3, 4)),
    evidence            TEXT CHECK (evidence IN ('call', 'typed')),
    call_id             TEXT,
    call_direction      TEXT CHECK (call_direction IN ('inbound', 'outbound')),
    call_number_masked  TEXT,
    client_address      TEXT,
    client_cert_subject TEXT,
    client_cert_sha256  TEXT CHECK (length(client_cert_sha256) = 64),
    session_id          TEXT,
    user_agent          TEXT CHECK (length(user_agent) <= 256)
) STRICT;
INSERT INTO audit_events_v4 (seq, id, at, actor_name, actor_role, action, phone_masked, phone_key, ticket_id,
                             reason, contact_channel, contact_matched, outcome, detail, prev_hash, hash, chain_link,
                             evidence, call_id, call_direction, call_number_masked)
SELECT seq, id, at, actor_name, actor_role, action, phone_masked, phone_key, ticket_id, reason, contact_channel,
       contact_matched, outcome, detail, prev_hash, hash, chain_link, evidence, call_id, call_direction,
       call_number_masked
FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_v4 RENAME TO audit_events;
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
