//! IP addresses as text: `10.0.0.1`, `fd00::1`, `10.0.0.1:5432`, `[::1]:5432`.
//!
//! The grammar is exactly that of `std::net`'s `FromStr` for [`IpAddr`] and
//! `SocketAddr` (tests/properties.rs checks the two agree on arbitrary text), but
//! not std's parser, which is much larger: with this one the `.wasm` is 2.3 KB
//! smaller. The grammar, as std has it:
//! - IPv4: four decimal octets of at most three digits, each at most 255, without
//!   a leading zero (`01` could be read as octal: RFC 6943, 3.1.1);
//! - IPv6: up to eight groups of 1 to 4 hex digits, either case, with at most one
//!   `::` standing for one or more zero groups, and optionally an IPv4 address in
//!   the last 32 bits (`::ffff:10.0.0.1`);
//! - socket addresses: `IPv4:port` or `[IPv6]:port`, with an optional numeric scope
//!   `[fe80::1%2]:80`; port and scope are decimal, leading zeros allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 address, as `text.parse::<IpAddr>()` reads it.
pub fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    Cursor::new(text).whole(Cursor::ip)
}

/// An IPv6 address, as `text.parse::<Ipv6Addr>()` reads it.
pub fn parse_ipv6(text: &[u8]) -> Option<Ipv6Addr> {
    Cursor::new(text).whole(Cursor::ipv6)
}

/// The IP of a socket address (`10.0.0.1:5432`, `[::1]:5432`), as
/// `text.parse::<SocketAddr>()` reads it, or of a bare IP address: what Envoy's
/// `source.address` property says of the client.
pub fn parse_socket_or_ip(text: &[u8]) -> Option<IpAddr> {
    Cursor::new(text)
        .whole(Cursor::socket_ip)
        .or_else(|| parse_ip(text))
}

