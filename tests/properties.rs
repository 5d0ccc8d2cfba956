//! Property tests of the pure core, run natively: config parsing on arbitrary bytes
//! and on arbitrary JSON shaped like a config, the decision on arbitrary request
//! facts (well-formed and corrupt header maps, malformed cookies, hostile values),
//! header and cookie lookup, the time formats, ramps and the guard state.
//!
//! The properties: nothing panics; an accepted config satisfies every invariant the
//! decision relies on; the decision equals an independent model of the documented
//! rules on every input, is always a valid version, and is sticky (a user's version
//! depends on nothing but the user ID and the config).
//!
//! CI runs a bounded number of cases with a fixed seed (reproducible). Longer runs
//! by hand: `make fuzz` (`PROPTEST_CASES`, a fresh `PROPTEST_RNG_SEED`, and the dev
//! profile, whose overflow checks turn silent wrap-arounds into failures). A failure
//! prints the minimal input; keep it as a regression test at the end of this file.

use canary_router::config::{Anonymous, Config, Weight, ALLOWED_BUCKETS, FULL_WEIGHT_BASIS_POINTS};
use canary_router::decide::{decide, user_id, Assignment, Reason, Rng, Routing};
use canary_router::guard::{GuardConfig, GuardEvent, GuardState, Pending, StatusMatcher, Tally};
use canary_router::metrics::{MetricKind, MetricSink, MetricTable};
use canary_router::request::{
    find_cookie, serialize_headers, KnownSource, RequestFacts, SerializedHeaders,
};
use canary_router::schedule::{format_duration, parse_duration, parse_rfc3339};
use canary_router::visitor::WithVisitorId;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config as RunnerConfig, RngSeed, TestCaseError, TestRunner};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

// ---- Running ------------------------------------------------------------------------

/// A runner with `ci_cases` cases unless `PROPTEST_CASES` says otherwise, and a
/// fixed seed unless `PROPTEST_RNG_SEED` gives one (`make fuzz` does).
fn runner(ci_cases: u32) -> TestRunner {
    let mut config = RunnerConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = ci_cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x6361_6e61_7279);
    }
    // Failing inputs are kept as named regression tests below, not in a side file.
    config.failure_persistence = None;
    TestRunner::new(config)
}

/// Runs `test` on `strategy` and fails with the minimal failing input.
fn check<S: Strategy>(
    name: &str,
    ci_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let mut runner = runner(ci_cases);
    let cases = runner.config().cases;
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}");
    }
    eprintln!("{name}: {cases} cases passed");
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(fail(format!($($msg)+)));
        }
    };
}

// ---- Generators: JSON shaped like a config --------------------------------------------

/// Any JSON value, a few levels deep.
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Mostly the plausible value, sometimes any JSON at all.
fn mostly(plausible: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![100 => plausible, 1 => any_json()].boxed()
}

/// Mostly a good value, now and then a bad one: each field of a config is seldom
/// wrong, so that whole configs are accepted often enough to check their invariants.
fn good_or_bad<T: std::fmt::Debug + 'static>(
    good: impl Strategy<Value = T> + 'static,
    bad: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![50 => good, 1 => bad].boxed()
}

/// A required field: seldom absent.
fn required(plausible: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![1 => Just(None), 50 => mostly(plausible).prop_map(Some)].boxed()
}

/// A field that may be absent.
fn field(plausible: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![1 => Just(None), 3 => mostly(plausible).prop_map(Some)].boxed()
}

fn strings(pool: &[&str]) -> BoxedStrategy<String> {
    let pool: Vec<String> = pool.iter().map(|s| s.to_string()).collect();
    select(pool).boxed()
}

fn version_name() -> BoxedStrategy<String> {
    good_or_bad(
        prop_oneof![
            3 => strings(&["stable", "canary", "beta", "v2", "a", "b.c-d_e"]),
            6 => "[A-Za-z0-9._-]{1,10}",
            1 => Just("x".repeat(63)),
        ],
        prop_oneof![Just(String::new()), ".{0,5}", Just("x".repeat(64))],
    )
}

fn weight() -> BoxedStrategy<Value> {
    good_or_bad(
        prop_oneof![
            2 => select(vec![0.0, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 12.5, 25.0, 33.33, 50.0, 99.99, 100.0, -0.0])
                .prop_map(Value::from),
            3 => (0u32..=40).prop_map(Value::from),
            1 => (0u32..=4000).prop_map(|bp| Value::from(f64::from(bp) / 100.0)),
        ],
        prop_oneof![
            select(vec![100.01, -0.01, 0.001, 1e300, 5e-324]).prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
        ],
    )
}

fn duration_text() -> BoxedStrategy<String> {
    good_or_bad(
        prop_oneof![
            2 => strings(&[
                "0s", "1s", "90s", "10m", "1h", "1h30m", "1h30m15s", "3000000000000h",
                "2562047788015h", "2562047788016h", "5124095576030h", "9223372036854775s",
                "9223372036854776s", "18446744073709551s",
            ]),
            4 => "[0-9]{1,4}[dhms]",
            1 => "[0-9]{1,3}h[0-9]{1,3}m[0-9]{1,3}s",
            1 => "[0-9]{1,3}d[0-9]{1,3}h[0-9]{1,3}m[0-9]{1,3}s",
        ],
        prop_oneof![
            strings(&[
                "",
                "1m1h",
                "1h1d",
                "5",
                "h",
                "-1s",
                "1s1s",
                "18446744073709551615s",
                "18446744073709552s"
            ]),
            ".{0,6}",
        ],
    )
}

fn rfc3339_text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => strings(&[
            "2026-12-01T09:00:00Z", "1970-01-01T00:00:00Z", "1970-01-01T00:00:00+01:00",
            "1970-01-01T00:30:00+14:00", "9999-12-31T23:59:60Z", "9999-12-31T23:59:59-23:59",
            "2024-02-29T00:00:00.999999Z", "2026-12-01t09:00:00z", "2026-12-01 09:00:00-23:59",
        ]),
        1 => strings(&[
            "2026-02-29T00:00:00Z", "2026-12-01T09:00:00.Z", "2026-12-01T09:00:00+1:00", "bad", "",
        ]),
        3 => (1970i64..=9999, 1i64..=12, 1i64..=31, 0i64..=23, 0i64..=59, 0i64..=60,
              prop_oneof![Just(String::new()), "\\.[0-9]{1,9}"],
              prop_oneof![Just("Z".to_string()), "[+-](0[0-9]|1[0-4]):[0-5][0-9]"])
            .prop_map(|(y, mo, d, h, mi, s, frac, off)| {
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
            }),
        1 => ".{0,25}",
    ]
    .boxed()
}

fn schedule() -> BoxedStrategy<Value> {
    let step = (
        required(duration_text().prop_map(Value::String)),
        required(weight()),
    )
        .prop_map(|(after, weight)| object(&[("after", after), ("weight", weight)]));
    (
        required(rfc3339_text().prop_map(Value::String)),
        required(prop::collection::vec(step, 0..5).prop_map(Value::Array)),
        field(any::<bool>().prop_map(Value::Bool)),
    )
        .prop_map(|(start, steps, interpolate)| {
            object(&[
                ("start", start),
                ("steps", steps),
                ("interpolate", interpolate),
            ])
        })
        .boxed()
}

fn header_name() -> BoxedStrategy<String> {
    good_or_bad(
        prop_oneof![
            6 => strings(&["x-user-id", "X-User-Id", "x-canary", "cookie", "x-override"]),
            3 => "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}",
        ],
        prop_oneof![
            strings(&[
                "x-canary-version",
                "X-Canary-Version",
                ":path",
                "",
                "x user",
                "x-ünï"
            ]),
            ".{0,6}",
        ],
    )
}

fn cookie_name() -> BoxedStrategy<String> {
    good_or_bad(
        prop_oneof![
            6 => strings(&["uid", "UID", "canary", "session"]),
            3 => "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,8}",
        ],
        prop_oneof![strings(&["", "a b", "a=b", "a;b"]), ".{0,6}"],
    )
}

/// User IDs in many scripts and forms: what the hash and the user list must take byte for byte.
/// The visitor ID the decision property's requests are issued under
/// `anonymous: "cookie"`; also among the user IDs, so that lists name it.
const ISSUED_ID: &str = "Zm9vYmFyLW5ldy12aXNpdA";

const USER_IDS: &[&str] = &[
    ISSUED_ID,
    "qa-alice",
    "qa-bob",
    "vip-carol",
    "ユーザー",
    "用户-42",
    "사용자",
    "مستخدم",
    "משתמש",
    "उपयोगकर्ता",
    "ผู้ใช้",
    "пользователь",
    "аdmin", // Cyrillic а: not "admin"
    "admin",
    "👩‍👩‍👧‍👦",
    "🏳️‍🌈",
    "👍🏽",
    "e\u{301}",   // e + combining acute
    "\u{e9}",     // precomposed é: a different user
    "a\u{200d}b", // zero-width joiner
    "\u{feff}bom",
    "\u{202e}evil",
    "ｆｕｌｌ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "Ω",
];

fn user_id_text() -> BoxedStrategy<String> {
    prop_oneof![3 => select(USER_IDS.to_vec()).prop_map(str::to_string), 1 => ".{0,8}"].boxed()
}

