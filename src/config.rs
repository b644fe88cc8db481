//! Configuration: every setting is a flag and an `OTPD_*` environment variable, with its default in `--help`,
//! validated once at start-up into a [`Config`] whose errors name the setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};

pub use crate::setting::{ConfigError, Mode};

use crate::domain::{AllowedAppHashes, AllowedCountries, CodeLength, Policy, TestNumbers};
use crate::grpc::client_ip::TrustedProxies;
use crate::hashing::{Argon2Params, QueueLimit};
use crate::limits::{Limit, LimitSettings, RateOrOff};
use crate::sms::{GatewayConfig, HttpOptions};
use crate::store::LookupQuota;
use crate::supervision::LookupPolicy;
use crate::telemetry::LogFormat;

/// The `otpd` command line.
#[derive(Debug, Parser)]
#[command(name = "otpd", version, about = "One-time SMS code verification service (gRPC)", args_override_self = true)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings.
    #[command(flatten)]
    pub settings: Settings,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the gRPC service (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage the supervisors who may use otp.v1.SupervisorService.
    Supervisors {
        /// What to do.
        #[command(subcommand)]
        command: SupervisorsCommand,
    },
    /// Work with the audit log.
    Audit {
        /// What to do.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Ask a running otpd's grpc.health.v1 whether it is SERVING: exit 0 if so, 1 if not (for container and
    /// orchestrator health checks).
    Healthcheck(HealthcheckArgs),
}

/// `otpd supervisors …`
#[derive(Debug, Clone, Subcommand)]
pub enum SupervisorsCommand {
    /// Add a supervisor and print their new bearer token, alone on standard output (shown only this once).
    Add {
        /// Unique name, e.g. kim.minji.
        #[arg(long)]
        name: crate::domain::SupervisorName,
        /// supervisor (team lead), auditor or admin.
        #[arg(long)]
        role: crate::domain::Role,
        /// Their agent id in the call centre's phone system (docs/cti.md): the calls their lookups may rest on.
        #[arg(long)]
        agent_id: Option<crate::domain::AgentId>,
        /// Their own mobile number, where sign-in codes go (docs/sign-in.md).
        #[arg(long)]
        phone: Option<String>,
        /// Their emergency e-mail address, for a sign-in code when the phone is not at hand.
        #[arg(long)]
        email: Option<crate::domain::EmailAddress>,
        /// A token for a script (auditor role only): used without a session, never for a lookup.
        #[arg(long)]
        service: bool,
    },
    /// Set a supervisor's phone and e-mail address for sign-in codes (`none` clears one).
    SetContact {
        /// The supervisor's name.
        name: crate::domain::SupervisorName,
        /// Their own mobile number, or `none`.
        #[arg(long)]
        phone: Option<String>,
        /// Their emergency e-mail address, or `none`.
        #[arg(long)]
        email: Option<String>,
    },
    /// Issue a one-time passkey enrolment code for a person with no other second factor at hand (shown once,
    /// alone on standard output; it works with their own token only).
    PasskeyCode {
        /// The supervisor's name.
        name: crate::domain::SupervisorName,
        /// How long the code works.
        #[arg(long, default_value = "24h")]
        valid: humantime::Duration,
    },
    /// Lift a sign-in lock: a person's (by name) or a client address's (`--address`).
    LiftLock {
        /// The supervisor's name.
        #[arg(required_unless_present = "address")]
        name: Option<crate::domain::SupervisorName>,
        /// A client address instead.
        #[arg(long, conflicts_with = "name")]
        address: Option<std::net::IpAddr>,
    },
    /// Set a supervisor's agent id in the phone system (one agent id belongs to at most one supervisor).
    SetAgent {
        /// The supervisor's name.
        name: crate::domain::SupervisorName,
        /// The agent id; `none` clears it.
        agent_id: String,
    },
    /// List supervisors.
    List,
    /// Disable a supervisor: their token stops working at once.
    Disable {
        /// The supervisor's name.
        name: crate::domain::SupervisorName,
    },
}

/// `otpd audit …`
#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// Check the whole chain (links, seals under the audit key); exits non-zero naming the first bad event.
    Verify {
        /// An event the chain must still reach unchanged, as `SEQ:HASH` from the `audit` log lines (`seq`,
        /// `hash`) that you keep outside the database. Catches a cut-off tail. Repeatable.
        #[arg(long, value_name = "SEQ:HASH")]
        expect_head: Vec<crate::domain::audit::HeadPin>,
    },
}

/// Which of otpd's listeners to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Listener {
    /// The public listener (`--listen`).
    Public,
    /// The admin listener (`--admin-listen`).
    Admin,
}

/// `otpd healthcheck` options; the address comes from `--listen` / `--admin-listen` (or their `OTPD_*`
/// variables), so the probe reads the same configuration as the service it checks.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// Which listener to ask.
    #[arg(long, value_enum, default_value = "public")]
    pub listener: Listener,
    /// The service to ask about: "" (the whole server), otp.v1.OtpService, otp.v1.SupervisorService, liveness
    /// (SERVING whenever the process serves, database or not: for liveness probes), or otp.v1.Delivery
    /// (NOT_SERVING while every delivery route's breaker is open: for probers and dashboards, not readiness).
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up (and report unhealthy) after this long.
    #[arg(long, default_value = "3s")]
    pub timeout: humantime::Duration,
}

