//! Builds the application from a [`Config`] and serves it: the public listener (OtpService) and the admin
//! listener, each with health and reflection (v1 and v1alpha), until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::TimeDelta;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, PepperSource};
use crate::domain::audit::AuditKey;
use crate::drain::close_on_shutdown;
use crate::grpc::{AdmitFirstLayer, AuthLayer, MalformedIsInvalidArgument, OtpApi, SignInApi, SupervisorApi};
use crate::hashing::{CodeHasher, Pepper};
use crate::limits::FrontLimits;
use crate::listen::{Admission, AllowedHosts, HostCheckLayer, Incoming, StreamListener};
use crate::metrics::{ListenerName, Metrics, RpcMetricsLayer};
use crate::pb::otp::v1::otp_service_server::OtpServiceServer;
use crate::pb::otp::v1::sign_in_service_server::SignInServiceServer;
use crate::pb::otp::v1::supervisor_service_server::SupervisorServiceServer;
use crate::service::{ServiceParts, VerificationService};
use crate::store::Store;
use crate::store::Stores;
use crate::supervision::{AuditLog, SupervisionService};
use tower_layer::Layer;

/// The name health checks use for the public service.
pub const OTP_SERVICE_NAME: &str = "otp.v1.OtpService";
/// The name health checks use for the supervisor service.
pub const SUPERVISOR_SERVICE_NAME: &str = "otp.v1.SupervisorService";
/// The health name for a liveness probe: SERVING from the moment the listeners accept until shutdown, whatever the
/// database does. The other names turn NOT_SERVING while the database is unreachable, which is right for readiness
/// and wrong for liveness: restarting every replica during a database outage helps nothing.
pub const LIVENESS_NAME: &str = "liveness";
/// The health name of delivery: NOT_SERVING while every route's circuit breaker is open (no code can go out),
/// while the services stay SERVING (checks, look-ups and the status view still work).
pub const DELIVERY_HEALTH_NAME: &str = "otp.v1.Delivery";
/// How often the routes' breakers are read for [`DELIVERY_HEALTH_NAME`] (memory only: cheap).
const DELIVERY_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// Every name health reports as the database allows: the whole server ("") and each service.
const HEALTH_NAMES: [&str; 3] = ["", OTP_SERVICE_NAME, SUPERVISOR_SERVICE_NAME];
/// How often the database is pinged for the health status.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// How often old codes and verifications are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often idle keys are dropped from the front-line limiters.
const LIMITER_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);
/// Codes are kept this long: the daily send cap looks back one day.
const RETENTION: TimeDelta = TimeDelta::days(2);

/// A built, bound application, ready to serve.
pub struct Application {
    public: TcpListener,
    admin: TcpListener,
    receipts: Option<TcpListener>,
    config: Config,
    stores: Stores,
    hasher: CodeHasher,
    service: VerificationService,
    supervision: SupervisionService,
    sign_in: crate::signin::SignInService,
    clock: Arc<dyn Clock>,
    limits: Arc<FrontLimits>,
    tls: crate::tls::Loaded,
    metrics: Arc<Metrics>,
    metrics_listener: Option<TcpListener>,
    keys: crate::grpc::IdempotencyKeys,
}

