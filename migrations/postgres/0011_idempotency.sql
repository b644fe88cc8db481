-- Idempotency keys (issue 18 §3): the first SendCode or VerifyCode with an `idempotency-key` header claims its key
-- here before it acts, and keeps its outcome (the response, or the refusal with its details; never a code) for a
-- day, so that a retry on any replica answers that outcome instead of acting again. Expand only: a new table, which
-- the previous release never reads.
CREATE TABLE idempotency_keys (
    scope           text NOT NULL,                  -- the method and the caller (src/grpc/idempotency.rs)
    idem_key        text NOT NULL,                  -- the caller's key, 1-255 printable ASCII characters
    fingerprint     text NOT NULL,                  -- HMAC (pepper) of the parsed request: the same key, another request is refused
    token           uuid NOT NULL,                  -- the claim's owner: a takeover gives it a new one, fencing the old
    lease_until     timestamptz,                    -- while running: another replica may take over after it
    code_id         bigint,                         -- SendCode: the code issued, written before the SMS is handed over
    provisional     bytea,                          -- SendCode: the response that code would answer, for a takeover
    outcome_code    integer,                        -- NULL while running; 0 (OK) or the gRPC status code
    outcome_message text,
    outcome_body    bytea,                          -- the response message, or the status's details (google.rpc.Status)
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,           -- a day after the claim; purged with other expired rows
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
