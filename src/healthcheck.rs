//! `otpd healthcheck`: asks a running otpd's `grpc.health.v1` service whether it is SERVING and exits 0 if so,
//! 1 otherwise. The container image's HEALTHCHECK runs it, so the image needs no grpcurl or shell. It reads the
//! same settings as the service (in a container, the same `OTPD_*` environment), so it asks the listener the
//! service was told to bind.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::Config;

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
    /// The service to ask about: "" (the whole server), otp.v1.OtpService or otp.v1.SupervisorService.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up (and report unhealthy) after this long.
    #[arg(long, default_value = "3s")]
    pub timeout: humantime::Duration,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The listener answered SERVING.
    Serving,
    /// The listener answered, with another status (NOT_SERVING while the database is unreachable).
    NotServing(String),
    /// No answer: nothing listening, a transport error, or the timeout.
    Unreachable(String),
}

/// Runs the probe against the configured listener: Ok (printing SERVING) only if it answered SERVING.
pub async fn check(config: &Config, args: &HealthcheckArgs) -> anyhow::Result<()> {
    let addr = match args.listener {
        Listener::Public => config.listen,
        Listener::Admin => config.admin_listen,
    };
    let target = dialable(addr);
    match probe(target, &args.service, *args.timeout).await {
        Probe::Serving => {
            println!("{target}: SERVING");
            Ok(())
        }
        Probe::NotServing(status) => anyhow::bail!("{target}: {status}"),
        Probe::Unreachable(why) => anyhow::bail!("{target}: unreachable: {why}"),
    }
}

/// Asks `addr` for the health of `service`, the whole exchange bounded by `timeout`.
pub async fn probe(addr: SocketAddr, service: &str, timeout: Duration) -> Probe {
    let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
        Ok(endpoint) => endpoint.connect_timeout(timeout).timeout(timeout),
        Err(error) => return Probe::Unreachable(error.to_string()),
    };
    let request = HealthCheckRequest { service: service.to_owned() };
    let exchange = async {
        let channel = endpoint.connect().await.map_err(|e| Probe::Unreachable(e.to_string()))?;
        HealthClient::new(channel).check(request).await.map_err(|status| match status.code() {
            // grpc.health.v1's answer for a name it does not serve.
            tonic::Code::NotFound => Probe::NotServing("SERVICE_UNKNOWN".to_owned()),
            code => Probe::Unreachable(format!("{code}: {}", status.message())),
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Probe::Unreachable(format!("no answer within {}", humantime::format_duration(timeout))),
        Ok(Err(probe)) => probe,
        Ok(Ok(response)) => match response.into_inner().status() {
            ServingStatus::Serving => Probe::Serving,
            other => Probe::NotServing(other.as_str_name().to_owned()),
        },
    }
}

/// A listener bound to every address (`0.0.0.0`, `[::]`) is asked on loopback, where a probe inside the same
/// host or container reaches it.
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let probe = |s: &str| dialable(s.parse().unwrap()).to_string();
        assert_eq!(probe("0.0.0.0:50051"), "127.0.0.1:50051");
        assert_eq!(probe("[::]:50052"), "[::1]:50052");
        assert_eq!(probe("10.0.0.7:50051"), "10.0.0.7:50051");
    }
}
