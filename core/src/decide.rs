//! The decision: which version serves a request, and why. A pure function of the
//! config, the request facts and (for anonymous requests) a random draw.

use crate::bucket::bucket_of;
use crate::config::{Anonymous, Config, Split};
use crate::request::RequestFacts;
use crate::trust::token_matches;

/// Why a request went to its version. Also a metric label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The override header or cookie named the version.
    Override,
    /// The user ID is listed under the version in `users`.
    UserList,
    /// Sticky bucketing of the user ID.
    Hash,
    /// No user ID: a weighted random draw. (A visitor ID issued under
    /// `anonymous: "cookie"` is a user ID: its decision is `Hash` or `UserList`.)
    Random,
    /// No user ID and `anonymous: "baseline"`.
    Baseline,
    /// Would have gone to the guarded version, whose guard has tripped.
    Guard,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Override,
        Reason::UserList,
        Reason::Hash,
        Reason::Random,
        Reason::Baseline,
        Reason::Guard,
    ];

    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Override => "override",
            Reason::UserList => "user_list",
            Reason::Hash => "hash",
            Reason::Random => "random",
            Reason::Baseline => "baseline",
            Reason::Guard => "guard",
        }
    }

    /// Position in [`Reason::ALL`]: the metric table's index.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Index into `Config::versions`; 0 is the baseline.
    pub version: usize,
    pub reason: Reason,
    /// The bucket that decided, for `Hash` and `Random`.
    pub bucket: Option<u32>,
}

/// The part of routing that changes while a config is loaded: the split of the
/// moment (ramps move it) and whether the guard has tripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    pub split: Split,
    pub guard_tripped: bool,
}

impl Routing {
    /// Routing at `now_ms` (unix ms) with an armed guard.
    #[inline]
    pub fn at(config: &Config, now_ms: i64) -> Routing {
        Routing {
            split: config.split_at(now_ms),
            guard_tripped: false,
        }
    }
}

/// A small, fast PRNG (SplitMix64) for the anonymous draw: no host call per
/// request. Statistical quality is ample for splitting traffic; it is not for secrets.
#[derive(Debug, Clone, Copy)]
pub struct Rng(u64);

impl Rng {
    #[inline]
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 1..=n (n > 0), by Lemire's multiply-shift (bias below 2^-32 for n <= 10000).
    #[inline]
    pub fn bucket(&mut self, n: u32) -> u32 {
        let x = self.next_u64() >> 32;
        ((x * u64::from(n)) >> 32) as u32 + 1
    }
}

/// The user ID of a request: the hash header, else the hash cookie. Empty is absent.
#[inline]
pub fn user_id<'r>(config: &Config, request: &'r impl RequestFacts) -> Option<&'r [u8]> {
    let from_header = config
        .hash
        .header
        .as_deref()
        .and_then(|name| request.header(name))
        .filter(|v| !v.is_empty());
    from_header.or_else(|| {
        config
            .hash
            .cookie
            .as_deref()
            .and_then(|name| request.cookie(name))
            .filter(|v| !v.is_empty())
    })
}

/// The ID a decision goes by: the user ID, else, under `anonymous: "cookie"`, the
/// visitor ID the host issues to this request now, which its later requests carry
/// in the cookie: the same ID, so the same decision.
#[inline]
fn decision_id<'r>(config: &Config, request: &'r impl RequestFacts) -> Option<&'r [u8]> {
    user_id(config, request).or_else(|| match config.anonymous {
        Anonymous::Cookie => request.issue_visitor_id().filter(|id| !id.is_empty()),
        Anonymous::Random | Anonymous::Baseline => None,
    })
}

/// The version named by the override header, else by the override cookie, if the
/// request may override. A value that names no version is ignored.
#[inline]
fn override_version(config: &Config, request: &impl RequestFacts) -> Option<usize> {
    named_override(config, request).filter(|_| override_allowed(config, request))
}

/// An override counts only with the configured token and from a trusted source,
/// when those are configured.
#[inline]
fn override_allowed(config: &Config, request: &impl RequestFacts) -> bool {
    if let Some(token) = &config.override_.token {
        let presented = request.header(&token.header).unwrap_or_default();
        if !token_matches(presented, &token.values) {
            return false;
        }
    }
    let sources = &config.override_.trusted_sources;
    sources.is_empty()
        || request
            .source_address()
            .is_some_and(|ip| sources.iter().any(|range| range.contains(ip)))
}

