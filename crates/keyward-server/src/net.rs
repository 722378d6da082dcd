//! Client addresses: which address a request comes from when keyward sits behind
//! reverse proxies (`trusted_proxies`), and how addresses are grouped for throttling.
//!
//! The peer of the TCP connection is the client unless it is a trusted proxy; then the
//! client is read from `Forwarded` (RFC 7239) or `X-Forwarded-For`, walking the hops
//! from the nearest one back and skipping the trusted proxies, so that a client cannot
//! choose its own address by sending the header itself (only hops appended by trusted
//! proxies are believed). IPv6 clients are grouped by their /64: one host usually holds
//! a whole /64, and counting single addresses would give it 2^64 fresh throttles.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `fd00::/8`, or a
/// single address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not an address or network like 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr = canonical(addr.trim().parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client of a request that came from `peer` with these forwarding headers
/// (`forwarded`: the `Forwarded` header values; `x_forwarded_for`: the
/// `X-Forwarded-For` values, in order). Only a trusted peer's headers are read.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded: impl Iterator<Item = &'a str>,
    x_forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<&str> = forwarded.collect();
    let hops: Vec<Option<IpAddr>> = if forwarded.is_empty() {
        x_forwarded_for
            .flat_map(|value| value.split(','))
            .map(|hop| parse_hop(hop.trim()))
            .collect()
    } else {
        forwarded
            .iter()
            .flat_map(|value| value.split(','))
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, value)| parse_hop(value.trim().trim_matches('"')))
            })
            .collect()
    };
    // From the nearest hop back: the first one that is not a trusted proxy is the
    // client. A hop that cannot be read ("unknown", an obfuscated name) ends the walk:
    // the trusted proxy nearest to it is then the best that is known.
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) => {
                client = canonical(*ip);
                if !is_trusted(client) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// One hop of a forwarding header: an address, perhaps with a port
/// (`1.2.3.4:80`, `[2001:db8::1]:80`, `2001:db8::1`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest
            .split_once(']')?
            .0
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6);
    }
    let (addr, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The group an address is counted in by throttles: an IPv4 address itself, an IPv6
/// address's /64.
pub fn throttle_group(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & (u128::MAX << 64);
            format!("{}/64", Ipv6Addr::from(prefix))
        }
    }
}

/// Whether a URL's host names this machine: `localhost`, or a loopback address
/// (`127.0.0.0/8`, `[::1]`).
pub fn is_loopback_host(host: Option<&str>) -> bool {
    match host {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(is_loopback),
        None => false,
    }
}

/// Whether `ip` is a loopback address.
pub fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// Whether `ip` must never be contacted on a provider's say-so: link-local addresses,
/// where cloud metadata services live (169.254.169.254, fd00:ec2::254), unspecified and
/// multicast addresses.
pub fn is_forbidden_target(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            let metadata = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
            v6 == metadata
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.is_unspecified()
                || v6.is_multicast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.200.1.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")));
        assert!(!net.contains(ip("11.0.0.1")));
        let one: IpNet = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129", ""] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let trusted = nets(&["10.0.0.0/8"]);
        let client = client_ip(
            ip("203.0.113.9"),
            ["for=1.1.1.1"].into_iter(),
            ["1.1.1.1"].into_iter(),
            &trusted,
        );
        assert_eq!(client, ip("203.0.113.9"));
        // Without trusted proxies nothing is read.
        let client = client_ip(ip("10.0.0.1"), [].into_iter(), ["1.1.1.1"].into_iter(), &[]);
        assert_eq!(client, ip("10.0.0.1"));
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_a_forged_hop_is_skipped() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client sent "X-Forwarded-For: 6.6.6.6" itself; the proxy appended the
        // real peer.
        let client = client_ip(
            ip("10.0.0.2"),
            [].into_iter(),
            ["6.6.6.6, 198.51.100.4"].into_iter(),
            &trusted,
        );
        assert_eq!(client, ip("198.51.100.4"));
        // Two trusted proxies in a row.
        let client = client_ip(
            ip("10.0.0.2"),
            [].into_iter(),
            ["198.51.100.4", "10.9.9.9"].into_iter(),
            &trusted,
        );
        assert_eq!(client, ip("198.51.100.4"));
        // Forwarded wins over X-Forwarded-For, with ports and IPv6 brackets.
        let client = client_ip(
            ip("10.0.0.2"),
            ["for=\"[2001:db8::7]:4711\";proto=https"].into_iter(),
            ["1.1.1.1"].into_iter(),
            &trusted,
        );
        assert_eq!(client, ip("2001:db8::7"));
        let client = client_ip(
            ip("10.0.0.2"),
            ["for=192.0.2.60:8080, for=10.1.1.1"].into_iter(),
            [].into_iter(),
            &trusted,
        );
        assert_eq!(client, ip("192.0.2.60"));
        // An unreadable hop: the nearest trusted proxy is what is known.
        let client = client_ip(
            ip("10.0.0.2"),
            ["for=unknown"].into_iter(),
            [].into_iter(),
            &trusted,
        );
        assert_eq!(client, ip("10.0.0.2"));
        // No header at all: the proxy itself.
        let client = client_ip(ip("10.0.0.2"), [].into_iter(), [].into_iter(), &trusted);
        assert_eq!(client, ip("10.0.0.2"));
    }

    #[test]
    fn ipv6_is_grouped_by_its_64() {
        assert_eq!(
            throttle_group(ip("2001:db8:1:2:aaaa::1")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            throttle_group(ip("2001:db8:1:2:ffff::9")),
            throttle_group(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            throttle_group(ip("2001:db8:1:3::1")),
            throttle_group(ip("2001:db8:1:2::1"))
        );
        assert_eq!(throttle_group(ip("192.0.2.1")), "192.0.2.1");
        assert_eq!(throttle_group(ip("::ffff:192.0.2.1")), "192.0.2.1");
    }

    #[test]
    fn metadata_and_link_local_targets_are_forbidden() {
        for bad in [
            "169.254.169.254",
            "fd00:ec2::254",
            "fe80::1",
            "0.0.0.0",
            "::ffff:169.254.1.1",
        ] {
            assert!(is_forbidden_target(ip(bad)), "{bad}");
        }
        for good in ["127.0.0.1", "10.1.1.1", "2001:db8::1", "93.184.216.34"] {
            assert!(!is_forbidden_target(ip(good)), "{good}");
        }
    }
}
