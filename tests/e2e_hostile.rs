//! End-to-end: hostile input through a real Envoy 1.40 with two workers. Header
//! and cookie values that are empty, 16 KB long, not UTF-8 or full of control
//! characters, header names of every byte, many duplicate headers, cookies
//! malformed in every way a client can send them, override values that name no
//! version, and user IDs in many scripts.
//!
//! Every request either gets exactly the decision of the pure core (computed here
//! with `decide` over the headers as Envoy's codec passes them on) or is refused by
//! Envoy's own HTTP/1 codec before the filter sees it (400, 431), as documented in
//! docs/reliability.md. Never a 5xx, never a failed VM, nothing from the request in a
//! response header, and the counters equal the decisions one for one.

mod harness;

use canary_router::config::Config;
use canary_router::decide::{Reason, Routing};
use harness::{core_decision, user_ids, Envoy, EnvoyOptions, Response};
use std::collections::BTreeMap;

const CONFIG: &str = r#"{
  "versions": [ { "name": "stable" }, { "name": "canary", "weight": 30 } ],
  "override": { "header": "x-canary", "cookie": "canary" },
  "users": {
    "canary": ["qa-alice", "ユーザー", "مستخدم", "👩‍👩‍👧‍👦", "e\u0301", "a\tb", "пользователь", "a b"],
    "stable": ["vip-carol", "\u00e9", "用户-42", "аdmin"]
  },
  "hash": { "header": "x-user-id", "cookie": "uid", "salt": "ŝalt-🧂", "buckets": 10000 },
  "anonymous": "baseline",
  "metrics_prefix": "canary",
  "metrics": { "responses": true, "latency": true }
}"#;

/// User IDs in many scripts and forms; the hash and the user list take them byte
/// for byte (NFC and NFD spellings of one name are two users).
const USER_IDS: &[&str] = &[
    "qa-alice",
    "vip-carol",
    "ユーザー",
    "用户-42",
    "사용자",
    "مستخدم",
    "משתמש",
    "उपयोगकर्ता",
    "ผู้ใช้",
    "пользователь",
    "аdmin", // Cyrillic а
    "admin",
    "👩‍👩‍👧‍👦",
    "🏳️‍🌈",
    "👍🏽",
    "e\u{301}", // e + combining acute: listed under canary
    "\u{e9}",   // precomposed é: listed under stable
    "a\u{200d}b",
    "\u{feff}bom",
    "\u{202e}evil",
    "ｆｕｌｌ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "Ω",
    "ᚠᛇᚻ",
    "ꦲꦏ꧀ꦱꦫ",
];

