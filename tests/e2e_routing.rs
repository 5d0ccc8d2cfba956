//! End-to-end: the built filter in a real Envoy 1.40 routes, sticks, overrides,
//! resists spoofing, survives hostile input, refuses bad configs, and counts
//! exactly what it did.

mod harness;

use canary_router::config::Config;
use harness::{assert_within_4_sigma, expected_version, user_ids, Envoy, EnvoyOptions, Metrics};
use std::collections::BTreeMap;

const CONFIG: &str = r#"{
  "route_header": "x-canary-version",
  "versions": [ { "name": "stable" }, { "name": "canary", "weight": 30 } ],
  "override": { "header": "x-canary", "cookie": "canary" },
  "users": { "canary": ["qa-alice", "qa-bob"], "stable": ["vip-carol"] },
  "hash": { "header": "x-user-id", "cookie": "uid", "salt": "e2e", "buckets": 10000 },
  "anonymous": "random",
  "metrics_prefix": "canary"
}"#;

/// CONFIG with the opt-in per-version response and latency metrics turned on.
fn config_with_response_metrics() -> String {
    CONFIG.replace(
        r#""metrics_prefix": "canary""#,
        r#""metrics_prefix": "canary", "metrics": { "latency": true, "responses": true }"#,
    )
}

#[test]
fn the_split_over_distinct_users_matches_the_weights_and_the_counters_match_exactly() {
    let envoy = Envoy::start(EnvoyOptions::with_config(config_with_response_metrics()));
    let config = Config::from_json(CONFIG.as_bytes()).unwrap();
    let users = user_ids("split", 4000);
    let mut client = envoy.client();
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for user in &users {
        let response = client.get_with(&[("x-user-id", user)]);
        assert_eq!(response.status, 200);
        let version = response.served_by();
        // Envoy's answer is the formula's answer, user by user.
        assert_eq!(version, expected_version(&config, user).0, "user {user}");
        *served.entry(version).or_default() += 1;
    }
    let canary = served.get("canary").copied().unwrap_or(0);
    assert_within_4_sigma("canary share", canary, users.len(), 0.30);
    assert_eq!(
        canary + served.get("stable").copied().unwrap_or(0),
        users.len()
    );

    let metrics = envoy.prometheus();
    for version in ["stable", "canary"] {
        let sent = served.get(version).copied().unwrap_or(0) as f64;
        assert_eq!(
            metrics.value(
                "canary_requests_total",
                &[("version", version), ("reason", "hash")]
            ),
            sent,
            "requests counter of {version}"
        );
        assert_eq!(
            metrics.value(
                "canary_responses_total",
                &[("version", version), ("code_class", "2xx")]
            ),
            sent,
            "responses counter of {version}"
        );
    }
    assert_eq!(
        metrics.sum("canary_requests_total", &[]),
        users.len() as f64
    );
    assert_eq!(
        metrics.sum("canary_responses_total", &[]),
        users.len() as f64
    );
    // The duration histogram exists per version and sees every request once
    // Envoy merges histograms (every stats flush, 5 s by default): poll for it.
    let histogram_count = || {
        let m = envoy.prometheus();
        ["stable", "canary"]
            .iter()
            .map(|v| {
                m.value(
                    "canary_request_duration_milliseconds_count",
                    &[("version", v)],
                )
            })
            .sum::<f64>()
    };
    assert!(
        harness::wait_until(std::time::Duration::from_secs(20), || histogram_count()
            == users.len() as f64),
        "duration histogram count {} != {}",
        histogram_count(),
        users.len()
    );
}