fn guard() -> BoxedStrategy<Value> {
    (
        required(version_name().prop_map(Value::String)),
        required(good_or_bad(
            prop_oneof![
                select(vec![0.0, 0.05, 0.2, 0.999]).prop_map(Value::from),
                (0.0f64..1.0).prop_map(Value::from)
            ],
            select(vec![1.0, -0.1, 2.0]).prop_map(Value::from),
        )),
        field(good_or_bad(
            select(vec![0.0, 0.02, 1.0]).prop_map(Value::from),
            select(vec![1.5, -1.0]).prop_map(Value::from),
        )),
        field(good_or_bad(
            prop_oneof![
                select(vec![1u64, 20, 50, u64::MAX]).prop_map(Value::from),
                any::<u64>().prop_map(Value::from)
            ],
            Just(Value::from(0)),
        )),
        field(duration_text().prop_map(Value::String)),
        field(
            prop::collection::vec(
                good_or_bad(
                    strings(&["5xx", "4XX", "503", "429", "1xx"]),
                    prop_oneof![strings(&["600", "099", "5x", ""]), ".{0,4}"],
                ),
                1..4,
            )
            .prop_map(|v| Value::Array(v.into_iter().map(Value::String).collect())),
        ),
        field(
            good_or_bad(
                prop_oneof![duration_text(), strings(&["forever"])],
                strings(&["Forever"]),
            )
            .prop_map(Value::String),
        ),
    )
        .prop_map(
            |(version, rate, margin, min_requests, window, status, hold)| {
                object(&[
                    ("version", version),
                    ("max_error_rate", rate),
                    ("baseline_margin", margin),
                    ("min_requests", min_requests),
                    ("window", window),
                    ("status", status),
                    ("hold", hold),
                ])
            },
        )
        .boxed()
}

fn version_object(first: bool) -> BoxedStrategy<Value> {
    // Which of weight and schedule it has: one of them after the first, neither on
    // the first, mostly.
    let (neither, weight_only, schedule_only, both) =
        if first { (40, 1, 1, 1) } else { (1, 40, 10, 1) };
    (
        required(version_name().prop_map(Value::String)),
        prop_oneof![
            neither => Just((false, false)),
            weight_only => Just((true, false)),
            schedule_only => Just((false, true)),
            both => Just((true, true)),
        ],
        mostly(weight()),
        mostly(schedule()),
        prop_oneof![60 => Just(None), 1 => any_json().prop_map(Some)],
    )
        .prop_map(
            |(name, (has_weight, has_schedule), weight, schedule, extra)| {
                object(&[
                    ("name", name),
                    ("weight", has_weight.then_some(weight)),
                    ("schedule", has_schedule.then_some(schedule)),
                    ("nmae", extra),
                ])
            },
        )
        .boxed()
}

fn versions() -> BoxedStrategy<Value> {
    prop_oneof![
        20 => (version_object(true), prop::collection::vec(version_object(false), 0..4))
            .prop_map(|(first, rest)| {
                Value::Array(std::iter::once(first).chain(rest).collect())
            }),
        1 => prop::collection::vec(version_object(false), 0..20).prop_map(Value::Array),
    ]
    .boxed()
}

fn config_json() -> BoxedStrategy<Value> {
    let token = (
        required(header_name().prop_map(Value::String)),
        required(
            prop::collection::vec(
                good_or_bad(
                    prop_oneof![
                        select(SECRETS.to_vec()).prop_map(str::to_string),
                        "[!-~]{16,24}"
                    ],
                    prop_oneof![
                        strings(&["short-secret", "0123456789 abcdef", "0123456789abcdé!"]),
                        ".{0,20}"
                    ],
                ),
                0..6,
            )
            .prop_map(|v| Value::Array(v.into_iter().map(Value::String).collect())),
        ),
    )
        .prop_map(|(header, values)| object(&[("header", header), ("values", values)]));
    let trusted_sources = prop::collection::vec(
        good_or_bad(
            select(RANGES.to_vec()).prop_map(str::to_string),
            prop_oneof![
                strings(&[
                    "10.0.0.0/33",
                    "",
                    "1.2.3",
                    "::/129",
                    "fe80::1%eth0",
                    "10.0.0.0/08",
                    "10.0.0.0/",
                    "/8"
                ]),
                ".{0,12}"
            ],
        ),
        0..4,
    )
    .prop_map(|v| Value::Array(v.into_iter().map(Value::String).collect()));
    let override_ = (
        field(header_name().prop_map(Value::String)),
        field(cookie_name().prop_map(Value::String)),
        prop_oneof![4 => Just(None), 1 => mostly(token).prop_map(Some)],
        prop_oneof![4 => Just(None), 1 => mostly(trusted_sources).prop_map(Some)],
    )
        .prop_map(|(h, c, token, sources)| {
            object(&[
                ("header", h),
                ("cookie", c),
                ("token", token),
                ("trusted_sources", sources),
            ])
        });
    let cookie_attributes = (
        field(duration_text().prop_map(Value::String)),
        field(
            good_or_bad(
                prop_oneof![strings(&["/", "/shop", "/a-b_c.~:@=%20"]), "/[!-~]{0,8}"],
                prop_oneof![
                    strings(&["", "shop", "/a;b", "/a b", "/\r\nX: y", "/é"]),
                    ".{0,8}"
                ],
            )
            .prop_map(Value::String),
        ),
        field(
            good_or_bad(
                prop_oneof![
                    strings(&["example.com", ".example.com", "a-b.c", "localhost"]),
                    "[a-z0-9]{1,5}(\\.[a-z0-9]{1,5}){0,3}"
                ],
                prop_oneof![
                    strings(&["", ".", "a..b", "-a", "a b", "a;b", "a.b\n"]),
                    ".{0,8}"
                ],
            )
            .prop_map(Value::String),
        ),
        field(
            good_or_bad(
                strings(&["Lax", "Strict", "None"]),
                strings(&["lax", "none", ""]),
            )
            .prop_map(Value::String),
        ),
        field(any::<bool>().prop_map(Value::Bool)),
        field(any::<bool>().prop_map(Value::Bool)),
    )
        .prop_map(|(max_age, path, domain, same_site, secure, http_only)| {
            object(&[
                ("max_age", max_age),
                ("path", path),
                ("domain", domain),
                ("same_site", same_site),
                ("secure", secure),
                ("http_only", http_only),
            ])
        });
    let hash = (
        field(header_name().prop_map(Value::String)),
        field(cookie_name().prop_map(Value::String)),
        field(".{0,10}".prop_map(Value::String)),
        field(
            good_or_bad(
                select(vec![100u64, 1000, 10_000]),
                prop_oneof![
                    select(vec![0u64, 1, 99, 10_001, 65_536, 1 << 32]),
                    any::<u64>()
                ],
            )
            .prop_map(Value::from),
        ),
        prop_oneof![2 => Just(None), 1 => mostly(cookie_attributes).prop_map(Some)],
    )
        .prop_map(|(header, cookie, salt, buckets, cookie_attributes)| {
            object(&[
                ("header", header),
                ("cookie", cookie),
                ("salt", salt),
                ("buckets", buckets),
                ("cookie_attributes", cookie_attributes),
            ])
        });
    let users = prop::collection::btree_map(
        version_name(),
        mostly(
            prop::collection::vec(user_id_text(), 0..4)
                .prop_map(|ids| Value::Array(ids.into_iter().map(Value::String).collect())),
        ),
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    (
        field(header_name().prop_map(Value::String)),
        prop_oneof![1 => Just(None), 80 => mostly(versions()).prop_map(Some)],
        field(override_),
        prop_oneof![3 => Just(None), 1 => mostly(users).prop_map(Some)],
        prop_oneof![1 => Just(None), 3 => mostly(hash).prop_map(Some)],
        field(
            good_or_bad(
                strings(&["random", "baseline", "cookie"]),
                strings(&["Random", ""]),
            )
            .prop_map(Value::String),
        ),
        field(
            good_or_bad(
                prop_oneof![
                    strings(&["canary", "my_prefix", "_"]),
                    Just("a".repeat(64)),
                    "[A-Za-z_][A-Za-z0-9_]{0,8}"
                ],
                prop_oneof![strings(&["", "9x", "ca-nary"]), Just("a".repeat(65))],
            )
            .prop_map(Value::String),
        ),
        prop_oneof![3 => Just(None), 1 => mostly(guard()).prop_map(Some)],
        prop_oneof![40 => Just(None), 1 => any_json().prop_map(Some)],
        // The opt-in per-version metrics, each on, off or absent.
        prop_oneof![
            2 => Just(None),
            1 => (
                prop::option::of(any::<bool>()),
                prop::option::of(any::<bool>())
            )
                .prop_map(|(responses, latency)| Some(object(&[
                    ("responses", responses.map(Value::Bool)),
                    ("latency", latency.map(Value::Bool)),
                ]))),
        ],
    )
        .prop_map(
            |(
                route_header,
                versions,
                override_,
                users,
                hash,
                anonymous,
                prefix,
                guard,
                extra,
                metrics,
            )| {
                object(&[
                    ("route_header", route_header),
                    ("versions", versions),
                    ("override", override_),
                    ("users", users),
                    ("hash", hash),
                    ("anonymous", anonymous),
                    ("metrics_prefix", prefix),
                    ("metrics", metrics),
                    ("guard", guard),
                    ("unknown_field", extra),
                ])
            },
        )
        .boxed()
}

fn object(fields: &[(&str, Option<Value>)]) -> Value {
    let mut map = Map::new();
    for (key, value) in fields {
        if let Some(value) = value {
            map.insert((*key).to_string(), value.clone());
        }
    }
    Value::Object(map)
}

/// Byte-level damage to a JSON text: what a truncated or mangled config looks like.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(prop::sample::Index),
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
}

fn damage() -> BoxedStrategy<Damage> {
    prop_oneof![
        12 => Just(Damage::None),
        1 => any::<prop::sample::Index>().prop_map(Damage::Truncate),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Flip(i, b)),
        1 => (any::<prop::sample::Index>(), prop_oneof![
                strings(&[",", "}", "]", "\"", "\\", "{", "null", "\"x\":1,", "1e999"])
                    .prop_map(String::into_bytes),
                prop::collection::vec(any::<u8>(), 1..4)
            ])
            .prop_map(|(i, bytes)| Damage::Insert(i, bytes)),
    ]
    .boxed()
}

