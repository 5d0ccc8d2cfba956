//! The request facts the decision reads: header values and cookies, looked up by
//! name in the header map that the host hands over in one call. Pure parsing of
//! the proxy-wasm serialized map format and of `Cookie` headers; no host calls and
//! no allocation, and every length is bounds-checked, since the bytes are the
//! client's.

/// What a decision may ask about a request.
pub trait RequestFacts {
    /// The first value of header `name` (lower case).
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// The value of the first cookie called `name` in the `Cookie` headers.
    fn cookie(&self, name: &str) -> Option<&[u8]>;
    /// The client's IP address (the downstream peer), if known. Asked only when an
    /// override must come from a trusted source, as it may cost a host call.
    #[inline]
    fn source_address(&self) -> Option<std::net::IpAddr> {
        None
    }
    /// `anonymous: "cookie"`: a new visitor ID for this request, which carries no user
    /// ID. Asked only then, once per decision. The host draws it from its random
    /// source and keeps it, to add it to the request's `Cookie` and to answer it in
    /// `Set-Cookie` (see the `visitor` module); `None` where no ID may be issued (gRPC
    /// calls), and the request is then drawn as with `anonymous: "random"`.
    #[inline]
    fn issue_visitor_id(&self) -> Option<&[u8]> {
        None
    }
}

/// A request whose client address is known up front: what the command-line tool
/// and the tests hand to the decision. (The filter reads the address from the host
/// only when an override needs it.)
#[derive(Debug, Clone, Copy)]
pub struct KnownSource<'a> {
    pub headers: SerializedHeaders<'a>,
    pub source: Option<std::net::IpAddr>,
}

impl RequestFacts for KnownSource<'_> {
    #[inline]
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.header(name)
    }

    #[inline]
    fn cookie(&self, name: &str) -> Option<&[u8]> {
        self.headers.cookie(name)
    }

    #[inline]
    fn source_address(&self) -> Option<std::net::IpAddr> {
        self.source
    }
}

/// A view over a header map in the proxy-wasm serialized format:
/// `count: u32`, then `count` pairs of `(key_len: u32, value_len: u32)`, then each
/// key and value, every one followed by a NUL byte. All integers little-endian.
#[derive(Debug, Clone, Copy)]
pub struct SerializedHeaders<'a> {
    bytes: &'a [u8],
}

impl<'a> SerializedHeaders<'a> {
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Self {
        SerializedHeaders { bytes }
    }

    /// Every (name, value) pair in order. A truncated or inconsistent map ends
    /// the iteration early instead of reading out of bounds.
    #[inline]
    pub fn iter(&self) -> SerializedHeadersIter<'a> {
        let count = read_u32(self.bytes, 0).unwrap_or(0) as usize;
        // Each pair needs 8 bytes of sizes: a count that cannot fit is corrupt.
        let count = if count.saturating_mul(8).saturating_add(4) > self.bytes.len() {
            0
        } else {
            count
        };
        SerializedHeadersIter {
            bytes: self.bytes,
            count,
            index: 0,
            data_offset: 4 + count * 8,
        }
    }
}

pub struct SerializedHeadersIter<'a> {
    bytes: &'a [u8],
    count: usize,
    index: usize,
    data_offset: usize,
}

impl<'a> Iterator for SerializedHeadersIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let sizes = 4 + self.index * 8;
        let key_len = read_u32(self.bytes, sizes)? as usize;
        let value_len = read_u32(self.bytes, sizes + 4)? as usize;
        let key_start = self.data_offset;
        let key_end = key_start.checked_add(key_len)?;
        let value_start = key_end.checked_add(1)?;
        let value_end = value_start.checked_add(value_len)?;
        let key = self.bytes.get(key_start..key_end)?;
        let value = self.bytes.get(value_start..value_end)?;
        self.data_offset = value_end.checked_add(1)?;
        self.index += 1;
        Some((key, value))
    }
}

