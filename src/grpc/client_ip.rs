//! The client's address: the TCP peer, unless the peer is a trusted proxy, in which case the right-most
//! address of `x-forwarded-for` that is not itself a trusted proxy (what a client prepends to the header is
//! never believed).

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// CIDRs whose `x-forwarded-for` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request that arrived from `peer` with these `x-forwarded-for` values.
    pub fn client_ip<'a>(&self, peer: IpAddr, forwarded_for: impl DoubleEndedIterator<Item = &'a str>) -> IpAddr {
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; the CIDRs are written for a.b.c.d.
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_for.rev().flat_map(|v| v.rsplit(',')).map(str::trim) {
            let Ok(ip) = IpAddr::from_str(hop).or_else(|_| hop.parse::<std::net::SocketAddr>().map(|s| s.ip())) else {
                // Garbage written by someone before the first trusted hop: the last address we trust is the answer.
                break;
            };
            let ip = ip.to_canonical();
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// Comma-separated CIDRs or addresses, e.g. `10.0.0.0/8,192.0.2.7`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                IpNet::from_str(p)
                    .or_else(|_| IpAddr::from_str(p).map(IpNet::from))
                    .map_err(|_| format!("`{p}` is not a CIDR or an IP address"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// The client address of an HTTP request as the server received it: the TCP peer (under TLS too), read through
/// the trusted proxies' `x-forwarded-for`.
pub fn of<B>(request: &tonic::codegen::http::Request<B>, trusted: &TrustedProxies) -> Option<IpAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let extensions = request.extensions();
    let tcp = extensions
        .get::<TcpConnectInfo>()
        .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().map(TlsConnectInfo::get_ref));
    let peer = tcp.and_then(TcpConnectInfo::remote_addr)?.ip();
    let forwarded = request.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
    Some(trusted.client_ip(peer, forwarded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(ip("198.51.100.7"), ["203.0.113.1"].into_iter()), ip("198.51.100.7"));
    }

    #[test]
    fn trusted_proxy_chain_is_walked_from_the_right() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.0.2.1".parse().unwrap();
        let peer = ip("10.0.0.5");
        // spoofed, real client, inner proxy
        let header = ["1.1.1.1, 203.0.113.9, 192.0.2.1"];
        assert_eq!(trusted.client_ip(peer, header.into_iter()), ip("203.0.113.9"));
        // several header lines count as one list
        assert_eq!(trusted.client_ip(peer, ["1.1.1.1", "203.0.113.9"].into_iter()), ip("203.0.113.9"));
        // no header: the proxy itself
        assert_eq!(trusted.client_ip(peer, std::iter::empty()), peer);
        // garbage stops the walk at the last trusted hop
        assert_eq!(trusted.client_ip(peer, ["evil, 192.0.2.1"].into_iter()), ip("192.0.2.1"));
        // an IPv4 proxy seen through a dual-stack listener is still the trusted proxy
        assert_eq!(trusted.client_ip(ip("::ffff:10.0.0.5"), ["203.0.113.9"].into_iter()), ip("203.0.113.9"));
    }

    #[test]
    fn parse_rejects_nonsense() {
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy".parse::<TrustedProxies>().is_err());
        assert_eq!("".parse::<TrustedProxies>().unwrap(), TrustedProxies::default());
    }
}
