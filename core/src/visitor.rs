//! Visitor IDs, for `anonymous: "cookie"`: a request without a user ID is issued a
//! new random ID, decided on it exactly as its later requests (which carry it in the
//! cookie `hash.cookie`) will be, and answered with a `Set-Cookie` that hands it to
//! the browser. The upstream sees it in the request's `Cookie` from the first
//! request on.
//!
//! The ID is 128 bits from the host's random source (WASI `random_get`, read by the
//! host layer), written in base64url without padding: 22 characters of
//! `[A-Za-z0-9_-]`, all of them cookie-value characters (RFC 6265). It is a random
//! number and nothing else: no personal data, no timestamp, no proxy identity.
//!
//! Pure: the host hands the random bytes in and writes the headers out.

use crate::request::{RequestFacts, SerializedHeaders};

/// Random bytes in one visitor ID.
pub const VISITOR_ID_RANDOM_BYTES: usize = 16;
/// Characters of a visitor ID: 16 bytes in base64url without padding.
pub const VISITOR_ID_LEN: usize = 22;

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A visitor ID: `random` in base64url without padding.
#[inline]
pub fn encode_visitor_id(random: &[u8; VISITOR_ID_RANDOM_BYTES]) -> [u8; VISITOR_ID_LEN] {
    let mut out = [0u8; VISITOR_ID_LEN];
    let mut at = 0;
    for chunk in random.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // 3 bytes make 4 characters; the last single byte makes 2.
        for i in 0..=chunk.len() {
            if let Some(slot) = out.get_mut(at) {
                *slot = BASE64URL[((n >> (18 - 6 * i)) & 63) as usize];
            }
            at += 1;
        }
    }
    out
}

/// The `Set-Cookie` value that hands the ID to the browser:
/// `NAME=ID; Max-Age=...; Path=...; SameSite=...; Secure; HttpOnly`, with the
/// config's precomputed attributes (`HashConfig::set_cookie_attributes`).
#[inline]
pub fn set_cookie_value(name: &str, id: &[u8], attributes: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1 + id.len() + attributes.len());
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
    out.extend_from_slice(id);
    out.extend_from_slice(attributes.as_bytes());
    out
}

/// The request's `Cookie` value with the issued ID added, so that the upstream sees
/// the ID on the first request as on later ones: every cookie of every `cookie`
/// header in order, joined by `; ` (one header replaces them all), then `NAME=ID`.
/// A `NAME` cookie already there can only be empty (an ID is issued only then): it
/// is left out, so that an upstream reading the first `NAME` gets the ID.
#[inline]
pub fn cookie_with_id(headers: &SerializedHeaders, name: &str, id: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in headers.iter() {
        if !key.eq_ignore_ascii_case(b"cookie") {
            continue;
        }
        for pair in value.split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let is_name = pair
                .strip_prefix(name.as_bytes())
                .is_some_and(|rest| rest.first() == Some(&b'=') || rest.is_empty());
            if pair.is_empty() || is_name {
                continue;
            }
            out.extend_from_slice(pair);
            out.extend_from_slice(b"; ");
        }
    }
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
    out.extend_from_slice(id);
    out
}

/// True if the request may be issued a visitor ID: anything but a gRPC call (by its
/// `content-type`), whose client is no browser and keeps no cookie. A gRPC call
/// without a user ID is drawn as with `anonymous: "random"`.
#[inline]
pub fn may_issue(request: &impl RequestFacts) -> bool {
    !request
        .header("content-type")
        .is_some_and(crate::grpc::is_grpc_content_type)
}

/// A request that is issued `id`, if any, when it needs one: what the command-line
/// tool and the tests decide with. (The filter's own request draws its ID from the
/// host.)
#[derive(Debug, Clone, Copy)]
pub struct WithVisitorId<'a, R> {
    pub request: R,
    pub id: Option<&'a [u8]>,
}