fn apply(damage: &Damage, mut text: Vec<u8>) -> Vec<u8> {
    match damage {
        Damage::None => {}
        Damage::Truncate(i) => text.truncate(i.index(text.len() + 1)),
        Damage::Flip(i, b) if !text.is_empty() => {
            let at = i.index(text.len());
            text[at] ^= b | 1;
        }
        Damage::Flip(..) => {}
        Damage::Insert(i, bytes) => {
            let at = i.index(text.len() + 1);
            text.splice(at..at, bytes.iter().copied());
        }
    }
    text
}

// ---- Invariants of an accepted config -------------------------------------------------

struct Recorder(Vec<(MetricKind, String)>);

impl MetricSink for Recorder {
    type Error = ();
    fn define(&mut self, kind: MetricKind, name: &str) -> Result<u32, ()> {
        self.0.push((kind, name.to_string()));
        Ok(self.0.len() as u32)
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What a schedule's weight must be at `t`, from the documented rule, in i128 so
/// that no arithmetic of the model can overflow. For an interpolating ramp: the
/// bounds the weight must lie within.
fn schedule_bounds(s: &canary_router::schedule::Schedule, t: i64) -> (u32, u32) {
    let at = |after: u64| i128::from(s.start_ms) + i128::from(after);
    let t = i128::from(t);
    match s.steps.iter().rposition(|step| at(step.after_ms) <= t) {
        None => (0, 0),
        Some(i) => {
            let here = s.steps[i].weight_basis_points;
            match s.steps.get(i + 1) {
                Some(next) if s.interpolate => (here, next.weight_basis_points),
                _ => (here, here),
            }
        }
    }
}

#[allow(clippy::type_complexity)]
fn check_accepted(config: &Config, text: &[u8], extra_times: &[i64]) -> Result<(), TestCaseError> {
    let n = config.versions.len();
    ensure!((1..=16).contains(&n), "{n} versions");
    let mut names = HashSet::new();
    for (i, v) in config.versions.iter().enumerate() {
        ensure!(
            (1..=63).contains(&v.name.len())
                && v.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "bad version name {:?}",
            v.name
        );
        ensure!(names.insert(v.name.clone()), "duplicate name {}", v.name);
        ensure!(
            config.version_index(v.name.as_bytes()) == Some(i),
            "version_index({})",
            v.name
        );
        ensure!(
            (i == 0) == matches!(v.weight, Weight::Remainder),
            "versions[{i}] weight {:?}",
            v.weight
        );
    }
    ensure!(
        ALLOWED_BUCKETS.contains(&config.buckets),
        "buckets {}",
        config.buckets
    );
    let whole_buckets = |bp: u32| {
        bp <= FULL_WEIGHT_BASIS_POINTS
            && (u64::from(bp) * u64::from(config.buckets)) % u64::from(FULL_WEIGHT_BASIS_POINTS)
                == 0
    };
    let mut reserved: u64 = 0;
    for v in &config.versions {
        match &v.weight {
            Weight::Remainder => {}
            Weight::Fixed(bp) => ensure!(whole_buckets(*bp), "weight {bp}"),
            Weight::Scheduled(s) => {
                ensure!(!s.steps.is_empty(), "empty schedule");
                for pair in s.steps.windows(2) {
                    ensure!(pair[0].after_ms < pair[1].after_ms, "steps out of order");
                    ensure!(
                        pair[0].weight_basis_points <= pair[1].weight_basis_points,
                        "ramp goes down"
                    );
                }
                for step in &s.steps {
                    ensure!(
                        whole_buckets(step.weight_basis_points),
                        "step weight {}",
                        step.weight_basis_points
                    );
                }
            }
        }
        reserved += u64::from(v.weight.max());
    }
    ensure!(
        reserved <= u64::from(FULL_WEIGHT_BASIS_POINTS),
        "weights add up to {reserved}"
    );

    let rh = &config.route_header;
    ensure!(
        is_token(rh) && *rh == rh.to_ascii_lowercase(),
        "route_header {rh:?}"
    );
    // Nothing a config says can add an attribute to the visitor cookie or end the
    // header: the Set-Cookie tail is exactly the documented attributes, in order,
    // each value visible ASCII without `;`.
    let tail = &config.hash.set_cookie_attributes;
    ensure!(
        tail.bytes().all(|b| b == b' ' || (b.is_ascii_graphic())),
        "Set-Cookie attributes {tail:?}"
    );
    let attributes: Vec<&str> = tail.split("; ").collect();
    ensure!(attributes.first() == Some(&""), "{tail:?}");
    let names: Vec<&str> = attributes[1..]
        .iter()
        .map(|a| a.split_once('=').map_or(*a, |(name, _)| name))
        .collect();
    let allowed = [
        "Max-Age", "Path", "Domain", "SameSite", "Secure", "HttpOnly",
    ];
    ensure!(
        names.iter().all(|n| allowed.contains(n))
            && names.windows(2).all(|w| {
                allowed.iter().position(|a| *a == w[0]) < allowed.iter().position(|a| *a == w[1])
            })
            && names.starts_with(&["Max-Age", "Path"])
            && names.contains(&"SameSite"),
        "Set-Cookie attributes {tail:?}"
    );
    for attribute in &attributes[1..] {
        if let Some((_, value)) = attribute.split_once('=') {
            ensure!(
                !value.is_empty() && !value.contains([';', ' ']),
                "{attribute:?} in {tail:?}"
            );
        }
    }
    if tail.contains("SameSite=None") {
        ensure!(
            tail.contains("; Secure"),
            "SameSite=None without Secure: {tail:?}"
        );
    }
    for name in [&config.override_.header, &config.hash.header]
        .into_iter()
        .flatten()
    {
        ensure!(
            is_token(name) && *name == name.to_ascii_lowercase(),
            "header {name:?}"
        );
        ensure!(name != rh, "{name} doubles as the route header");
    }
    for name in [&config.override_.cookie, &config.hash.cookie]
        .into_iter()
        .flatten()
    {
        ensure!(is_token(name), "cookie {name:?}");
    }
    // A token or trusted sources protect an override, and a token is a real secret.
    let protects = config.override_.header.is_some() || config.override_.cookie.is_some();
    if let Some(token) = &config.override_.token {
        ensure!(protects, "a token with no override to protect");
        ensure!(
            is_token(&token.header) && token.header == token.header.to_ascii_lowercase(),
            "token header {:?}",
            token.header
        );
        ensure!(
            token.header != *rh,
            "the token header doubles as the route header"
        );
        ensure!(
            (1..=4).contains(&token.values.len()),
            "{} token values",
            token.values.len()
        );
        for value in &token.values {
            ensure!(
                value.len() >= 16 && value.iter().all(|b| (0x21..=0x7e).contains(b)),
                "a weak or unprintable token ({} bytes)",
                value.len()
            );
        }
        // The secrets never show in a debug print of the config.
        let printed = format!("{config:?}");
        for value in &token.values {
            ensure!(
                !printed.contains(&*String::from_utf8_lossy(value)),
                "a token shows in the config's debug print"
            );
        }
    }
    if !config.override_.trusted_sources.is_empty() {
        ensure!(protects, "trusted sources with no override to protect");
    }
    if !config.users.is_empty() {
        ensure!(
            config.hash.header.is_some() || config.hash.cookie.is_some(),
            "users without a user ID source"
        );
    }
    for (id, &index) in &config.users {
        ensure!(!id.is_empty() && index < n, "user {id:?} -> {index}");
    }
    let prefix = config.metrics_prefix.as_bytes();
    ensure!(
        (1..=64).contains(&prefix.len())
            && !prefix[0].is_ascii_digit()
            && prefix
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_'),
        "metrics_prefix {:?}",
        config.metrics_prefix
    );
    if let Some(g) = &config.guard {
        ensure!(
            g.version >= 1 && g.version < n,
            "guard version {}",
            g.version
        );
        ensure!(
            (0.0..1.0).contains(&g.max_error_rate),
            "max_error_rate {}",
            g.max_error_rate
        );
        ensure!(g.min_requests >= 1 && g.window_ms >= 1, "guard {g:?}");
        ensure!(
            (1..=60).contains(&g.slot_count()),
            "guard slots {}",
            g.slot_count()
        );
    }

    // Weights and bucket ranges at every interesting moment: each version's weight
    // follows its schedule, the baseline takes the rest, ranges stay inside the
    // buckets, apart from each other, and only grow with time.
    let mut times = vec![i64::MIN, -1, 0, 1, 1_800_000_000_000, i64::MAX];
    times.extend_from_slice(extra_times);
    for v in &config.versions {
        if let Weight::Scheduled(s) = &v.weight {
            for step in &s.steps {
                let at = i128::from(s.start_ms) + i128::from(step.after_ms);
                let at = at.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
                for d in [-1, 0, 1] {
                    times.push(at.saturating_add(d));
                }
                times.push(s.start_ms.saturating_sub(1));
            }
        }
    }
    times.sort_unstable();
    times.dedup();
    // The weights and bucket ranges at the moment before.
    let mut previous: Option<(Vec<u32>, Vec<(u32, u32)>)> = None;
    for &t in &times {
        let weights = config.weights_at(t);
        ensure!(
            weights.len() == n,
            "weights_at({t}) has {} entries",
            weights.len()
        );
        ensure!(
            weights.iter().map(|&w| u64::from(w)).sum::<u64>()
                == u64::from(FULL_WEIGHT_BASIS_POINTS),
            "weights at {t} add up to {:?}",
            weights
        );
        for (v, &w) in config.versions.iter().zip(&weights).skip(1) {
            ensure!(w <= v.weight.max(), "{} at {t}: {w} above its max", v.name);
            if let Weight::Scheduled(s) = &v.weight {
                let (low, high) = schedule_bounds(s, t);
                ensure!(
                    (low..=high).contains(&w),
                    "{} at {t}: weight {w}, the schedule says {low}..={high} ({s:?})",
                    v.name
                );
            }
        }
        let split = config.split_at(t);
        ensure!(split.buckets == config.buckets, "split buckets");
        ensure!(split.ranges.len() == n - 1, "split ranges");
        let mut floor = 0;
        for (i, &(start, end)) in split.ranges.iter().enumerate() {
            ensure!(
                floor <= start && start <= end && end <= config.buckets,
                "range {i} at {t}: {start}..{end} (floor {floor}) in {:?}",
                split
            );
            let expected = u64::from(weights[i + 1]) * u64::from(config.buckets)
                / u64::from(FULL_WEIGHT_BASIS_POINTS);
            ensure!(
                u64::from(end - start) == expected,
                "range {i} at {t} holds {} buckets, weight says {expected}",
                end - start
            );
            floor = end;
        }
        if let Some((prev_weights, prev_ranges)) = &previous {
            for i in 1..n {
                ensure!(
                    prev_weights[i] <= weights[i],
                    "the weight of {} went down at {t}",
                    config.versions[i].name
                );
                let (was, is) = (prev_ranges[i - 1], split.ranges[i - 1]);
                ensure!(
                    was.0 == is.0 && was.1 <= is.1,
                    "the range of {} moved or shrank at {t}: {was:?} -> {is:?}",
                    config.versions[i].name
                );
            }
        }
        previous = Some((weights, split.ranges));
    }

    // Metrics: one name per (version, reason) and weight, per (version, class) and
    // (version, gRPC code) with metrics.responses, per duration with
    // metrics.latency, per issued visitor ID with anonymous: cookie, and the
    // guard's gauge; all distinct.
    let mut sink = Recorder(Vec::new());
    let table = MetricTable::define(config, &mut sink);
    ensure!(table.is_ok(), "metric table");
    let cookie = config.anonymous == Anonymous::Cookie;
    let per_version = 6
        + 1
        + if config.metrics.responses { 5 + 17 } else { 0 }
        + usize::from(config.metrics.latency)
        + usize::from(cookie);
    let expected = n * per_version + usize::from(config.guard.is_some());
    ensure!(sink.0.len() == expected, "{} metrics", sink.0.len());
    let distinct: HashSet<&String> = sink.0.iter().map(|(_, name)| name).collect();
    ensure!(distinct.len() == expected, "metric names collide");

    // Parsing is a function of the bytes.
    ensure!(
        Config::from_json(text).as_ref() == Ok(config),
        "parsing the same bytes twice differs"
    );
    Ok(())
}

#[test]
fn config_parsing_never_panics_on_arbitrary_bytes() {
    check(
        "arbitrary bytes",
        10000,
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            // Bytes that start like a config get past the first check.
            prop::collection::vec(any::<u8>(), 0..256)
                .prop_map(|rest| { [br#"{"versions":[{"name":"s"},"#.as_slice(), &rest].concat() }),
        ],
        |bytes| {
            if let Ok(config) = Config::from_json(&bytes) {
                check_accepted(&config, &bytes, &[])?;
            }
            Ok(())
        },
    );
}

#[test]
fn config_parsing_of_config_shaped_json_never_panics_and_accepted_configs_hold_every_invariant() {
    let accepted = AtomicUsize::new(0);
    let rejected = AtomicUsize::new(0);
    let with_trust = AtomicUsize::new(0);
    check(
        "config-shaped JSON",
        10000,
        (config_json(), damage()),
        |(json, damage)| {
            let text = apply(&damage, serde_json::to_vec(&json).expect("serializable"));
            match Config::from_json(&text) {
                Ok(config) => {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    if config.override_.token.is_some()
                        || !config.override_.trusted_sources.is_empty()
                    {
                        with_trust.fetch_add(1, Ordering::Relaxed);
                    }
                    check_accepted(&config, &text, &[])?;
                }
                Err(errors) => {
                    rejected.fetch_add(1, Ordering::Relaxed);
                    ensure!(!errors.is_empty(), "rejected without a reason");
                    for e in &errors {
                        ensure!(!e.message.is_empty(), "an error without a message: {e:?}");
                        let top = e.field.split(['.', '[']).next().unwrap_or("");
                        // The JSON reader (core/src/config/json/) says `?` where a
                        // syntax error leaves the key unknown; the message then gives
                        // line and column.
                        let top = if top == "?" && e.message.contains(" at line ") {
                            ""
                        } else {
                            top
                        };
                        // An unknown key is named as written, wherever it is.
                        let names_the_unknown_key = e.field.char_indices().any(|(i, _)| {
                            e.message
                                .starts_with(&format!("unknown field `{}`", &e.field[i..]))
                        });
                        ensure!(
                            names_the_unknown_key
                                || [
                                    "",
                                    "route_header",
                                    "versions",
                                    "override",
                                    "users",
                                    "hash",
                                    "anonymous",
                                    "metrics_prefix",
                                    "metrics",
                                    "guard",
                                    "unknown_field"
                                ]
                                .contains(&top),
                            "an error names no config field: {e:?}"
                        );
                    }
                }
            }
            Ok(())
        },
    );
    let (accepted, rejected) = (accepted.into_inner(), rejected.into_inner());
    let with_trust = with_trust.into_inner();
    eprintln!(
        "config-shaped JSON: {accepted} accepted ({with_trust} with a token or trusted sources), {rejected} rejected"
    );
    assert!(
        with_trust > 0,
        "no accepted config had a token or trusted sources"
    );
    // The generator must exercise both sides, or the invariants go unchecked.
    assert!(
        accepted * 10 >= accepted + rejected && rejected * 10 >= accepted + rejected,
        "{accepted} accepted, {rejected} rejected: the generator is lopsided"
    );
}

/// Ramps that validate: increasing step times (up to the largest duration the
/// format can express), weights that never go down, starts from 1970 (with offsets
/// that put them before the epoch) to 9999.
fn valid_ramp_config() -> BoxedStrategy<String> {
    let after_pool: Vec<u64> = vec![
        0,
        1,
        6,
        60,
        90,
        600,
        3600,
        86_400,
        31_536_000,
        9_223_372_036_854_775,  // i64::MAX ms, in seconds
        9_223_372_036_854_776,  // just beyond it
        18_446_744_073_709_551, // u64::MAX ms, in seconds
    ];
    (
        prop::sample::subsequence(after_pool, 1..=5),
        prop::collection::vec(0u32..=100, 5),
        prop_oneof![
            rfc3339_text(),
            strings(&["1970-01-01T00:00:00+14:00", "9999-12-31T23:59:59Z"])
        ],
        any::<bool>(),
        prop::option::of(0u32..=100),
        select(vec![100u32, 1000, 10_000]),
    )
        .prop_map(|(afters, mut weights, start, interpolate, other, buckets)| {
            weights.sort_unstable();
            let top = weights[afters.len() - 1];
            let steps: Vec<Value> = afters
                .iter()
                .zip(&weights)
                .map(|(after, w)| serde_json::json!({ "after": format!("{after}s"), "weight": w }))
                .collect();
            let mut versions = vec![
                serde_json::json!({ "name": "stable" }),
                serde_json::json!({ "name": "canary", "schedule": {
                    "start": start, "steps": steps, "interpolate": interpolate } }),
            ];
            if let Some(w) = other {
                versions.push(serde_json::json!({ "name": "beta", "weight": w.min(100 - top) }));
            }
            serde_json::json!({ "versions": versions, "hash": { "header": "u", "buckets": buckets } })
                .to_string()
        })
        .boxed()
}

#[test]
fn ramps_follow_their_schedule_at_every_moment_and_never_move_a_user_back() {
    let accepted = AtomicUsize::new(0);
    check(
        "ramps",
        5000,
        (
            valid_ramp_config(),
            prop::collection::vec(any::<i64>(), 0..8),
        ),
        |(json, times)| {
            // An invalid start (the generator also draws bad ones) is refused, as it must be.
            let Ok(config) = Config::from_json(json.as_bytes()) else {
                return Ok(());
            };
            accepted.fetch_add(1, Ordering::Relaxed);
            check_accepted(&config, json.as_bytes(), &times)
        },
    );
    assert!(accepted.into_inner() > 500, "too few valid ramps generated");
}

// ---- Generators: a valid config and a request ---------------------------------------

/// A valid config with every rule in play, and the facts an independent model of
/// the decision needs.
#[derive(Debug, Clone)]
struct Setup {
    json: String,
    names: Vec<String>,
    /// Whole percent, per version after the first.
    weights: Vec<u32>,
    buckets: u32,
    override_header: Option<String>,
    override_cookie: Option<String>,
    hash_header: Option<String>,
    hash_cookie: Option<String>,
    salt: String,
    users: Vec<(String, usize)>,
    anonymous: Anonymous,
    guarded: Option<usize>,
    /// `override.token`: the accepted secrets (header `x-canary-token`).
    token: Option<Vec<String>>,
    /// `override.trusted_sources`, as written.
    trusted: Vec<String>,
}

const TOKEN_HEADER: &str = "x-canary-token";
const SECRETS: &[&str] = &[
    "0123456789abcdef",
    "fedcba9876543210XYZ",
    "s3cr3t-t0ken-!#$%&",
];
const RANGES: &[&str] = &[
    "10.0.0.0/8",
    "192.168.1.7",
    "::1",
    "fd00::/8",
    "203.0.113.0/24",
    "0.0.0.0/0",
    "2001:db8::/32",
    "127.0.0.1/32",
];
const SOURCES: &[&str] = &[
    "10.1.2.3",
    "11.0.0.1",
    "192.168.1.7",
    "192.168.1.8",
    "::1",
    "::ffff:10.0.0.5",
    "fd00::1",
    "2001:db8::42",
    "203.0.113.200",
    "127.0.0.1",
];

fn setup() -> BoxedStrategy<Setup> {
    let pool = vec!["stable", "canary", "beta", "v2.0", "exp_1"];
    (
        Just(pool).prop_shuffle(),
        1usize..=4,
        prop::collection::vec(0u32..=100, 3),
        select(vec![100u32, 1000, 10_000]),
        (
            prop::option::of(strings(&["x-canary", "X-Canary", "x-override"])),
            prop::option::of(strings(&["canary", "CANARY", "ov"])),
            prop::option::weighted(0.8, strings(&["x-user-id", "X-User-ID", "x-uid"])),
            prop::option::weighted(0.6, strings(&["uid", "UID", "session"])),
        ),
        prop_oneof![Just(String::new()), ".{0,6}", Just("ŝalt-🧂".to_string())],
        prop::collection::vec(
            (
                select(USER_IDS.to_vec()).prop_map(str::to_string),
                0usize..4,
            ),
            0..8,
        ),
        0u8..3,
        prop::option::of(1usize..4),
        (
            prop::option::weighted(0.3, prop::sample::subsequence(SECRETS.to_vec(), 1..=2)),
            prop::option::weighted(0.3, prop::sample::subsequence(RANGES.to_vec(), 1..=3)),
        ),
    )
        .prop_map(
            |(names, n, raw_weights, buckets, headers, salt, users, policy, guarded, trust)| {
                let names: Vec<String> = names[..n].iter().map(|s| s.to_string()).collect();
                let mut left = 100;
                let weights: Vec<u32> = raw_weights[..n - 1]
                    .iter()
                    .map(|&w| {
                        let w = w.min(left);
                        left -= w;
                        w
                    })
                    .collect();
                let (override_header, override_cookie, hash_header, hash_cookie) = headers;
                let has_user_source = hash_header.is_some() || hash_cookie.is_some();
                let mut seen = HashSet::new();
                let users: Vec<(String, usize)> = users
                    .into_iter()
                    .filter(|(id, _)| has_user_source && !id.is_empty() && seen.insert(id.clone()))
                    .map(|(id, v)| (id, v % n))
                    .collect();
                let guarded = guarded.filter(|&g| g < n);
                let mut versions = vec![serde_json::json!({ "name": names[0] })];
                for (name, w) in names.iter().skip(1).zip(&weights) {
                    versions.push(serde_json::json!({ "name": name, "weight": w }));
                }
                let mut by_version: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for (id, v) in &users {
                    by_version.entry(names[*v].as_str()).or_default().push(id);
                }
                // anonymous: cookie needs hash.cookie.
                let (anonymous, policy) = match policy {
                    1 => (Anonymous::Baseline, "baseline"),
                    2 if hash_cookie.is_some() => (Anonymous::Cookie, "cookie"),
                    _ => (Anonymous::Random, "random"),
                };
                let mut config = serde_json::json!({
                    "versions": versions,
                    "hash": { "buckets": buckets, "salt": salt },
                    "anonymous": policy,
                });
                if let Some(h) = &override_header {
                    config["override"]["header"] = h.as_str().into();
                }
                if let Some(c) = &override_cookie {
                    config["override"]["cookie"] = c.as_str().into();
                }
                if let Some(h) = &hash_header {
                    config["hash"]["header"] = h.as_str().into();
                }
                if let Some(c) = &hash_cookie {
                    config["hash"]["cookie"] = c.as_str().into();
                }
                if !has_user_source {
                    config.as_object_mut().expect("object").remove("hash");
                }
                if !users.is_empty() {
                    config["users"] = serde_json::to_value(&by_version).expect("users");
                }
                if let Some(g) = guarded {
                    config["guard"] =
                        serde_json::json!({ "version": names[g], "max_error_rate": 0.1 });
                }
                // A token or trusted sources only where there is an override to protect.
                let protects = override_header.is_some() || override_cookie.is_some();
                let token: Option<Vec<String>> = trust
                    .0
                    .filter(|_| protects)
                    .map(|v| v.iter().map(|s| s.to_string()).collect());
                let trusted: Vec<String> = trust
                    .1
                    .filter(|_| protects)
                    .map(|v| v.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default();
                if let Some(values) = &token {
                    config["override"]["token"] =
                        serde_json::json!({ "header": "X-Canary-Token", "values": values });
                }
                if !trusted.is_empty() {
                    config["override"]["trusted_sources"] = serde_json::json!(trusted);
                }
                Setup {
                    json: config.to_string(),
                    names,
                    weights,
                    buckets: if has_user_source { buckets } else { 10_000 },
                    override_header: override_header.map(|h| h.to_ascii_lowercase()),
                    override_cookie,
                    hash_header: hash_header.map(|h| h.to_ascii_lowercase()),
                    hash_cookie,
                    salt,
                    users,
                    anonymous,
                    guarded,
                    token,
                    trusted,
                }
            },
        )
        .boxed()
}

/// One segment of a `Cookie` header, in every shape RFC 6265 lets a client send
/// and then some: no `=`, empty names or values, quotes, spaces, `=` in values.
fn cookie_pair() -> BoxedStrategy<String> {
    let name = prop_oneof![
        strings(&["uid", "UID", "canary", "CANARY", "session", "ov", ""]),
        "[a-z]{1,4}",
    ];
    let value = prop_oneof![
        strings(&[
            "canary",
            "stable",
            "beta",
            "",
            "\"canary\"",
            "\"",
            "\"\"",
            "a=b",
            "canary "
        ]),
        select(USER_IDS.to_vec()).prop_map(str::to_string),
        "[ -~]{0,6}".prop_map(|s| s.replace(';', "")),
    ];
    let ws = strings(&["", " ", "  ", "\t"]);
    (name, value, ws.clone(), ws.clone(), ws, 0u8..10)
        .prop_map(|(n, v, w1, w2, w3, shape)| {
            match shape {
                0 => n,               // no `=`
                1 => format!("={v}"), // empty name
                2 => format!("{n}="), // empty value
                3 => String::new(),   // empty segment
                _ => format!("{w1}{n}{w2}={w3}{v}"),
            }
        })
        .boxed()
}

fn cookie_header() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        8 => (
            prop::collection::vec(cookie_pair(), 0..8),
            prop::collection::vec(strings(&[";", "; ", ";;", " ; ", ";\t", ";;;;"]), 8)
        )
            .prop_map(|(pairs, seps)| {
                let mut out = String::new();
                for (i, pair) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&seps[i % seps.len()]);
                    }
                    out.push_str(pair);
                }
                out.into_bytes()
            }),
        // Very many pairs.
        1 => (1usize..400, user_id_text()).prop_map(|(n, id)| {
            let mut out: Vec<String> = (0..n).map(|i| format!("c{i}=v{i}")).collect();
            out.push(format!("uid={id}"));
            out.join("; ").into_bytes()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
    .boxed()
}

fn header_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => strings(&["canary", "stable", "beta", "v2.0", "exp_1", "CANARY", "canary ", "", "nightly"])
            .prop_map(String::into_bytes),
        4 => select(USER_IDS.to_vec()).prop_map(|s| s.as_bytes().to_vec()),
        2 => prop::collection::vec(any::<u8>(), 0..32),
        1 => (1usize..=16 * 1024, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        1 => Just(vec![0xff, 0xfe, 0xc3, 0x28, 0x80, 0xed, 0xa0, 0x80, 0xc0, 0x80]),
    ]
    .boxed()
}

fn request_pairs() -> BoxedStrategy<Vec<(Vec<u8>, Vec<u8>)>> {
    let name = prop_oneof![
        6 => strings(&[
            "x-user-id", "X-User-Id", "x-uid", "x-canary", "X-CANARY", "x-override",
            "x-canary-version", ":path", ":authority", "user-agent", "x-canary-token",
        ])
        .prop_map(String::into_bytes),
        1 => "[a-z-]{1,8}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..6),
    ];
    let header = prop_oneof![
        3 => (name, header_value()),
        2 => (strings(&["cookie", "Cookie", "COOKIE"]).prop_map(String::into_bytes), cookie_header()),
    ];
    // Besides the noise, often an override, a token or a user ID under a name the
    // config may read.
    let aimed = prop_oneof![
        (
            Just(TOKEN_HEADER.as_bytes().to_vec()),
            prop_oneof![
                3 => select(SECRETS.to_vec()).prop_map(|s| s.as_bytes().to_vec()),
                1 => strings(&["0123456789abcdeF", "0123456789abcde", "0123456789abcdef0", "", " 0123456789abcdef"])
                    .prop_map(String::into_bytes),
            ],
        ),
        (
            strings(&["x-canary", "X-Canary", "x-override"]).prop_map(String::into_bytes),
            strings(&["canary", "stable", "beta", "v2.0", "exp_1"]).prop_map(String::into_bytes),
        ),
        (
            strings(&["x-user-id", "x-uid"]).prop_map(String::into_bytes),
            user_id_text().prop_map(String::into_bytes),
        ),
        (
            Just(b"cookie".to_vec()),
            (
                strings(&["canary", "ov", "uid", "session", "UID"]),
                prop_oneof![
                    strings(&["canary", "stable", "beta", "v2.0", "exp_1"]),
                    user_id_text()
                ]
            )
                .prop_map(|(n, v)| format!("{n}={v}").into_bytes()),
        ),
    ];
    (
        prop::collection::vec(header, 0..8),
        prop::collection::vec(aimed, 0..3),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut noise, aimed, at)| {
            for pair in aimed {
                let i = at.index(noise.len() + 1);
                noise.insert(i, pair);
            }
            noise
        })
        .boxed()
}

/// Damage to a serialized header map: what a buggy or hostile host could hand over.
fn map_damage() -> BoxedStrategy<Option<(u8, prop::sample::Index, u32)>> {
    prop_oneof![
        4 => Just(None),
        1 => (0u8..4, any::<prop::sample::Index>(), any::<u32>()).prop_map(Some),
    ]
    .boxed()
}

fn damage_map(map: &mut Vec<u8>, damage: Option<(u8, prop::sample::Index, u32)>) {
    let Some((kind, at, value)) = damage else {
        return;
    };
    match kind {
        0 => {
            let len = at.index(map.len() + 1);
            map.truncate(len);
        }
        1 if !map.is_empty() => {
            let i = at.index(map.len());
            map[i] ^= (value as u8) | 1;
        }
        // Overwrite a count or a length with any u32, including huge ones.
        2 | 3 if map.len() >= 4 => {
            let slots = map.len() / 4;
            let i = if kind == 2 { 0 } else { at.index(slots) * 4 };
            map[i..i + 4].copy_from_slice(&value.to_le_bytes());
        }
        _ => map.extend_from_slice(&value.to_le_bytes()),
    }
}

// ---- The model of the decision ----------------------------------------------------

/// The documented header lookup: the first header with that name, any case.
fn model_header<'p>(pairs: &'p [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'p [u8]> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v.as_slice())
}

/// The documented cookie lookup: `Cookie` headers in order, pairs split on `;`,
/// spaces and tabs trimmed, the name ends at the first `=` and matches exactly, one
/// pair of surrounding double quotes dropped, a pair without `=` skipped.
fn model_cookie<'p>(pairs: &'p [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'p [u8]> {
    fn trim(s: &[u8]) -> &[u8] {
        let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
        let start = s.iter().position(|b| !is_ws(b)).unwrap_or(s.len());
        let end = s.iter().rposition(|b| !is_ws(b)).map_or(start, |e| e + 1);
        &s[start..end.max(start)]
    }
    for (key, value) in pairs {
        if !key.eq_ignore_ascii_case(b"cookie") {
            continue;
        }
        for segment in value.split(|&b| b == b';') {
            let segment = trim(segment);
            let Some(eq) = segment.iter().position(|&b| b == b'=') else {
                continue;
            };
            if trim(&segment[..eq]) != name.as_bytes() {
                continue;
            }
            let v = trim(&segment[eq + 1..]);
            return Some(if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                &v[1..v.len() - 1]
            } else {
                v
            });
        }
    }
    None
}