#[test]
fn a_user_stays_on_one_version_and_two_envoys_agree_on_every_user() {
    let first = Envoy::start(EnvoyOptions::with_config(CONFIG));
    let second = Envoy::start(EnvoyOptions::with_config(CONFIG));
    let (mut a, mut b) = (first.client(), second.client());
    let users = user_ids("agree", 1000);
    let mut canary = 0;
    for user in &users {
        let va = a.get_with(&[("x-user-id", user)]).served_by();
        let vb = b.get_with(&[("x-user-id", user)]).served_by();
        assert_eq!(va, vb, "the two proxies disagree on {user}");
        canary += usize::from(va == "canary");
    }
    assert!(
        canary > 0 && canary < users.len(),
        "both versions are exercised"
    );

    // Stickiness: many requests of the same users, through both proxies and by
    // header or cookie, never change version.
    for user in users.iter().take(20) {
        let first_answer = a.get_with(&[("x-user-id", user)]).served_by();
        for i in 0..25 {
            let by_cookie = format!("uid={user}");
            let response = if i % 2 == 0 {
                b.get_with(&[("x-user-id", user)])
            } else {
                a.get_with(&[("cookie", &by_cookie)])
            };
            assert_eq!(
                response.served_by(),
                first_answer,
                "{user} moved on request {i}"
            );
        }
    }
}

#[test]
fn overrides_by_header_and_cookie_and_listed_users_route_with_their_reason() {
    let envoy = Envoy::start(EnvoyOptions::with_config(CONFIG));
    let config = Config::from_json(CONFIG.as_bytes()).unwrap();
    let mut client = envoy.client();
    // A user the hash puts on stable, to see the override move them.
    let stable_user = user_ids("override", 200)
        .into_iter()
        .find(|u| expected_version(&config, u).0 == "stable")
        .unwrap();

    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![
                ("x-canary", "canary".into()),
                ("x-user-id", stable_user.clone()),
            ],
            "canary",
        ),
        (
            vec![
                ("cookie", "canary=canary".into()),
                ("x-user-id", stable_user.clone()),
            ],
            "canary",
        ),
        (vec![("cookie", "a=1; canary=canary; b=2".into())], "canary"),
        // Header beats cookie.
        (
            vec![
                ("x-canary", "stable".into()),
                ("cookie", "canary=canary".into()),
            ],
            "stable",
        ),
        (vec![("x-user-id", "qa-alice".into())], "canary"),
        (vec![("cookie", "uid=qa-bob".into())], "canary"),
        (
            vec![
                ("x-user-id", "vip-carol".into()),
                ("cookie", "uid=qa-alice".into()),
            ],
            "stable",
        ),
        // Unknown override: ignored, the user list decides.
        (
            vec![
                ("x-canary", "nightly".into()),
                ("x-user-id", "qa-alice".into()),
            ],
            "canary",
        ),
        (
            vec![
                ("x-canary", "Canary".into()),
                ("x-user-id", stable_user.clone()),
            ],
            "stable",
        ),
    ];
    for (headers, expected) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = client.get_with(&headers);
        assert_eq!(response.status, 200);
        assert_eq!(response.served_by(), *expected, "headers {headers:?}");
    }
    let m = envoy.prometheus();
    let count = |version: &str, reason: &str| {
        m.value(
            "canary_requests_total",
            &[("version", version), ("reason", reason)],
        )
    };
    assert_eq!(count("canary", "override"), 3.0);
    assert_eq!(count("stable", "override"), 1.0);
    assert_eq!(count("canary", "user_list"), 3.0);
    assert_eq!(count("stable", "user_list"), 1.0);
    assert_eq!(count("stable", "hash"), 1.0);
    assert_eq!(m.sum("canary_requests_total", &[]), cases.len() as f64);
}

#[test]
fn a_client_sent_route_header_never_picks_the_version() {
    let config = CONFIG.replace("\"random\"", "\"baseline\"");
    let envoy = Envoy::start(EnvoyOptions::with_config(config));
    let mut client = envoy.client();
    let spoofs: Vec<Vec<(&str, &str)>> = vec![
        vec![("x-canary-version", "canary")],
        vec![("X-Canary-Version", "canary")],
        vec![
            ("x-canary-version", "canary"),
            ("x-canary-version", "canary"),
        ],
        vec![
            ("x-canary-version", "stable"),
            ("X-CANARY-VERSION", "canary"),
        ],
        vec![("x-canary-version", "canary"), ("x-user-id", "vip-carol")],
    ];
    for headers in &spoofs {
        for _ in 0..10 {
            let response = client.get_with(headers);
            assert_eq!(response.status, 200);
            assert_eq!(response.served_by(), "stable", "spoofed with {headers:?}");
        }
    }
    let m = envoy.prometheus();
    assert_eq!(
        m.value(
            "canary_requests_total",
            &[("version", "stable"), ("reason", "baseline")]
        ),
        40.0
    );
    assert_eq!(
        m.value(
            "canary_requests_total",
            &[("version", "stable"), ("reason", "user_list")]
        ),
        10.0
    );
    assert_eq!(
        m.sum("canary_requests_total", &[("version", "canary")]),
        0.0
    );
}

