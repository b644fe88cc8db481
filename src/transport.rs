//! What would cross a network in clear: the one rule that production mode (provider URLs, the database) and
//! otpctl (its bearer token) apply before they send a secret anywhere.

/// Whether `url` would carry secrets in clear over a network: plain `http://` to a host that is not loopback
/// (a relay or stand-in on the same machine is fine; anything else must be `https://`).
pub fn plaintext_off_loopback(url: &reqwest::Url) -> bool {
    if url.scheme() != "http" {
        return false;
    }
    !is_loopback_host(url.host_str().unwrap_or_default())
}

/// Whether `host` (a name, an IPv4 address or an IPv6 one with or without brackets) is this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_off_loopback_is_in_clear() {
        let clear = |u: &str| plaintext_off_loopback(&reqwest::Url::parse(u).unwrap());
        for u in ["http://sms.example/", "http://10.0.0.7:50052", "http://[2001:db8::1]:1", "http://localhost.example"]
        {
            assert!(clear(u), "{u}");
        }
        for u in [
            "https://sms.example/",
            "http://127.0.0.1:50052",
            "http://127.8.9.10",
            "http://[::1]:9",
            "http://LOCALHOST:1",
        ] {
            assert!(!clear(u), "{u}");
        }
    }
}