/// The version owning `bucket`, from the documented layout: the versions after the
/// first take consecutive ranges from bucket 1 in list order, the baseline the rest.
fn model_version_of_bucket(s: &Setup, bucket: u32) -> usize {
    let mut end = 0;
    for (i, w) in s.weights.iter().enumerate() {
        let start = end;
        end += w * s.buckets / 100;
        if start < bucket && bucket <= end {
            return i + 1;
        }
    }
    0
}

fn murmur3(bytes: &[u8]) -> u32 {
    murmur3::murmur3_32(&mut std::io::Cursor::new(bytes), 0).expect("in memory")
}

/// The version an override header or cookie names, before any trust check.
fn model_named_override(s: &Setup, pairs: &[(Vec<u8>, Vec<u8>)]) -> Option<usize> {
    let names_version =
        |v: Option<&[u8]>| v.and_then(|v| s.names.iter().position(|n| n.as_bytes() == v));
    let by_header = s
        .override_header
        .as_deref()
        .and_then(|h| names_version(model_header(pairs, h)));
    let by_cookie = s
        .override_cookie
        .as_deref()
        .and_then(|c| names_version(model_cookie(pairs, c)));
    by_header.or(by_cookie)
}

/// An override counts only with a configured token's exact value (the first token
/// header; none presented is no match) and from a trusted source, when configured.
fn model_override_allowed(s: &Setup, pairs: &[(Vec<u8>, Vec<u8>)], source: Option<IpAddr>) -> bool {
    let token_ok = s.token.as_ref().is_none_or(|secrets| {
        let presented = model_header(pairs, TOKEN_HEADER).unwrap_or_default();
        secrets.iter().any(|secret| secret.as_bytes() == presented)
    });
    let source_ok = s.trusted.is_empty()
        || source.is_some_and(|ip| s.trusted.iter().any(|range| model_in_range(range, ip)));
    token_ok && source_ok
}