impl<R: RequestFacts> RequestFacts for WithVisitorId<'_, R> {
    #[inline]
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.request.header(name)
    }

    #[inline]
    fn cookie(&self, name: &str) -> Option<&[u8]> {
        self.request.cookie(name)
    }

    #[inline]
    fn source_address(&self) -> Option<std::net::IpAddr> {
        self.request.source_address()
    }

    #[inline]
    fn issue_visitor_id(&self) -> Option<&[u8]> {
        self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::decide::{decide, Assignment, Reason, Rng, Routing};
    use crate::pick::{decide_pick, RouteWrite};
    use crate::request::{find_cookie, serialize_headers, SerializedHeaders};
    use std::cell::Cell;

    /// A stand-in for the host's random source.
    fn random(seed: u64) -> [u8; 16] {
        let mut rng = Rng::new(seed);
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        out[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        out
    }

    #[test]
    fn ids_are_22_base64url_characters_of_the_random_bytes() {
        assert_eq!(&encode_visitor_id(&[0; 16]), b"AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(&encode_visitor_id(&[0xff; 16]), b"_____________________w");
        // RFC 4648 test vector "foobar", as the start of the bytes.
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(b"foobar");
        assert!(encode_visitor_id(&bytes).starts_with(b"Zm9vYmFy"));
        let mut seen = std::collections::HashSet::new();
        for seed in 0..10_000 {
            let id = encode_visitor_id(&random(seed));
            assert!(id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')));
            // Every byte is in the ID: decoding gives the bytes back.
            assert_eq!(decode(&id), random(seed));
            assert!(seen.insert(id));
        }
    }

    fn decode(id: &[u8; 22]) -> [u8; 16] {
        let mut bits: u128 = 0;
        for (i, c) in id.iter().enumerate() {
            let v = BASE64URL.iter().position(|b| b == c).unwrap() as u128;
            if i < 21 {
                bits = (bits << 6) | v;
            } else {
                bits = (bits << 2) | (v >> 4);
            }
        }
        bits.to_be_bytes()
    }

    #[test]
    fn grpc_calls_are_issued_no_id() {
        for (content_type, may) in [
            (None, true),
            (Some("text/html"), true),
            (Some("application/json"), true),
            (Some("application/grpc"), false),
            (Some("application/grpc+proto"), false),
            // A browser's gRPC-Web call keeps cookies like any fetch.
            (Some("application/grpc-web"), true),
        ] {
            let bytes = match content_type {
                Some(ct) => serialize_headers(&[(b"content-type", ct.as_bytes())]),
                None => serialize_headers(&[]),
            };
            assert_eq!(
                may_issue(&SerializedHeaders::new(&bytes)),
                may,
                "{content_type:?}"
            );
        }
    }

    #[test]
    fn the_cookie_header_keeps_every_cookie_and_adds_the_id() {
        let with = |pairs: &[(&[u8], &[u8])]| {
            let bytes = serialize_headers(pairs);
            String::from_utf8(cookie_with_id(
                &SerializedHeaders::new(&bytes),
                "vid",
                b"ID",
            ))
            .unwrap()
        };
        assert_eq!(with(&[(b":path", b"/")]), "vid=ID");
        assert_eq!(with(&[(b"cookie", b"a=1")]), "a=1; vid=ID");
        assert_eq!(with(&[(b"cookie", b" a=1; b=2; ")]), "a=1; b=2; vid=ID");
        assert_eq!(
            with(&[(b"Cookie", b"a=1"), (b"cookie", b"b=2")]),
            "a=1; b=2; vid=ID"
        );
        assert_eq!(with(&[(b"cookie", b""), (b"cookie", b";")]), "vid=ID");
        let header = with(&[(b"cookie", b"a=1; vid=")]);
        assert_eq!(find_cookie(header.as_bytes(), b"a"), Some(&b"1"[..]));
        // The empty cookie of the same name is left out: the first `vid` is the ID.
        assert_eq!(header, "a=1; vid=ID");
        assert_eq!(with(&[(b"cookie", b"vid=; a=1")]), "a=1; vid=ID");
        assert_eq!(with(&[(b"cookie", b"vid")]), "vid=ID");
        // Only that name: a cookie whose name merely starts with it stays.
        assert_eq!(
            with(&[(b"cookie", b"vids=2; xvid=")]),
            "vids=2; xvid=; vid=ID"
        );
        assert_eq!(
            set_cookie_value("vid", b"ID", "; Path=/"),
            b"vid=ID; Path=/".to_vec()
        );
    }

    const CONFIG: &str = r#"{
      "versions": [ { "name": "stable" }, { "name": "canary", "weight": 10 }, { "name": "beta", "weight": 5 } ],
      "override": { "header": "x-canary" },
      "users": { "canary": ["AAAAAAAAAAAAAAAAAAAAAA"] },
      "hash": { "header": "x-user-id", "cookie": "vid", "salt": "shop" },
      "anonymous": "cookie",
      "guard": { "version": "canary", "max_error_rate": 0.1 }
    }"#;

    fn facts(pairs: &[(&str, &str)]) -> Vec<u8> {
        let pairs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        serialize_headers(&pairs)
    }

    /// Counts how often the decision asks for an ID.
    struct Counting<'a> {
        headers: SerializedHeaders<'a>,
        id: &'a [u8],
        asked: Cell<u32>,
    }

    impl RequestFacts for Counting<'_> {
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.headers.header(name)
        }
        fn cookie(&self, name: &str) -> Option<&[u8]> {
            self.headers.cookie(name)
        }
        fn issue_visitor_id(&self) -> Option<&[u8]> {
            self.asked.set(self.asked.get() + 1);
            Some(self.id)
        }
    }

    /// The first request, issued `id`, and a later one that carries it in the
    /// cookie, decided on `routing`.
    fn first_and_later(
        config: &Config,
        routing: &Routing,
        id: &[u8],
        extra: &[(&str, &str)],
    ) -> (Assignment, Assignment, u32) {
        let first = facts(extra);
        let request = Counting {
            headers: SerializedHeaders::new(&first),
            id,
            asked: Cell::new(0),
        };
        let a = decide(config, routing, &request, &mut Rng::new(1));
        let cookie = format!("other=1; vid={}", std::str::from_utf8(id).unwrap());
        let mut pairs = extra.to_vec();
        pairs.push(("cookie", &cookie));
        let later = facts(&pairs);
        let b = decide(
            config,
            routing,
            &SerializedHeaders::new(&later),
            &mut Rng::new(2),
        );
        (a, b, request.asked.get())
    }

    #[test]
    fn the_first_request_is_decided_as_every_later_one_with_the_cookie() {
        let c = Config::from_json(CONFIG.as_bytes()).unwrap();
        let armed = Routing::at(&c, 0);
        let tripped = Routing {
            guard_tripped: true,
            ..armed.clone()
        };
        let mut by_version = [0usize; 3];
        for seed in 0..20_000 {
            let id = encode_visitor_id(&random(seed));
            for routing in [&armed, &tripped] {
                let (first, later, asked) = first_and_later(&c, routing, &id, &[]);
                assert_eq!(first, later, "{}", String::from_utf8_lossy(&id));
                assert_eq!(asked, 1, "asked once");
                assert!(matches!(first.reason, Reason::Hash | Reason::Guard));
            }
            by_version[decide(
                &c,
                &armed,
                &WithVisitorId {
                    request: SerializedHeaders::new(&[]),
                    id: Some(&id),
                },
                &mut Rng::new(1),
            )
            .version] += 1;
        }
        // New visitors land at the weights (4 sigma of 20,000 draws).
        for (v, share) in [(0, 0.85f64), (1, 0.10), (2, 0.05)] {
            let sigma = (20_000.0 * share * (1.0 - share)).sqrt();
            assert!(
                (by_version[v] as f64 - 20_000.0 * share).abs() <= 4.0 * sigma,
                "{by_version:?}"
            );
        }
        // A listed ID goes to its list, an override wins but the ID is issued all the same.
        let listed = b"AAAAAAAAAAAAAAAAAAAAAA";
        let (first, later, _) = first_and_later(&c, &armed, listed, &[]);
        assert_eq!((first.version, first.reason), (1, Reason::UserList));
        assert_eq!(first, later);
        let (first, later, asked) = first_and_later(&c, &armed, listed, &[("x-canary", "beta")]);
        assert_eq!((first.version, first.reason), (2, Reason::Override));
        assert_eq!((first, asked), (later, 1));
    }

    #[test]
    fn requests_with_an_id_are_never_issued_one() {
        let c = Config::from_json(CONFIG.as_bytes()).unwrap();
        let routing = Routing::at(&c, 0);
        for pairs in [
            &[("x-user-id", "alice")][..],
            &[("cookie", "vid=returning")][..],
            &[("x-user-id", ""), ("cookie", "vid=returning")][..],
        ] {
            let bytes = facts(pairs);
            let request = Counting {
                headers: SerializedHeaders::new(&bytes),
                id: b"fresh",
                asked: Cell::new(0),
            };
            let a = decide(&c, &routing, &request, &mut Rng::new(1));
            assert_eq!(
                (a.reason, request.asked.get()),
                (Reason::Hash, 0),
                "{pairs:?}"
            );
        }
        // An empty cookie is no ID: one is issued.
        let bytes = facts(&[("cookie", "vid=")]);
        let request = Counting {
            headers: SerializedHeaders::new(&bytes),
            id: b"fresh",
            asked: Cell::new(0),
        };
        decide(&c, &routing, &request, &mut Rng::new(1));
        assert_eq!(request.asked.get(), 1);
    }

    #[test]
    fn without_an_issued_id_the_request_is_drawn_as_random() {
        let c = Config::from_json(CONFIG.as_bytes()).unwrap();
        let routing = Routing::at(&c, 0);
        let policy = |p: &str| {
            let json = CONFIG.replace(
                r#""anonymous": "cookie""#,
                &format!(r#""anonymous": "{p}""#),
            );
            Config::from_json(json.as_bytes()).unwrap()
        };
        let random = policy("random");
        let empty = serialize_headers(&[]);
        for seed in 0..1000 {
            let a = decide(
                &c,
                &routing,
                &SerializedHeaders::new(&empty),
                &mut Rng::new(seed),
            );
            let b = decide(
                &random,
                &routing,
                &SerializedHeaders::new(&empty),
                &mut Rng::new(seed),
            );
            assert_eq!(a, b);
            assert_eq!(a.reason, Reason::Random);
        }
        // Other policies never ask.
        for policy_name in ["random", "baseline"] {
            let other = policy(policy_name);
            let request = Counting {
                headers: SerializedHeaders::new(&empty),
                id: b"fresh",
                asked: Cell::new(0),
            };
            decide(&other, &routing, &request, &mut Rng::new(1));
            assert_eq!(request.asked.get(), 0, "{policy_name}");
        }
    }

    #[test]
    fn ramps_only_move_new_visitors_into_the_canary() {
        let ids: Vec<[u8; 22]> = (0..5000).map(|s| encode_visitor_id(&random(s))).collect();
        let mut previous = vec![false; ids.len()];
        for weight in ["0", "1", "10", "25", "50", "100"] {
            let c = Config::from_json(
                format!(
                    r#"{{"versions":[{{"name":"s"}},{{"name":"c","weight":{weight}}}],"hash":{{"cookie":"vid"}},"anonymous":"cookie"}}"#
                )
                .as_bytes(),
            )
            .unwrap();
            let routing = Routing::at(&c, 0);
            for (i, id) in ids.iter().enumerate() {
                let (first, later, _) = first_and_later(&c, &routing, id, &[]);
                assert_eq!(first, later);
                let now = first.version == 1;
                assert!(!previous[i] || now, "left the canary at {weight}");
                previous[i] = now;
            }
        }
        assert!(previous.iter().all(|&c| c));
    }

    #[test]
    fn pick_mode_writes_the_issued_ids_pick_value() {
        let c = Config::from_json(
            br#"{"versions":[{"name":"primary"},{"name":"canary"}],"hash":{"cookie":"vid","pick_header":"x-pick"},"anonymous":"cookie"}"#,
        )
        .unwrap();
        let pick = c.hash.pick.clone().unwrap();
        let routing = Routing::at(&c, 0);
        for seed in 0..2000 {
            let id = encode_visitor_id(&random(seed));
            let first = decide_pick(
                &c,
                &pick,
                &routing,
                &WithVisitorId {
                    request: SerializedHeaders::new(&[]),
                    id: Some(&id),
                },
                &mut Rng::new(1),
            );
            let cookie = format!("vid={}", std::str::from_utf8(&id).unwrap());
            let later = facts(&[("cookie", &cookie)]);
            let again = decide_pick(
                &c,
                &pick,
                &routing,
                &SerializedHeaders::new(&later),
                &mut Rng::new(2),
            );
            assert_eq!(first, again);
            assert!(matches!(first.1, RouteWrite::Pick(_)), "{first:?}");
        }
    }
}