/// Every setting, as given.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Public listener (otp.v1.OtpService, health, reflection).
    #[arg(long, env = "OTPD_LISTEN", default_value = "127.0.0.1:50051", global = true)]
    pub listen: SocketAddr,
    /// Admin listener (otp.v1.SupervisorService behind bearer tokens, health, reflection, the web console /console/).
    #[arg(long, env = "OTPD_ADMIN_LISTEN", default_value = "127.0.0.1:50052", global = true)]
    pub admin_listen: SocketAddr,
    /// TLS and mutual TLS on the listeners (src/tls.rs).
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// Connection caps and deadlines of every listener, and the names they answer to (src/listen/).
    #[command(flatten)]
    pub listen_limits: crate::listen::ListenArgs,
    /// Database: sqlite://PATH (created if missing) or postgres://USER@HOST/DB.
    #[arg(long, env = "OTPD_DATABASE_URL", default_value = "sqlite://otpd.db", global = true)]
    pub database_url: String,
    /// Accept `sslmode=require` (encrypted, but the server's certificate is not checked) for a PostgreSQL off
    /// loopback in prod mode, where otherwise only `sslmode=verify-full` is accepted.
    #[arg(long, env = "OTPD_DATABASE_TLS_REQUIRE_ACKNOWLEDGED", global = true)]
    pub database_tls_require_acknowledged: bool,
    /// SMS gateway: `log` (prints to stdout; dev only), `file:PATH` (JSON lines; dev only), `http:URL` or a bare
    /// `https://…` URL (a provider's HTTP API, docs/sms-gateway.md), `nhn-sms`, `sens` or `solapi` (each
    /// optionally `:BASE_URL`). Prod mode refuses plain `http://` to a host that is not loopback. Read as text
    /// and checked at start-up, so that an error names the setting and never echoes a value that may hold a key.
    #[arg(long, env = "OTPD_SMS_GATEWAY", default_value = "log", hide_env_values = true, global = true)]
    pub sms_gateway: String,
    /// `Authorization` header value sent to the HTTP provider, e.g. `Bearer KEY`; prefer --sms-http-auth-file.
    #[arg(long, env = "OTPD_SMS_HTTP_AUTH", hide_env_values = true, global = true)]
    pub sms_http_auth: Option<SecretString>,
    /// File holding the `Authorization` header value of --sms-http-auth.
    #[arg(long, env = "OTPD_SMS_HTTP_AUTH_FILE", global = true)]
    pub sms_http_auth_file: Option<PathBuf>,
    /// Timeout of one HTTP attempt.
    #[arg(long, env = "OTPD_SMS_HTTP_ATTEMPT_TIMEOUT", default_value = "3s", global = true)]
    pub sms_http_attempt_timeout: humantime::Duration,
    /// HTTP attempts per SMS, the first included (timeouts, connection errors, 5xx and 429 are retried).
    #[arg(long, env = "OTPD_SMS_HTTP_MAX_ATTEMPTS", default_value_t = 3, global = true)]
    pub sms_http_max_attempts: u32,
    /// First retry backoff; doubled per retry with full jitter.
    #[arg(long, env = "OTPD_SMS_HTTP_BACKOFF", default_value = "200ms", global = true)]
    pub sms_http_backoff: humantime::Duration,
    /// Longest retry backoff.
    #[arg(long, env = "OTPD_SMS_HTTP_MAX_BACKOFF", default_value = "2s", global = true)]
    pub sms_http_max_backoff: humantime::Duration,
    /// HTTP requests to the provider in flight at once.
    #[arg(long, env = "OTPD_SMS_HTTP_CONCURRENCY", default_value_t = 32, global = true)]
    pub sms_http_concurrency: usize,
    /// Consecutive failed deliveries that open the circuit breaker.
    #[arg(long, env = "OTPD_SMS_BREAKER_THRESHOLD", default_value_t = 5, global = true)]
    pub sms_breaker_threshold: u32,
    /// How long the open breaker fails fast before probing the provider again.
    #[arg(long, env = "OTPD_SMS_BREAKER_COOLDOWN", default_value = "30s", global = true)]
    pub sms_breaker_cooldown: humantime::Duration,
    /// SendCode calls per client IP (IPv6: per /64): N/s, N/m, N/h or off.
    #[arg(long, env = "OTPD_SEND_LIMIT_PER_IP", default_value = "60/h", global = true)]
    pub send_limit_per_ip: RateOrOff,
    /// SendCode burst per client IP.
    #[arg(long, env = "OTPD_SEND_BURST_PER_IP", default_value_t = 10, global = true)]
    pub send_burst_per_ip: u32,
    /// VerifyCode calls per client IP (IPv6: per /64).
    #[arg(long, env = "OTPD_VERIFY_LIMIT_PER_IP", default_value = "360/h", global = true)]
    pub verify_limit_per_ip: RateOrOff,
    /// VerifyCode burst per client IP.
    #[arg(long, env = "OTPD_VERIFY_BURST_PER_IP", default_value_t = 30, global = true)]
    pub verify_burst_per_ip: u32,
    /// SMS per destination prefix (the first --prefix-digits digits of the E.164 number).
    #[arg(long, env = "OTPD_SMS_LIMIT_PER_PREFIX", default_value = "100/h", global = true)]
    pub sms_limit_per_prefix: RateOrOff,
    /// SMS burst per destination prefix.
    #[arg(long, env = "OTPD_SMS_BURST_PER_PREFIX", default_value_t = 20, global = true)]
    pub sms_burst_per_prefix: u32,
    /// Digits of the E.164 number (without `+`) that make a destination prefix.
    #[arg(long, env = "OTPD_PREFIX_DIGITS", default_value_t = 7, global = true)]
    pub prefix_digits: usize,
    /// SMS for this whole replica.
    #[arg(long, env = "OTPD_GLOBAL_SMS_LIMIT", default_value = "20/s", global = true)]
    pub global_sms_limit: RateOrOff,
    /// SMS burst for this whole replica.
    #[arg(long, env = "OTPD_GLOBAL_SMS_BURST", default_value_t = 50, global = true)]
    pub global_sms_burst: u32,
    /// The pumping guard (docs/operations.md, "The pumping guard"): `off`, `shadow` (decides, records, refuses
    /// nothing) or `enforce` (refuses sends to a guarded prefix or country).
    #[arg(long, env = "OTPD_PUMPING_GUARD", default_value = "shadow", global = true)]
    pub pumping_guard: crate::domain::guard::GuardMode,
    /// The guard's short window and the sends it needs before its conversion counts (DURATION:SENDS).
    #[arg(long, env = "OTPD_PUMPING_GUARD_SHORT", default_value = "1h:50", global = true)]
    pub pumping_guard_short: crate::domain::guard::GuardWindow,
    /// The guard's long window and its sends (DURATION:SENDS).
    #[arg(long, env = "OTPD_PUMPING_GUARD_LONG", default_value = "24h:200", global = true)]
    pub pumping_guard_long: crate::domain::guard::GuardWindow,
    /// The conversion (approvals ÷ sends, percent) below which a window with enough sends guards its prefix.
    #[arg(long, env = "OTPD_PUMPING_GUARD_CONVERSION", default_value_t = 35, global = true)]
    pub pumping_guard_conversion: u32,
    /// Proxies whose `x-forwarded-for` is believed (comma-separated CIDRs); empty: the TCP peer is the client.
    #[arg(long, env = "OTPD_TRUSTED_PROXIES", default_value = "", global = true)]
    pub trusted_proxies: TrustedProxies,
    /// Android SMS Retriever hashes of your own apps (comma-separated, 11 characters each). A SendCode may only
    /// ask for one of these; empty: app hashes are refused.
    #[arg(long, env = "OTPD_APP_HASHES", default_value = "", global = true)]
    pub app_hashes: AllowedAppHashes,
    /// Staging test numbers with fixed codes, never sent: `NUMBER=CODE,…`. Refused in prod mode.
    #[arg(long, env = "OTPD_TEST_NUMBERS", default_value = "", hide_env_values = true, global = true)]
    pub test_numbers: String,
    /// Sender number on every SMS.
    #[arg(long, env = "OTPD_SMS_SENDER", default_value = "1800-3400", global = true)]
    pub sms_sender: String,
    /// How long the gateway may take to accept one SMS.
    #[arg(long, env = "OTPD_SMS_TIMEOUT", default_value = "10s", global = true)]
    pub sms_timeout: humantime::Duration,
    /// SendCode needs at least this much time before the caller's deadline to hash, record and hand over an SMS;
    /// a shorter deadline is refused DEADLINE_EXCEEDED before anything is hashed, stored or counted.
    #[arg(long, env = "OTPD_MIN_SEND_DEADLINE", default_value = "500ms", global = true)]
    pub min_send_deadline: humantime::Duration,
    /// How long a claimed idempotency key holds without renewal (its owner renews it every third of this while it
    /// works): when a replica dies mid-call, a retry with the same key takes the call over this long after.
    #[arg(long, env = "OTPD_IDEMPOTENCY_LEASE", default_value = "10s", global = true)]
    pub idempotency_lease: humantime::Duration,
    /// dev or prod.
    #[arg(long, env = "OTPD_MODE", value_enum, default_value = "dev", global = true)]
    pub mode: Mode,
    /// File holding the pepper (the server secret in every code hash; at least 16 bytes). In dev mode it is
    /// generated at `otpd.pepper` if neither this nor OTPD_PEPPER is set.
    #[arg(long, env = "OTPD_PEPPER_FILE", global = true)]
    pub pepper_file: Option<PathBuf>,
    /// File holding the audit chain's key (at least 16 bytes). Default: derived from the pepper, so rotating the
    /// pepper would break verification of the chain so far: in production give the chain its own key from the
    /// start.
    #[arg(long, env = "OTPD_AUDIT_KEY_FILE", global = true)]
    pub audit_key_file: Option<PathBuf>,
    /// The pepper itself (prefer --pepper-file).
    #[arg(long, env = "OTPD_PEPPER", hide_env_values = true, global = true)]
    pub pepper: Option<SecretString>,
    /// Countries whose mobile numbers may receive codes (ISO 3166-1 alpha-2, comma-separated); national
    /// formats are read in the first.
    #[arg(long, env = "OTPD_ALLOWED_COUNTRIES", default_value = "KR", global = true)]
    pub allowed_countries: AllowedCountries,
    /// Digits per code (6-8).
    #[arg(long, env = "OTPD_CODE_LENGTH", default_value_t = 6, global = true)]
    pub code_length: u8,
    /// How long a code works (at most 10m).
    #[arg(long, env = "OTPD_CODE_TTL", default_value = "3m", global = true)]
    pub code_ttl: humantime::Duration,
    /// Consecutive wrong codes that lock a number.
    #[arg(long, env = "OTPD_MAX_FAILED_ATTEMPTS", default_value_t = 10, global = true)]
    pub max_failed_attempts: u32,
    /// How long a locked number stays locked.
    #[arg(long, env = "OTPD_LOCKOUT", default_value = "24h", global = true)]
    pub lockout: humantime::Duration,
    /// Minimum time between two SMS to one number.
    #[arg(long, env = "OTPD_RESEND_COOLDOWN", default_value = "30s", global = true)]
    pub resend_cooldown: humantime::Duration,
    /// SMS per number per rolling hour.
    #[arg(long, env = "OTPD_MAX_SENDS_PER_HOUR", default_value_t = 5, global = true)]
    pub max_sends_per_hour: u32,
    /// SMS per number per rolling day.
    #[arg(long, env = "OTPD_MAX_SENDS_PER_DAY", default_value_t = 10, global = true)]
    pub max_sends_per_day: u32,
    /// argon2 computations run at once (0: from the container: the cgroup CPU quota, else the CPUs available,
    /// bounded by the cgroup memory limit at argon2 memory + 1 MiB per worker; see docs/operations.md).
    #[arg(long, env = "OTPD_HASH_WORKERS", default_value_t = 0, global = true)]
    pub hash_workers: usize,
    /// How many steps of CPU priority (nice) the hashing threads run below the rest of the process, 0 to 19: argon2
    /// takes every cycle it is given, so the reactor that answers refusals, health checks and the database's
    /// replies goes first. 0: the same priority.
    #[arg(long, env = "OTPD_HASH_NICE", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=19), global = true)]
    pub hash_nice: u8,
    /// Longest hashing queue (computations waiting or running); past it calls are refused OVERLOADED at once.
    /// 0: what the workers finish within --hash-queue-delay, from one hash timed at start-up, then from how long
    /// the workers' hashes take.
    #[arg(long, env = "OTPD_HASH_QUEUE", default_value_t = 0, global = true)]
    pub hash_queue: usize,
    /// The queueing delay the automatic --hash-queue aims at. With the admission wait and the hash itself, a
    /// served call waited 8.0-9.1 hashes at p99 at the default cost, with 512 calls in flight, on two machines
    /// (more where hashes are faster: the target is a time).
    #[arg(long, env = "OTPD_HASH_QUEUE_DELAY", default_value = "75ms", global = true)]
    pub hash_queue_delay: humantime::Duration,
    /// How long at most a call that finds the hashing queue full waits for a place before it is refused OVERLOADED
    /// (never past its deadline; waits end on a grid of an eighth of it); checks of codes already sent are served
    /// before new sends, clients in turn, each client's newest first once waiters are being refused. Bounds how
    /// often a client that retries at once can come back; 0: refused at once.
    #[arg(long, env = "OTPD_HASH_ADMISSION_WAIT", default_value = "50ms", global = true)]
    pub hash_admission_wait: humantime::Duration,
    /// Calls in flight per client connection on each listener; more wait for a place.
    #[arg(long, env = "OTPD_MAX_CALLS_PER_CONNECTION", default_value_t = 256, global = true)]
    pub max_calls_per_connection: usize,
    /// argon2id memory per hash, KiB.
    #[arg(long, env = "OTPD_ARGON2_MEMORY_KIB", default_value_t = 19_456, global = true)]
    pub argon2_memory_kib: u32,
    /// argon2id passes.
    #[arg(long, env = "OTPD_ARGON2_ITERATIONS", default_value_t = 2, global = true)]
    pub argon2_iterations: u32,
    /// argon2id lanes.
    #[arg(long, env = "OTPD_ARGON2_PARALLELISM", default_value_t = 1, global = true)]
    pub argon2_parallelism: u32,
    /// A supervisor lookup needs an SMS sent to the number at most this long ago.
    #[arg(long, env = "OTPD_LOOKUP_WINDOW", default_value = "10m", global = true)]
    pub lookup_window: humantime::Duration,
    /// What a lookup's number may rest on: `call` (only a call the phone system reported, docs/cti.md),
    /// `call-or-typed` (a call, or numbers the team lead types, audited as typed) or `typed`. Default: `call` in
    /// prod mode, `call-or-typed` in dev mode.
    #[arg(long, env = "OTPD_LOOKUP_EVIDENCE", value_enum, global = true)]
    pub lookup_evidence: Option<crate::domain::EvidencePolicy>,
    /// The notice the driver's number gets after every granted lookup (through the delivery channels, AlimTalk
    /// first when it is one; it never holds a code): `{brand}` and `{support}`, EUC-KR, one SMS (90 bytes),
    /// checked at start-up. `off` disables it.
    #[arg(long, env = "OTPD_LOOKUP_NOTICE_TEMPLATE", default_value = crate::sms::DEFAULT_NOTICE, global = true)]
    pub lookup_notice_template: String,
    /// The number the notice tells a driver to call if they did not ask for a lookup. Required in prod mode while
    /// the notice is on; in dev mode the SMS sender number.
    #[arg(long, env = "OTPD_SUPPORT_NUMBER", global = true)]
    pub support_number: Option<String>,
    /// How long after a call ends it still vouches for its number (a lookup or status by call).
    #[arg(long, env = "OTPD_CALL_GRACE", default_value = "2m", global = true)]
    pub call_grace: humantime::Duration,
    /// A team lead's session ends after this long without a call (the safety standard's automatic
    /// disconnection, 제6조④).
    #[arg(long, env = "OTPD_SESSION_IDLE", default_value = "15m", global = true)]
    pub session_idle: humantime::Duration,
    /// A session ends this long after sign-in whatever happens: one shift.
    #[arg(long, env = "OTPD_SESSION_MAX", default_value = "10h", global = true)]
    pub session_max: humantime::Duration,
    /// Whether a supervisor's or admin's bare token is refused for LookupCode, GetPhoneStatus and UnlockPhone
    /// (only a session, opened with a second factor, is accepted). Default: on in prod mode, off in dev.
    #[arg(long, env = "OTPD_REQUIRE_SECOND_FACTOR", global = true)]
    pub require_second_factor: Option<bool>,
    /// Failed sign-ins (bad tokens, bad second factors) within --sign-in-lock-for that lock the person's and the
    /// client address's sign-in.
    #[arg(long, env = "OTPD_SIGN_IN_LOCK_AFTER", default_value_t = 5, global = true)]
    pub sign_in_lock_after: u32,
    /// How long such a lock lasts (and the window its failures are counted in).
    #[arg(long, env = "OTPD_SIGN_IN_LOCK_FOR", default_value = "30m", global = true)]
    pub sign_in_lock_for: humantime::Duration,
    /// The mail server for emergency sign-in codes: `smtps://[user:pass@]host[:465]`,
    /// `smtp://host[:587]?tls=required` (STARTTLS), or plain `smtp://` to a relay on this host. Unset: no e-mail
    /// factor.
    #[arg(long, env = "OTPD_SMTP_URL", global = true, hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The sender of sign-in e-mails.
    #[arg(long, env = "OTPD_SMTP_FROM", default_value = "otpd <no-reply@localhost>", global = true)]
    pub smtp_from: String,
    /// Extra CA certificates (PEM) to trust for the mail server.
    #[arg(long, env = "OTPD_SMTP_CA_FILE", global = true)]
    pub smtp_ca_file: Option<PathBuf>,
    /// Codes one supervisor may look up per hour.
    #[arg(long, env = "OTPD_SUPERVISOR_LOOKUPS_PER_HOUR", default_value_t = 20, global = true)]
    pub supervisor_lookups_per_hour: u32,
    /// Apply pending migrations when `serve` starts. Turn off when the service runs as a role that does not own
    /// the schema (docs/postgres-app-role.sql) and `otpd migrate` runs separately as the owner.
    #[arg(long, env = "OTPD_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub migrate_on_start: bool,
    /// Largest accepted request message, bytes.
    #[arg(long, env = "OTPD_MAX_REQUEST_BYTES", default_value_t = 4096, global = true)]
    pub max_request_bytes: usize,
    /// Log format.
    #[arg(long, env = "OTPD_LOG_FORMAT", value_enum, default_value = "pretty", global = true)]
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint to export traces to (e.g. http://otel-collector:4317). Default: off (spans still give
    /// JSON log lines their trace_id and span_id).
    #[arg(long, env = "OTPD_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    /// The last audit event written before this installation sealed its chain with a key (the first `audit` log
    /// line after that upgrade names the next one): events up to it may carry the unkeyed v1 link, any later
    /// unkeyed event is a forgery. Set once by the operator after the upgrade; VerifyAuditChain and `otpd audit
    /// verify` both use it, and no caller can raise it. Default: 0, none may.
    #[arg(long, env = "OTPD_ACCEPT_UNKEYED_THROUGH", value_name = "SEQ", default_value_t = 0, global = true)]
    pub accept_unkeyed_through: i64,
    /// Prometheus endpoint: `GET /metrics` (OpenMetrics text) on this address, e.g. 127.0.0.1:9464. Default: off.
    #[arg(long, env = "OTPD_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<SocketAddr>,
    /// The message template and the Korean providers' credentials (src/sms/settings.rs).
    #[command(flatten)]
    pub delivery: crate::sms::DeliverySettings,
    /// The passkeys' relying party (src/signin/passkey.rs).
    #[command(flatten)]
    pub passkeys: crate::signin::passkey::PasskeyArgs,
}

