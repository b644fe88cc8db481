//! Connection admission, written once for the four listeners (public, admin, webhook, metrics), over TCP and TLS.
//!
//! Every accepted connection must first take a place in its listener's [`Admission`]: one of
//! `--max-connections` for the listener and one of `--max-connections-per-address` for the client's IP address. A
//! connection over either cap is closed at once, before any byte is read, and counted in
//! `otpd_connections_closed_total`. The defaults come from the process's descriptor limit
//! ([`ConnectionDefaults::for_descriptor_limit`]): the four listeners together can never take every descriptor,
//! so a flood on one listener, or from one address, leaves the others (and the database pool) their share.
//!
//! An admitted connection is a [`Guarded`] stream ([`io`]): it must deliver a whole request head within
//! `--header-timeout`, and then a new one at least every `--idle-timeout`, or it is closed. TLS handshakes in
//! progress are also capped per address (`--max-handshakes-per-address`, applied by the TLS listeners).
//!
//! [`host`] answers `421 Misdirected Request` to a `Host` the listener does not serve (DNS rebinding).
//!
//! The admin listener may also be limited to some client addresses (`--admin-allow`, 개인정보의 안전성 확보조치
//! 기준 제6조①): a connection from any other address is closed at once, before TLS or HTTP, and counted as
//! `address_not_allowed`. The peer checked is the TCP peer: a forwarded address is a claim, not a connection.

pub mod host;
mod io;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_stream::{Stream, StreamExt};

use crate::metrics::{ConnectionClose, ListenerName, Metrics};
pub use host::{AllowedHosts, HostCheckLayer, HostPattern};
pub use io::Guarded;

/// The listeners whose connections share the descriptor budget.
const LISTENERS: usize = 4;
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Descriptor limit assumed when the process has none (RLIMIT_INFINITY): caps stay finite.
const UNLIMITED_AS: u64 = 1 << 20;
/// A listener warns that it is refusing connections at most this often (each refusal is counted).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The connection settings, as given on the command line (flattened into `otpd`'s settings).
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Open connections per listener (each of public, admin, webhook, metrics); more are closed at once. Default:
    /// from the descriptor limit (ulimit -n), (limit − max(64, limit / 4)) / 4: 48 at 256, 192 at 1024, 12288 at
    /// 65536.
    #[arg(long, env = "OTPD_MAX_CONNECTIONS", global = true)]
    pub max_connections: Option<usize>,
    /// Open connections per client IP address on each listener. Default: a quarter of --max-connections.
    #[arg(long, env = "OTPD_MAX_CONNECTIONS_PER_ADDRESS", global = true)]
    pub max_connections_per_address: Option<usize>,
    /// TLS handshakes in progress per client IP address on each TLS listener. Default: half of
    /// --max-connections-per-address.
    #[arg(long, env = "OTPD_MAX_HANDSHAKES_PER_ADDRESS", global = true)]
    pub max_handshakes_per_address: Option<usize>,
    /// Longest wait for a new connection's first request head (HTTP/1 headers, or the HTTP/2 preface and first
    /// frame), after the TLS handshake if any; a connection that has not sent it is closed.
    #[arg(long, env = "OTPD_HEADER_TIMEOUT", default_value = "10s", global = true)]
    pub header_timeout: humantime::Duration,
    /// A connection that starts no new request for this long is closed (gRPC clients reconnect). Keep it above
    /// the 30 s call timeout.
    #[arg(long, env = "OTPD_IDLE_TIMEOUT", default_value = "5m", global = true)]
    pub idle_timeout: humantime::Duration,
    /// HTTP/2 keepalive on the gRPC listeners: a PING after this long without a frame from the client.
    #[arg(long, env = "OTPD_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", global = true)]
    pub http2_keepalive_interval: humantime::Duration,
    /// A client that does not answer a keepalive PING within this long is disconnected.
    #[arg(long, env = "OTPD_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", global = true)]
    pub http2_keepalive_timeout: humantime::Duration,
    /// More names the admin, webhook and metrics listeners answer to (the Host header or HTTP/2 :authority),
    /// comma-separated, each `name` (any port) or `name:port`. They always answer to their own address,
    /// localhost, 127.0.0.1, [::1] and the machine's name, with their port; any other Host gets 421 (a DNS
    /// rebinding defence). The public listener answers to any Host.
    #[arg(long, env = "OTPD_ALLOWED_HOSTS", value_delimiter = ',', global = true)]
    pub allowed_hosts: Vec<String>,
    /// Client addresses the admin listener (SupervisorService, the console) accepts connections from,
    /// comma-separated CIDRs or addresses, e.g. `10.20.0.0/16,192.0.2.7`. A connection from any other TCP peer
    /// is closed before TLS or HTTP and counted in otpd_connections_closed_total{reason="address_not_allowed"}.
    /// Default: any address. Behind a proxy, list the proxy's address: the forwarded address is not checked here.
    #[arg(long, env = "OTPD_ADMIN_ALLOW", value_delimiter = ',', global = true)]
    pub admin_allow: Vec<String>,
}