#[inline]
fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    let mut le = [0u8; 4];
    le.copy_from_slice(raw);
    Some(u32::from_le_bytes(le))
}

impl<'a> SerializedHeaders<'a> {
    /// The first `Some` that `select` returns for a (name, value) pair whose name
    /// is `name_len` bytes long: other pairs are skipped on their length alone,
    /// without slicing. The same pairs as [`Self::iter`], ending at the same
    /// inconsistency. A decision scans the map up to four times, so this is hot.
    #[inline]
    fn find_value<T>(
        &self,
        name_len: usize,
        mut select: impl FnMut(&'a [u8], &'a [u8]) -> Option<T>,
    ) -> Option<T> {
        let bytes = self.bytes;
        let count = read_u32(bytes, 0)? as usize;
        let sizes_end = count.checked_mul(8)?.checked_add(4)?;
        let sizes = bytes.get(4..sizes_end)?;
        let mut offset = sizes_end;
        for pair in sizes.chunks_exact(8) {
            let key_len = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]) as usize;
            let value_len = u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]) as usize;
            let value_start = offset.checked_add(key_len)?.checked_add(1)?;
            let value_end = value_start.checked_add(value_len)?;
            if value_end > bytes.len() {
                return None;
            }
            if key_len == name_len {
                let key = bytes.get(offset..offset + key_len)?;
                let value = bytes.get(value_start..value_end)?;
                if let Some(found) = select(key, value) {
                    return Some(found);
                }
            }
            offset = value_end.checked_add(1)?;
        }
        None
    }
}

impl RequestFacts for SerializedHeaders<'_> {
    #[inline]
    fn header(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        self.find_value(name.len(), |key, value| {
            key.eq_ignore_ascii_case(name).then_some(value)
        })
    }

    #[inline]
    fn cookie(&self, name: &str) -> Option<&[u8]> {
        self.find_value(b"cookie".len(), |key, value| {
            if key.eq_ignore_ascii_case(b"cookie") {
                find_cookie(value, name.as_bytes())
            } else {
                None
            }
        })
    }
}

/// The value of cookie `name` in one `Cookie` header value (`a=1; b=2`).
/// Lenient like browsers and servers are: pairs split on `;`, optional spaces and
/// tabs around them, the name ends at the first `=`, a value in double quotes loses
/// them, a pair without `=` is skipped. The first match wins.
#[inline]
pub fn find_cookie<'v>(header_value: &'v [u8], name: &[u8]) -> Option<&'v [u8]> {
    header_value.split(|&b| b == b';').find_map(|pair| {
        let pair = trim_ows(pair);
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (trim_ows(&pair[..eq]), trim_ows(&pair[eq + 1..]));
        if key != name {
            return None;
        }
        match value {
            [b'"', inner @ .., b'"'] => Some(inner),
            _ => Some(value),
        }
    })
}