/// A position in the text. Every reader either succeeds and moves past what it
/// read, or fails and leaves the position where it was (`atomically`).
struct Cursor<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a [u8]) -> Self {
        Cursor { text, at: 0 }
    }

    /// `read`, which must consume the whole text.
    fn whole<T>(mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        read(&mut self).filter(|_| self.at == self.text.len())
    }

    fn atomically<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let start = self.at;
        let result = read(self);
        if result.is_none() {
            self.at = start;
        }
        result
    }

    fn byte(&mut self, expected: u8) -> Option<()> {
        let found = *self.text.get(self.at)?;
        (found == expected).then(|| self.at += 1)
    }

    /// `read` after `separator`, except for the first item (`index` 0).
    fn item<T>(
        &mut self,
        separator: u8,
        index: usize,
        read: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<T> {
        self.atomically(|c| {
            if index > 0 {
                c.byte(separator)?;
            }
            read(c)
        })
    }

    /// A number in `radix` (10 or 16) of at most `max_digits` digits (if given)
    /// and at most `max`. Reads every digit there is: one too many is a failure,
    /// not where the number ends.
    fn number(
        &mut self,
        radix: u32,
        max_digits: Option<usize>,
        zero_prefix: bool,
        max: u32,
    ) -> Option<u32> {
        self.atomically(|c| {
            let start = c.at;
            let mut value: u32 = 0;
            while let Some(digit) = c
                .text
                .get(c.at)
                .and_then(|&b| char::from(b).to_digit(radix))
            {
                value = value.checked_mul(radix)?.checked_add(digit)?;
                c.at += 1;
            }
            let digits = c.at - start;
            let leading_zero = c.text.get(start) == Some(&b'0') && digits > 1;
            let ok = digits > 0
                && max_digits.is_none_or(|m| digits <= m)
                && (zero_prefix || !leading_zero)
                && value <= max;
            ok.then_some(value)
        })
    }

    fn ipv4(&mut self) -> Option<Ipv4Addr> {
        self.atomically(|c| {
            let mut octets = [0u8; 4];
            for (i, octet) in octets.iter_mut().enumerate() {
                let value = c.item(b'.', i, |c| c.number(10, Some(3), false, 255))?;
                *octet = u8::try_from(value).ok()?;
            }
            Some(Ipv4Addr::from(octets))
        })
    }

    /// Groups into `groups`, as many as fit: how many were read, and whether the
    /// last two came from an embedded IPv4 address (which ends the address).
    fn groups(&mut self, groups: &mut [u16]) -> (usize, bool) {
        let limit = groups.len();
        for i in 0..limit {
            if i + 1 < limit {
                if let Some(v4) = self.item(b':', i, Cursor::ipv4) {
                    let [a, b, c, d] = v4.octets();
                    groups[i] = u16::from_be_bytes([a, b]);
                    groups[i + 1] = u16::from_be_bytes([c, d]);
                    return (i + 2, true);
                }
            }
            match self.item(b':', i, |c| c.number(16, Some(4), true, 0xffff)) {
                Some(group) => groups[i] = group as u16,
                None => return (i, false),
            }
        }
        (limit, false)
    }

    fn ipv6(&mut self) -> Option<Ipv6Addr> {
        self.atomically(|c| {
            let mut head = [0u16; 8];
            let (head_len, head_v4) = c.groups(&mut head);
            if head_len == 8 {
                return Some(Ipv6Addr::from(head));
            }
            // An embedded IPv4 address comes last, never before `::`.
            if head_v4 {
                return None;
            }
            c.byte(b':')?;
            c.byte(b':')?;
            // `::` stands for at least one zero group.
            let mut tail = [0u16; 7];
            let (tail_len, _) = c.groups(&mut tail[..7 - head_len]);
            head[8 - tail_len..].copy_from_slice(&tail[..tail_len]);
            Some(Ipv6Addr::from(head))
        })
    }

    fn ip(&mut self) -> Option<IpAddr> {
        match self.ipv4() {
            Some(v4) => Some(IpAddr::V4(v4)),
            None => self.ipv6().map(IpAddr::V6),
        }
    }

    fn port(&mut self) -> Option<u32> {
        self.atomically(|c| {
            c.byte(b':')?;
            c.number(10, None, true, u32::from(u16::MAX))
        })
    }

    fn socket_ip(&mut self) -> Option<IpAddr> {
        let v4 = self.atomically(|c| {
            let ip = c.ipv4()?;
            c.port()?;
            Some(IpAddr::V4(ip))
        });
        v4.or_else(|| {
            self.atomically(|c| {
                c.byte(b'[')?;
                let ip = c.ipv6()?;
                // A scope that does not parse is left unread; `]` then fails.
                c.atomically(|c| {
                    c.byte(b'%')?;
                    c.number(10, None, true, u32::MAX)
                });
                c.byte(b']')?;
                c.port()?;
                Some(IpAddr::V6(ip))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn std_ip(text: &str) -> Option<IpAddr> {
        text.parse().ok()
    }

    fn std_socket_or_ip(text: &str) -> Option<IpAddr> {
        text.parse::<SocketAddr>()
            .map(|s| s.ip())
            .ok()
            .or_else(|| std_ip(text))
    }

    /// The corner cases of std's grammar, each compared with std itself.
    #[test]
    fn agrees_with_std_on_the_corner_cases() {
        let cases = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "0.2.3.4",
            "1.2.3.04",
            "1.2.3.0004",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1..2.3",
            "1.2.3.",
            ".1.2.3",
            "",
            "::",
            "::1",
            "1::",
            "1::2",
            ":1",
            "1:",
            ":::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7::",
            "1:2:3:4:5:6:7::8",
            "1:2:3:4:5:6::8",
            "::1:2:3:4:5:6:7",
            "::1:2:3:4:5:6:7:8",
            "1::2::3",
            "fFfF::",
            "12345::",
            "0000:0000::",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "1.2.3.4::",
            "1.2.3.4:5:6:7:8",
            "::1.2.3.4:5",
            "64:ff9b::192.0.2.33",
            "::ffff:256.0.0.1",
            "::ffff:01.0.0.1",
            "g::",
            "1:2:3:4:5::7:8",
            "10.0.0.1:5432",
            "10.0.0.1:0",
            "10.0.0.1:65535",
            "10.0.0.1:65536",
            "10.0.0.1:",
            "10.0.0.1:00080",
            "10.0.0.1:+80",
            "[::1]:5432",
            "[::1]",
            "[::1]:",
            "::1:5432",
            "[fe80::1%2]:80",
            "[fe80::1%]:80",
            "[fe80::1%4294967295]:80",
            "[fe80::1%4294967296]:80",
            "[10.0.0.1]:80",
            "[::ffff:10.0.0.1]:80",
            "[::1]:80x",
            "1.2.3.4:5:6",
            "٣.1.1.1",
        ];
        for case in cases {
            assert_eq!(
                parse_ip(case.as_bytes()),
                std_ip(case),
                "parse_ip({case:?})"
            );
            assert_eq!(
                parse_socket_or_ip(case.as_bytes()),
                std_socket_or_ip(case),
                "parse_socket_or_ip({case:?})"
            );
        }
    }

    #[test]
    fn socket_addresses_yield_their_ip() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(parse_socket_or_ip(b"10.0.0.1:5432"), ip("10.0.0.1"));
        assert_eq!(parse_socket_or_ip(b"[::1]:80"), ip("::1"));
        assert_eq!(parse_socket_or_ip(b"127.0.0.1"), ip("127.0.0.1"));
        assert_eq!(parse_socket_or_ip(b"/tmp/socket"), None);
        assert_eq!(parse_socket_or_ip(&[0xff]), None);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_no_address() {
        assert_eq!(parse_ip(b"10.0.0.\xff"), None);
        assert_eq!(parse_socket_or_ip(b"[::1\xc3]:80"), None);
    }
}
