-- Idempotency keys (issue 18 §3): the first SendCode or VerifyCode with an `idempotency-key` header claims its key
-- here before it acts, and keeps its outcome (the response, or the refusal with its details; never a code) for a
-- day, so that a retry answers that outcome instead of acting again. Times are Unix milliseconds (UTC). Expand
-- only: a new table, which the previous release never reads.
CREATE TABLE idempotency_keys (
    scope           TEXT NOT NULL,                  -- the method and the caller (src/grpc/idempotency.rs)
    idem_key        TEXT NOT NULL,                  -- the caller's key, 1-255 printable ASCII characters
    fingerprint     TEXT NOT NULL,                  -- HMAC (pepper) of the parsed request: the same key, another request is refused
    token           TEXT NOT NULL,                  -- the claim's owner: a takeover gives it a new one, fencing the old
    lease_until     INTEGER,                        -- while running: another replica may take over after it
    code_id         INTEGER,                        -- SendCode: the code issued, written before the SMS is handed over
    provisional     BLOB,                           -- SendCode: the response that code would answer, for a takeover
    outcome_code    INTEGER,                        -- NULL while running; 0 (OK) or the gRPC status code
    outcome_message TEXT,
    outcome_body    BLOB,                           -- the response message, or the status's details (google.rpc.Status)
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,               -- a day after the claim; purged with other expired rows
    PRIMARY KEY (scope, idem_key)
) STRICT;
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
