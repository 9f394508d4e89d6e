//! Who a request comes from, for the per-client rate limit: the socket's peer, unless the
//! peer is a trusted proxy (an ingress controller, a load balancer), in which case the
//! client is the nearest address in `X-Forwarded-For` that is not a trusted proxy.
//!
//! Only trusted proxies are believed: anyone else may send any `X-Forwarded-For`, and a
//! client that could name its own address would get a fresh bucket per request.

use std::net::IpAddr;

use ipnet::IpNet;

/// The configured trusted proxy ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// `10.0.0.0/8, 192.168.1.7` (a bare address is one host); empty: none.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer` unless it is trusted, then the rightmost address of
    /// `forwarded_for` (each proxy appends the address it saw) that is not trusted. A
    /// malformed entry ends the walk there: what lies left of it cannot be believed.
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        for header in forwarded_for.iter().rev() {
            for hop in header.rsplit(',') {
                match hop.trim().parse::<IpAddr>() {
                    Ok(ip) => {
                        client = canonical(ip);
                        if !self.trusts(client) {
                            return client;
                        }
                    }
                    Err(_) => return client,
                }
            }
        }
        client
    }
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:10.0.0.1`) as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_trusted_peers_may_name_the_client() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7").unwrap();
        // A direct client cannot choose its address.
        assert_eq!(
            trusted.client(ip("203.0.113.9"), &["1.2.3.4"]),
            ip("203.0.113.9")
        );
        // Behind the ingress, the address it saw.
        assert_eq!(
            trusted.client(ip("10.1.2.3"), &["198.51.100.4"]),
            ip("198.51.100.4")
        );
        // A client's forged entries left of the real one are ignored.
        assert_eq!(
            trusted.client(ip("10.1.2.3"), &["6.6.6.6, 198.51.100.4, 10.9.9.9"]),
            ip("198.51.100.4")
        );
        // Several headers read as one list, the last header nearest.
        assert_eq!(
            trusted.client(ip("192.168.1.7"), &["7.7.7.7", "10.0.0.5"]),
            ip("7.7.7.7")
        );
        // Garbage stops the walk at the last address that was believed.
        assert_eq!(
            trusted.client(ip("10.1.2.3"), &["6.6.6.6, junk"]),
            ip("10.1.2.3")
        );
        // Nothing forwarded: the proxy itself.
        assert_eq!(trusted.client(ip("10.1.2.3"), &[]), ip("10.1.2.3"));
        // IPv4 through an IPv6 socket is the IPv4 address.
        assert_eq!(
            trusted.client(ip("::ffff:10.0.0.1"), &["8.8.8.8"]),
            ip("8.8.8.8")
        );
        // No trusted proxies: the peer, always.
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.1.2.3"), &["8.8.8.8"]), ip("10.1.2.3"));
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("ingress").is_err());
        assert_eq!(
            TrustedProxies::parse(" ").unwrap(),
            TrustedProxies::default()
        );
    }

    proptest! {
        /// Whatever an untrusted client sends, its bucket is its own address.
        #[test]
        fn an_untrusted_peer_is_always_the_client(
            a in any::<[u8; 4]>(), header in ".{0,64}",
        ) {
            let peer = IpAddr::from(a);
            let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
            prop_assume!(!trusted.trusts(peer));
            prop_assert_eq!(trusted.client(peer, &[header.as_str()]), peer);
        }

        /// Behind a trusted proxy, the answer is never a trusted address unless every hop is.
        #[test]
        fn the_client_is_an_untrusted_hop_when_there_is_one(
            hops in proptest::collection::vec(any::<[u8; 4]>(), 1..6),
        ) {
            let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
            let header = hops.iter().map(|h| IpAddr::from(*h).to_string()).collect::<Vec<_>>().join(", ");
            let client = trusted.client(ip("10.0.0.1"), &[header.as_str()]);
            let any_untrusted = hops.iter().any(|h| !trusted.trusts(IpAddr::from(*h)));
            prop_assert_eq!(!trusted.trusts(client), any_untrusted);
        }
    }
}
