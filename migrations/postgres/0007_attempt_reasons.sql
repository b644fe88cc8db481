-- Why a delivery attempt was not accepted (issue 21, section 5), so that the status view can say "발송 실패: 문자
-- 발송 업체 장애" instead of nothing. Expand only: the previous release writes rows without it (NULL), and reads
-- past it.
ALTER TABLE delivery_attempts ADD COLUMN reason text
    CHECK (reason IN ('circuit_open', 'provider_down', 'provider_refused', 'no_answer'));