/// The decision by the documented rules, computed without the crate's code.
fn model_decide(
    s: &Setup,
    pairs: &[(Vec<u8>, Vec<u8>)],
    source: Option<IpAddr>,
    guard_tripped: bool,
    rng_seed: u64,
) -> (usize, Reason) {
    if let Some(v) =
        model_named_override(s, pairs).filter(|_| model_override_allowed(s, pairs, source))
    {
        return (v, Reason::Override);
    }
    let id = s
        .hash_header
        .as_deref()
        .and_then(|h| model_header(pairs, h))
        .filter(|v| !v.is_empty())
        .or_else(|| {
            s.hash_cookie
                .as_deref()
                .and_then(|c| model_cookie(pairs, c))
                .filter(|v| !v.is_empty())
        })
        // A request without one is issued a visitor ID and goes by it.
        .or_else(|| (s.anonymous == Anonymous::Cookie).then_some(ISSUED_ID.as_bytes()));
    let (version, reason) = match id {
        Some(id) => match s.users.iter().find(|(u, _)| u.as_bytes() == id) {
            Some((_, v)) => (*v, Reason::UserList),
            None => {
                let key = if s.salt.is_empty() {
                    id.to_vec()
                } else {
                    [s.salt.as_bytes(), b":", id].concat()
                };
                let bucket = murmur3(&key) % s.buckets + 1;
                (model_version_of_bucket(s, bucket), Reason::Hash)
            }
        },
        None => match s.anonymous {
            Anonymous::Baseline => (0, Reason::Baseline),
            // Cookie: never here, an ID is always issued above.
            Anonymous::Random | Anonymous::Cookie => {
                // The draw itself is the crate's PRNG; where it lands is the model's.
                let bucket = Rng::new(rng_seed).bucket(s.buckets);
                (model_version_of_bucket(s, bucket), Reason::Random)
            }
        },
    };
    if guard_tripped && s.guarded == Some(version) {
        return (0, Reason::Guard);
    }
    (version, reason)
}