#[test]
fn anonymous_requests_are_drawn_by_weight_or_sent_to_the_baseline() {
    let envoy = Envoy::start(EnvoyOptions::with_config(CONFIG));
    let mut client = envoy.client();
    let n = 3000;
    let canary = (0..n)
        .filter(|_| client.get_with(&[]).served_by() == "canary")
        .count();
    assert_within_4_sigma("anonymous canary share", canary, n, 0.30);
    let m = envoy.prometheus();
    assert_eq!(
        m.value(
            "canary_requests_total",
            &[("version", "canary"), ("reason", "random")]
        ),
        canary as f64
    );
    assert_eq!(
        m.value(
            "canary_requests_total",
            &[("version", "stable"), ("reason", "random")]
        ),
        (n - canary) as f64
    );
    drop(envoy);

    let envoy = Envoy::start(EnvoyOptions::with_config(
        CONFIG.replace("\"random\"", "\"baseline\""),
    ));
    let mut client = envoy.client();
    for _ in 0..200 {
        assert_eq!(client.get_with(&[("x-user-id", "")]).served_by(), "stable");
    }
    assert_eq!(
        envoy.prometheus().value(
            "canary_requests_total",
            &[("version", "stable"), ("reason", "baseline")]
        ),
        200.0
    );
}