impl Application {
    /// Builds with the system clock.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Connects and migrates the store, opens the gateway, binds both listeners.
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let stores = crate::store::connect(&config.database_url).await.context("connecting to the database")?;
        let stores = crate::store::metered(stores, Arc::clone(&metrics));
        if config.migrate_on_start {
            stores.verification.migrate().await.context("migrating the database")?;
        }
        let Keys { pepper, audit_key } = load_keys(&config).await?;
        tracing::info!(workers = config.hash_workers.workers, reason = %config.hash_workers.reason, "hashing workers chosen");
        let hasher = CodeHasher::new(
            pepper.clone(),
            config.argon2,
            config.hash_workers.workers,
            config.hash_nice,
            config.hash_queue,
        )
        .map_err(anyhow::Error::msg)?
        .with_admission_wait(config.hash_admission_wait)
        .with_metrics(Arc::clone(&metrics));
        let pepper_for_sign_in = pepper.clone();
        let keys = crate::grpc::IdempotencyKeys::new(
            Arc::clone(&stores.keys),
            pepper.clone(),
            Arc::clone(&clock),
            config.idempotency_lease,
        );
        let audit = AuditLog::new(Arc::clone(&stores.supervision), pepper, audit_key, Arc::clone(&clock));
        let audit_for_sign_in = audit.clone();
        let supervision = SupervisionService::new(
            audit.clone(),
            hasher.clone(),
            Arc::clone(&clock),
            config.policy.clone(),
            config.lookup,
            Arc::clone(&metrics),
        )
        .accepting_unkeyed_through(config.accept_unkeyed_through);
        let gateway = config
            .sms_gateway
            .build(&config.http, &config.delivery.credentials, Arc::clone(&clock), Arc::clone(&metrics))
            .await
            .map_err(|e| anyhow::anyhow!("opening SMS gateway {}: {e}", config.sms_gateway))?;
        let channels = config
            .delivery
            .channels(Arc::clone(&gateway), &config.http, Arc::clone(&clock), Arc::clone(&metrics))
            .await
            .map_err(|e| anyhow::anyhow!("opening the delivery routes: {e}"))?;
        let limits = Arc::new(FrontLimits::new(&config.limits, Arc::clone(&clock)).with_metrics(Arc::clone(&metrics)));
        let guard = Arc::new(crate::service::SendGuard::new(
            Arc::clone(&stores.guard),
            config.guard,
            config.limits.sms_per_prefix,
            config.limits.global_sms,
            Arc::clone(&clock),
            Arc::clone(&metrics),
        ));
        let service = VerificationService::new(ServiceParts {
            store: Arc::clone(&stores.verification),
            hasher: hasher.clone(),
            gateway,
            channels,
            learning: crate::service::RouteLearning {
                memory: config.delivery.route_memory,
                receipt_wait: config.delivery.receipt_wait,
            },
            clock: Arc::clone(&clock),
            policy: config.policy.clone(),
            sender: config.sms_sender.clone(),
            template: config.delivery.template.clone(),
            delivery_timeout: config.sms_timeout,
            min_send_deadline: config.min_send_deadline,
            test_numbers: config.test_numbers.clone(),
            audit,
            limits: Arc::clone(&limits),
            metrics: Arc::clone(&metrics),
            guard: Arc::clone(&guard),
        });
        let supervision = match &config.lookup_notice {
            Some(notice) => {
                supervision.notifying(Arc::new(Notices { service: service.clone(), notice: notice.clone() }))
            }
            None => supervision,
        };
        let supervision = supervision.guarding(Arc::clone(&guard));
        let mut sign_in = crate::signin::SignInService::new(
            Arc::clone(&stores.sign_in),
            audit_for_sign_in,
            pepper_for_sign_in,
            Arc::clone(&clock),
            config.sign_in,
            config.allowed_countries.clone(),
        )
        .with_phone(Arc::new(PhoneCodes { service: service.clone(), ttl: config.sign_in.challenge_ttl }));
        if let Some(mail) = &config.mail {
            let mailer = mail.open().await.map_err(|e| anyhow::anyhow!("opening the mail server settings: {e}"))?;
            tracing::info!(server = %mail.server(), "e-mail sign-in codes on");
            sign_in = sign_in.with_mail(Arc::new(mailer));
        }
        let tls = crate::tls::load(&config.tls).await?;
        let public = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let admin =
            TcpListener::bind(config.admin_listen).await.with_context(|| format!("binding {}", config.admin_listen))?;
        // The passkeys' relying party: the console's origin, by default the admin listener's bound port on localhost.
        let admin_port = admin.local_addr().map_or(config.admin_listen.port(), |a| a.port());
        let passkeys = config
            .passkeys
            .passkeys(admin_port, tls.admin.is_some())
            .map_err(|e| anyhow::anyhow!("invalid setting --passkey-origin: {e}"))?;
        tracing::info!(origin = %passkeys.origin(), "passkeys on");
        let sign_in = sign_in.with_passkeys(Arc::new(passkeys));
        let receipts = match config.delivery.webhook_listen {
            Some(addr) => Some(crate::receipts::bind(addr).await.with_context(|| format!("binding {addr}"))?),
            None => None,
        };
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("binding {addr} (metrics)"))?),
            None => None,
        };
        Ok(Self {
            public,
            admin,
            config,
            stores,
            hasher,
            service,
            supervision,
            sign_in,
            clock,
            limits,
            tls,
            metrics,
            metrics_listener,
            receipts,
            keys,
        })
    }

    /// The bound public address (useful with port 0).
    pub fn public_addr(&self) -> SocketAddr {
        self.public.local_addr().unwrap_or(self.config.listen)
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin_listen)
    }

    /// The bound Prometheus endpoint's address, when `--metrics-listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// This application's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The bound delivery-receipt address, when receipts are on.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.receipts.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The code hasher (its counter shows how many argon2 computations ran).
    pub fn hasher(&self) -> &CodeHasher {
        &self.hasher
    }

    /// The front-line limiters.
    pub fn limits(&self) -> Arc<FrontLimits> {
        Arc::clone(&self.limits)
    }

    /// Both faces of the store.
    pub fn stores(&self) -> Stores {
        self.stores.clone()
    }

    /// Serves until `shutdown` completes, then drains in-flight calls.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        let (reporter, health) = tonic_health::server::health_reporter();
        // The store answered while the application was built; every name is registered before the listeners
        // accept anything, so no health check ever sees an unknown service.
        set_health(&reporter, ServingStatus::Serving).await;
        reporter.set_service_status(LIVENESS_NAME, ServingStatus::Serving).await;
        reporter.set_service_status(DELIVERY_HEALTH_NAME, delivery_status(&self.service)).await;
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        let api = OtpApi::new(
            self.service.clone(),
            self.config.allowed_countries.clone(),
            Arc::clone(&self.limits),
            self.config.app_hashes.clone(),
            self.keys.clone(),
        );
        let otp = OtpServiceServer::new(api).max_decoding_message_size(self.config.max_request_bytes);
        let admit_first = AdmitFirstLayer::new(
            self.service.clone(),
            Arc::clone(&self.limits),
            self.config.trusted_proxies.clone(),
            self.config.max_request_bytes,
        );
        let public_addr = self.public_addr();
        let admin_addr = self.admin_addr();
        let metrics_addr = self.metrics_addr();
        let (public_tls, admin_tls) = (self.tls.public.clone(), self.tls.admin.clone());
        // Installed before anything is served, with TLS or without: a SIGHUP must never meet the default action
        // (exit).
        let tls_reload = crate::tls::reload_on_sighup(self.tls.all(), token.clone()).context("listening for SIGHUP")?;
        let tls_watch = crate::tls::reload_on_change(self.tls.all(), self.config.tls.watch_interval, token.clone());
        let connections = self.config.connections.clone();
        let admission = |listener| Admission::new(listener, &connections, Arc::clone(&self.metrics));
        let hosts = |addr: SocketAddr, tls: bool| AllowedHosts::for_listener(addr, tls, &connections.allowed_hosts);

        let rpc_metrics = RpcMetricsLayer::new(Arc::clone(&self.metrics));
        let public = Server::builder()
            .timeout(Duration::from_secs(30))
            .http2_keepalive_interval(Some(connections.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(connections.http2_keepalive_timeout))
            .concurrency_limit_per_connection(self.config.max_calls_per_connection)
            // Outermost first: every call is timed and counted; a SendCode or VerifyCode is then admitted (or
            // refused) before it gets a span or tonic decodes it.
            .layer(rpc_metrics.clone())
            .layer(admit_first)
            .layer(crate::telemetry::TraceContextLayer)
            .layer(MalformedIsInvalidArgument)
            .add_service(health.clone())
            .add_service(reflection_v1.clone())
            .add_service(reflection_v1alpha.clone())
            .add_service(otp);
        let handshake_timeout = self.config.tls.handshake_timeout;
        let (listener, stop) = (Incoming::new(self.public, admission(ListenerName::Public)), token.clone());
        // One arm per kind of stream: tonic is generic over the connection type, and only the real types keep
        // `remote_addr` (TcpConnectInfo, or TlsConnectInfo around it) for the client-IP limits. At shutdown the
        // listening sockets close at once: new connections are refused while calls drain.
        let public = async move {
            match public_tls {
                Some(tls) => {
                    let (incoming, closed) =
                        close_on_shutdown(tls.incoming(listener, handshake_timeout, stop.clone()), stop);
                    public.serve_with_incoming_shutdown(incoming, closed).await
                }
                None => {
                    let (incoming, closed) = close_on_shutdown(listener, stop);
                    public.serve_with_incoming_shutdown(incoming, closed).await
                }
            }
        };
        let supervisor = SupervisorServiceServer::new(
            SupervisorApi::new(self.supervision.clone(), self.config.allowed_countries.clone(), self.sign_in.clone())
                .with_delivery(self.service.clone(), &self.config.sms_sender),
        )
        .max_decoding_message_size(self.config.max_request_bytes);
        let supervisor =
            AuthLayer::new(self.supervision.clone(), self.sign_in.clone(), self.config.trusted_proxies.clone())
                .layer(supervisor);
        let sign_in = SignInServiceServer::new(SignInApi::new(self.sign_in.clone()))
            .max_decoding_message_size(self.config.max_request_bytes);
        let sign_in = crate::grpc::access::WithAccess::new(sign_in, self.config.trusted_proxies.clone());
        // HTTP/1.1 too, for the web console: its pages, and its gRPC-Web calls that tonic-web turns into the same
        // SupervisorService calls (through AuthLayer) before routing. Native gRPC clients are unaffected.
        let admin = Server::builder()
            .timeout(Duration::from_secs(30))
            .http2_keepalive_interval(Some(connections.http2_keepalive_interval))
            .http2_keepalive_timeout(Some(connections.http2_keepalive_timeout))
            .concurrency_limit_per_connection(self.config.max_calls_per_connection)
            .accept_http1(true)
            // First of all: a browser led here by a rebound name gets 421, not the console or an API.
            .layer(HostCheckLayer::new(hosts(admin_addr, admin_tls.is_some())))
            .layer(crate::telemetry::TraceContextLayer)
            .layer(crate::console::ConsoleLayer)
            .layer(tonic_web::GrpcWebLayer::new())
            // Inside gRPC-Web: browser calls are counted as the gRPC calls they become; console pages are not.
            .layer(rpc_metrics)
            .layer(MalformedIsInvalidArgument)
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(supervisor)
            .add_service(sign_in);
        let (listener, stop) = (Incoming::new(self.admin, admission(ListenerName::Admin)), token.clone());
        let admin = async move {
            match admin_tls {
                Some(tls) => {
                    let (incoming, closed) =
                        close_on_shutdown(tls.incoming(listener, handshake_timeout, stop.clone()), stop);
                    admin.serve_with_incoming_shutdown(incoming, closed).await
                }
                None => {
                    let (incoming, closed) = close_on_shutdown(listener, stop);
                    admin.serve_with_incoming_shutdown(incoming, closed).await
                }
            }
        };

        let receipts = match self.receipts {
            None => None,
            Some(listener) => {
                let local = listener.local_addr().context("the webhook listener's address")?;
                let incoming = Incoming::new(listener, admission(ListenerName::Webhook));
                let (store, clock) = (Arc::clone(&self.stores.verification), Arc::clone(&self.clock));
                let (calls, countries) = (Arc::clone(&self.stores.supervision), self.config.allowed_countries.clone());
                let (keys, stop) = (self.config.delivery.receipt_keys.clone(), token.clone());
                let hosts = hosts(local, self.tls.webhook.is_some());
                Some(match &self.tls.webhook {
                    Some(tls) => {
                        let incoming = tls.incoming(incoming, handshake_timeout, stop.clone());
                        let listener = StreamListener::new(incoming, local);
                        tokio::spawn(crate::receipts::serve(
                            listener, hosts, store, calls, countries, clock, keys, stop,
                        ))
                    }
                    None => {
                        let listener = StreamListener::new(incoming, local);
                        tokio::spawn(crate::receipts::serve(
                            listener, hosts, store, calls, countries, clock, keys, stop,
                        ))
                    }
                })
            }
        };
        // Receipts from the providers that post none (SENS, Solapi) are polled for.
        let polled = self.config.delivery.result_queries(&self.config.sms_gateway);
        let polled_gateways: Vec<&str> = polled.iter().map(|q| q.gateway()).collect();
        let poller = tokio::spawn(crate::receipts::poll(
            Arc::clone(&self.stores.verification),
            polled,
            Arc::clone(&self.clock),
            crate::receipts::PollSettings { interval: self.config.delivery.receipt_poll_interval },
            token.clone(),
        ));
        let background = tokio::spawn(maintain(
            Upkeep {
                store: Arc::clone(&self.stores.verification),
                service: self.service.clone(),
                retention: retention(self.config.delivery.route_memory),
                guard: Arc::clone(&self.stores.guard),
                guard_policy: self.config.guard,
                clock: self.clock,
                limits: self.limits,
            },
            reporter,
            token.clone(),
        ));
        tracing::info!(%public_addr, %admin_addr, ?metrics_addr, database = backend(&self.config.database_url),
            sms_gateway = %self.config.sms_gateway, routes = %routes_line(&self.service),
            receipts_polled = ?polled_gateways,
            sender = %self.config.sms_sender, "otpd listening");
        let stop = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight calls");
            stop.cancel();
        });
        let scrape = match (self.metrics_listener, metrics_addr) {
            (Some(listener), Some(local)) => {
                let incoming = StreamListener::new(Incoming::new(listener, admission(ListenerName::Metrics)), local);
                let app = crate::metrics::router(self.metrics).layer(HostCheckLayer::new(hosts(local, false)));
                let stop = token.clone().cancelled_owned();
                Some(async move { axum::serve(incoming, app).with_graceful_shutdown(stop).await })
            }
            _ => None,
        };
        let scrape = async move {
            match scrape {
                Some(serving) => serving.await,
                None => Ok(()),
            }
        };
        let (public, admin, scrape) = tokio::join!(public, admin, scrape);
        token.cancel();
        let _ = background.await;
        let _ = poller.await;
        if let Some(tls_watch) = tls_watch {
            let _ = tls_watch.await;
        }
        if let Some(tls_reload) = tls_reload {
            let _ = tls_reload.await;
        }
        if let Some(receipts) = receipts {
            match receipts.await {
                Ok(result) => result.context("receipt listener")?,
                Err(error) => tracing::error!(%error, "receipt listener task failed"),
            }
        }
        public.context("public listener")?;
        admin.context("admin listener")?;
        scrape.context("metrics listener")?;
        tracing::info!("stopped");
        Ok(())
    }
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc.ErrorInfo, BadRequest, RetryInfo…: lets grpcurl render error details, not raw bytes.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