#[inline]
fn named_override(config: &Config, request: &impl RequestFacts) -> Option<usize> {
    let by_header = config
        .override_
        .header
        .as_deref()
        .and_then(|name| request.header(name))
        .and_then(|v| config.version_index(v));
    by_header.or_else(|| {
        config
            .override_
            .cookie
            .as_deref()
            .and_then(|name| request.cookie(name))
            .and_then(|v| config.version_index(v))
    })
}

/// Decides the version of one request. First match wins: override, user list,
/// user hash, then the anonymous policy; a tripped guard then sends whatever would
/// have reached the guarded version to the baseline (overrides excepted, so that
/// engineers can still debug it).
#[inline]
pub fn decide(
    config: &Config,
    routing: &Routing,
    request: &impl RequestFacts,
    rng: &mut Rng,
) -> Assignment {
    // Under anonymous: "cookie" the ID comes first, so that a request without one is
    // issued its ID whatever decides it, an override too. Otherwise it is read only
    // if no override decides.
    let issued_first = match config.anonymous {
        Anonymous::Cookie => Some(decision_id(config, request)),
        Anonymous::Random | Anonymous::Baseline => None,
    };
    if let Some(version) = override_version(config, request) {
        return Assignment {
            version,
            reason: Reason::Override,
            bucket: None,
        };
    }
    let id = issued_first.unwrap_or_else(|| decision_id(config, request));
    let assignment = choose(config, &routing.split, id, rng);
    match &config.guard {
        Some(guard) if routing.guard_tripped && assignment.version == guard.version => Assignment {
            version: 0,
            reason: Reason::Guard,
            bucket: assignment.bucket,
        },
        _ => assignment,
    }
}

