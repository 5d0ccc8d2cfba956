//! Who may use an override: a secret token compared in constant time, and
//! source address ranges (CIDR blocks). Pure: the host layer supplies the source
//! address, and only when a request actually carries an override.

use std::net::IpAddr;

/// An IP address range such as `10.0.0.0/8`, `192.168.1.7` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    #[cold]
    #[inline(never)]
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || {
            format!(
                "`{}` is not an IP address or CIDR block such as 10.0.0.0/8 or fd00::/8",
                crate::units::escape_text(text, true)
            )
        };
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network = crate::ip::parse_ip(address.as_bytes()).ok_or_else(bad)?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        Ok(Cidr { network, prefix })
    }

    #[inline]
    pub fn contains(&self, address: IpAddr) -> bool {
        // A v4 client seen through a dual-stack socket arrives as ::ffff:a.b.c.d.
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(addr) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(addr) & mask
            }
            _ => false,
        }
    }
}

/// Compares a presented token with a secret in time that depends only on their
/// lengths, never on where they first differ.
#[inline]
pub fn constant_time_eq(presented: &[u8], secret: &[u8]) -> bool {
    let mut diff = presented.len() ^ secret.len();
    for i in 0..presented.len().max(secret.len()) {
        let a = presented.get(i).copied().unwrap_or(0);
        let b = secret.get(i).copied().unwrap_or(0);
        diff |= usize::from(std::hint::black_box(a ^ b));
    }
    diff == 0
}

/// True if `presented` equals any of `secrets`; every secret is compared, so the
/// time does not reveal which one matched.
#[inline]
pub fn token_matches(presented: &[u8], secrets: &[Vec<u8>]) -> bool {
    secrets.iter().fold(false, |found, secret| {
        constant_time_eq(presented, secret) | found
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks_contain_their_addresses() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.1.2.3")) && c.contains(ip("10.255.255.255")));
        assert!(!c.contains(ip("11.0.0.0")) && !c.contains(ip("::1")));
        assert!(c.contains(ip("::ffff:10.9.9.9")), "v4-mapped v6");
        let host = Cidr::parse("192.168.1.7").unwrap();
        assert!(host.contains(ip("192.168.1.7")) && !host.contains(ip("192.168.1.8")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
    }

    #[test]
    fn bad_cidr_blocks_are_refused() {
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/a",
            "x",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_match_exactly() {
        let secrets = vec![b"0123456789abcdef".to_vec(), b"next-secret-0000".to_vec()];
        assert!(token_matches(b"0123456789abcdef", &secrets));
        assert!(token_matches(b"next-secret-0000", &secrets));
        assert!(!token_matches(b"0123456789abcdeF", &secrets));
        assert!(!token_matches(b"0123456789abcde", &secrets));
        assert!(!token_matches(b"0123456789abcdef0", &secrets));
        assert!(!token_matches(b"", &secrets));
        assert!(!token_matches(b"x", &[]));
        assert!(constant_time_eq(b"", b""));
    }
}