#[inline]
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Serializes pairs in the proxy-wasm map format: what the host sends. Used by
/// tests and benchmarks to build realistic inputs.
#[inline]
pub fn serialize_headers(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let pairs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
        serialize_headers(&pairs)
    }

    #[test]
    fn reads_headers_in_order_and_the_first_duplicate_wins() {
        let bytes = map(&[
            (":path", b"/"),
            ("x-user-id", b"alice"),
            ("x-user-id", b"bob"),
            ("x-empty", b""),
        ]);
        let h = SerializedHeaders::new(&bytes);
        assert_eq!(h.iter().count(), 4);
        assert_eq!(h.header("x-user-id"), Some(&b"alice"[..]));
        assert_eq!(h.header("x-empty"), Some(&b""[..]));
        assert_eq!(h.header("x-missing"), None);
    }

    #[test]
    fn non_utf8_and_long_values_come_through_as_bytes() {
        let long = vec![b'a'; 16 * 1024];
        let bytes = map(&[("x-bin", &[0xff, 0xfe, 0x00, 0x80]), ("x-long", &long)]);
        let h = SerializedHeaders::new(&bytes);
        assert_eq!(h.header("x-bin"), Some(&[0xff, 0xfe, 0x00, 0x80][..]));
        assert_eq!(h.header("x-long").map(<[u8]>::len), Some(16 * 1024));
    }

    #[test]
    fn corrupt_maps_end_early_instead_of_reading_out_of_bounds() {
        let good = map(&[("a", b"1"), ("b", b"2")]);
        for cut in 0..good.len() {
            let h = SerializedHeaders::new(&good[..cut]);
            assert!(h.iter().count() <= 2);
            let _ = h.header("b");
            let _ = h.cookie("b");
        }
        // A count far beyond the data, and sizes that overflow.
        let mut huge = good.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(SerializedHeaders::new(&huge).iter().count(), 0);
        let mut overflow = good.clone();
        overflow[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(SerializedHeaders::new(&overflow).iter().count(), 0);
        assert_eq!(SerializedHeaders::new(&[]).iter().count(), 0);
    }

    #[test]
    fn lookups_agree_with_the_iterator_on_every_truncation() {
        let good = map(&[
            (":path", b"/"),
            ("x-user-id", b"alice"),
            ("cookie", b"a=1; uid=carol"),
            ("x-user-id", b"bob"),
            ("x-canary", b"canary"),
            ("cookie", b"canary=stable"),
        ]);
        for cut in 0..=good.len() {
            let h = SerializedHeaders::new(&good[..cut]);
            let pairs: Vec<_> = h.iter().collect();
            for name in [":path", "x-user-id", "x-canary", "cookie", "missing"] {
                let expected = pairs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
                    .map(|(_, v)| *v);
                assert_eq!(h.header(name), expected, "{name} at cut {cut}");
            }
            for name in ["a", "uid", "canary", "missing"] {
                let expected = pairs
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(b"cookie"))
                    .find_map(|(_, v)| find_cookie(v, name.as_bytes()));
                assert_eq!(h.cookie(name), expected, "cookie {name} at cut {cut}");
            }
        }
    }

    #[test]
    fn cookies_are_found_across_headers_and_forms() {
        let bytes = map(&[("cookie", b"a=1; uid=alice"), ("cookie", b"canary=canary")]);
        let h = SerializedHeaders::new(&bytes);
        assert_eq!(h.cookie("uid"), Some(&b"alice"[..]));
        assert_eq!(h.cookie("canary"), Some(&b"canary"[..]));
        assert_eq!(h.cookie("missing"), None);
    }

    #[test]
    fn cookie_parsing_is_lenient_and_exact_on_names() {
        assert_eq!(find_cookie(b"uid=alice", b"uid"), Some(&b"alice"[..]));
        assert_eq!(
            find_cookie(b"  uid = alice ;x=1", b"uid"),
            Some(&b"alice"[..])
        );
        assert_eq!(find_cookie(b"uid=\"alice\"", b"uid"), Some(&b"alice"[..]));
        assert_eq!(find_cookie(b"uid=a=b", b"uid"), Some(&b"a=b"[..]));
        assert_eq!(find_cookie(b"uid=", b"uid"), Some(&b""[..]));
        assert_eq!(find_cookie(b"uid=\"", b"uid"), Some(&b"\""[..]));
        assert_eq!(find_cookie(b"xuid=1; uidx=2", b"uid"), None);
        assert_eq!(find_cookie(b"uid", b"uid"), None);
        assert_eq!(find_cookie(b";;;=;uid=1;", b"uid"), Some(&b"1"[..]));
        assert_eq!(find_cookie(b"uid=1; uid=2", b"uid"), Some(&b"1"[..]));
        assert_eq!(find_cookie(b"", b"uid"), None);
        assert_eq!(find_cookie(b"UID=1", b"uid"), None);
    }
}