#[inline]
fn choose(config: &Config, split: &Split, id: Option<&[u8]>, rng: &mut Rng) -> Assignment {
    if let Some(id) = id {
        if let Some(&version) = config.users.get(id) {
            return Assignment {
                version,
                reason: Reason::UserList,
                bucket: None,
            };
        }
        let bucket = bucket_of(&config.hash.key_prefix, id, split.buckets);
        return Assignment {
            version: split.version_of_bucket(bucket),
            reason: Reason::Hash,
            bucket: Some(bucket),
        };
    }
    match config.anonymous {
        // Cookie: no ID could be issued (a gRPC call).
        Anonymous::Random | Anonymous::Cookie => {
            let bucket = rng.bucket(split.buckets);
            Assignment {
                version: split.version_of_bucket(bucket),
                reason: Reason::Random,
                bucket: Some(bucket),
            }
        }
        Anonymous::Baseline => Assignment {
            version: 0,
            reason: Reason::Baseline,
            bucket: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{serialize_headers, KnownSource, SerializedHeaders};

    const CONFIG: &str = r#"{
      "versions": [ { "name": "stable" }, { "name": "canary", "weight": 10 } ],
      "override": { "header": "x-canary", "cookie": "canary" },
      "users": { "canary": ["qa-alice"], "stable": ["vip-carol"] },
      "hash": { "header": "x-user-id", "cookie": "uid", "salt": "checkout-v2" },
      "anonymous": "random"
    }"#;

    fn config(json: &str) -> Config {
        Config::from_json(json.as_bytes()).unwrap()
    }

    fn decide_with(config: &Config, pairs: &[(&str, &str)]) -> Assignment {
        let pairs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        let bytes = serialize_headers(&pairs);
        decide(
            config,
            &Routing::at(config, 0),
            &SerializedHeaders::new(&bytes),
            &mut Rng::new(7),
        )
    }

    fn canary_share(config: &Config, users: u32) -> f64 {
        let mut canary = 0;
        for i in 0..users {
            let id = format!("user-{i}");
            if decide_with(config, &[("x-user-id", &id)]).version == 1 {
                canary += 1;
            }
        }
        f64::from(canary) / f64::from(users)
    }

    #[test]
    fn override_header_wins_over_everything() {
        let c = config(CONFIG);
        let a = decide_with(&c, &[("x-canary", "canary"), ("x-user-id", "vip-carol")]);
        assert_eq!((a.version, a.reason), (1, Reason::Override));
        let a = decide_with(&c, &[("x-canary", "stable"), ("x-user-id", "qa-alice")]);
        assert_eq!((a.version, a.reason), (0, Reason::Override));
    }

    #[test]
    fn override_cookie_applies_when_the_header_is_absent_or_unknown() {
        let c = config(CONFIG);
        let a = decide_with(&c, &[("cookie", "canary=canary")]);
        assert_eq!((a.version, a.reason), (1, Reason::Override));
        let a = decide_with(&c, &[("x-canary", "nope"), ("cookie", "canary=canary")]);
        assert_eq!((a.version, a.reason), (1, Reason::Override));
        // Header beats cookie.
        let a = decide_with(&c, &[("x-canary", "stable"), ("cookie", "canary=canary")]);
        assert_eq!((a.version, a.reason), (0, Reason::Override));
    }

    #[test]
    fn an_unknown_override_is_ignored_and_the_decision_goes_on() {
        let c = config(CONFIG);
        let a = decide_with(&c, &[("x-canary", "CANARY"), ("x-user-id", "qa-alice")]);
        assert_eq!((a.version, a.reason), (1, Reason::UserList));
        let a = decide_with(&c, &[("x-canary", ""), ("cookie", "canary=zzz")]);
        assert_eq!(a.reason, Reason::Random);
    }

    #[test]
    fn listed_users_go_to_their_version_before_hashing() {
        let c = config(CONFIG);
        let a = decide_with(&c, &[("x-user-id", "qa-alice")]);
        assert_eq!((a.version, a.reason, a.bucket), (1, Reason::UserList, None));
        let a = decide_with(&c, &[("cookie", "uid=vip-carol")]);
        assert_eq!((a.version, a.reason), (0, Reason::UserList));
    }

    #[test]
    fn the_user_header_beats_the_cookie_and_empty_counts_as_absent() {
        let c = config(CONFIG);
        let a = decide_with(
            &c,
            &[("x-user-id", "qa-alice"), ("cookie", "uid=vip-carol")],
        );
        assert_eq!(a.version, 1);
        let a = decide_with(&c, &[("x-user-id", ""), ("cookie", "uid=vip-carol")]);
        assert_eq!((a.version, a.reason), (0, Reason::UserList));
        let a = decide_with(&c, &[("x-user-id", ""), ("cookie", "uid=")]);
        assert_eq!(a.reason, Reason::Random);
    }

    #[test]
    fn hashed_users_get_the_bucket_of_the_documented_formula() {
        let c = config(CONFIG);
        for i in 0..1000 {
            let id = format!("user-{i}");
            let a = decide_with(&c, &[("x-user-id", &id)]);
            let h = murmur3::murmur3_32(&mut std::io::Cursor::new(format!("checkout-v2:{id}")), 0)
                .unwrap();
            let bucket = h % 10000 + 1;
            assert_eq!(a.reason, Reason::Hash);
            assert_eq!(a.bucket, Some(bucket));
            assert_eq!(a.version, usize::from(bucket <= 1000));
        }
    }

    #[test]
    fn anonymous_requests_follow_the_policy() {
        let c = config(&CONFIG.replace("\"random\"", "\"baseline\""));
        let a = decide_with(&c, &[(":path", "/")]);
        assert_eq!((a.version, a.reason, a.bucket), (0, Reason::Baseline, None));

        let c = config(CONFIG);
        let mut rng = Rng::new(42);
        let bytes = serialize_headers(&[]);
        let facts = SerializedHeaders::new(&bytes);
        let n = 100_000;
        let routing = Routing::at(&c, 0);
        let canary = (0..n)
            .map(|_| decide(&c, &routing, &facts, &mut rng))
            .inspect(|a| assert_eq!(a.reason, Reason::Random))
            .filter(|a| a.version == 1)
            .count();
        assert_within_4_sigma(canary, n, 0.10);
    }

    fn assert_within_4_sigma(hits: usize, n: usize, p: f64) {
        let expected = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (hits as f64 - expected).abs() <= 4.0 * sigma,
            "{hits} of {n}, expected {expected} +- {}",
            4.0 * sigma
        );
    }

    #[test]
    fn the_split_of_100k_users_is_within_4_sigma_of_the_weights() {
        let c = config(
            r#"{"versions":[{"name":"s"},{"name":"a","weight":10},{"name":"b","weight":25.5}],
                "hash":{"header":"x-user-id","salt":"exp-7"}}"#,
        );
        let n = 100_000;
        let mut counts = [0usize; 3];
        for i in 0..n {
            let id = format!("{i:08x}-5f0c-4a3e-9b1d-{i:012}");
            counts[decide_with(&c, &[("x-user-id", &id)]).version] += 1;
        }
        assert_within_4_sigma(counts[1], n, 0.10);
        assert_within_4_sigma(counts[2], n, 0.255);
        assert_within_4_sigma(counts[0], n, 0.645);
    }

    #[test]
    fn the_canary_cohort_equals_unleash_gradual_rollout() {
        // With buckets 100 and salt = groupId, canary membership is Unleash's
        // `murmur3("groupId:userId") % 100 + 1 <= percentage`.
        for pct in [1u32, 10, 33, 50, 99] {
            let c = config(&format!(
                r#"{{"versions":[{{"name":"s"}},{{"name":"c","weight":{pct}}}],
                    "hash":{{"header":"x-user-id","salt":"gr1","buckets":100}}}}"#
            ));
            for i in 0..2000 {
                let id = i.to_string();
                let normalized =
                    murmur3::murmur3_32(&mut std::io::Cursor::new(format!("gr1:{id}")), 0).unwrap()
                        % 100
                        + 1;
                let in_canary = decide_with(&c, &[("x-user-id", &id)]).version == 1;
                assert_eq!(in_canary, normalized <= pct, "user {id} at {pct}%");
            }
        }
        // The published Unleash reference pair: user 123 in group gr1 is at 73.
        let c = config(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":73}],"hash":{"header":"u","salt":"gr1","buckets":100}}"#,
        );
        assert_eq!(decide_with(&c, &[("u", "123")]).version, 1);
        let c = config(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":72}],"hash":{"header":"u","salt":"gr1","buckets":100}}"#,
        );
        assert_eq!(decide_with(&c, &[("u", "123")]).version, 0);
    }

    #[test]
    fn raising_the_weight_never_moves_a_user_out_of_the_canary() {
        let users: Vec<String> = (0..5000).map(|i| format!("u{i}@example.com")).collect();
        let mut previous: Vec<bool> = vec![false; users.len()];
        for weight in [
            "0", "0.01", "0.5", "1", "5", "10", "25", "50", "75.25", "99.99", "100",
        ] {
            let c = config(&format!(
                r#"{{"versions":[{{"name":"s"}},{{"name":"c","weight":{weight}}}],"hash":{{"header":"x-user-id","salt":"ramp"}}}}"#
            ));
            let now: Vec<bool> = users
                .iter()
                .map(|u| decide_with(&c, &[("x-user-id", u)]).version == 1)
                .collect();
            for (i, (was, is)) in previous.iter().zip(&now).enumerate() {
                assert!(
                    !was || *is,
                    "{} left the canary at weight {weight}",
                    users[i]
                );
            }
            previous = now;
        }
        assert!(
            previous.iter().all(|&c| c),
            "at 100 everyone is in the canary"
        );
    }

    #[test]
    fn zero_weight_gets_nobody_and_full_weight_everybody() {
        let zero = config(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":0}],"hash":{"header":"x-user-id"}}"#,
        );
        assert_eq!(canary_share(&zero, 2000), 0.0);
        let full = config(
            r#"{"versions":[{"name":"s"},{"name":"c","weight":100}],"hash":{"header":"x-user-id"}}"#,
        );
        assert_eq!(canary_share(&full, 2000), 1.0);
    }

    #[test]
    fn a_tripped_guard_sends_the_guarded_share_to_the_baseline_but_honours_overrides() {
        let c = config(
            r#"{"versions":[{"name":"stable"},{"name":"canary","weight":50},{"name":"beta","weight":50}],
                "override":{"header":"x-canary"},"users":{"canary":["qa-alice"]},
                "hash":{"header":"x-user-id"},
                "guard":{"version":"canary","max_error_rate":0.1}}"#,
        );
        let tripped = Routing {
            guard_tripped: true,
            ..Routing::at(&c, 0)
        };
        let decide_tripped = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(&[u8], &[u8])> = pairs
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                .collect();
            let bytes = serialize_headers(&pairs);
            decide(
                &c,
                &tripped,
                &SerializedHeaders::new(&bytes),
                &mut Rng::new(3),
            )
        };
        let a = decide_tripped(&[("x-canary", "canary")]);
        assert_eq!((a.version, a.reason), (1, Reason::Override));
        let a = decide_tripped(&[("x-user-id", "qa-alice")]);
        assert_eq!((a.version, a.reason), (0, Reason::Guard));
        let mut by_version = [0; 3];
        for i in 0..2000 {
            let id = format!("user-{i}");
            let a = decide_tripped(&[("x-user-id", &id)]);
            let armed = decide_with(&c, &[("x-user-id", &id)]);
            if armed.version == 1 {
                assert_eq!((a.version, a.reason), (0, Reason::Guard), "{id}");
            } else {
                assert_eq!(a, armed, "{id}: other versions are untouched");
            }
            by_version[a.version] += 1;
        }
        assert_eq!(by_version[1], 0);
        assert!(by_version[0] > 0 && by_version[2] > 0);
        let a = decide_tripped(&[]);
        assert_ne!(a.version, 1);
    }

    #[test]
    fn a_token_unlocks_overrides_and_nothing_else_does() {
        let c = config(
            r#"{"versions":[{"name":"stable"},{"name":"canary","weight":0}],
                "override":{"header":"x-canary","cookie":"canary",
                  "token":{"header":"x-canary-token","values":["old-secret-123456","new-secret-654321"]}},
                "anonymous":"baseline"}"#,
        );
        let with = |pairs: &[(&str, &str)]| decide_with(&c, pairs);
        assert_eq!(with(&[("x-canary", "canary")]).reason, Reason::Baseline);
        assert_eq!(
            with(&[("cookie", "canary=canary")]).reason,
            Reason::Baseline
        );
        assert_eq!(
            with(&[
                ("x-canary", "canary"),
                ("x-canary-token", "new-secret-65432")
            ])
            .reason,
            Reason::Baseline
        );
        for secret in ["old-secret-123456", "new-secret-654321"] {
            let a = with(&[("x-canary", "canary"), ("x-canary-token", secret)]);
            assert_eq!((a.version, a.reason), (1, Reason::Override));
            let a = with(&[("cookie", "canary=canary"), ("x-canary-token", secret)]);
            assert_eq!((a.version, a.reason), (1, Reason::Override));
        }
    }

    #[test]
    fn trusted_sources_limit_who_may_override() {
        let c = config(
            r#"{"versions":[{"name":"stable"},{"name":"canary","weight":0}],
                "override":{"header":"x-canary","trusted_sources":["10.0.0.0/8","::1"]},
                "anonymous":"baseline"}"#,
        );
        let bytes = serialize_headers(&[(b"x-canary", b"canary")]);
        let routing = Routing::at(&c, 0);
        let from = |ip: Option<&str>| {
            let facts = KnownSource {
                headers: SerializedHeaders::new(&bytes),
                source: ip.map(|s| s.parse().unwrap()),
            };
            decide(&c, &routing, &facts, &mut Rng::new(1)).reason
        };
        assert_eq!(from(Some("10.20.30.40")), Reason::Override);
        assert_eq!(from(Some("::1")), Reason::Override);
        assert_eq!(from(Some("::ffff:10.0.0.1")), Reason::Override);
        assert_eq!(from(Some("192.168.0.1")), Reason::Baseline);
        assert_eq!(from(None), Reason::Baseline, "unknown source: not trusted");
    }

    #[test]
    fn rng_buckets_cover_the_range() {
        let mut rng = Rng::new(1);
        let mut seen = [false; 100];
        for _ in 0..10_000 {
            let b = rng.bucket(100);
            assert!((1..=100).contains(&b));
            seen[(b - 1) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
