-- Each channel's attempt to carry a code (AlimTalk, then SMS, …) and what the carrier later reported for it.
-- A code row says which channel carried it. Times are Unix milliseconds (UTC).
ALTER TABLE codes ADD COLUMN delivered_by TEXT CHECK (delivered_by IN ('alimtalk', 'sms'));

CREATE TABLE delivery_attempts (
    id             INTEGER PRIMARY KEY,
    code_id        INTEGER NOT NULL REFERENCES codes (id) ON DELETE CASCADE,
    channel        TEXT NOT NULL CHECK (channel IN ('alimtalk', 'sms')),
    gateway        TEXT NOT NULL,                              -- nhn-alimtalk, nhn-sms, sens, solapi, http, …
    attempted_at   INTEGER NOT NULL,
    outcome        TEXT NOT NULL CHECK (outcome IN ('accepted', 'refused', 'failed', 'unconfirmed')),
    provider_id    TEXT,                                       -- the provider's message or request id
    receipt        TEXT CHECK (receipt IN ('delivered', 'failed')),
    receipt_at     INTEGER,                                    -- when the carrier delivered or gave up
    receipt_code   TEXT                                        -- the provider's result code for a failure
) STRICT;

CREATE INDEX delivery_attempts_by_code ON delivery_attempts (code_id);
CREATE INDEX delivery_attempts_by_provider_id ON delivery_attempts (gateway, provider_id) WHERE provider_id IS NOT NULL;
