-- Codes are stored only as argon2id PHC strings.

-- Per phone, across purposes and verifications: the consecutive failed checks and the lock.
CREATE TABLE phone_state (
    phone           text PRIMARY KEY,                         -- E.164
    failed_attempts integer NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    locked_until    timestamptz,
    updated_at      timestamptz NOT NULL
);

-- One pending verification per (phone, purpose); a resend adds a code to it.
CREATE TABLE verifications (
    id           uuid PRIMARY KEY,                            -- UUIDv7
    phone        text NOT NULL REFERENCES phone_state (phone),
    purpose      text NOT NULL CHECK (purpose IN ('login', 'signup', 'reauth', 'change_phone')),
    status       text NOT NULL CHECK (status IN ('pending', 'approved', 'expired')),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,                        -- the latest expiry of its codes
    last_sent_at timestamptz NOT NULL,
    approved_at  timestamptz
);

CREATE UNIQUE INDEX verifications_one_pending ON verifications (phone, purpose) WHERE status = 'pending';
CREATE INDEX verifications_by_phone ON verifications (phone, purpose, created_at);

CREATE TABLE codes (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    verification_id     uuid NOT NULL REFERENCES verifications (id),
    phone               text NOT NULL,                        -- denormalised for the send caps
    channel             text NOT NULL CHECK (channel IN ('sms', 'supervisor')),
    code_hash           text NOT NULL CHECK (code_hash LIKE '$argon2id$%'),
    created_at          timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    delivery            text NOT NULL CHECK (delivery IN ('pending', 'delivered', 'failed')),
    provider_message_id text,
    revoked_at          timestamptz
);

CREATE INDEX codes_by_verification ON codes (verification_id);
CREATE INDEX codes_sms_by_phone ON codes (phone, created_at) WHERE channel = 'sms';
