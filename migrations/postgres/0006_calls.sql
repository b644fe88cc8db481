-- Calls as the phone system reports them (docs/cti.md), agent ids on supervisors, and each lookup's evidence in
-- the audit log. Expand only: the previous release keeps working beside this one.

-- The state each call's latest events say. Forgotten by the hourly cleanup a day after its last event.
CREATE TABLE calls (
    call_id     text PRIMARY KEY,
    direction   text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    phone       text NOT NULL,                 -- E.164: the caller's number (inbound) or the number dialled
    agent_id    text NOT NULL,                 -- the agent of the latest `answered` (a transfer moves it)
    answered_at timestamptz,                   -- that `answered`'s time; NULL while only the end is known
    ended_at    timestamptz,                   -- the first `ended`; never cleared
    updated_at  timestamptz NOT NULL           -- when otpd last applied an event to it
);
CREATE INDEX calls_by_agent ON calls (agent_id) WHERE ended_at IS NULL;
CREATE INDEX calls_by_update ON calls (updated_at);

-- The notice each granted lookup sends the driver's number (never a code), with what became of it: the status
-- view shows it. Forgotten with the calls, a day later.
CREATE TABLE lookup_notices (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phone       text NOT NULL,                 -- E.164
    sent_at     timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('accepted', 'refused', 'failed', 'unconfirmed', 'not_sent')),
    gateway     text,                          -- the provider's API that answered, when one did
    provider_id text                           -- the provider's message id
);
CREATE INDEX lookup_notices_by_phone ON lookup_notices (phone, sent_at);

-- The phone system's agent id of a supervisor: at most one supervisor per agent id.
ALTER TABLE supervisors ADD COLUMN agent_id text;
CREATE UNIQUE INDEX supervisors_agent_id ON supervisors (agent_id);

-- What a lookup rested on: 'call' (with the call's id, direction and masked number) or 'typed'. Events that
-- carry it are sealed with link v3 (v2 plus these fields).
ALTER TABLE audit_events ADD COLUMN evidence text CHECK (evidence IN ('call', 'typed'));
ALTER TABLE audit_events ADD COLUMN call_id text;
ALTER TABLE audit_events ADD COLUMN call_direction text CHECK (call_direction IN ('inbound', 'outbound'));
ALTER TABLE audit_events ADD COLUMN call_number_masked text;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_chain_link_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_chain_link_check CHECK (chain_link IN (1, 2, 3));