fn pair_refs(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect()
}

fn decide_bytes(config: &Config, map: &[u8], tripped: bool, seed: u64) -> Assignment {
    decide_from(config, map, None, tripped, seed)
}

fn decide_from(
    config: &Config,
    map: &[u8],
    source: Option<IpAddr>,
    tripped: bool,
    seed: u64,
) -> Assignment {
    let routing = Routing {
        guard_tripped: tripped,
        ..Routing::at(config, 0)
    };
    let facts = WithVisitorId {
        request: KnownSource {
            headers: SerializedHeaders::new(map),
            source,
        },
        id: Some(ISSUED_ID.as_bytes()),
    };
    decide(config, &routing, &facts, &mut Rng::new(seed))
}

/// The documented meaning of a trusted source range, computed without the crate's
/// code: an address, or an address and a prefix length; an IPv4 client seen as
/// `::ffff:a.b.c.d` is that IPv4 address.
fn model_in_range(range: &str, address: IpAddr) -> bool {
    let (net, prefix) = match range.split_once('/') {
        Some((a, p)) => (a, p.parse::<u32>().ok()),
        None => (range, None),
    };
    let Ok(net) = net.parse::<IpAddr>() else {
        return false;
    };
    let address = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    };
    // The top `prefix` bits of two `width`-bit numbers agree.
    let same_prefix = |a: u128, b: u128, width: u32| {
        let prefix = prefix.unwrap_or(width).min(width);
        prefix == 0 || (a ^ b) >> (width - prefix) == 0
    };
    match (net, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            same_prefix(u128::from(u32::from(n)), u128::from(u32::from(a)), 32)
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => same_prefix(u128::from(n), u128::from(a), 128),
        _ => false,
    }
}

