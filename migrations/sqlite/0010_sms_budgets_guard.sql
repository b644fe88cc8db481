-- Shared SMS budgets and the pumping guard (issue 18, sections 1 and 2). Expand only: the previous release keeps
-- working beside this one (it neither reads nor writes these tables). Times here are Unix milliseconds, in both
-- backends, so that one statement text does the arithmetic on either.

-- One GCRA row per budget key (`prefix:<digits>`, `service`): the theoretical arrival time of the next SMS. One
-- conditional upsert charges a send against every key at once (src/store/sql/guard.rs); no read-then-write.
CREATE TABLE sms_budgets (
    key         TEXT PRIMARY KEY,
    tat_ms      INTEGER NOT NULL,                 -- theoretical arrival time
    interval_ms INTEGER NOT NULL,                 -- the emission interval the last charge used (1 / rate)
    burst       INTEGER NOT NULL,                 -- the burst the last charge used
    granted     INTEGER NOT NULL                  -- 1: the last charge passed; 0: refused
) STRICT;

-- Sends and approvals per guard key (`prefix:<digits>`, `country:<calling code>`) per time bucket (a twelfth of
-- the short window). The guard sums them over its short and long windows; the hourly purge drops buckets past the
-- long window.
CREATE TABLE guard_counts (
    key       TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,                   -- the bucket's start
    sends     INTEGER NOT NULL DEFAULT 0,
    approvals INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key, bucket_ms)
) STRICT;
CREATE INDEX guard_counts_by_bucket ON guard_counts (bucket_ms);

-- An admin's decision on a destination prefix, until a time: `exempt` (never guarded) or `block` (always refused).
CREATE TABLE guard_overrides (
    prefix    TEXT PRIMARY KEY,                   -- E.164 digits, --prefix-digits long
    action    TEXT NOT NULL CHECK (action IN ('exempt', 'block')),
    until_ms  INTEGER NOT NULL,
    ticket_id TEXT NOT NULL,
    reason    TEXT NOT NULL,
    set_by    TEXT NOT NULL,
    set_at_ms INTEGER NOT NULL
) STRICT;
