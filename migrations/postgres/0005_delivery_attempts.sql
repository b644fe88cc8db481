-- Each channel's attempt to carry a code (AlimTalk, then SMS, …) and what the carrier later reported for it.
-- A code row says which channel carried it.
ALTER TABLE codes ADD COLUMN delivered_by text CHECK (delivered_by IN ('alimtalk', 'sms'));

CREATE TABLE delivery_attempts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code_id        bigint NOT NULL REFERENCES codes (id) ON DELETE CASCADE,
    channel        text NOT NULL CHECK (channel IN ('alimtalk', 'sms')),
    gateway        text NOT NULL,                              -- nhn-alimtalk, nhn-sms, sens, solapi, http, …
    attempted_at   timestamptz NOT NULL,
    outcome        text NOT NULL CHECK (outcome IN ('accepted', 'refused', 'failed', 'unconfirmed')),
    provider_id    text,                                       -- the provider's message or request id
    receipt        text CHECK (receipt IN ('delivered', 'failed')),
    receipt_at     timestamptz,                                -- when the carrier delivered or gave up
    receipt_code   text                                        -- the provider's result code for a failure
);

CREATE INDEX delivery_attempts_by_code ON delivery_attempts (code_id);
CREATE INDEX delivery_attempts_by_provider_id ON delivery_attempts (gateway, provider_id) WHERE provider_id IS NOT NULL;