fn backend(url: &str) -> &'static str {
    if url.starts_with("sqlite:") { "sqlite" } else { "postgres" }
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_NAMES {
        reporter.set_service_status(name, status).await;
    }
}

/// Keeps the health status in step with the database, purges old rows, and keeps the limiters' memory bounded.
/// Codes (and their delivery attempts) are kept for the daily cap and for as long as a number remembers its
/// routes (`--route-memory`), whichever is longer.
fn retention(route_memory: TimeDelta) -> TimeDelta {
    RETENTION.max(route_memory)
}

/// Every route with its provider's `host:port` (never a path or a key), for the start-up line.
fn routes_line(service: &VerificationService) -> String {
    let routes: Vec<String> = service
        .route_reports()
        .into_iter()
        .map(|r| match r.endpoint {
            Some(endpoint) => format!("{} ({endpoint})", r.route),
            None => r.route,
        })
        .collect();
    routes.join(", ")
}

fn delivery_status(service: &VerificationService) -> ServingStatus {
    if service.delivery_serving() { ServingStatus::Serving } else { ServingStatus::NotServing }
}

/// What the background upkeep looks after.
struct Upkeep {
    /// Pinged for health, purged of old rows.
    store: Arc<dyn Store>,
    /// Its routes' breakers make the delivery health.
    service: VerificationService,
    /// How long codes and their attempts are kept.
    retention: TimeDelta,
    /// The pumping guard's buckets and overrides, purged past its long window.
    guard: Arc<dyn crate::store::GuardStore>,
    /// The guard's windows.
    guard_policy: crate::domain::guard::GuardPolicy,
    /// Time.
    clock: Arc<dyn Clock>,
    /// The front-line limiters, cleaned of idle keys.
    limits: Arc<FrontLimits>,
}

