//! One integration-test binary (every extra test file would be another binary to link). Each test starts the
//! real service on loopback against a fresh SQLite file or PostgreSQL database.

mod helpers;

mod access;
mod audit_chain;
mod calls;
mod concurrency;
mod console;
mod deployment;
mod drills;
mod grpcurl;
mod guard;
mod hostile_input;
mod idempotency;
mod korea;
mod kubernetes;
mod listeners;
mod lockout;
mod metrics;
mod node_client;
mod otpctl;
mod overload;
mod passkeys;
mod pg_roles;
mod postgres_tls;
mod proto_contract;
mod provider;
mod receipts;
mod routes;
mod secrets;
mod send_verify;
mod service_surface;
mod signin;
mod sms_http;
mod standins;
mod store_conformance;
mod supervisor;
mod tls;
mod traces;
mod upgrade;
mod validation;
