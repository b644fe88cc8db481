-- Calls as the phone system reports them (docs/cti.md), agent ids on supervisors, and each lookup's evidence in
-- the audit log. Times are Unix milliseconds (UTC). Expand only: the previous release keeps working beside this
-- one.

-- The state each call's latest events say. Forgotten by the hourly cleanup a day after its last event.
CREATE TABLE calls (
    call_id     TEXT PRIMARY KEY,
    direction   TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    phone       TEXT NOT NULL,                 -- E.164: the caller's number (inbound) or the number dialled
    agent_id    TEXT NOT NULL,                 -- the agent of the latest `answered` (a transfer moves it)
    answered_at INTEGER,                       -- that `answered`'s time; NULL while only the end is known
    ended_at    INTEGER,                       -- the first `ended`; never cleared
    updated_at  INTEGER NOT NULL               -- when otpd last applied an event to it
) STRICT;
CREATE INDEX calls_by_agent ON calls (agent_id) WHERE ended_at IS NULL;
CREATE INDEX calls_by_update ON calls (updated_at);

-- The notice each granted lookup sends the driver's number (never a code), with what became of it: the status
-- view shows it. Forgotten with the calls, a day later.
CREATE TABLE lookup_notices (
    id          INTEGER PRIMARY KEY,
    phone       TEXT NOT NULL,                 -- E.164
    sent_at     INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('accepted', 'refused', 'failed', 'unconfirmed', 'not_sent')),
    gateway     TEXT,                          -- the provider's API that answered, when one did
    provider_id TEXT                           -- the provider's message id
) STRICT;
CREATE INDEX lookup_notices_by_phone ON lookup_notices (phone, sent_at);

-- The phone system's agent id of a supervisor: at most one supervisor per agent id.
ALTER TABLE supervisors ADD COLUMN agent_id TEXT;
CREATE UNIQUE INDEX supervisors_agent_id ON supervisors (agent_id);

-- What a lookup rested on: 'call' (with the call's id, direction and masked number) or 'typed'. Events that
-- carry it are sealed with link v3 (v2 plus these fields). SQLite cannot widen the CHECK on chain_link (1, 2) in
-- place, so the table is rebuilt with the same columns plus the new ones (SQLite's documented way to change a
-- constraint); the previous release reads and writes it as before.
CREATE TABLE audit_events_v3 (
    seq                INTEGER PRIMARY KEY CHECK (seq > 0),
    id                 TEXT NOT NULL UNIQUE,
    at                 INTEGER NOT NULL,
    actor_name         TEXT NOT NULL,
    actor_role         TEXT NOT NULL,
    action             TEXT NOT NULL,
    phone_masked       TEXT,
    phone_key          TEXT,
    ticket_id          TEXT,
    reason             TEXT,
    contact_channel    TEXT,
    contact_matched    INTEGER,
    outcome            TEXT NOT NULL CHECK (outcome IN ('granted', 'denied')),
    detail             TEXT NOT NULL,
    prev_hash          TEXT NOT NULL,
    hash               TEXT NOT NULL UNIQUE,
    chain_link         INTEGER NOT NULL DEFAULT 1 CHECK (chain_link IN (1, 2, 3)),
    evidence           TEXT CHECK (evidence IN ('call', 'typed')),
    call_id            TEXT,
    call_direction     TEXT CHECK (call_direction IN ('inbound', 'outbound')),
    call_number_masked TEXT
) STRICT;
INSERT INTO audit_events_v3 (seq, id, at, actor_name, actor_role, action, phone_masked, phone_key, ticket_id,
                             reason, contact_channel, contact_matched, outcome, detail, prev_hash, hash, chain_link)
SELECT seq, id, at, actor_name, actor_role, action, phone_masked, phone_key, ticket_id, reason, contact_channel,
       contact_matched, outcome, detail, prev_hash, hash, chain_link
FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_v3 RENAME TO audit_events;
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