async fn maintain(upkeep: Upkeep, reporter: HealthReporter, token: CancellationToken) {
    let Upkeep { store, service, retention, guard, guard_policy, clock, limits } = upkeep;
    let mut health = tokio::time::interval(HEALTH_INTERVAL);
    let mut purge = tokio::time::interval(PURGE_INTERVAL);
    let mut limiter_cleanup = tokio::time::interval(LIMITER_CLEANUP_INTERVAL);
    let mut delivery = tokio::time::interval(DELIVERY_HEALTH_INTERVAL);
    let mut last = Some(ServingStatus::Serving);
    let mut last_delivery = delivery_status(&service);
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            _ = health.tick() => {
                let status = match store.ping().await {
                    Ok(()) => ServingStatus::Serving,
                    Err(error) => {
                        tracing::error!(error = %crate::telemetry::ErrorChain(&error), "database ping failed");
                        ServingStatus::NotServing
                    }
                };
                if last != Some(status) {
                    set_health(&reporter, status).await;
                    last = Some(status);
                }
            }
            _ = limiter_cleanup.tick() => limits.cleanup(),
            _ = delivery.tick() => {
                // Also publishes every route's breaker state as a metric.
                let _ = service.route_reports();
                let status = delivery_status(&service);
                if status != last_delivery {
                    match status {
                        ServingStatus::Serving => tracing::info!("delivery serving again: a route's breaker let a send through"),
                        _ => tracing::error!(routes = %routes_line(&service), "delivery NOT_SERVING: every route's circuit breaker is open"),
                    }
                    reporter.set_service_status(DELIVERY_HEALTH_NAME, status).await;
                    last_delivery = status;
                }
            }
            _ = purge.tick() => {
                match store.purge(clock.now() - retention, clock.now()).await {
                    Ok(n) => tracing::debug!(rows = n, "purged old codes"),
                    Err(error) => tracing::warn!(error = %crate::telemetry::ErrorChain(&error), "purge failed"),
                }
                // The pumping guard's buckets past its long window, ended overrides, budgets at rest.
                let now = clock.now();
                let before = guard_policy.window_start(guard_policy.long.length, now);
                if let Err(error) = guard.purge_guard(before, now).await {
                    tracing::warn!(error = %crate::telemetry::ErrorChain(&error), "pumping guard purge failed");
                }
            }
        }
    }
    set_health(&reporter, ServingStatus::NotServing).await;
    reporter.set_service_status(DELIVERY_HEALTH_NAME, ServingStatus::NotServing).await;
    reporter.set_service_status(LIVENESS_NAME, ServingStatus::NotServing).await;
}

