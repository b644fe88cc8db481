-- Shared SMS budgets and the pumping guard (issue 18, sections 1 and 2). Expand only: the previous release keeps
-- working beside this one (it neither reads nor writes these tables). Times here are Unix milliseconds in bigint,
-- in both backends, so that one statement text does the arithmetic on either.

-- One GCRA row per budget key (`prefix:<digits>`, `service`): the theoretical arrival time of the next SMS. One
-- conditional upsert charges a send against every key at once (src/store/sql/guard.rs); no read-then-write.
CREATE TABLE sms_budgets (
    key         text PRIMARY KEY,
    tat_ms      bigint NOT NULL,                  -- theoretical arrival time
    interval_ms bigint NOT NULL,                  -- the emission interval the last charge used (1 / rate)
    burst       integer NOT NULL,                 -- the burst the last charge used
    granted     integer NOT NULL                  -- 1: the last charge passed; 0: refused
);

-- Sends and approvals per guard key (`prefix:<digits>`, `country:<calling code>`) per time bucket (a twelfth of
-- the short window). The guard sums them over its short and long windows; the hourly purge drops buckets past the
-- long window.
CREATE TABLE guard_counts (
    key       text NOT NULL,
    bucket_ms bigint NOT NULL,                    -- the bucket's start
    sends     integer NOT NULL DEFAULT 0,
    approvals integer NOT NULL DEFAULT 0,
    PRIMARY KEY (key, bucket_ms)
);
CREATE INDEX guard_counts_by_bucket ON guard_counts (bucket_ms);

-- An admin's decision on a destination prefix, until a time: `exempt` (never guarded) or `block` (always refused).
CREATE TABLE guard_overrides (
    prefix    text PRIMARY KEY,                   -- E.164 digits, --prefix-digits long
    action    text NOT NULL CHECK (action IN ('exempt', 'block')),
    until_ms  bigint NOT NULL,
    ticket_id text NOT NULL,
    reason    text NOT NULL,
    set_by    text NOT NULL,
    set_at_ms bigint NOT NULL
);