/// The client addresses a listener accepts connections from; empty: any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedAddresses(Vec<IpNet>);

impl AllowedAddresses {
    /// CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or single addresses; blank entries are skipped.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        entries
            .into_iter()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{e}` is not a CIDR (such as 10.0.0.0/8 or 2001:db8::/32) or an IP address"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether a connection from `peer` is accepted.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.0.is_empty() || self.0.iter().any(|net| net.contains(&peer))
    }

    /// No restriction.
    pub fn is_any(&self) -> bool {
        self.0.is_empty()
    }
}

/// Validated connection settings, the same for every listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSettings {
    /// Open connections per listener.
    pub max_connections: usize,
    /// Open connections per client address per listener.
    pub max_connections_per_address: usize,
    /// TLS handshakes in progress per client address per listener.
    pub max_handshakes_per_address: usize,
    /// Deadlines of each connection.
    pub timeouts: Timeouts,
    /// HTTP/2 keepalive interval (gRPC listeners).
    pub http2_keepalive_interval: Duration,
    /// HTTP/2 keepalive timeout (gRPC listeners).
    pub http2_keepalive_timeout: Duration,
    /// Extra names the admin, webhook and metrics listeners answer to.
    pub allowed_hosts: Vec<HostPattern>,
    /// The client addresses the admin listener accepts (empty: any).
    pub admin_allow: AllowedAddresses,
}

/// A connection's deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For the first request head.
    pub header: Duration,
    /// Between request heads.
    pub idle: Duration,
}

/// The caps used when none is given, derived from the descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionDefaults {
    /// Per listener.
    pub per_listener: usize,
    /// Per client address per listener.
    pub per_address: usize,
    /// TLS handshakes per client address per listener.
    pub handshakes_per_address: usize,
}

impl ConnectionDefaults {
    /// A quarter of the descriptors (at least 64) stays for everything but client connections (the database
    /// pool, provider connections, files, listening sockets); the rest is split evenly between the four
    /// listeners, so that all of them full together still leave that reserve. One address may take a quarter of
    /// a listener, and half of that in TLS handshakes.
    pub fn for_descriptor_limit(limit: u64) -> Self {
        let limit = usize::try_from(limit.min(UNLIMITED_AS)).unwrap_or(usize::MAX);
        let reserve = (limit / 4).max(64);
        let per_listener = (limit.saturating_sub(reserve) / LISTENERS).max(1);
        let per_address = (per_listener / 4).max(1);
        Self { per_listener, per_address, handshakes_per_address: (per_address / 2).max(1) }
    }
}

/// The process's soft limit on open descriptors (RLIMIT_NOFILE); `None` when it has none.
pub fn descriptor_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// A refused setting: the flag (without `--`) and why. `config` turns it into its `ConfigError` (this module sits
/// below `config`, which it must not import).
pub type SettingError = (&'static str, String);

fn invalid(setting: &'static str, message: impl Into<String>) -> SettingError {
    (setting, message.into())
}

impl ListenArgs {
    /// Fills the caps' defaults from `descriptor_limit` and checks that they nest (handshakes ≤ per address ≤
    /// per listener).
    pub fn validate(&self, descriptor_limit: Option<u64>) -> Result<ListenSettings, SettingError> {
        let defaults = ConnectionDefaults::for_descriptor_limit(descriptor_limit.unwrap_or(UNLIMITED_AS));
        let max_connections = self.max_connections.unwrap_or(defaults.per_listener);
        if max_connections == 0 {
            return Err(invalid("max-connections", "must be at least 1"));
        }
        let max_connections_per_address = self.max_connections_per_address.unwrap_or((max_connections / 4).max(1));
        if !(1..=max_connections).contains(&max_connections_per_address) {
            return Err(invalid("max-connections-per-address", "must be between 1 and --max-connections"));
        }
        let max_handshakes_per_address =
            self.max_handshakes_per_address.unwrap_or((max_connections_per_address / 2).max(1));
        if !(1..=max_connections_per_address).contains(&max_handshakes_per_address) {
            return Err(invalid("max-handshakes-per-address", "must be between 1 and --max-connections-per-address"));
        }
        let positive = |setting, d: humantime::Duration| {
            if d.is_zero() { Err(invalid(setting, "must be positive")) } else { Ok(*d) }
        };
        let header = positive("header-timeout", self.header_timeout)?;
        let idle = positive("idle-timeout", self.idle_timeout)?;
        let http2_keepalive_interval = positive("http2-keepalive-interval", self.http2_keepalive_interval)?;
        let http2_keepalive_timeout = positive("http2-keepalive-timeout", self.http2_keepalive_timeout)?;
        let allowed_hosts = self
            .allowed_hosts
            .iter()
            .filter(|h| !h.trim().is_empty())
            .map(|h| HostPattern::parse(h).map_err(|m| invalid("allowed-hosts", m)))
            .collect::<Result<_, _>>()?;
        let admin_allow = AllowedAddresses::parse(self.admin_allow.iter().map(String::as_str))
            .map_err(|m| invalid("admin-allow", m))?;
        Ok(ListenSettings {
            max_connections,
            max_connections_per_address,
            max_handshakes_per_address,
            timeouts: Timeouts { header, idle },
            http2_keepalive_interval,
            http2_keepalive_timeout,
            allowed_hosts,
            admin_allow,
        })
    }
}

#[derive(Debug, Default)]
struct PerAddress {
    open: usize,
    handshakes: usize,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    by_address: HashMap<IpAddr, PerAddress>,
    warned: Option<tokio::time::Instant>,
}

/// One listener's connection caps and the connections that hold a place in them.
pub struct Admission {
    listener: ListenerName,
    allowed: AllowedAddresses,
    max: usize,
    per_address: usize,
    handshakes_per_address: usize,
    timeouts: Timeouts,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("listener", &self.listener)
            .field("max", &self.max)
            .field("per_address", &self.per_address)
            .finish()
    }
}

impl Admission {
    /// The caps of `listener`, from `settings` (and for the admin listener, its allowed addresses).
    pub fn new(listener: ListenerName, settings: &ListenSettings, metrics: Arc<Metrics>) -> Arc<Self> {
        let allowed = match listener {
            ListenerName::Admin => settings.admin_allow.clone(),
            _ => AllowedAddresses::default(),
        };
        Arc::new(Self {
            listener,
            allowed,
            max: settings.max_connections,
            per_address: settings.max_connections_per_address,
            handshakes_per_address: settings.max_handshakes_per_address,
            timeouts: settings.timeouts,
            state: Mutex::new(State::default()),
            metrics,
        })
    }

    /// The listener's name (for logs).
    pub fn listener(&self) -> &'static str {
        self.listener.as_str()
    }

    /// The connection deadlines.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Connections holding a place now.
    pub fn open(&self) -> usize {
        self.lock().open
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a pair of counters, consistent after every statement: a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refuse(&self, peer: IpAddr, reason: ConnectionClose) {
        self.metrics.connection_closed(self.listener, reason);
        let now = tokio::time::Instant::now();
        let warn = {
            let mut state = self.lock();
            let due = state.warned.is_none_or(|at| now.duration_since(at) >= WARN_EVERY);
            if due {
                state.warned = Some(now);
            }
            due
        };
        let (listener, reason) = (self.listener.as_str(), reason.as_str());
        if warn {
            tracing::warn!(listener, %peer, reason,
                "refusing connections (counted in otpd_connections_closed_total; next warning in a minute)");
        } else {
            tracing::debug!(listener, %peer, reason, "connection refused");
        }
    }

    /// A place for a connection from `peer`, or None (counted) when the address is not allowed, or the listener
    /// or the address is full.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Permit> {
        let peer = peer.to_canonical();
        if !self.allowed.allows(peer) {
            self.refuse(peer, ConnectionClose::AddressNotAllowed);
            return None;
        }
        let mut state = self.lock();
        if state.open >= self.max {
            drop(state);
            self.refuse(peer, ConnectionClose::ListenerFull);
            return None;
        }
        let entry = state.by_address.entry(peer).or_default();
        if entry.open >= self.per_address {
            drop(state);
            self.refuse(peer, ConnectionClose::AddressFull);
            return None;
        }
        entry.open += 1;
        state.open += 1;
        Some(Permit { admission: Arc::clone(self), peer, handshaking: false })
    }

    pub(crate) fn closed_idle(&self, first_request: bool) {
        let reason = if first_request { ConnectionClose::HeaderTimeout } else { ConnectionClose::IdleTimeout };
        self.metrics.connection_closed(self.listener, reason);
    }
}

/// A connection's place in its listener's caps, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    peer: IpAddr,
    handshaking: bool,
}

impl Permit {
    /// Counts a TLS handshake from this connection's address; false (counted) when the address has
    /// `--max-handshakes-per-address` in progress already.
    pub fn start_handshake(&mut self) -> bool {
        let mut state = self.admission.lock();
        let Some(entry) = state.by_address.get_mut(&self.peer) else { return false };
        if entry.handshakes >= self.admission.handshakes_per_address {
            drop(state);
            self.admission.refuse(self.peer, ConnectionClose::HandshakesFull);
            return false;
        }
        entry.handshakes += 1;
        self.handshaking = true;
        true
    }

    /// The handshake is over (done or failed).
    pub fn end_handshake(&mut self) {
        if !std::mem::take(&mut self.handshaking) {
            return;
        }
        if let Some(entry) = self.admission.lock().by_address.get_mut(&self.peer) {
            entry.handshakes = entry.handshakes.saturating_sub(1);
        }
    }

    /// The TLS handshake did not finish in time (counted).
    pub fn handshake_timed_out(&self) {
        self.admission.metrics.connection_closed(self.admission.listener, ConnectionClose::HandshakeTimeout);
    }

    /// The listener's caps this permit counts in.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.end_handshake();
        let mut state = self.admission.lock();
        state.open = state.open.saturating_sub(1);
        if let Some(entry) = state.by_address.get_mut(&self.peer) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 {
                state.by_address.remove(&self.peer);
            }
        }
    }
}

/// The admitted connections of a TCP listener: each accepted connection takes a place or is closed at once.
pub struct Incoming {
    listener: TcpListener,
    admission: Arc<Admission>,
    pause: Option<Pin<Box<Sleep>>>,
}

impl Incoming {
    /// Admits the connections of `listener` into `admission`.
    pub fn new(listener: TcpListener, admission: Arc<Admission>) -> Self {
        Self { listener, admission, pause: None }
    }

    /// The next accepted connection that was admitted, with its place and peer.
    pub(crate) fn poll_admitted(&mut self, cx: &mut Context<'_>) -> Poll<(TcpStream, SocketAddr, Permit)> {
        loop {
            if let Some(pause) = self.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            match ready!(self.listener.poll_accept(cx)) {
                Ok((tcp, peer)) => {
                    if let Some(permit) = self.admission.admit(peer.ip()) {
                        // Small gRPC frames should leave at once, as tonic's own listener does.
                        let _ = tcp.set_nodelay(true);
                        return Poll::Ready((tcp, peer, permit));
                    }
                    // Dropping `tcp` closes it before anything was read.
                }
                Err(error) => {
                    tracing::warn!(listener = self.admission.listener(), %error, "accepting a connection failed");
                    self.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_PAUSE)));
                }
            }
        }
    }

    /// The listener's admission.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Stream for Incoming {
    type Item = std::io::Result<Guarded<TcpStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let (tcp, _peer, permit) = ready!(this.poll_admitted(cx));
        Poll::Ready(Some(Ok(Guarded::new(tcp, permit))))
    }
}

/// An axum listener over a stream of admitted connections (plain or TLS), for `axum::serve`.
pub struct StreamListener<S> {
    incoming: Pin<Box<S>>,
    local: SocketAddr,
}

impl<S> StreamListener<S> {
    /// Serves the connections of `incoming`, accepted on `local`.
    pub fn new(incoming: S, local: SocketAddr) -> Self {
        Self { incoming: Box::pin(incoming), local }
    }
}

impl<S, IO> axum::serve::Listener for StreamListener<S>
where
    S: Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Io = IO;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (IO, SocketAddr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(io)) => return (io, self.local),
                Some(Err(_)) => continue,
                // The stream ends only at shutdown, which axum's graceful shutdown observes on its own.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The connection flags alone, as `otpd` flattens them into its settings.
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        listen: ListenArgs,
    }

    fn validate(args: &[&str], limit: Option<u64>) -> Result<ListenSettings, SettingError> {
        let argv = std::iter::once("otpd").chain(args.iter().copied());
        Flags::try_parse_from(argv).unwrap().listen.validate(limit)
    }

    #[test]
    fn defaults_leave_a_reserve_and_no_listener_or_address_can_take_everything() {
        for limit in [64, 128, 256, 1024, 4096, 65_536, 1 << 20] {
            let d = ConnectionDefaults::for_descriptor_limit(limit);
            let limit = usize::try_from(limit).unwrap();
            assert!(LISTENERS * d.per_listener + 32 <= limit, "{limit}: {d:?}");
            assert!(d.per_address < d.per_listener || d.per_listener == 1, "{limit}: {d:?}");
            assert!(d.handshakes_per_address <= d.per_address);
        }
        let d = ConnectionDefaults::for_descriptor_limit(256);
        assert_eq!((d.per_listener, d.per_address, d.handshakes_per_address), (48, 12, 6));
        let d = ConnectionDefaults::for_descriptor_limit(1024);
        assert_eq!((d.per_listener, d.per_address, d.handshakes_per_address), (192, 48, 24));
        // No limit at all still gives finite caps.
        let s = validate(&[], None).unwrap();
        assert_eq!(s.max_connections, ConnectionDefaults::for_descriptor_limit(UNLIMITED_AS).per_listener);
        let s = validate(&[], Some(256)).unwrap();
        assert_eq!((s.max_connections, s.max_connections_per_address, s.max_handshakes_per_address), (48, 12, 6));
        assert_eq!(s.timeouts, Timeouts { header: Duration::from_secs(10), idle: Duration::from_secs(300) });
    }

    #[test]
    fn caps_must_nest_and_timeouts_be_positive() {
        for (args, setting) in [
            (&["--max-connections", "0"][..], "max-connections"),
            (&["--max-connections", "10", "--max-connections-per-address", "11"], "max-connections-per-address"),
            (
                &["--max-connections-per-address", "4", "--max-handshakes-per-address", "5"],
                "max-handshakes-per-address",
            ),
            (&["--header-timeout", "0s"], "header-timeout"),
            (&["--idle-timeout", "0s"], "idle-timeout"),
            (&["--allowed-hosts", "a b"], "allowed-hosts"),
        ] {
            assert_eq!(validate(args, Some(1024)).unwrap_err().0, setting, "{args:?}");
        }
        // A smaller listener cap brings the per-address default down with it.
        let s = validate(&["--max-connections", "8"], Some(1024)).unwrap();
        assert_eq!((s.max_connections, s.max_connections_per_address, s.max_handshakes_per_address), (8, 2, 1));
    }

    fn admission(max: usize, per_address: usize, handshakes: usize) -> Arc<Admission> {
        let settings = ListenSettings {
            max_connections: max,
            max_connections_per_address: per_address,
            max_handshakes_per_address: handshakes,
            timeouts: Timeouts { header: Duration::from_secs(1), idle: Duration::from_secs(1) },
            http2_keepalive_interval: Duration::from_secs(1),
            http2_keepalive_timeout: Duration::from_secs(1),
            allowed_hosts: Vec::new(),
            admin_allow: AllowedAddresses::parse(["127.0.0.1/32", "10.0.0.0/8"]).unwrap(),
        };
        Admission::new(ListenerName::Webhook, &settings, Arc::new(Metrics::new()))
    }

    #[test]
    fn only_the_admin_listener_refuses_addresses_off_its_allowlist_and_counts_them() {
        let allow = |s: &str| validate(&["--admin-allow", s], Some(1024)).map(|s| s.admin_allow);
        assert!(allow("127.0.0.1/32,10.0.0.0/8").unwrap().allows("10.1.2.3".parse().unwrap()));
        assert!(allow("2001:db8::/32").unwrap().allows("2001:db8::1".parse().unwrap()));
        assert!(allow("192.0.2.7").unwrap().allows("192.0.2.7".parse().unwrap()), "a bare address is a /32");
        for bad in ["10.0.0.0/33", "10.0.0", "localhost", "10.0.0.0/8;"] {
            let (setting, message) = allow(bad).unwrap_err();
            assert_eq!(setting, "admin-allow");
            assert!(message.contains(bad), "{message}");
        }
        assert!(validate(&[], Some(1024)).unwrap().admin_allow.is_any(), "default: any address");

        // The webhook listener above is given the admin allowlist in its settings and ignores it.
        let webhook = admission(3, 3, 1);
        assert!(webhook.admit("192.0.2.1".parse().unwrap()).is_some());
        let mut settings = settings_of(&webhook);
        settings.admin_allow = AllowedAddresses::parse(["127.0.0.1/32"]).unwrap();
        let admin = Admission::new(ListenerName::Admin, &settings, Arc::new(Metrics::new()));
        let inside = admin.admit("127.0.0.1".parse().unwrap());
        assert!(inside.is_some());
        let mapped = admin.admit("::ffff:127.0.0.1".parse().unwrap());
        assert!(mapped.is_some(), "IPv4-mapped is the same address");
        assert!(admin.admit("127.0.0.2".parse().unwrap()).is_none());
        assert!(admin.admit("::1".parse().unwrap()).is_none());
        assert_eq!(admin.open(), 2, "refused connections take no place");
        let text = admin.metrics.encode().unwrap();
        assert!(
            text.contains("otpd_connections_closed_total{listener=\"admin\",reason=\"address_not_allowed\"} 2"),
            "{text}"
        );
    }

    fn settings_of(a: &Admission) -> ListenSettings {
        ListenSettings {
            max_connections: a.max,
            max_connections_per_address: a.per_address,
            max_handshakes_per_address: a.handshakes_per_address,
            timeouts: a.timeouts,
            http2_keepalive_interval: Duration::from_secs(1),
            http2_keepalive_timeout: Duration::from_secs(1),
            allowed_hosts: Vec::new(),
            admin_allow: AllowedAddresses::default(),
        }
    }

    #[test]
    fn places_are_capped_per_listener_and_per_address_and_given_back() {
        let a = admission(3, 2, 1);
        let (one, two, three): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "::ffff:10.0.0.1".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let p1 = a.admit(one).unwrap();
        // The IPv4-mapped form is the same address.
        let p2 = a.admit(two).unwrap();
        assert!(a.admit(one).is_none(), "a third from one address");
        let p3 = a.admit(three).unwrap();
        assert!(a.admit("10.0.0.4".parse().unwrap()).is_none(), "a fourth on the listener");
        assert_eq!(a.open(), 3);
        drop(p1);
        let mut p4 = a.admit(one).unwrap();
        assert!(p4.start_handshake());
        let mut p2 = p2;
        assert!(!p2.start_handshake(), "a second handshake from the address");
        p4.end_handshake();
        assert!(p2.start_handshake());
        drop((p2, p3, p4));
        assert_eq!(a.open(), 0);
        assert!(a.lock().by_address.is_empty());
        let text = a.metrics.encode().unwrap();
        assert!(
            text.contains("otpd_connections_closed_total{listener=\"webhook\",reason=\"address_full\"} 1"),
            "{text}"
        );
        assert!(text.contains("otpd_connections_closed_total{listener=\"webhook\",reason=\"listener_full\"} 1"));
        assert!(text.contains("otpd_connections_closed_total{listener=\"webhook\",reason=\"handshakes_full\"} 1"));
    }
}