/// The service's secrets.
pub struct Keys {
    /// Mixed into every code hash; keys the audit log's phone numbers.
    pub pepper: Pepper,
    /// Seals the audit chain.
    pub audit_key: AuditKey,
}

/// Reads the pepper (in dev mode, generating it on first start) and the audit key (from its file, or derived
/// from the pepper).
pub async fn load_keys(config: &Config) -> anyhow::Result<Keys> {
    let pepper = load_pepper(&config.pepper, true).await?;
    let audit_key = match &config.audit_key_file {
        Some(path) => read_audit_key(path).await?,
        None => pepper.derive_audit_key(),
    };
    Ok(Keys { pepper, audit_key })
}

/// The audit key alone, which is all the CLI needs: from its file, or derived from a pepper that must already
/// exist. Only `serve` generates a development pepper: a command run from another directory would otherwise make
/// one of its own and seal audit events under a key the service does not have.
pub async fn load_audit_key(config: &Config) -> anyhow::Result<AuditKey> {
    match &config.audit_key_file {
        Some(path) => read_audit_key(path).await,
        None => Ok(load_pepper(&config.pepper, false).await?.derive_audit_key()),
    }
}

async fn read_audit_key(path: &Path) -> anyhow::Result<AuditKey> {
    AuditKey::new(read_pepper(path).await?).map_err(|m| anyhow::anyhow!("invalid setting --audit-key-file: {m}"))
}

