-- Times are Unix milliseconds (UTC). Codes are stored only as argon2id PHC strings.

-- Per phone, across purposes and verifications: the consecutive failed checks and the lock.
CREATE TABLE phone_state (
    phone           TEXT PRIMARY KEY,                         -- E.164
    failed_attempts INTEGER NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    locked_until    INTEGER,
    updated_at      INTEGER NOT NULL
) STRICT;

-- One pending verification per (phone, purpose); a resend adds a code to it.
CREATE TABLE verifications (
    id           TEXT PRIMARY KEY,                            -- UUIDv7
    phone        TEXT NOT NULL REFERENCES phone_state (phone),
    purpose      TEXT NOT NULL CHECK (purpose IN ('login', 'signup', 'reauth', 'change_phone')),
    status       TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'expired')),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,                            -- the latest expiry of its codes
    last_sent_at INTEGER NOT NULL,
    approved_at  INTEGER
) STRICT;

CREATE UNIQUE INDEX verifications_one_pending ON verifications (phone, purpose) WHERE status = 'pending';
CREATE INDEX verifications_by_phone ON verifications (phone, purpose, created_at);

CREATE TABLE codes (
    id                  INTEGER PRIMARY KEY,
    verification_id     TEXT NOT NULL REFERENCES verifications (id),
    phone               TEXT NOT NULL,                        -- denormalised for the send caps
    channel             TEXT NOT NULL CHECK (channel IN ('sms', 'supervisor')),
    code_hash           TEXT NOT NULL CHECK (code_hash LIKE '$argon2id$%'),
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    delivery            TEXT NOT NULL CHECK (delivery IN ('pending', 'delivered', 'failed')),
    provider_message_id TEXT,
    revoked_at          INTEGER
) STRICT;

CREATE INDEX codes_by_verification ON codes (verification_id);
CREATE INDEX codes_sms_by_phone ON codes (phone, created_at) WHERE channel = 'sms';