/// Where the pepper comes from.
#[derive(Debug, Clone)]
pub enum PepperSource {
    /// Given inline (`OTPD_PEPPER`).
    Inline(SecretString),
    /// Read from a file that must exist.
    File(PathBuf),
    /// Dev mode: read from this file, generating it first if it does not exist.
    Generated(PathBuf),
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// TLS of the listeners.
    pub tls: crate::tls::TlsSettings,
    /// Connection caps, deadlines and allowed host names of every listener.
    pub connections: crate::listen::ListenSettings,
    /// Database URL.
    pub database_url: String,
    /// SMS gateway.
    pub sms_gateway: GatewayConfig,
    /// Sender number.
    pub sms_sender: String,
    /// Per-SMS gateway deadline.
    pub sms_timeout: std::time::Duration,
    /// The least caller deadline SendCode accepts.
    pub min_send_deadline: std::time::Duration,
    /// How long an idempotency key's claim holds without renewal.
    pub idempotency_lease: std::time::Duration,
    /// Pepper source.
    pub pepper: PepperSource,
    /// The audit key's file; None: derived from the pepper.
    pub audit_key_file: Option<PathBuf>,
    /// Allowed destination countries.
    pub allowed_countries: AllowedCountries,
    /// The verification policy.
    pub policy: Policy,
    /// Hash cost.
    pub argon2: Argon2Params,
    /// argon2 computations at once, and why that many.
    pub hash_workers: crate::hashing::sizing::Sizing,
    /// How far below the process's CPU priority the hashing threads run.
    pub hash_nice: u8,
    /// The hashing queue's bound.
    pub hash_queue: QueueLimit,
    /// How long a call waits for a place in a full hashing queue.
    pub hash_admission_wait: std::time::Duration,
    /// Calls in flight per connection.
    pub max_calls_per_connection: usize,
    /// Largest accepted request message.
    pub max_request_bytes: usize,
    /// Apply migrations at start-up.
    pub migrate_on_start: bool,
    /// The HTTP gateway's behaviour.
    pub http: HttpOptions,
    /// Front-line limits.
    pub limits: LimitSettings,
    /// The pumping guard.
    pub guard: crate::domain::guard::GuardPolicy,
    /// Proxies whose `x-forwarded-for` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Staging numbers with fixed codes.
    pub test_numbers: TestNumbers,
    /// The SMS Retriever hashes a SendCode may ask for.
    pub app_hashes: AllowedAppHashes,
    /// What supervisor lookups are allowed.
    pub lookup: LookupPolicy,
    /// The notice after a granted lookup; None: off.
    pub lookup_notice: Option<crate::sms::LookupNotice>,
    /// The last audit sequence that may carry an unkeyed link (0: none).
    pub accept_unkeyed_through: i64,
    /// The Prometheus endpoint's address; None: off.
    pub metrics_listen: Option<SocketAddr>,
    /// The message template and provider credentials.
    pub delivery: crate::sms::DeliveryConfig,
    /// Team leads' sign-in: sessions, lockout, whether a session is required.
    pub sign_in: crate::domain::SignInPolicy,
    /// The mail server for emergency sign-in codes.
    pub mail: Option<crate::signin::mail::MailSettings>,
    /// The passkeys' relying party.
    pub passkeys: crate::signin::passkey::PasskeySettings,
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { setting, message: message.into() }
}

