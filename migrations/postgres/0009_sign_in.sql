-- Team leads' sign-in with a second factor (issue 17): each person's own phone and emergency e-mail, tokens of a
-- `service` kind for scripts, sessions, the codes and passkey ceremonies of sign-ins in progress, enrolled
-- passkeys, and the failure counts that lock a person's or an address's sign-in. Times are Unix milliseconds (UTC).
-- Expand only: the previous release keeps working beside this one (it ignores the new columns and tables).

ALTER TABLE supervisors ADD COLUMN kind text NOT NULL DEFAULT 'person' CHECK (kind IN ('person', 'service'));
ALTER TABLE supervisors ADD COLUMN phone text;          -- E.164: where sign-in codes go
ALTER TABLE supervisors ADD COLUMN email text;          -- the emergency e-mail address

-- A session: what a bearer `otpsess_…` token opens. Ended by sign-out, by disabling the person, or by time.
CREATE TABLE supervisor_sessions (
    id          uuid PRIMARY KEY,
    supervisor  text NOT NULL REFERENCES supervisors (name),
    token_hash  text NOT NULL UNIQUE,                   -- SHA-256 (hex) of the session token
    factor      text NOT NULL CHECK (factor IN ('passkey', 'phone_code', 'email_code')),
    created_at  timestamptz NOT NULL,
    idle_until  timestamptz NOT NULL,                       -- moved forward by each use
    expires_at  timestamptz NOT NULL,                       -- never moved
    ended_at    timestamptz,
    end_reason  text CHECK (end_reason IN ('signed_out', 'disabled', 'lifted'))
);
CREATE INDEX supervisor_sessions_live ON supervisor_sessions (supervisor) WHERE ended_at IS NULL;
CREATE INDEX supervisor_sessions_by_expiry ON supervisor_sessions (expires_at);

-- A sign-in or passkey enrolment in progress: a code's keyed hash, or a passkey ceremony's state.
CREATE TABLE sign_in_challenges (
    id          uuid PRIMARY KEY,
    supervisor  text NOT NULL REFERENCES supervisors (name),
    kind        text NOT NULL CHECK (kind IN ('passkey', 'phone_code', 'email_code', 'passkey_enrolment', 'enrolment_code')),
    secret_hash text,                                   -- HMAC of the code under a key derived from the pepper
    state       text,                                   -- the passkey ceremony's state (JSON)
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    wrong       integer NOT NULL DEFAULT 0,
    used_at     timestamptz
);
CREATE INDEX sign_in_challenges_by_supervisor ON sign_in_challenges (supervisor, kind, created_at);

-- Enrolled passkeys (WebAuthn credentials; the public key and counter as the relying-party library keeps them).
CREATE TABLE passkeys (
    id            uuid PRIMARY KEY,
    supervisor    text NOT NULL REFERENCES supervisors (name),
    credential_id text NOT NULL UNIQUE,                 -- base64url
    passkey       text NOT NULL,                        -- JSON
    label         text NOT NULL,
    created_at  timestamptz NOT NULL,
    last_used_at timestamptz
);
CREATE INDEX passkeys_by_supervisor ON passkeys (supervisor);

-- Failed sign-ins per person (`person:<name>`) and per client address (`address:<ip>`): the count within the
-- lock window, the lock, and the failures not yet in the audit log (one event per subject per minute).
CREATE TABLE sign_in_guards (
    subject         text PRIMARY KEY,
    failures        integer NOT NULL,
    last_failure_at timestamptz NOT NULL,
    locked_until    timestamptz,
    unaudited       integer NOT NULL DEFAULT 0,
    audited_at      timestamptz,
    to_audit        integer NOT NULL DEFAULT 0          -- what the last failure handed to the audit log
);