/// Byte strings that are not UTF-8: a lone continuation byte, an overlong NUL, a
/// surrogate, a truncated sequence, a 5-byte form, a code point above U+10FFFF,
/// and every byte from 0x80 to 0xff.
fn not_utf8() -> Vec<Vec<u8>> {
    vec![
        vec![0xff, 0xfe],
        vec![0x80],
        vec![b'a', 0xc0, 0x80, b'b'],
        vec![0xed, 0xa0, 0x80],
        vec![0xe3, 0x81],
        vec![0xf8, 0x88, 0x80, 0x80, 0x80],
        vec![0xf4, 0x90, 0x80, 0x80],
        (0x80..=0xff).collect(),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The filter decides; the answer must be the pure core's.
    Routed,
    /// Envoy's codec refuses the request with this status before any filter runs.
    Refused(u16),
}

struct Case {
    what: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    expect: Expect,
}

#[derive(Default)]
struct Cases(Vec<Case>);

impl Cases {
    fn add(&mut self, what: impl Into<String>, expect: Expect, headers: &[(&[u8], &[u8])]) {
        self.0.push(Case {
            what: what.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
            expect,
        });
    }

    fn routed(&mut self, what: impl Into<String>, headers: &[(&[u8], &[u8])]) {
        self.add(what, Expect::Routed, headers);
    }
}

/// What Envoy's HTTP/1 codec (1.40, balsa) hands the filter for a value written
/// on the wire: an obs-fold loses its CRLF and keeps the folding blank, a bare CR
/// is dropped, blanks around the value are trimmed. Names are lower-cased.
fn as_envoy_passes_it(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            b'\r' if value.get(i + 1) == Some(&b'\n') => i += 2,
            b'\r' => i += 1,
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    let is_blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = out.iter().position(|b| !is_blank(b)).unwrap_or(out.len());
    let end = out
        .iter()
        .rposition(|b| !is_blank(b))
        .map_or(start, |e| e + 1);
    out[start..end].to_vec()
}

/// RFC 9110 `tchar`: what Envoy accepts in a header name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn cases() -> Cases {
    let mut c = Cases::default();
    let kb16 = |b: u8| vec![b; 16 * 1024];

    // Empty values: an empty user ID counts as absent, an empty override names nothing.
    c.routed("empty user header", &[(b"x-user-id", b"")]);
    c.routed("empty override header", &[(b"x-canary", b"")]);
    c.routed("empty cookie header", &[(b"cookie", b"")]);
    c.routed("empty uid cookie", &[(b"cookie", b"uid=")]);
    c.routed("empty override cookie", &[(b"cookie", b"canary=")]);
    c.routed("empty route header", &[(b"x-canary-version", b"")]);
    c.routed(
        "empty user header, user by cookie",
        &[(b"x-user-id", b""), (b"cookie", b"uid=qa-alice")],
    );

    // 16 KB values (Envoy's limit is 60 KB for all headers together).
    let long_id = kb16(b'u');
    let long_cjk = "ユ".repeat(16 * 1024 / 3).into_bytes();
    let long_cookie = [b"uid=".as_slice(), &long_id].concat();
    let long_name_cookie = [kb16(b'n').as_slice(), b"=v; uid=qa-alice"].concat();
    let semicolons = [kb16(b';').as_slice(), b"uid=bob"].concat();
    c.routed("16 KB user ID", &[(b"x-user-id", &long_id)]);
    c.routed("16 KB user ID in CJK", &[(b"x-user-id", &long_cjk)]);
    c.routed("16 KB override", &[(b"x-canary", &long_id)]);
    c.routed("16 KB uid cookie", &[(b"cookie", &long_cookie)]);
    c.routed("16 KB cookie name", &[(b"cookie", &long_name_cookie)]);
    c.routed("16 KB of semicolons", &[(b"cookie", &semicolons)]);
    c.routed("16 KB route header", &[(b"x-canary-version", &long_id)]);
    c.routed(
        "three 16 KB headers",
        &[
            (b"x-canary", &long_id),
            (b"x-user-id", &long_cjk),
            (b"cookie", &long_cookie),
        ],
    );
    let too_long = [b"uid=".as_slice(), &vec![b'u'; 61 * 1024]].concat();
    c.add(
        "61 KB cookie: over Envoy's header limit",
        Expect::Refused(431),
        &[(b"cookie", &too_long)],
    );

    // Not UTF-8, in every place the filter reads.
    for (i, bytes) in not_utf8().iter().enumerate() {
        let cookie_uid = [b"uid=".as_slice(), bytes].concat();
        let cookie_override = [b"canary=".as_slice(), bytes].concat();
        let with_canary = [b"canary".as_slice(), bytes].concat();
        c.routed(format!("non-UTF-8 #{i} user ID"), &[(b"x-user-id", bytes)]);
        c.routed(
            format!("non-UTF-8 #{i} override"),
            &[(b"x-canary", bytes), (b"x-user-id", b"qa-alice")],
        );
        c.routed(
            format!("non-UTF-8 #{i} override after a version name"),
            &[(b"x-canary", &with_canary)],
        );
        c.routed(
            format!("non-UTF-8 #{i} uid cookie"),
            &[(b"cookie", &cookie_uid)],
        );
        c.routed(
            format!("non-UTF-8 #{i} override cookie"),
            &[(b"cookie", &cookie_override)],
        );
        c.routed(
            format!("non-UTF-8 #{i} route header"),
            &[(b"x-canary-version", bytes)],
        );
    }

    // Control characters in a value, at the start, in the middle and at the end.
    // Envoy refuses every C0 control and DEL with 400, except HTAB (kept inside,
    // trimmed at the ends) and a bare CR (dropped). LF at the end is only a bare-LF
    // line ending, not a character of the value, so it is left out.
    for b in (0x00..=0x1f).chain([0x7f]) {
        for (position, value) in [
            ("inside", vec![b'a', b, b'b']),
            ("first", vec![b, b'a', b'b']),
            ("last", vec![b'a', b'b', b]),
        ] {
            if b == b'\n' && position == "last" {
                continue;
            }
            let expect = if b == b'\t' || b == b'\r' {
                Expect::Routed
            } else {
                Expect::Refused(400)
            };
            let what = format!("control 0x{b:02x} {position} of the user ID");
            c.add(what, expect, &[(b"x-user-id", &value)]);
        }
        let cookie = [b"uid=a".as_slice(), &[b], b"b"].concat();
        let expect = if b == b'\t' || b == b'\r' {
            Expect::Routed
        } else {
            Expect::Refused(400)
        };
        c.add(
            format!("control 0x{b:02x} inside the uid cookie"),
            expect,
            &[(b"cookie", &cookie)],
        );
    }
    // Line folding (obs-fold): Envoy unfolds it.
    c.routed("obs-fold with a space", &[(b"x-user-id", b"a\r\n b")]);
    c.routed("obs-fold with a tab", &[(b"x-user-id", b"a\r\n\tb")]);
    c.routed(
        "blanks around the value",
        &[(b"x-user-id", b"  \t a b \t ")],
    );

    // Header names of every byte (the filter reads none of them; Envoy refuses
    // anything that is not a token character).
    for b in (0u8..=255).filter(|&b| b != b':') {
        let name = [b"x-a".as_slice(), &[b], b"b"].concat();
        let expect = if is_tchar(b) {
            Expect::Routed
        } else {
            Expect::Refused(400)
        };
        c.add(
            format!("header name with byte 0x{b:02x}"),
            expect,
            &[(&name, b"v"), (b"x-user-id", b"qa-alice")],
        );
    }
    c.routed("upper-case user header", &[(b"X-USER-ID", b"qa-alice")]);
    c.routed("mixed-case override header", &[(b"X-Canary", b"canary")]);
    c.routed("upper-case cookie header", &[(b"COOKIE", b"uid=vip-carol")]);

    // Many duplicates: the first value counts, for every header the filter reads.
    let ids: Vec<Vec<u8>> = (0..90).map(|i| format!("user-{i}").into_bytes()).collect();
    let many_ids: Vec<(&[u8], &[u8])> = ids
        .iter()
        .map(|v| (b"x-user-id".as_slice(), v.as_slice()))
        .collect();
    c.routed("90 user headers", &many_ids);
    let cookies: Vec<Vec<u8>> = (0..60)
        .map(|i| match i {
            30 => b"uid=qa-alice".to_vec(),
            59 => b"canary=canary".to_vec(),
            _ => format!("c{i}=v{i}").into_bytes(),
        })
        .collect();
    let many_cookies: Vec<(&[u8], &[u8])> = cookies
        .iter()
        .map(|v| (b"cookie".as_slice(), v.as_slice()))
        .collect();
    c.routed("60 cookie headers, override in the last", &many_cookies);
    let mut overrides: Vec<(&[u8], &[u8])> = vec![(b"x-canary", b"nightly")];
    overrides.extend(std::iter::repeat_n(
        (b"x-canary".as_slice(), b"canary".as_slice()),
        40,
    ));
    overrides.push((b"x-user-id", b"vip-carol"));
    c.routed(
        "41 override headers, the first names no version",
        &overrides,
    );
    let spoofs: Vec<(&[u8], &[u8])> = (0..90)
        .map(|i| {
            let name: &[u8] = if i % 2 == 0 {
                b"x-canary-version"
            } else {
                b"X-Canary-Version"
            };
            (name, b"canary".as_slice())
        })
        .collect();
    c.routed("90 route headers saying canary", &spoofs);
    let over: Vec<(&[u8], &[u8])> = ids
        .iter()
        .chain(&ids)
        .map(|v| (b"x-user-id".as_slice(), v.as_slice()))
        .collect();
    c.add(
        "180 headers: over Envoy's count limit",
        Expect::Refused(431),
        &over,
    );

    // Cookies malformed in every way RFC 6265 lets a client send them.
    for cookie in [
        "uid",
        "=uid",
        "=",
        ";",
        ";;;;",
        "; uid=qa-alice",
        "uid=qa-alice;",
        "uid=qa-alice;;uid=vip-carol",
        " uid = qa-alice ",
        "uid\t=\tqa-alice",
        "uid==qa-alice",
        "uid=\"qa-alice\"",
        "uid=\"qa-alice",
        "uid=qa-alice\"",
        "uid=\"\"",
        "uid=\"",
        "\"uid\"=qa-alice",
        "uid=a b",
        "uid=a,b",
        "a=1, uid=qa-alice",
        "uid=a=b",
        "UID=qa-alice",
        "u id=qa-alice",
        "uid=;canary=canary",
        "canary=canary;canary=stable",
        "canary=\"canary\"",
        "canary= canary ",
        "canary=CANARY",
        "canary=canary,stable",
        "$Version=1; uid=qa-alice; $Path=/",
        "uid=qa-alice; Path=/; HttpOnly; Secure",
    ] {
        c.routed(
            format!("cookie {cookie:?}"),
            &[(b"cookie", cookie.as_bytes())],
        );
    }
    let pairs_then_uid = |n: usize, last: &str| {
        let mut s: Vec<String> = (0..n).map(|i| format!("c{i}=v{i}")).collect();
        s.push(last.to_string());
        s.join("; ").into_bytes()
    };
    let thousand = pairs_then_uid(1000, "uid=qa-alice");
    let big = pairs_then_uid(4000, "canary=canary");
    assert!(big.len() > 40 * 1024 && big.len() < 59 * 1024);
    c.routed("1000 cookie pairs, then the uid", &[(b"cookie", &thousand)]);
    c.routed(
        "a 45 KB cookie header of 4000 pairs, then the override",
        &[(b"cookie", &big)],
    );
    let odd_name = [&[0xff, 0xfe][..], b"=1; uid=", &[0xc3, 0x28]].concat();
    c.routed("non-UTF-8 cookie name and value", &[(b"cookie", &odd_name)]);

    // Override values that name no version: ignored, the decision goes on.
    let long_override = kb16(b'c');
    let mut no_version: Vec<Vec<u8>> = [
        "",
        "CANARY",
        "Canary",
        "canary,stable",
        "canary;",
        "beta",
        "stable canary",
        "саnary",
        "canary\u{200b}",
        "canary.",
        "*",
        "null",
        "0",
        "1",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    no_version.push(long_override);
    no_version.push(vec![0xff, b'c', b'a', b'n', b'a', b'r', b'y']);
    for value in &no_version {
        let what = String::from_utf8_lossy(&value[..value.len().min(20)]).into_owned();
        c.routed(
            format!("override header {what:?} names no version"),
            &[(b"x-canary", value), (b"x-user-id", b"qa-alice")],
        );
        if !value.contains(&b';') {
            let cookie = [b"canary=".as_slice(), value].concat();
            c.routed(
                format!("override cookie {what:?} names no version"),
                &[(b"cookie", &cookie), (b"x-user-id", b"vip-carol")],
            );
        }
    }
    c.routed(
        "override with blanks around it (Envoy trims them)",
        &[(b"x-canary", b"  canary\t")],
    );

    // User IDs in many scripts, by header and by cookie.
    for id in USER_IDS {
        c.routed(
            format!("user {id:?} by header"),
            &[(b"x-user-id", id.as_bytes())],
        );
        let cookie = format!("a=1; uid={id}; b=2");
        c.routed(
            format!("user {id:?} by cookie"),
            &[(b"cookie", cookie.as_bytes())],
        );
    }
    c
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn hostile_requests_get_the_pure_cores_decision_or_envoys_own_refusal_and_never_fail_the_vm() {
    let envoy = Envoy::start(EnvoyOptions::with_config(CONFIG));
    let config = Config::from_json(CONFIG.as_bytes()).expect("the test config is valid");
    let routing = Routing::at(&config, 0);
    let cases = cases().0;
    let mut client = envoy.client();
    let mut problems: Vec<String> = Vec::new();
    let mut decided: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    let mut refused: BTreeMap<u16, u64> = BTreeMap::new();

    for case in &cases {
        let wire: Vec<(&[u8], &[u8])> = case
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let response: Response = match client.request_bytes("GET", "/", &wire) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{}: no answer: {e}", case.what));
                continue;
            }
        };
        // Nothing from the request comes back in a response header (a version's
        // name does: the demo upstream says who answered).
        for (_, value) in &case.headers {
            let seen = as_envoy_passes_it(value);
            if seen.len() >= 4 && config.version_index(&seen).is_none() {
                if let Some((name, _)) = response.headers.iter().find(|(_, h)| contains(h, &seen)) {
                    problems.push(format!("{}: echoed in response header {name}", case.what));
                }
            }
        }
        if response.header("x-canary-version").is_some() {
            problems.push(format!(
                "{}: the route header leaked into the response",
                case.what
            ));
        }
        match case.expect {
            Expect::Refused(status) => {
                if response.status != status {
                    problems.push(format!(
                        "{}: expected Envoy's {status}, got {} ({})",
                        case.what,
                        response.status,
                        response.body_text()
                    ));
                }
                *refused.entry(response.status).or_default() += 1;
            }
            Expect::Routed => {
                let pairs: Vec<(Vec<u8>, Vec<u8>)> = case
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), as_envoy_passes_it(v)))
                    .collect();
                let refs: Vec<(&[u8], &[u8])> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
                    .collect();
                let a = core_decision(&config, &routing, &refs);
                let expected = config.versions[a.version].name.clone();
                if response.status != 200 || response.served_by() != expected {
                    problems.push(format!(
                        "{}: got {} {:?}, the pure core decides {expected} ({})",
                        case.what,
                        response.status,
                        response.served_by(),
                        a.reason.as_str()
                    ));
                }
                *decided.entry((expected, a.reason.as_str())).or_default() += 1;
            }
        }
    }

    // NFC and NFD spellings of one name are two users, each on its listed version.
    let by_header =
        |client: &mut harness::Client, id: &str| client.get_with(&[("x-user-id", id)]).served_by();
    assert_eq!(by_header(&mut client, "e\u{301}"), "canary");
    assert_eq!(by_header(&mut client, "\u{e9}"), "stable");
    *decided.entry(("canary".into(), "user_list")).or_default() += 1;
    *decided.entry(("stable".into(), "user_list")).or_default() += 1;

    // After all of that the VM is intact: users are still where the formula puts them.
    for user in user_ids("after-hostile", 200) {
        let a = core_decision(&config, &routing, &[(b"x-user-id", user.as_bytes())]);
        let expected = config.versions[a.version].name.clone();
        assert_eq!(by_header(&mut client, &user), expected, "{user}");
        *decided.entry((expected, a.reason.as_str())).or_default() += 1;
    }

    assert!(
        problems.is_empty(),
        "{} of {} hostile requests went wrong:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
    envoy.assert_vm_healthy();
    let stats = envoy.stats();
    assert_eq!(
        stats.get("http.ingress.downstream_rq_5xx"),
        Some(&0),
        "5xx answers"
    );

    // The counters equal the decisions, one for one, per version and reason; the
    // requests Envoy refused never reached the filter and are not counted.
    let m = envoy.prometheus();
    for version in ["stable", "canary"] {
        for reason in Reason::ALL {
            let expected = decided
                .get(&(version.to_string(), reason.as_str()))
                .copied()
                .unwrap_or(0);
            assert_eq!(
                m.value(
                    "canary_requests_total",
                    &[("version", version), ("reason", reason.as_str())]
                ),
                expected as f64,
                "canary_requests_total{{version={version},reason={}}}",
                reason.as_str()
            );
        }
    }
    let routed: u64 = decided.values().sum();
    assert_eq!(m.sum("canary_requests_total", &[]), routed as f64);
    assert_eq!(
        m.sum("canary_responses_total", &[("code_class", "2xx")]),
        routed as f64
    );
    eprintln!(
        "hostile input: {} cases sent; {} decided by the filter (each as the pure core decides: {:?}); refused by Envoy's codec: {:?}",
        cases.len(),
        routed,
        decided,
        refused
    );
}