fn delta(setting: &'static str, d: humantime::Duration) -> Result<chrono::TimeDelta, ConfigError> {
    chrono::TimeDelta::from_std(*d).map_err(|_| invalid(setting, "too long"))
}

impl Settings {
    /// The sign-in settings, checked.
    fn sign_in_policy(&self) -> Result<crate::domain::SignInPolicy, ConfigError> {
        let session_idle = delta("session-idle", self.session_idle)?;
        let session_max = delta("session-max", self.session_max)?;
        if session_idle < chrono::TimeDelta::minutes(1) || session_idle > chrono::TimeDelta::hours(1) {
            return Err(invalid(
                "session-idle",
                "between 1m and 1h: the standard asks for disconnection after a while",
            ));
        }
        if session_max < session_idle || session_max > chrono::TimeDelta::hours(24) {
            return Err(invalid("session-max", "at least --session-idle and at most 24h"));
        }
        if !(1..=100).contains(&self.sign_in_lock_after) {
            return Err(invalid("sign-in-lock-after", "between 1 and 100"));
        }
        let lock_for = delta("sign-in-lock-for", self.sign_in_lock_for)?;
        if lock_for < chrono::TimeDelta::minutes(1) || lock_for > chrono::TimeDelta::hours(24) {
            return Err(invalid("sign-in-lock-for", "between 1m and 24h"));
        }
        Ok(crate::domain::SignInPolicy {
            session_idle,
            session_max,
            lock_after: self.sign_in_lock_after,
            lock_for,
            require_second_factor: self.require_second_factor.unwrap_or(self.mode == Mode::Prod),
            ..crate::domain::SignInPolicy::default()
        })
    }

