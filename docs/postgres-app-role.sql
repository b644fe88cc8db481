-- The role `otpd serve` should use on PostgreSQL in production: everything the service needs, and on the audit log
-- only SELECT and INSERT. It does not own the tables, so it can neither change nor delete audit events, nor disable
-- the triggers that forbid it. Migrations run separately, as the owner: `otpd migrate --database-url <owner URL>`,
-- then `otpd serve --migrate-on-start=false --database-url <this role's URL>`.
-- Run as the owner, in otpd's database, after the migrations. `tests/api/pg_roles.rs` runs exactly this file.

CREATE ROLE otpd_app LOGIN;
GRANT USAGE ON SCHEMA public TO otpd_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON phone_state, verifications, codes, delivery_attempts, calls, lookup_notices TO otpd_app;
GRANT SELECT ON supervisors TO otpd_app;
GRANT SELECT, INSERT ON audit_events TO otpd_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO otpd_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON supervisor_sessions, sign_in_challenges, passkeys, sign_in_guards TO otpd_app;
-- Idempotency keys of SendCode and VerifyCode (migration 0011). On an upgrade, run this line alone, as the owner,
-- after `otpd migrate` (docs/operations.md, "Upgrading").
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO otpd_app;
-- Issue 18 §1–2: the shared SMS budgets, the pumping guard's counts and admins' overrides of a prefix.
GRANT SELECT, INSERT, UPDATE, DELETE ON sms_budgets, guard_counts, guard_overrides TO otpd_app;