#[test]
fn the_decision_on_arbitrary_requests_equals_the_model_and_is_always_a_valid_version() {
    let reasons: Vec<AtomicUsize> = (0..Reason::ALL.len())
        .map(|_| AtomicUsize::new(0))
        .collect();
    let corrupt = AtomicUsize::new(0);
    // Overrides named under a token or trusted sources: let through, and refused.
    let (guarded_allowed, guarded_refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    check(
        "decision",
        10000,
        (
            setup(),
            request_pairs(),
            map_damage(),
            any::<bool>(),
            any::<u64>(),
            prop::option::weighted(
                0.8,
                select(SOURCES.to_vec()).prop_map(|a| a.parse::<IpAddr>().expect("address")),
            ),
        ),
        |(s, pairs, damage, tripped, seed, source)| {
            let config = Config::from_json(s.json.as_bytes())
                .map_err(|e| fail(format!("a valid config was refused: {e:?} in {}", s.json)))?;
            let mut map = serialize_headers(&pair_refs(&pairs));
            // A corrupt map: the decision must be the model's over whatever pairs the
            // parser recovers from it, and those pairs must lie inside the buffer.
            let damaged = damage.is_some();
            damage_map(&mut map, damage);
            let recovered: Vec<(Vec<u8>, Vec<u8>)> = SerializedHeaders::new(&map)
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            if damaged {
                corrupt.fetch_add(1, Ordering::Relaxed);
            } else {
                ensure!(
                    recovered == pairs,
                    "a well-formed map reads back differently"
                );
            }
            let a = decide_from(&config, &map, source, tripped, seed);
            ensure!(
                a.version < s.names.len(),
                "version {} of {}",
                a.version,
                s.names.len()
            );
            let expected = model_decide(&s, &recovered, source, tripped, seed);
            ensure!(
                (a.version, a.reason) == expected,
                "decided {:?}, the model says {expected:?}",
                (a.version, a.reason)
            );
            match a.reason {
                Reason::Hash | Reason::Random => ensure!(
                    a.bucket.is_some_and(|b| (1..=s.buckets).contains(&b)),
                    "bucket {:?} of {}",
                    a.bucket,
                    s.buckets
                ),
                _ => {}
            }
            if tripped && a.reason != Reason::Override {
                ensure!(
                    s.guarded != Some(a.version),
                    "a tripped guard let traffic through"
                );
            }
            // Only the anonymous draw may depend on the random state (also when a
            // tripped guard then moves it).
            let anonymous = user_id(&config, &SerializedHeaders::new(&map)).is_none();
            if !(anonymous && matches!(a.reason, Reason::Random | Reason::Guard)) {
                let other = decide_from(&config, &map, source, tripped, seed.wrapping_add(1));
                ensure!(
                    other == a,
                    "the decision depends on the rng: {a:?} vs {other:?}"
                );
            }
            reasons[a.reason.index()].fetch_add(1, Ordering::Relaxed);
            if (s.token.is_some() || !s.trusted.is_empty())
                && model_named_override(&s, &recovered).is_some()
            {
                if a.reason == Reason::Override {
                    guarded_allowed.fetch_add(1, Ordering::Relaxed);
                } else {
                    guarded_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        },
    );
    let counts: Vec<String> = Reason::ALL
        .iter()
        .map(|r| {
            format!(
                "{}={}",
                r.as_str(),
                reasons[r.index()].load(Ordering::Relaxed)
            )
        })
        .collect();
    let (allowed, refused) = (guarded_allowed.into_inner(), guarded_refused.into_inner());
    eprintln!(
        "decision: reasons {} ({} corrupt maps); overrides under a token or trusted sources: {allowed} let through, {refused} refused",
        counts.join(" "),
        corrupt.load(Ordering::Relaxed)
    );
    assert!(
        allowed > 0 && refused > 0,
        "the trust rules went unexercised"
    );
    // Every rule must be reached, or the model comparison proves little.
    for r in Reason::ALL {
        assert!(
            reasons[r.index()].load(Ordering::Relaxed) > 0,
            "no case reached {}",
            r.as_str()
        );
    }
}

#[test]
fn a_users_version_depends_only_on_the_user_id_and_the_config() {
    // Stickiness: whatever else the request carries (other headers, other cookies,
    // hostile values, in any order), a user ID that is not overridden lands on the
    // same version as that user ID alone, by header or by cookie.
    check(
        "stickiness",
        5000,
        (
            setup(),
            user_id_text(),
            request_pairs(),
            any::<prop::sample::Index>(),
            any::<u64>(),
        ),
        |(s, id, noise, position, seed)| {
            let config =
                Config::from_json(s.json.as_bytes()).map_err(|e| fail(format!("{e:?}")))?;
            if id.is_empty() || (s.hash_header.is_none() && s.hash_cookie.is_none()) {
                return Ok(());
            }
            // What a cookie value can carry unchanged (the lookup trims blanks and
            // drops surrounding quotes; `;` ends a pair).
            let quoted = id.len() >= 2 && id.starts_with('"') && id.ends_with('"');
            let cookie_safe = !(id.contains(';')
                || id.starts_with([' ', '\t'])
                || id.ends_with([' ', '\t'])
                || quoted);
            if s.hash_header.is_none() && !cookie_safe {
                return Ok(());
            }
            // Noise that names none of the inputs the decision reads.
            let reads = |k: &[u8]| {
                k.eq_ignore_ascii_case(b"cookie")
                    || [&s.hash_header, &s.override_header]
                        .into_iter()
                        .flatten()
                        .any(|h| k.eq_ignore_ascii_case(h.as_bytes()))
            };
            let mut noise: Vec<(Vec<u8>, Vec<u8>)> =
                noise.into_iter().filter(|(k, _)| !reads(k)).collect();
            let user_pair = match (&s.hash_header, &s.hash_cookie) {
                (Some(h), _) => (h.clone().into_bytes(), id.clone().into_bytes()),
                (None, Some(c)) => (b"cookie".to_vec(), format!("{c}={id}").into_bytes()),
                (None, None) => unreachable!(),
            };
            let alone = decide_bytes(
                &config,
                &serialize_headers(&pair_refs(std::slice::from_ref(&user_pair))),
                false,
                1,
            );
            let at = position.index(noise.len() + 1);
            noise.insert(at, user_pair);
            let with_noise =
                decide_bytes(&config, &serialize_headers(&pair_refs(&noise)), false, seed);
            ensure!(
                matches!(alone.reason, Reason::Hash | Reason::UserList),
                "a user ID decided by {:?}",
                alone.reason
            );
            ensure!(
                alone == with_noise,
                "user {id:?}: {alone:?} alone, {with_noise:?} among other headers"
            );
            // The cookie path gives the same version as the header path.
            if let (Some(_), Some(c), true) = (&s.hash_header, &s.hash_cookie, cookie_safe) {
                let cookie = format!("other=1; {c}={id}");
                let by_cookie = decide_bytes(
                    &config,
                    &serialize_headers(&[(b"cookie".as_slice(), cookie.as_bytes())]),
                    false,
                    seed,
                );
                ensure!(
                    by_cookie == alone,
                    "{id:?}: by cookie {by_cookie:?}, by header {alone:?}"
                );
            }
            Ok(())
        },
    );
}

// ---- Header maps and cookies ------------------------------------------------------

#[test]
fn header_maps_of_arbitrary_bytes_are_read_within_bounds() {
    check(
        "serialized header maps",
        10000,
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..128),
            (request_pairs(), map_damage()).prop_map(|(pairs, damage)| {
                let mut map = serialize_headers(&pair_refs(&pairs));
                damage_map(&mut map, damage);
                map
            }),
        ],
        |bytes| {
            let map = SerializedHeaders::new(&bytes);
            let declared = bytes
                .get(..4)
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
            let range = bytes.as_ptr_range();
            let mut n = 0;
            for (key, value) in map.iter() {
                n += 1;
                for part in [key, value] {
                    let inside = part.is_empty()
                        || (range.start <= part.as_ptr() && part.as_ptr_range().end <= range.end);
                    ensure!(inside, "a slice outside the buffer");
                }
            }
            ensure!(
                n <= declared,
                "{n} pairs from a map that declares {declared}"
            );
            let _ = map.header("x-user-id");
            let _ = map.cookie("uid");
            Ok(())
        },
    );
}

#[test]
fn cookie_lookup_follows_the_documented_rules_on_any_cookie_header() {
    check(
        "cookies",
        10000,
        (
            prop_oneof![cookie_header(), prop::collection::vec(any::<u8>(), 0..64)],
            strings(&["uid", "UID", "canary", "session", "ov", "c7"]),
        ),
        |(header, name)| {
            let pairs = vec![(b"cookie".to_vec(), header.clone())];
            let expected = model_cookie(&pairs, &name);
            ensure!(
                find_cookie(&header, name.as_bytes()) == expected,
                "{:?} in {:?}: {:?}, the rules say {:?}",
                name,
                String::from_utf8_lossy(&header),
                find_cookie(&header, name.as_bytes()).map(String::from_utf8_lossy),
                expected.map(String::from_utf8_lossy)
            );
            Ok(())
        },
    );
}

// ---- Time formats, ramps and the guard --------------------------------------------

/// Unix ms as RFC 3339 with a given UTC offset in minutes.
fn format_rfc3339(ms: i64, offset_min: i64) -> String {
    let local = ms + offset_min * 60_000;
    let (days, rest) = (local.div_euclid(86_400_000), local.rem_euclid(86_400_000));
    let (year, month, day) = canary_router::schedule::civil_from_days(days);
    let offset = if offset_min == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        format!(
            "{sign}{:02}:{:02}",
            offset_min.abs() / 60,
            offset_min.abs() % 60
        )
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}{offset}",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

#[test]
fn time_formats_never_panic_and_round_trip() {
    check(
        "durations and instants",
        10000,
        (
            prop_oneof![duration_text(), ".{0,12}"],
            prop_oneof![rfc3339_text(), ".{0,30}"],
            // From 1970 (plus the largest offset) to the end of year 9999.
            (86_400_000i64..253_402_214_399_000, -1439i64..=1439),
        ),
        |(duration, instant, (ms, offset))| {
            if let Ok(d) = parse_duration(&duration) {
                let text = format_duration(d);
                ensure!(
                    parse_duration(&text) == Ok(d - d % 1000),
                    "{duration:?} -> {d} -> {text:?}"
                );
            }
            let _ = parse_rfc3339(&instant);
            let text = format_rfc3339(ms, offset);
            ensure!(parse_rfc3339(&text) == Ok(ms), "{text} should be {ms}");
            Ok(())
        },
    );
}

fn guard_config() -> BoxedStrategy<GuardConfig> {
    (
        0.0f64..1.0,
        prop::option::of(0.0f64..=1.0),
        prop_oneof![1u64..100, Just(u64::MAX)],
        prop_oneof![1u64..120_000, Just(3_600_000u64), Just(u64::MAX / 2)],
        prop::option::of(prop_oneof![0u64..20_000, Just(u64::MAX)]),
    )
        .prop_map(
            |(rate, margin, min_requests, window_ms, hold_ms)| GuardConfig {
                version: 1,
                max_error_rate: rate,
                baseline_margin: margin,
                min_requests,
                window_ms,
                status: StatusMatcher::parse(&["5xx".to_string()]).expect("5xx"),
                grpc_status: canary_router::grpc::GrpcCodeSet::default(),
                hold_ms,
            },
        )
        .boxed()
}

#[test]
fn the_guard_never_panics_and_trips_only_on_evidence() {
    // Any sequence of merges and evaluations at any times, clocks that jump or run
    // backwards, counts near u32::MAX, and shared data of any shape from other workers.
    let tally = (any::<u32>(), any::<u32>()).prop_map(|(total, failed)| Tally {
        total,
        failed: failed.min(total),
    });
    let op = (
        prop_oneof![0u64..200_000, any::<u64>(), Just(0u64), Just(u64::MAX)],
        prop_oneof![
            3 => (0u32..30, 0u32..30).prop_map(|(t, f)| Tally { total: t, failed: f.min(t) }),
            1 => tally.clone(),
        ],
        prop_oneof![3 => Just(Tally::default()), 1 => tally],
    );
    check(
        "guard",
        5000,
        (
            guard_config(),
            prop::collection::vec(op, 0..40),
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        |(config, ops, junk)| {
            let _ = GuardState::decode(&junk, &config);
            let mut state = GuardState::new(1, &config);
            for (now, guarded, baseline) in ops {
                let pending = Pending { guarded, baseline };
                let before = state.clone();
                state.add(now, &config, &pending);
                let window = state.window(now, &config);
                match state.evaluate(now, &config) {
                    Some(GuardEvent::Tripped { guarded, baseline }) => {
                        ensure!(!before.is_tripped(), "tripped twice");
                        ensure!((guarded, baseline) == window, "the reported figures differ");
                        ensure!(
                            u64::from(guarded.total) >= config.min_requests
                                && guarded.rate() > config.max_error_rate,
                            "tripped on {guarded:?} with {config:?}"
                        );
                        ensure!(state.is_tripped(), "a trip that did not stick");
                    }
                    Some(GuardEvent::Rearmed) => {
                        ensure!(!state.is_tripped(), "re-armed but still tripped");
                        ensure!(
                            state.window(now, &config) == Default::default(),
                            "re-armed with old counts"
                        );
                    }
                    None => {}
                }
                let decoded = GuardState::decode(&state.encode(), &config);
                ensure!(decoded.as_ref() == Some(&state), "encode/decode differ");
            }
            Ok(())
        },
    );
}

#[test]
fn source_ranges_parse_any_text_without_panicking_and_contain_what_they_should() {
    let v4 = any::<[u8; 4]>().prop_map(IpAddr::from);
    let v6 = any::<[u16; 8]>().prop_map(IpAddr::from);
    let address = prop_oneof![v4.clone(), v6.clone()];
    check(
        "source ranges",
        10000,
        (
            prop_oneof![".{0,20}", "[0-9./:a-f]{0,20}"],
            address.clone(),
            prop::option::of(0u32..=130),
            address.clone(),
            any::<bool>(),
        ),
        |(junk, net, prefix, probe, related)| {
            let _ = canary_router::trust::Cidr::parse(&junk);
            let text = match prefix {
                Some(p) => format!("{net}/{p}"),
                None => net.to_string(),
            };
            let width = if net.is_ipv4() { 32 } else { 128 };
            let parsed = canary_router::trust::Cidr::parse(&text);
            ensure!(
                parsed.is_ok() == prefix.is_none_or(|p| p <= width),
                "{text}: {parsed:?}"
            );
            let Ok(range) = parsed else { return Ok(()) };
            // Probe addresses near the range half the time, so that both answers occur.
            let probe = if related { net } else { probe };
            ensure!(
                range.contains(probe) == model_in_range(&text, probe),
                "{text} contains {probe}: {}, the model says {}",
                range.contains(probe),
                model_in_range(&text, probe)
            );
            Ok(())
        },
    );
}

// ---- IP addresses as text ---------------------------------------------------------

/// Text that is often almost an address: octets and hex groups of every length
/// (overlong, leading zeros, out of range), `::` anywhere, IPv4 tails, brackets,
/// scopes and ports; or any text over the characters of addresses.
fn address_text() -> BoxedStrategy<String> {
    let octet = prop_oneof![
        12 => strings(&["0", "1", "9", "10", "99", "100", "255"]),
        1 => strings(&["256", "01", "001", "999", "1000", ""]),
    ];
    let ipv4 = prop_oneof![
        4 => prop::collection::vec(octet.clone(), 4),
        1 => prop::collection::vec(octet, 3..=5),
    ]
    .prop_map(|o| o.join("."));
    let group = prop_oneof![
        15 => "[0-9a-fA-F]{1,4}",
        1 => strings(&["00000", "12345", "g", ""]),
    ];
    let ipv6 = (
        prop_oneof![3 => prop::collection::vec(group.clone(), 0..=7), 1 => prop::collection::vec(group, 8..=9)],
        prop::option::weighted(0.8, any::<prop::sample::Index>()),
        prop::option::weighted(0.3, ipv4.clone()),
    )
        .prop_map(|(groups, gap, tail)| {
            let mut parts = groups;
            if let Some(gap) = gap {
                let at = gap.index(parts.len() + 1);
                parts.insert(at, String::new());
                if at == 0 || at == parts.len() - 1 {
                    parts.insert(at, String::new());
                }
            }
            parts.extend(tail);
            parts.join(":")
        });
    let port = strings(&[
        "0",
        "80",
        "00080",
        "65535",
        "65536",
        "99999999999",
        "",
        "+1",
        "8x",
    ]);
    let scope = strings(&["", "%", "%2", "%0", "%4294967295", "%4294967296", "%eth0"]);
    prop_oneof![
        2 => ipv4.clone(),
        2 => ipv6.clone(),
        2 => (ipv4.clone(), port.clone()).prop_map(|(ip, port)| format!("{ip}:{port}")),
        1 => (ipv6.clone(), port.clone()).prop_map(|(ip, port)| format!("{ip}:{port}")),
        2 => (prop_oneof![ipv6, ipv4], scope, port)
            .prop_map(|(ip, scope, port)| format!("[{ip}{scope}]:{port}")),
        1 => "[0-9a-fA-F:.%\\[\\] ]{0,48}",
    ]
    .boxed()
}

#[test]
fn ip_addresses_are_read_exactly_as_std_reads_them() {
    // The core has its own reader (core/src/ip.rs, far smaller in the .wasm than
    // std's): it must accept what std accepts, give the same address, and refuse
    // what std refuses, for trusted_sources, hosts and the source address.
    use canary_router::ip::{parse_ip, parse_ipv6, parse_socket_or_ip};
    use std::net::{Ipv6Addr, SocketAddr};
    let (cases, accepted) = (AtomicUsize::new(0), AtomicUsize::new(0));
    check(
        "ip_addresses_are_read_exactly_as_std_reads_them",
        20_000,
        address_text(),
        |text| {
            cases.fetch_add(1, Ordering::Relaxed);
            let bytes = text.as_bytes();
            let std_ip = text.parse::<IpAddr>().ok();
            let std_socket = text.parse::<SocketAddr>().ok().map(|s| s.ip());
            ensure!(
                parse_ip(bytes) == std_ip,
                "parse_ip({text:?}) = {:?}, std: {std_ip:?}",
                parse_ip(bytes)
            );
            let std_v6 = text.parse::<Ipv6Addr>().ok();
            ensure!(
                parse_ipv6(bytes) == std_v6,
                "parse_ipv6({text:?}) = {:?}, std: {std_v6:?}",
                parse_ipv6(bytes)
            );
            let expected = std_socket.or(std_ip);
            let got = parse_socket_or_ip(bytes);
            ensure!(
                got == expected,
                "parse_socket_or_ip({text:?}) = {got:?}, std: {expected:?}"
            );
            if expected.is_some() {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        },
    );
    // The generator must reach valid addresses too, or agreement says little.
    let (cases, accepted) = (cases.into_inner(), accepted.into_inner());
    assert!(
        accepted * 4 >= cases,
        "only {accepted} of {cases} generated texts were addresses"
    );
    eprintln!("{accepted} of the {cases} texts were addresses");
}

// ---- Regressions: inputs the properties found, kept as plain tests ------------------

#[test]
fn regression_a_ramp_step_too_far_in_the_future_to_represent_is_never_reached() {
    // Found by `ramps_follow_their_schedule...`: `after` up to u64::MAX ms parses,
    // and `start + after` was computed as `start + (after as i64)`, which wraps to a
    // time long past: the canary got the step's weight at once, even before start.
    for after in ["18446744073709551s", "9223372036854776s", "3000000000000h"] {
        let json = format!(
            r#"{{"versions":[{{"name":"stable"}},{{"name":"canary","schedule":{{
                "start":"2026-12-01T09:00:00Z",
                "steps":[{{"after":"0s","weight":10}},{{"after":"{after}","weight":50}}]}}}}],
                "hash":{{"header":"u"}}}}"#
        );
        let config = Config::from_json(json.as_bytes()).expect("valid");
        let start = 1_796_115_600_000;
        assert_eq!(config.weights_at(start - 1), vec![10_000, 0], "{after}");
        assert_eq!(config.weights_at(start), vec![9000, 1000], "{after}");
        assert_eq!(config.weights_at(i64::MAX), vec![9000, 1000], "{after}");
        for interpolate in ["true", "false"] {
            let json = json.replace(
                "\"steps\"",
                &format!("\"interpolate\":{interpolate},\"steps\""),
            );
            let config = Config::from_json(json.as_bytes()).expect("valid");
            assert_eq!(config.weights_at(start + 3_600_000)[1], 1000, "{after}");
            check_accepted(&config, json.as_bytes(), &[start, start + 1]).expect("invariants");
        }
    }
}