    /// Checks every setting and resolves the pepper source.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        crate::store::validate_url(&self.database_url).map_err(|m| invalid("database-url", m))?;
        if self.mode == Mode::Prod && !self.database_url.starts_with("sqlite:") {
            let refusal =
                crate::store::PgStore::prod_tls_refusal(&self.database_url, self.database_tls_require_acknowledged);
            if let Some(message) = refusal {
                return Err(invalid("database-url", message));
            }
        }
        let sms_gateway: GatewayConfig = self.sms_gateway.trim().parse().map_err(|m| invalid("sms-gateway", m))?;
        // `log` and `file:` can only be the bare `sms` route's: with `--delivery sms@nhn,…` they carry nothing.
        let sms_gateway_route =
            self.delivery.delivery.iter().any(|r| r.provider == crate::domain::RouteProvider::SmsGateway);
        if self.mode == Mode::Prod && sms_gateway.is_dev_only() && sms_gateway_route {
            return Err(invalid(
                "sms-gateway",
                format!("`{sms_gateway}` exposes codes outside the phone and is refused in prod mode"),
            ));
        }
        if self.mode == Mode::Prod && sms_gateway.url().is_some_and(crate::transport::plaintext_off_loopback) {
            return Err(invalid(
                "sms-gateway",
                "plain http:// to a host that is not loopback would carry codes and credentials in clear; \
                 refused in prod mode (use https://)",
            ));
        }
        let sms_http_auth = crate::sms::optional_header_secret(
            ("sms-http-auth", &self.sms_http_auth),
            ("sms-http-auth-file", &self.sms_http_auth_file),
        )
        .map_err(|(setting, message)| invalid(setting, message))?;
        let sender = self.sms_sender.trim();
        if sender.is_empty() || sender.len() > 20 {
            return Err(invalid("sms-sender", "must be 1 to 20 characters"));
        }
        let pepper = match (&self.pepper, &self.pepper_file, self.mode) {
            (Some(_), Some(_), _) => return Err(invalid("pepper", "give --pepper or --pepper-file, not both")),
            (Some(p), None, _) => {
                crate::hashing::Pepper::new(p.expose_secret().as_bytes().to_vec()).map_err(|m| invalid("pepper", m))?;
                PepperSource::Inline(p.clone())
            }
            (None, Some(path), _) => PepperSource::File(path.clone()),
            (None, None, Mode::Dev) => PepperSource::Generated(PathBuf::from("otpd.pepper")),
            (None, None, Mode::Prod) => {
                return Err(invalid("pepper-file", "prod mode needs a pepper (--pepper-file or OTPD_PEPPER)"));
            }
        };
        let tls = self.tls.validate(self.mode, self.admin_listen, self.delivery.webhook_listen)?;
        let connections = self
            .listen_limits
            .validate(crate::listen::descriptor_limit())
            .map_err(|(setting, message)| invalid(setting, message))?;
        let code_length = CodeLength::new(self.code_length).map_err(|m| invalid("code-length", m))?;
        let code_ttl = delta("code-ttl", self.code_ttl)?;
        if code_ttl < chrono::TimeDelta::seconds(30) || code_ttl > chrono::TimeDelta::minutes(10) {
            return Err(invalid("code-ttl", "must be between 30s and 10m (NIST SP 800-63B)"));
        }
        if !(1..=100).contains(&self.max_failed_attempts) {
            return Err(invalid("max-failed-attempts", "must be between 1 and 100"));
        }
        let lockout = delta("lockout", self.lockout)?;
        if lockout <= chrono::TimeDelta::zero() {
            return Err(invalid("lockout", "must be positive"));
        }
        let resend_cooldown = delta("resend-cooldown", self.resend_cooldown)?;
        if self.max_sends_per_hour == 0 {
            return Err(invalid("max-sends-per-hour", "must be at least 1"));
        }
        if self.max_sends_per_day < self.max_sends_per_hour {
            return Err(invalid("max-sends-per-day", "must be at least --max-sends-per-hour"));
        }
        let argon2 = Argon2Params {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        };
        argon2.validate().map_err(|m| invalid("argon2-memory-kib", format!("argon2 parameters: {m}")))?;
        if *self.hash_admission_wait > std::time::Duration::from_secs(1) {
            return Err(invalid("hash-admission-wait", "must be at most 1s (a caller should hear OVERLOADED soon)"));
        }
        if self.hash_queue == 0 && self.hash_queue_delay.is_zero() {
            return Err(invalid("hash-queue-delay", "must be positive (or set --hash-queue)"));
        }
        if let Some(metrics) = self.metrics_listen.filter(|m| m.port() != 0) {
            if metrics == self.listen || metrics == self.admin_listen {
                return Err(invalid("metrics-listen", "must differ from --listen and --admin-listen"));
            }
        }
        if self.max_calls_per_connection == 0 {
            return Err(invalid("max-calls-per-connection", "must be at least 1"));
        }
        if !(256..=1 << 20).contains(&self.max_request_bytes) {
            return Err(invalid("max-request-bytes", "must be between 256 and 1048576"));
        }
        if self.sms_timeout.is_zero() {
            return Err(invalid("sms-timeout", "must be positive"));
        }
        if *self.min_send_deadline > *self.sms_timeout {
            return Err(invalid("min-send-deadline", "must not exceed --sms-timeout"));
        }
        if !(std::time::Duration::from_millis(300)..=std::time::Duration::from_secs(600))
            .contains(&*self.idempotency_lease)
        {
            return Err(invalid("idempotency-lease", "must be between 300ms and 10m"));
        }
        let test_numbers = TestNumbers::parse(&self.test_numbers, &self.allowed_countries, code_length)
            .map_err(|m| invalid("test-numbers", m))?;
        if self.mode == Mode::Prod && !test_numbers.is_empty() {
            return Err(invalid("test-numbers", "fixed codes are refused in prod mode"));
        }
        if self.sms_http_max_attempts == 0 || self.sms_http_max_attempts > 10 {
            return Err(invalid("sms-http-max-attempts", "must be between 1 and 10"));
        }
        if self.sms_http_attempt_timeout.is_zero() {
            return Err(invalid("sms-http-attempt-timeout", "must be positive"));
        }
        // An attempt shorter than its own timeout is taken to be cut short by the caller, which the breaker does
        // not count: the first attempt must always get its whole timeout unless the caller's deadline is shorter.
        if *self.sms_http_attempt_timeout > *self.sms_timeout {
            return Err(invalid("sms-http-attempt-timeout", "must not exceed --sms-timeout"));
        }
        if self.sms_http_concurrency == 0 {
            return Err(invalid("sms-http-concurrency", "must be at least 1"));
        }
        if self.sms_breaker_threshold == 0 {
            return Err(invalid("sms-breaker-threshold", "must be at least 1"));
        }
        if !(1..=15).contains(&self.prefix_digits) {
            return Err(invalid("prefix-digits", "must be between 1 and 15"));
        }
        let delivery = self
            .delivery
            .validate(
                &sms_gateway,
                crate::sms::TemplateContext {
                    code_digits: self.code_length,
                    ttl: code_ttl,
                    app_hashes: !self.app_hashes.is_empty(),
                },
            )
            .map_err(|(setting, message)| invalid(setting, message))?;
        if let Some((setting, _)) = delivery
            .route_urls()
            .into_iter()
            .find(|(_, url)| self.mode == Mode::Prod && crate::transport::plaintext_off_loopback(url))
        {
            return Err(invalid(
                setting,
                "plain http:// to a host that is not loopback would carry codes and credentials in clear; \
                 refused in prod mode (use https://)",
            ));
        }
        let evidence = self.lookup_evidence.unwrap_or(match self.mode {
            Mode::Prod => crate::domain::EvidencePolicy::Call,
            Mode::Dev => crate::domain::EvidencePolicy::CallOrTyped,
        });
        let sign_in = self.sign_in_policy()?;
        let mail = match &self.smtp_url {
            Some(url) => Some(
                crate::signin::mail::MailSettings::new(url, &self.smtp_from, self.smtp_ca_file.clone())
                    .map_err(|m| invalid("smtp-url", m))?,
            ),
            None => None,
        };
        let call_grace = delta("call-grace", self.call_grace)?;
        if call_grace > chrono::TimeDelta::hours(1) {
            return Err(invalid("call-grace", "at most 1h: an ended call vouches for nothing for long"));
        }
        let lookup_notice = match self.lookup_notice_template.trim() {
            "off" => None,
            template => {
                let support = match (&self.support_number, self.mode) {
                    (Some(number), _) => number.trim().to_owned(),
                    (None, Mode::Dev) => self.sms_sender.trim().to_owned(),
                    (None, Mode::Prod) => {
                        return Err(invalid(
                            "support-number",
                            "prod mode needs --support-number while the lookup notice is on (or \
                             --lookup-notice-template off)",
                        ));
                    }
                };
                let notice = crate::sms::LookupNotice::new(template, &self.delivery.brand, &support)
                    .map_err(|m| invalid("lookup-notice-template", m))?;
                if matches!(sms_gateway, GatewayConfig::Solapi(_))
                    && let Some(bad) = crate::sms::outside_ks_x_1001(notice.text())
                {
                    return Err(invalid(
                        "lookup-notice-template",
                        format!("{bad:?} (from the text or --brand) is outside EUC-KR 완성형, which solapi refuses"),
                    ));
                }
                Some(notice)
            }
        };
        if lookup_notice.is_some() && delivery.alimtalk.as_ref().is_some_and(|a| a.notice_template_code.is_none()) {
            return Err(invalid(
                "alimtalk-notice-template-code",
                "required while alimtalk is in --delivery and the lookup notice is on: the notice goes AlimTalk \
                 first, then SMS (register its text as a template), or set --lookup-notice-template off",
            ));
        }
        let lookup_window = delta("lookup-window", self.lookup_window)?;
        if lookup_window <= chrono::TimeDelta::zero() || lookup_window > chrono::TimeDelta::hours(1) {
            return Err(invalid("lookup-window", "must be between 1s and 1h"));
        }
        if self.accept_unkeyed_through < 0 {
            return Err(invalid("accept-unkeyed-through", "must be a sequence number, 0 or more"));
        }
        if self.supervisor_lookups_per_hour == 0 {
            return Err(invalid("supervisor-lookups-per-hour", "must be at least 1"));
        }
        for (setting, burst) in [
            ("send-burst-per-ip", self.send_burst_per_ip),
            ("verify-burst-per-ip", self.verify_burst_per_ip),
            ("sms-burst-per-prefix", self.sms_burst_per_prefix),
            ("global-sms-burst", self.global_sms_burst),
        ] {
            if burst == 0 {
                return Err(invalid(setting, "must be at least 1"));
            }
        }
        let guard = crate::domain::guard::GuardPolicy {
            mode: self.pumping_guard,
            short: self.pumping_guard_short,
            long: self.pumping_guard_long,
            min_conversion_pct: self.pumping_guard_conversion,
            prefix_digits: self.prefix_digits,
        };
        if let Err(why) = guard.validate() {
            return Err(invalid("pumping-guard-long", &why));
        }
        let passkeys = self.passkeys.validate()?;
        let hash_workers = match self.hash_workers {
            0 => crate::hashing::sizing::from_container(argon2.memory_kib),
            n => crate::hashing::sizing::Sizing { workers: n, reason: "--hash-workers".to_owned() },
        };
        Ok(Config {
            listen: self.listen,
            admin_listen: self.admin_listen,
            tls,
            connections,
            database_url: self.database_url.clone(),
            sms_gateway,
            sms_sender: sender.to_owned(),
            sms_timeout: *self.sms_timeout,
            min_send_deadline: *self.min_send_deadline,
            idempotency_lease: *self.idempotency_lease,
            pepper,
            audit_key_file: self.audit_key_file.clone(),
            allowed_countries: self.allowed_countries.clone(),
            policy: Policy {
                code_length,
                code_ttl,
                max_failed_attempts: self.max_failed_attempts,
                lockout,
                resend_cooldown,
                max_sends_per_hour: self.max_sends_per_hour,
                max_sends_per_day: self.max_sends_per_day,
            },
            argon2,
            hash_workers,
            hash_nice: self.hash_nice,
            hash_queue: match self.hash_queue {
                0 => QueueLimit::Delay(*self.hash_queue_delay),
                n => QueueLimit::Fixed(n),
            },
            hash_admission_wait: *self.hash_admission_wait,
            max_calls_per_connection: self.max_calls_per_connection,
            max_request_bytes: self.max_request_bytes,
            migrate_on_start: self.migrate_on_start,
            http: HttpOptions {
                auth: sms_http_auth,
                attempt_timeout: *self.sms_http_attempt_timeout,
                max_attempts: self.sms_http_max_attempts,
                base_backoff: *self.sms_http_backoff,
                max_backoff: *self.sms_http_max_backoff,
                concurrency: self.sms_http_concurrency,
                breaker_threshold: self.sms_breaker_threshold,
                breaker_cooldown: *self.sms_breaker_cooldown,
            },
            limits: LimitSettings {
                send_per_ip: Limit { rate: self.send_limit_per_ip.0, burst: self.send_burst_per_ip },
                verify_per_ip: Limit { rate: self.verify_limit_per_ip.0, burst: self.verify_burst_per_ip },
                sms_per_prefix: Limit { rate: self.sms_limit_per_prefix.0, burst: self.sms_burst_per_prefix },
                prefix_digits: self.prefix_digits,
                global_sms: Limit { rate: self.global_sms_limit.0, burst: self.global_sms_burst },
            },
            guard,
            trusted_proxies: self.trusted_proxies.clone(),
            test_numbers,
            app_hashes: self.app_hashes.clone(),
            lookup: LookupPolicy {
                window: lookup_window,
                quota: LookupQuota { max: self.supervisor_lookups_per_hour, window: chrono::TimeDelta::hours(1) },
                evidence,
                call_grace,
            },
            accept_unkeyed_through: self.accept_unkeyed_through,
            lookup_notice,
            sign_in,
            mail,
            metrics_listen: self.metrics_listen,
            delivery,
            passkeys,
        })
    }
}