/// Reads the pepper; in dev mode, creates the pepper file (mode 0600) on first start if `may_generate`.
async fn load_pepper(source: &PepperSource, may_generate: bool) -> anyhow::Result<Pepper> {
    let bytes = match source {
        PepperSource::Inline(secret) => secret.expose_secret().as_bytes().to_vec(),
        PepperSource::File(path) => read_pepper(path).await?,
        PepperSource::Generated(path) => {
            if !tokio::fs::try_exists(path).await.unwrap_or(false) {
                if !may_generate {
                    anyhow::bail!(
                        "no pepper at {}: run this from the directory `otpd serve` runs in, or give --pepper-file",
                        path.display()
                    );
                }
                write_new_pepper(path).await?;
                tracing::warn!(path = %path.display(), "generated a development pepper; keep it to keep codes valid across restarts");
            }
            read_pepper(path).await?
        }
    };
    Pepper::new(bytes).map_err(|m| anyhow::anyhow!("invalid setting --pepper-file: {m}"))
}

/// A secret file's bytes, without surrounding white space.
async fn read_pepper(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = tokio::fs::read(path).await.with_context(|| format!("reading secret file {}", path.display()))?;
    Ok(bytes.trim_ascii().to_vec())
}

async fn write_new_pepper(path: &Path) -> anyhow::Result<()> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).await.with_context(|| format!("creating pepper file {}", path.display()))?;
    tokio::io::AsyncWriteExt::write_all(&mut file, Pepper::generate_text().expose_secret().as_bytes()).await?;
    // tokio writes on a blocking thread and does not wait for it on drop: without this the pepper can be read back
    // before it is written (an empty file, "must be 16 to 1024 bytes, got 0"), as a test run once showed.
    file.sync_all().await.with_context(|| format!("writing pepper file {}", path.display()))?;
    Ok(())
}

/// The lookup notice, sent through the verification service's SMS channel.
struct Notices {
    service: VerificationService,
    notice: crate::sms::LookupNotice,
}

#[async_trait::async_trait]
impl crate::supervision::LookupNotifier for Notices {
    async fn notify(&self, phone: &crate::domain::PhoneNumber) {
        self.service.send_notice(phone, self.notice.text()).await;
    }
}

/// Team leads' sign-in codes, sent through the verification service's channels.
struct PhoneCodes {
    service: VerificationService,
    ttl: chrono::TimeDelta,
}

#[async_trait::async_trait]
impl crate::signin::PhoneCodeSender for PhoneCodes {
    async fn send(
        &self,
        phone: &crate::domain::PhoneNumber,
        code: &crate::domain::OtpCode,
    ) -> Result<(), crate::service::ServiceError> {
        self.service.send_sign_in_code(phone, code, self.ttl).await
    }
}