#[test]
fn with_the_refuse_opt_in_a_bad_config_is_refused_and_the_log_names_the_field() {
    let cases = [
        (
            r#"{"versions":[{"name":"stable"},{"name":"canary","weight":120}]}"#,
            "versions[1].weight: 120 is above 100",
        ),
        (
            r#"{"versions":[{"name":"stable"}],"hash":{"header":"x-user-id","bucketz":100}}"#,
            "hash.bucketz: unknown field `bucketz`",
        ),
        (r#"{"versions":[{"name":"stable"}"#, "EOF while parsing"),
        (
            r#"{"versions":[{"name":"stable"},{"name":"canary","weight":0.5}],"hash":{"header":"u","buckets":100}}"#,
            "versions[1].weight: 0.5 is not a whole number of buckets",
        ),
    ];
    for (config, expected) in cases {
        // The refuse opt-in (CANARY_ROUTER_ON_BAD_CONFIG=refuse); the default, which
        // serves in safe mode instead, is tested in tests/e2e_mesh.rs.
        let refusing = EnvoyOptions {
            refuse_bad_config: true,
            ..EnvoyOptions::with_config(config)
        };
        match Envoy::try_start(refusing) {
            Ok(envoy) => panic!("Envoy accepted {config}; log:\n{}", envoy.log()),
            Err(failure) => {
                assert_ne!(failure.exit_code, Some(0), "Envoy must exit with an error");
                let line = failure
                    .log
                    .lines()
                    .find(|l| l.contains("config rejected"))
                    .unwrap_or_else(|| panic!("no rejection line for {config}:\n{}", failure.log));
                assert!(
                    line.contains(expected),
                    "{line:?} should contain {expected:?}"
                );
            }
        }
    }
}

#[test]
fn hostile_header_and_cookie_values_get_a_normal_answer_and_never_crash_the_vm() {
    let envoy = Envoy::start(EnvoyOptions::with_config(CONFIG));
    let mut client = envoy.client();
    let long = vec![b'u'; 16 * 1024];
    let long_cookie = [b"uid=".as_slice(), &long].concat();
    let not_utf8: &[u8] = &[0xff, 0xfe, 0xc3, 0x28, 0x80];
    let not_utf8_cookie = [b"uid=".as_slice(), not_utf8].concat();
    let cases: Vec<Vec<(&str, &[u8])>> = vec![
        vec![("x-user-id", b"")],
        vec![("x-canary", b"")],
        vec![("cookie", b"")],
        vec![("cookie", b"uid=")],
        vec![("cookie", b";;;==;uid")],
        vec![("cookie", b"uid=\"")],
        vec![("x-user-id", &long)],
        vec![("cookie", &long_cookie)],
        vec![("x-canary", &long)],
        vec![("x-user-id", not_utf8)],
        vec![("x-canary", not_utf8)],
        vec![("cookie", &not_utf8_cookie)],
        vec![("x-user-id", "ユーザー-名前-😀".as_bytes())],
        vec![("x-user-id", b"a\tb")],
        vec![
            ("x-user-id", b"one"),
            ("x-user-id", b"two"),
            ("x-user-id", b"three"),
        ],
    ];
    let mut answered = 0;
    for headers in &cases {
        for _ in 0..3 {
            let response = client.get(headers);
            assert_eq!(response.status, 200, "headers {headers:?}");
            let version = response.served_by();
            assert!(version == "stable" || version == "canary", "{version:?}");
            answered += 1;
        }
    }
    // The same user ID is still sticky after all of that: the VM is alive and intact.
    let config = Config::from_json(CONFIG.as_bytes()).unwrap();
    for user in user_ids("after-hostile", 50) {
        assert_eq!(
            client.get_with(&[("x-user-id", &user)]).served_by(),
            expected_version(&config, &user).0
        );
    }
    let stats = envoy.stats();
    let wasm_failures: Vec<(&String, &u64)> = stats
        .iter()
        .filter(|(name, value)| {
            name.starts_with("wasm")
                && (name.contains("fail") || name.contains("crash") || name.ends_with("vm_reload"))
                && **value > 0
        })
        .collect();
    assert!(wasm_failures.is_empty(), "Wasm failures: {wasm_failures:?}");
    // A panic logs `panicked at` and fails the VM (every later request then gets a 503).
    let log = envoy.log();
    for sign in ["panicked", "Uncaught", "RuntimeError"] {
        assert!(
            !log.contains(sign),
            "the Envoy log shows a VM failure ({sign}):\n{log}"
        );
    }
    let m = envoy.prometheus();
    assert_eq!(m.sum("canary_requests_total", &[]), (answered + 50) as f64);
}

#[test]
fn the_shipped_envoy_yaml_config_is_valid_and_serves_the_documented_split() {
    let shipped = harness::shipped_plugin_config();
    let config = Config::from_json(shipped.as_bytes()).expect("the shipped config is valid");
    assert_eq!(config.weights_at(0), vec![9000, 1000]);
    let envoy = Envoy::start(EnvoyOptions::default());
    let mut client = envoy.client();
    let users = user_ids("shipped", 2000);
    let canary = users
        .iter()
        .filter(|u| client.get_with(&[("x-user-id", u)]).served_by() == "canary")
        .count();
    assert_within_4_sigma("shipped config canary share", canary, users.len(), 0.10);
    let m = envoy.prometheus();
    assert_eq!(
        m.value(
            "canary_requests_total",
            &[("version", "canary"), ("reason", "hash")]
        ),
        canary as f64
    );
    // The shipped config records no per-version response or latency metrics
    // (opt-in): Envoy's cluster stats and Istio's standard metrics carry them.
    let text = envoy.admin_get("/stats/prometheus").body_text();
    assert!(!text.contains("canary_responses_total"), "{text}");
    assert!(
        !text.contains("canary_request_duration_milliseconds"),
        "{text}"
    );
}

#[test]
fn metrics_not_opted_into_are_absent_and_routing_is_unchanged() {
    let envoy = Envoy::start(EnvoyOptions::with_config(CONFIG));
    let parsed = Config::from_json(config_with_response_metrics().as_bytes()).unwrap();
    let mut client = envoy.client();
    for user in user_ids("metrics-off", 300) {
        assert_eq!(
            client.get_with(&[("x-user-id", &user)]).served_by(),
            expected_version(&parsed, &user).0
        );
    }
    let text = envoy.admin_get("/stats/prometheus").body_text();
    assert!(!text.contains("canary_responses_total"), "{text}");
    assert!(
        !text.contains("canary_request_duration_milliseconds"),
        "{text}"
    );
    assert_eq!(
        Metrics::parse(&text).sum("canary_requests_total", &[]),
        300.0
    );
}