/// `OTPD_*` environment variables that no setting reads: most likely typos.
pub fn unknown_env_vars() -> Vec<String> {
    use clap::CommandFactory;
    let command = Cli::command();
    let known: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .chain(["OTPD_LOG".to_owned()])
        .collect();
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("OTPD_") && !known.contains(k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let mut argv = vec!["otpd"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().settings
    }

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let config = settings(&[]).validate().unwrap();
        assert_eq!(config.sms_sender, "1800-3400");
        assert_eq!(config.policy.max_failed_attempts, 10);
        assert_eq!(config.policy.lockout, chrono::TimeDelta::hours(24));
        assert_eq!(config.policy.code_ttl, chrono::TimeDelta::minutes(3));
        assert_eq!(config.policy.resend_cooldown, chrono::TimeDelta::seconds(30));
        assert_eq!(config.argon2, Argon2Params::default());
        assert!(matches!(config.pepper, PepperSource::Generated(_)));
    }

    #[test]
    fn prod_refuses_dev_gateways_and_a_missing_pepper() {
        let e = settings(&["--mode", "prod"]).validate().unwrap_err();
        assert_eq!(e.setting, "sms-gateway");
        let e = settings(&["--mode", "prod", "--sms-gateway", "file:/tmp/x"]).validate().unwrap_err();
        assert_eq!(e.setting, "sms-gateway");
    }

    #[test]
    fn errors_name_the_setting() {
        for (args, setting) in [
            (&["--code-length", "5"][..], "code-length"),
            (&["--code-ttl", "11m"], "code-ttl"),
            (&["--max-failed-attempts", "0"], "max-failed-attempts"),
            (&["--max-sends-per-day", "2"], "max-sends-per-day"),
            (&["--database-url", "mysql://x"], "database-url"),
            (&["--pepper", "short"], "pepper"),
            (&["--argon2-memory-kib", "1"], "argon2-memory-kib"),
            (
                &[
                    "--mode",
                    "prod",
                    "--sms-gateway",
                    "http:https://sms.example/send",
                    "--pepper",
                    "0123456789abcdef",
                    "--test-numbers",
                    "010-0000-0001=123456",
                ],
                "test-numbers",
            ),
            (&["--test-numbers", "02-312-3456=123456"], "test-numbers"),
            (&["--sms-http-max-attempts", "0"], "sms-http-max-attempts"),
            (&["--prefix-digits", "0"], "prefix-digits"),
            (&["--global-sms-burst", "0"], "global-sms-burst"),
            (&["--hash-queue-delay", "0s"], "hash-queue-delay"),
            (&["--max-calls-per-connection", "0"], "max-calls-per-connection"),
            (&["--sms-http-attempt-timeout", "20s"], "sms-http-attempt-timeout"),
            (&["--sms-gateway", "nhn-sms"], "nhn-sms-app-key"),
            (&["--sms-gateway", "nhn-sms", "--nhn-sms-app-key", "k"], "nhn-sms-secret-key"),
            (&["--sms-gateway", "sens", "--sens-service-id", "s", "--sens-access-key", "a"], "sens-secret-key"),
            (&["--sms-gateway", "solapi"], "solapi-api-key"),
            (&["--delivery", "alimtalk,sms"], "alimtalk-app-key"),
            (&["--delivery", "sms,sms@sens"], "sens-service-id"),
            (&["--delivery", "sms@solapi"], "solapi-api-key"),
            (&["--route-memory", "60d"], "route-memory"),
            (&["--receipt-wait", "2h"], "receipt-wait"),
            (
                &[
                    "--sms-gateway",
                    "sens:http://127.0.0.1:9",
                    "--delivery",
                    "sms@sens",
                    "--sens-url",
                    "http://127.0.0.1:8",
                ],
                "sens-url",
            ),
            (&["--webhook-listen", "127.0.0.1:0"], "webhook-listen"),
            (&["--receipt-hmac-key", "short"], "receipt-hmac-key"),
            (&["--sms-template", "no code here"], "sms-template"),
            (&["--origin-domain", "not a domain"], "origin-domain"),
        ] {
            assert_eq!(settings(args).validate().unwrap_err().setting, setting, "{args:?}");
        }
    }

    #[test]
    fn prod_accepts_an_http_gateway_with_a_pepper() {
        let config = settings(&[
            "--mode",
            "prod",
            "--sms-gateway",
            "http:https://sms.example/send",
            "--pepper",
            "0123456789abcdef",
            "--support-number",
            "1588-0000",
        ])
        .validate()
        .unwrap();
        assert!(matches!(config.sms_gateway, GatewayConfig::Http(_)));
    }

    #[test]
    fn prod_needs_a_support_number_while_the_lookup_notice_is_on() {
        let base = ["--mode", "prod", "--sms-gateway", "http:https://sms.example/send", "--pepper", "0123456789abcdef"];
        let e = settings(&base).validate().unwrap_err();
        assert_eq!(e.setting, "support-number");
        assert!(
            settings(&[&base[..], &["--lookup-notice-template", "off"]].concat())
                .validate()
                .unwrap()
                .lookup_notice
                .is_none()
        );
        let e =
            settings(&[&base[..], &["--support-number", "1588-0000", "--lookup-notice-template", "{code}"]].concat())
                .validate()
                .unwrap_err();
        assert_eq!(e.setting, "lookup-notice-template");
        let e = settings(&[&base[..], &["--support-number", "1588-0000", "--brand", "카카오T"]].concat()).validate();
        assert!(e.unwrap_err().message.contains("94 bytes"), "the default text with a 4-letter brand is 94 bytes");
        let config = settings(&[&base[..], &["--support-number", "1588-0000"]].concat()).validate().unwrap();
        assert_eq!(config.lookup.evidence, crate::domain::EvidencePolicy::Call, "prod defaults to call evidence");
        assert!(config.lookup_notice.unwrap().text().contains("1588-0000"));
    }

    const PROD: [&str; 6] = ["--mode", "prod", "--pepper", "0123456789abcdef", "--support-number", "1588-0000"];

    fn prod(args: &[&str]) -> Result<Config, ConfigError> {
        settings(&[&PROD[..], args].concat()).validate()
    }

    #[test]
    fn routes_take_each_providers_own_settings() {
        let nhn = ["--nhn-sms-app-key", "k", "--nhn-sms-secret-key", "s"];
        let sens = ["--sens-service-id", "i", "--sens-access-key", "a", "--sens-secret-key", "s"];
        let both = [&nhn[..], &sens[..]].concat();
        let sms_then_sens = ["--sms-gateway", "nhn-sms:https://nhn.example", "--delivery", "sms@nhn,sms@sens"];
        let config = prod(&[&both[..], &sms_then_sens[..]].concat()).unwrap();
        let routes: Vec<String> = config.delivery.routes.iter().map(|(r, _)| r.to_string()).collect();
        assert_eq!(routes, ["sms@nhn", "sms@sens"]);
        assert_eq!(config.delivery.routes[0].1, None, "sms@nhn is the --sms-gateway: one gateway, one breaker");
        assert!(matches!(config.delivery.routes[1].1, Some(GatewayConfig::Sens(_))));
        assert!(config.delivery.credentials.nhn_sms.is_some() && config.delivery.credentials.sens.is_some());
        // `log` is the default --sms-gateway; with no bare `sms` route it carries nothing, so prod accepts it.
        prod(&[&both[..], &["--delivery", "sms@nhn,sms@sens"]].concat()).unwrap();
        let e = prod(&[&both[..], &["--delivery", "sms@sens,sms", "--sens-url", "http://sens.example"]].concat());
        assert_eq!(e.unwrap_err().setting, "sms-gateway", "the bare sms route is `log`");
        let e = prod(&[&both[..], &["--delivery", "sms@nhn,sms@sens", "--sens-url", "http://sens.example"]].concat());
        assert_eq!(e.unwrap_err().setting, "sens-url", "plain http off loopback");
        // NHN's authentication word is required once any route goes through NHN SMS.
        let e = prod(&[&both[..], &["--delivery", "sms@sens,sms@nhn", "--sms-template", "코드 {code}"]].concat());
        assert_eq!(e.unwrap_err().setting, "sms-template");
    }

    #[test]
    fn prod_refuses_plain_http_to_a_provider_off_loopback() {
        for gateway in ["http:http://sms.example/send", "nhn-sms:http://10.0.0.7", "sens:http://sens.example"] {
            let e = prod(&["--sms-gateway", gateway]).unwrap_err();
            assert_eq!(e.setting, "sms-gateway", "{gateway}");
            assert!(e.message.contains("https://"), "{e}");
        }
        let alimtalk = ["--alimtalk-app-key", "k", "--alimtalk-secret-key", "s", "--alimtalk-sender-key", "sk"];
        let alimtalk = [&alimtalk[..], &["--alimtalk-template-code", "T", "--delivery", "alimtalk,sms"]].concat();
        let alimtalk = [&alimtalk[..], &["--sms-gateway", "https://sms.example/send"]].concat();
        // The lookup notice is on: AlimTalk needs its template too.
        let e = prod(&[&alimtalk[..], &["--alimtalk-gateway", "nhn-alimtalk:http://127.0.0.1:9"]].concat());
        assert_eq!(e.unwrap_err().setting, "alimtalk-notice-template-code");
        let alimtalk = [&alimtalk[..], &["--alimtalk-notice-template-code", "N"]].concat();
        let e = prod(&[&alimtalk[..], &["--alimtalk-gateway", "nhn-alimtalk:http://bizmsg.example"]].concat());
        assert_eq!(e.unwrap_err().setting, "alimtalk-gateway");
        // Loopback (a local relay or stand-in) and https are fine; dev mode allows plain http anywhere.
        for gateway in
            ["http://127.0.0.1:9/send", "http://localhost:9/send", "http://[::1]:9/send", "https://sms.example/"]
        {
            prod(&["--sms-gateway", gateway]).unwrap();
        }
        prod(&[&alimtalk[..], &["--alimtalk-gateway", "nhn-alimtalk:http://127.0.0.1:9"]].concat()).unwrap();
        settings(&["--sms-gateway", "http://sms.example/send"]).validate().unwrap();
    }

    #[test]
    fn prod_refuses_postgres_off_loopback_without_verify_full() {
        let gateway = ["--sms-gateway", "https://sms.example/send", "--database-url"];
        let db = |url: &'static str| [&gateway[..], &[url]].concat();
        for url in [
            "postgres://otpd:SECRET-PW@db.example/otpd",
            "postgres://otpd@db.example/otpd?sslmode=prefer",
            "postgres://otpd@10.0.0.5/otpd?sslmode=disable",
            "postgres://otpd@db.example/otpd?sslmode=require",
            "postgres://otpd@db.example/otpd?sslmode=verify-ca",
        ] {
            let e = prod(&db(url)).unwrap_err();
            assert_eq!(e.setting, "database-url", "{url}");
            assert!(e.message.contains("verify-full"), "{e}");
            assert!(!e.to_string().contains("SECRET-PW"), "{e}");
        }
        prod(&db("postgres://otpd@db.example/otpd?sslmode=verify-full&sslrootcert=/etc/otpd/db-ca.pem")).unwrap();
        // require: encrypted but unchecked, only with the acknowledgement.
        let acknowledged =
            [&db("postgres://otpd@db.example/otpd?sslmode=require")[..], &["--database-tls-require-acknowledged"]];
        prod(&acknowledged.concat()).unwrap();
        // On this host (loopback or a Unix socket) and in dev mode, no TLS is asked for.
        prod(&db("postgres://postgres@127.0.0.1:5432/otpd")).unwrap();
        prod(&db("postgres://postgres@localhost/otpd")).unwrap();
        prod(&db("postgres://postgres@[::1]/otpd")).unwrap();
        prod(&db("postgres:///otpd?host=/var/run/postgresql")).unwrap();
        prod(&db("sqlite://otpd.db")).unwrap();
        settings(&["--database-url", "postgres://otpd@db.example/otpd"]).validate().unwrap();
    }

    #[test]
    fn a_mistyped_gateway_is_named_but_never_echoed() {
        for value in ["htps://sms.example/send?key=SECRET-KEY-1", "nhn-sms:ftp://SECRET-KEY-1@x", "SECRET-KEY-1"] {
            let e = settings(&["--sms-gateway", value]).validate().unwrap_err();
            assert_eq!(e.setting, "sms-gateway");
            assert!(!e.to_string().contains("SECRET-KEY-1"), "{e}");
        }
    }

    #[test]
    fn the_http_providers_authorization_may_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth");
        std::fs::write(&file, "Bearer key-from-file\n").unwrap();
        let file = file.to_str().unwrap();
        let config = settings(&["--sms-http-auth-file", file]).validate().unwrap();
        assert_eq!(config.http.auth.unwrap().expose_secret(), "Bearer key-from-file");
        let e = settings(&["--sms-http-auth-file", file, "--sms-http-auth", "Bearer x"]).validate().unwrap_err();
        assert_eq!(e.setting, "sms-http-auth");
        let e = settings(&["--sms-http-auth", "Bearer\u{7}bell"]).validate().unwrap_err();
        assert!(!e.to_string().contains("bell"), "{e}");
    }

    #[test]
    fn limits_default_to_the_published_values_and_can_be_turned_off() {
        let config = settings(&[]).validate().unwrap();
        assert_eq!(config.limits.send_per_ip.rate.unwrap().to_string(), "60/h");
        assert_eq!(config.limits.verify_per_ip.rate.unwrap().to_string(), "360/h");
        assert_eq!(config.limits.sms_per_prefix.rate.unwrap().to_string(), "100/h");
        assert_eq!(config.limits.global_sms.rate.unwrap().to_string(), "20/s");
        let config = settings(&["--send-limit-per-ip", "off"]).validate().unwrap();
        assert_eq!(config.limits.send_per_ip.rate, None);
    }

    #[test]
    fn durations_parse_like_humans_write_them() {
        let config = settings(&["--code-ttl", "90s", "--lockout", "1h 30m"]).validate().unwrap();
        assert_eq!(config.policy.code_ttl, chrono::TimeDelta::seconds(90));
        assert_eq!(config.policy.lockout, chrono::TimeDelta::minutes(90));
    }

    // The TLS flags as the command line gives them (src/tls.rs validates them).
    fn validate_tls(args: &[&str]) -> Result<crate::tls::TlsSettings, ConfigError> {
        let mut argv = vec!["otpd"];
        argv.extend_from_slice(args);
        let settings = Cli::try_parse_from(argv).unwrap().settings;
        settings.tls.validate(settings.mode, settings.admin_listen, settings.delivery.webhook_listen)
    }

    fn file(setting: &'static str, path: &str) -> crate::tls::PemFile {
        crate::tls::PemFile { setting, path: path.into() }
    }

    #[test]
    fn plaintext_by_default() {
        let tls = validate_tls(&[]).unwrap();
        assert_eq!((tls.public, tls.admin, tls.webhook), (None, None, None));
        assert_eq!(tls.handshake_timeout, std::time::Duration::from_secs(10));
    }

    #[test]
    fn the_admin_listener_defaults_to_the_public_pair_and_may_have_its_own() {
        let tls = validate_tls(&["--tls-cert", "p.crt", "--tls-key", "p.key", "--admin-client-ca", "ca.crt"]).unwrap();
        let public = tls.public.unwrap();
        assert_eq!((public.cert, public.key.clone()), (file("tls-cert", "p.crt"), file("tls-key", "p.key")));
        let admin = tls.admin.unwrap();
        assert_eq!(admin.key, public.key);
        assert_eq!(admin.client_ca, Some(file("admin-client-ca", "ca.crt")));

        let tls = validate_tls(&["--admin-tls-cert", "a.crt", "--admin-tls-key", "a.key"]).unwrap();
        assert_eq!(tls.public, None);
        assert_eq!(tls.admin.unwrap().cert, file("admin-tls-cert", "a.crt"));
    }

    #[test]
    fn half_a_pair_and_mutual_tls_without_tls_are_errors_naming_the_setting() {
        for (args, setting) in [
            (&["--tls-cert", "p.crt"][..], "tls-key"),
            (&["--tls-key", "p.key"], "tls-cert"),
            (&["--tls-cert", "p.crt", "--tls-key", "p.key", "--admin-tls-cert", "a.crt"], "admin-tls-key"),
            (&["--admin-tls-key", "a.key"], "admin-tls-cert"),
            (&["--admin-client-ca", "ca.crt"], "admin-client-ca"),
            (&["--tls-handshake-timeout", "0s"], "tls-handshake-timeout"),
            (&["--webhook-tls-cert", "w.crt"], "webhook-tls-key"),
            (&["--webhook-tls-cert", "w.crt", "--webhook-tls-key", "w.key"], "webhook-tls-cert"),
        ] {
            assert_eq!(validate_tls(args).unwrap_err().setting, setting, "{args:?}");
        }
    }

    #[test]
    fn prod_refuses_a_plaintext_admin_listener_off_loopback() {
        let with = |extra: &[&str]| prod(&[&["--sms-gateway", "http:https://sms.example/send"][..], extra].concat());
        for admin in ["0.0.0.0:50052", "10.1.2.3:50052", "[::]:50052"] {
            let error = with(&["--admin-listen", admin]).unwrap_err();
            assert_eq!(error.setting, "admin-listen");
            assert!(error.to_string().contains("TLS"), "{error}");
        }
        // Loopback stays allowed in clear, and TLS (either pair) lifts the refusal.
        assert!(with(&["--admin-listen", "127.0.0.1:50052"]).is_ok());
        assert!(with(&["--admin-listen", "[::1]:50052"]).is_ok());
        assert!(with(&["--admin-listen", "0.0.0.0:50052", "--tls-cert", "c", "--tls-key", "k"]).is_ok());
        assert!(with(&["--admin-listen", "0.0.0.0:50052", "--admin-tls-cert", "c", "--admin-tls-key", "k"]).is_ok());
        // Dev mode allows it.
        assert!(validate_tls(&["--admin-listen", "0.0.0.0:50052"]).is_ok());
    }

    #[test]
    fn prod_refuses_a_plaintext_webhook_listener_off_loopback() {
        let base = ["--sms-gateway", "http:https://sms.example/send", "--receipt-hmac-key", "0123456789abcdef0123"];
        let with = |extra: &[&str]| prod(&[&base[..], extra].concat());
        for webhook in ["0.0.0.0:8080", "10.1.2.3:8080", "[::]:8080"] {
            let error = with(&["--webhook-listen", webhook]).unwrap_err();
            assert_eq!(error.setting, "webhook-listen", "{error}");
            assert!(error.to_string().contains("--webhook-tls-cert"), "{error}");
        }
        assert!(with(&["--webhook-listen", "127.0.0.1:8080"]).is_ok());
        let config =
            with(&["--webhook-listen", "0.0.0.0:8080", "--webhook-tls-cert", "w.crt", "--webhook-tls-key", "w.key"])
                .unwrap();
        let webhook = config.tls.webhook.unwrap();
        assert_eq!((webhook.cert, webhook.key), (file("webhook-tls-cert", "w.crt"), file("webhook-tls-key", "w.key")));
        // The gRPC listeners' TLS does not cover the webhook listener.
        let error = with(&["--webhook-listen", "0.0.0.0:8080", "--tls-cert", "c", "--tls-key", "k"]).unwrap_err();
        assert_eq!(error.setting, "webhook-listen");
        assert!(
            validate_tls(&["--webhook-listen", "0.0.0.0:8080", "--receipt-hmac-key", "0123456789abcdef0123"]).is_ok()
        );
    }
}
