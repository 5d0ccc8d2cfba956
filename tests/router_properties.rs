//! The router over generated configs and requests (fixed seed, like
//! tests/properties.rs): the rollout it finds with its host index (exact names,
//! wildcards merged in when the config loads, rollouts without hosts) is always the
//! first rollout, in config order, whose match holds by the documented rules,
//! written out here independently of the core: the host without port and trailing
//! dot, case ignored, `*.x` for every longer name ending in `.x`; `:path` starts with
//! a prefix, case-sensitive; each header condition on the first value. It never
//! panics, whatever bytes the request carries.

use canary_router::config::PluginConfig;
use canary_router::request::{serialize_headers, SerializedHeaders};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        RunnerConfig {
            cases,
            failure_persistence: None,
            ..RunnerConfig::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[21; 32]),
    )
}

/// Names from a small alphabet, so that generated hosts and wildcards meet often.
fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=3)
        .prop_map(|labels| labels.join("."))
}

#[derive(Debug, Clone)]
enum Test {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Present(bool),
}

#[derive(Debug, Clone)]
struct RolloutMatch {
    /// Entries as written: `a.b`, `*.b`.
    hosts: Option<Vec<String>>,
    paths: Option<Vec<String>>,
    headers: Option<Vec<(String, Test)>>,
}

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["i", "io", "ios", "os", "s"]).prop_map(str::to_string)
}

fn test() -> impl Strategy<Value = Test> {
    prop_oneof![
        value().prop_map(Test::Exact),
        Just(Test::Exact(String::new())),
        value().prop_map(Test::Prefix),
        value().prop_map(Test::Suffix),
        any::<bool>().prop_map(Test::Present),
    ]
}

fn rollout_match() -> impl Strategy<Value = RolloutMatch> {
    let host = prop_oneof![name(), name().prop_map(|n| format!("*.{n}"))];
    let hosts = prop::collection::btree_set(host, 1..=3).prop_map(|s| s.into_iter().collect());
    let paths = prop::collection::btree_set(
        prop::sample::select(vec!["/", "/a", "/a/", "/ab", "/b", "/a?x"]).prop_map(str::to_string),
        1..=2,
    )
    .prop_map(|s| s.into_iter().collect());
    let header = (
        prop::sample::select(vec!["x-a", "x-b"]).prop_map(str::to_string),
        test(),
    );
    let headers = prop::collection::vec(header, 1..=2);
    (
        prop::option::weighted(0.8, hosts),
        prop::option::weighted(0.3, paths),
        prop::option::weighted(0.3, headers),
    )
        .prop_map(|(hosts, paths, headers)| RolloutMatch {
            hosts,
            paths,
            headers,
        })
}

fn config_json(matches: &[RolloutMatch]) -> String {
    let rollouts: Vec<Value> = matches
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut matched = serde_json::Map::new();
            if let Some(hosts) = &m.hosts {
                matched.insert("hosts".into(), json!(hosts));
            }
            if let Some(paths) = &m.paths {
                matched.insert("path_prefixes".into(), json!(paths));
            }
            if let Some(headers) = &m.headers {
                let conditions: Vec<Value> = headers
                    .iter()
                    .map(|(name, test)| match test {
                        Test::Exact(v) => json!({"name": name, "exact": v}),
                        Test::Prefix(v) => json!({"name": name, "prefix": v}),
                        Test::Suffix(v) => json!({"name": name, "suffix": v}),
                        Test::Present(p) => json!({"name": name, "present": p}),
                    })
                    .collect();
                matched.insert("headers".into(), json!(conditions));
            }
            json!({"name": format!("r{i}"), "match": matched, "versions": [{"name": "stable"}]})
        })
        .collect();
    json!({ "rollouts": rollouts }).to_string()
}

#[derive(Debug, Clone)]
struct Request {
    authority: Option<String>,
    path: Option<String>,
    /// In order; a name may repeat (the first value counts).
    headers: Vec<(String, String)>,
}

fn request() -> impl Strategy<Value = Request> {
    let authority = (
        name(),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![":80", ":8443", ":"])),
        any::<bool>(),
    )
        .prop_map(|(host, upper, port, dot)| {
            let host = if upper {
                host.to_ascii_uppercase()
            } else {
                host
            };
            format!("{host}{}{}", if dot { "." } else { "" }, port.unwrap_or(""))
        });
    let authority = prop_oneof![
        8 => authority.prop_map(Some),
        1 => Just(None),
        1 => Just(Some(".a".to_string())),
        1 => Just(Some(String::new())),
    ];
    let path = prop::option::weighted(
        0.9,
        prop::sample::select(vec!["/", "/a", "/a/b", "/ab", "/b", "/A", "/a?x=1", "*"])
            .prop_map(str::to_string),
    );
    let header = (
        prop::sample::select(vec!["x-a", "x-b", "x-c"]).prop_map(str::to_string),
        prop_oneof![value(), Just(String::new())],
    );
    (authority, path, prop::collection::vec(header, 0..=3)).prop_map(
        |(authority, path, headers)| Request {
            authority,
            path,
            headers,
        },
    )
}

