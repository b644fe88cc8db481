-- Where each supervisor call came from, in its audit events (개인정보의 안전성 확보조치 기준 제8조): the client
-- address (through --trusted-proxies), the mutual-TLS client certificate's subject and SHA-256 fingerprint, the
-- sign-in session and, for console calls, the browser's user agent. Events that carry any of them are sealed with
-- link v4 (v3 plus these fields). Expand only: the previous release reads and writes the table as before (its
-- events carry no context and keep links 1 to 3).
ALTER TABLE audit_events ADD COLUMN client_address text;
ALTER TABLE audit_events ADD COLUMN client_cert_subject text;
ALTER TABLE audit_events ADD COLUMN client_cert_sha256 text CHECK (client_cert_sha256 ~ '^[0-9a-f]{64}$');
ALTER TABLE audit_events ADD COLUMN session_id text;
ALTER TABLE audit_events ADD COLUMN user_agent text CHECK (length(user_agent) <= 256);
ALTER TABLE audit_events DROP CONSTRAINT audit_events_chain_link_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_chain_link_check CHECK (chain_link IN (1, 2, 3, 4));
