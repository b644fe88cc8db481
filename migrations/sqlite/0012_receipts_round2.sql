-- Receipts for every provider (issue 22, section 2): providers without webhooks (SENS, Solapi) are asked about
-- the attempts that have no receipt yet, which this index finds without a scan. Expand only: an index, nothing
-- the previous release reads or writes changes.
CREATE INDEX delivery_attempts_awaiting_receipt ON delivery_attempts (gateway, attempted_at)
    WHERE receipt IS NULL AND provider_id IS NOT NULL;