/// The documented host rules, written out: `Some(host)` as matched.
fn host_of(authority: &str) -> String {
    let host = match authority.find(':') {
        Some(colon) => &authority[..colon],
        None => authority,
    };
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

fn holds(m: &RolloutMatch, r: &Request) -> bool {
    if let Some(hosts) = &m.hosts {
        let Some(host) = r.authority.as_deref().map(host_of) else {
            return false;
        };
        let admitted = hosts.iter().any(|entry| match entry.strip_prefix('*') {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            None => host == *entry,
        });
        if !admitted {
            return false;
        }
    }
    if let Some(paths) = &m.paths {
        let Some(path) = &r.path else { return false };
        if !paths.iter().any(|p| path.starts_with(p.as_str())) {
            return false;
        }
    }
    m.headers.iter().flatten().all(|(name, test)| {
        let first = r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        match (test, first) {
            (Test::Present(p), v) => v.is_some() == *p,
            (_, None) => false,
            (Test::Exact(x), Some(v)) => v == x,
            (Test::Prefix(x), Some(v)) => v.starts_with(x.as_str()),
            (Test::Suffix(x), Some(v)) => v.ends_with(x.as_str()),
        }
    })
}

#[test]
fn the_router_finds_the_first_rollout_whose_match_holds() {
    let routed = [std::cell::Cell::new(0usize), std::cell::Cell::new(0usize)];
    runner(3_000)
        .run(
            &(
                prop::collection::vec(rollout_match(), 1..=6),
                prop::collection::vec(request(), 1..=12),
            ),
            |(matches, requests)| {
                let config = config_json(&matches);
                let plugin = match PluginConfig::from_json(config.as_bytes()) {
                    Ok(plugin) => plugin,
                    // Refused by rules the generator does not follow (an empty
                    // `prefix`, a name that names nothing): nothing to route.
                    Err(errors) => {
                        prop_assert!(
                            errors.iter().all(|e| e.field.contains(".match.headers[")),
                            "{config}: {errors:?}"
                        );
                        return Ok(());
                    }
                };
                for r in &requests {
                    let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
                    if let Some(a) = &r.authority {
                        pairs.push((b":authority", a.as_bytes()));
                    }
                    if let Some(p) = &r.path {
                        pairs.push((b":path", p.as_bytes()));
                    }
                    pairs.extend(r.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
                    let map = serialize_headers(&pairs);
                    let found = plugin.router.route(&SerializedHeaders::new(&map));
                    let expected = matches.iter().position(|m| holds(m, r));
                    prop_assert_eq!(found, expected, "{} {:?}", config, r);
                    let count = &routed[usize::from(found.is_some())];
                    count.set(count.get() + 1);
                }
                Ok(())
            },
        )
        .unwrap();
    // Both outcomes were exercised, plenty of each.
    let routed = routed.map(std::cell::Cell::into_inner);
    assert!(routed[0] > 1000 && routed[1] > 1000, "{routed:?}");
}

#[test]
fn routing_never_panics_on_any_bytes() {
    let plugin = PluginConfig::from_json(
        br#"{"rollouts":[
            {"name":"a","match":{"hosts":["a.example","*.b.example"],"path_prefixes":["/x"]},"versions":[{"name":"s"}]},
            {"name":"b","match":{"hosts":["*.example"],"headers":[{"name":"x-c","suffix":"s"}]},"versions":[{"name":"s"}]},
            {"name":"c","match":{"headers":[{"name":"x-d","present":false}]},"versions":[{"name":"s"}]}]}"#,
    )
    .expect("valid");
    runner(20_000)
        .run(
            &(
                prop::collection::vec(any::<u8>(), 0..600),
                prop::collection::vec(any::<u8>(), 0..40),
                prop::collection::vec(any::<u8>(), 0..40),
            ),
            |(authority, path, value)| {
                let pairs: Vec<(&[u8], &[u8])> = vec![
                    (b":authority", &authority),
                    (b":path", &path),
                    (b"x-c", &value),
                ];
                let map = serialize_headers(&pairs);
                let _ = plugin.router.route(&SerializedHeaders::new(&map));
                // Truncated or inconsistent maps too.
                for cut in [0, map.len() / 2, map.len().saturating_sub(1)] {
                    let _ = plugin.router.route(&SerializedHeaders::new(&map[..cut]));
                }
                Ok(())
            },
        )
        .unwrap();
}
