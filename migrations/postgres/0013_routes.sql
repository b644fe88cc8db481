-- Delivery routes (issue 22, sections 3, 4 and 6): `otpd doctor` counts every route's attempts of the last 15
-- minutes, across replicas; this index keeps that a range read however large the table grows. Expand only: the
-- previous release neither reads nor writes it.
CREATE INDEX delivery_attempts_by_time ON delivery_attempts (attempted_at);
