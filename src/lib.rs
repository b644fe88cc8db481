//! otpd: one-time SMS codes over gRPC. See DESIGN.md for the architecture; the modules follow it:
//! `domain` (valid-only types and the policy), `service` (the flows), `store` (SQLite and PostgreSQL),
//! `hashing` (argon2id + pepper), `sms` (gateways), `grpc` (the edge), `console` (the team leads' web console),
//! `config`, `startup`, `telemetry`.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod ctl;
pub mod domain;
pub mod drain;
pub mod grpc;
pub mod hashing;
pub mod healthcheck;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod pb;
pub mod receipts;
pub mod service;
pub mod sms;
pub mod startup;
pub mod store;
pub mod supervision;
pub mod telemetry;
pub mod tls;
pub mod transport;
