//! End-to-end: one plugin, three rollouts, in a real Envoy with two workers. Two
//! hosts; on the second, one rollout by path prefix and one by a header. Each user
//! is decided by the formula of the rollout their request matches (its own salt and
//! weights, computed here with the core's bucketing) and counted under that
//! rollout's label; requests no rollout matches pass untouched; a failing canary
//! trips one rollout's guard and leaves the others' routing and gauges alone. A bad
//! config keeps every rollout of the last good one; with none, safe mode removes
//! every rollout's route, token and pick headers.

mod harness;

use canary_router::bucket::bucket_of;
use canary_router::config::{Config, PluginConfig};
use harness::{
    assert_within_4_sigma, user_ids, wait_until, Envoy, EnvoyOptions, Metrics, Response,
};
use std::time::Duration;

const CONFIG: &str = r#"{
  "metrics": { "responses": true },
  "rollouts": [
    { "name": "shop", "match": { "hosts": ["a.example"] },
      "versions": [ { "name": "stable" }, { "name": "canary", "weight": 30 } ],
      "hash": { "header": "x-user-id", "salt": "shop" },
      "guard": { "version": "canary", "max_error_rate": 0.2, "min_requests": 20,
                 "window": "10s", "hold": "forever" } },
    { "name": "api-v2", "match": { "hosts": ["b.example"], "path_prefixes": ["/api/v2/"] },
      "versions": [ { "name": "stable" }, { "name": "canary", "weight": 50 } ],
      "hash": { "header": "x-user-id", "salt": "api-v2" } },
    { "name": "ios", "match": { "hosts": ["b.example"],
        "headers": [ { "name": "x-client", "exact": "ios" } ] },
      "versions": [ { "name": "stable" }, { "name": "canary", "weight": 20 } ],
      "hash": { "header": "x-user-id", "salt": "ios" },
      "guard": { "version": "canary", "max_error_rate": 0.2, "min_requests": 20,
                 "window": "10s", "hold": "forever" } }
  ]
}"#;

/// How a request reaches a rollout: its name, host, path and extra header.
type Route = (
    &'static str,
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
);

const ROUTES: [Route; 3] = [
    ("shop", "a.example", "/cart", None),
    ("api-v2", "b.example:80", "/api/v2/items?page=2", None),
    ("ios", "B.example", "/home", Some(("x-client", "ios"))),
];

fn plugin() -> PluginConfig {
    PluginConfig::from_json(CONFIG.as_bytes()).expect("the test config is valid")
}

fn rollout<'a>(plugin: &'a PluginConfig, name: &str) -> &'a Config {
    &plugin.rollouts[plugin.rollout_index(name).expect("rollout")].config
}

/// The version the rollout's own formula gives `user`: murmur3 with its salt,
/// bucket ranges from its weights.
fn expected(config: &Config, user: &str) -> String {
    let bucket = bucket_of(&config.hash.key_prefix, user.as_bytes(), config.buckets);
    config.versions[config.split_at(0).version_of_bucket(bucket)]
        .name
        .clone()
}

fn send(
    client: &mut harness::Client,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut all: Vec<(&str, &[u8])> = vec![("host", host.as_bytes())];
    all.extend(headers.iter().map(|(k, v)| (*k, v.as_bytes())));
    client
        .request("GET", path, &all)
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"))
}

/// Sends `user`'s request to the rollout at `route`.
fn send_to(client: &mut harness::Client, route: usize, user: &str) -> Response {
    let (_, host, path, extra) = ROUTES[route];
    let mut headers = vec![("x-user-id", user)];
    headers.extend(extra);
    send(client, host, path, &headers)
}

fn requests_total(m: &Metrics, rollout: &str, version: &str, reason: &str) -> f64 {
    m.value(
        "canary_requests_total",
        &[
            ("rollout", rollout),
            ("version", version),
            ("reason", reason),
        ],
    )
}

#[test]
fn each_user_is_decided_by_the_formula_of_their_rollout_and_counted_under_its_label() {
    let plugin = plugin();
    let envoy = Envoy::start(EnvoyOptions::with_config(CONFIG));
    let mut client = envoy.client();
    let users = user_ids("rollouts", 400);

    let mut canary = [0usize; 3];
    let mut salts_disagree = 0;
    for user in &users {
        let mut versions = Vec::new();
        for (route, (name, ..)) in ROUTES.iter().enumerate() {
            let want = expected(rollout(&plugin, name), user);
            let r = send_to(&mut client, route, user);
            assert_eq!(r.status, 200, "{name} {user}");
            assert_eq!(r.served_by(), want, "{name} {user}");
            canary[route] += usize::from(want == "canary");
            versions.push(want);
        }
        salts_disagree += usize::from(versions[0] != versions[1] || versions[1] != versions[2]);
    }
    for (route, (name, ..)) in ROUTES.iter().enumerate() {
        let weight = rollout(&plugin, name).weights_at(0)[1];
        assert_within_4_sigma(
            &format!("{name}'s canary share"),
            canary[route],
            users.len(),
            f64::from(weight) / 10_000.0,
        );
    }
    // Each rollout's own salt: the same users land differently.
    assert!(salts_disagree > users.len() / 4, "{salts_disagree}");
    eprintln!(
        "rollouts: of {} users, canary in shop {}, api-v2 {}, ios {} (weights 30%, 50%, 20%); {salts_disagree} users on different versions across rollouts",
        users.len(),
        canary[0],
        canary[1],
        canary[2]
    );

    // Counted under each rollout's label, exactly.
    let counted = |m: &Metrics| {
        ROUTES.iter().enumerate().all(|(route, (name, ..))| {
            requests_total(m, name, "canary", "hash") == canary[route] as f64
                && requests_total(m, name, "stable", "hash") == (users.len() - canary[route]) as f64
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || counted(&envoy.prometheus())),
        "{:#?}",
        envoy.prometheus().lines_for("canary_requests_total")
    );
    let m = envoy.prometheus();
    for (name, ..) in ROUTES {
        let weight = rollout(&plugin, name).weights_at(0)[1];
        assert_eq!(
            m.value(
                "canary_weight_basis_points",
                &[("rollout", name), ("version", "canary")]
            ),
            f64::from(weight),
            "{name}"
        );
        assert_eq!(
            m.value(
                "canary_responses_total",
                &[
                    ("rollout", name),
                    ("version", "stable"),
                    ("code_class", "2xx")
                ]
            ),
            requests_total(&m, name, "stable", "hash"),
            "{name}: responses counted under the rollout too"
        );
    }
    // Every per-version series carries its rollout; only the proxy's config
    // health series have none.
    let untagged: Vec<String> = m
        .samples
        .iter()
        .filter(|(n, l, _)| {
            n.starts_with("canary_")
                && !n.starts_with("canary_config_")
                && !l.contains_key("rollout")
        })
        .map(|(n, l, _)| format!("{n}{l:?}"))
        .collect();
    assert!(
        untagged.is_empty(),
        "series without a rollout label: {untagged:?}"
    );
    assert!(m.samples.iter().any(|(n, l, _)| n == "canary_guard_tripped"
        && l.get("rollout").map(String::as_str) == Some("ios")));
}

#[test]
fn requests_no_rollout_matches_pass_untouched_and_uncounted() {
    let envoy = Envoy::start(EnvoyOptions {
        echo_request_headers: vec!["x-canary-version".into()],
        ..EnvoyOptions::with_config(CONFIG)
    });
    let mut client = envoy.client();
    let total = |m: &Metrics| m.sum("canary_requests_total", &[]);
    // One matched request first, so that the counters exist.
    assert_eq!(send_to(&mut client, 0, "someone").status, 200);
    assert!(wait_until(Duration::from_secs(10), || total(
        &envoy.prometheus()
    ) == 1.0));

    let untouched = [
        ("c.example", "/api/v2/", vec![("x-client", "ios")]),
        ("a.example.org", "/", vec![]),
        ("sub.a.example", "/", vec![]),
        ("b.example", "/api/v1/", vec![("x-client", "android")]),
        ("b.example", "/API/v2/", vec![("x-client", "IOS")]),
        ("b.example", "/home", vec![]),
    ];
    for (host, path, headers) in &untouched {
        for user in ["u1", "u2", "u3"] {
            let mut with_user = headers.clone();
            with_user.push(("x-user-id", user));
            // No route header written: the route table's default serves it.
            let r = send(&mut client, host, path, &with_user);
            assert_eq!(
                (r.status, r.served_by().as_str()),
                (200, "stable"),
                "{host}{path}"
            );
            assert_eq!(
                r.header("x-echo-x-canary-version").unwrap_or_default(),
                b"",
                "{host}{path}"
            );
            // A client-sent route header is not removed either: it routes.
            with_user.push(("x-canary-version", "canary"));
            let r = send(&mut client, host, path, &with_user);
            assert_eq!(
                (r.status, r.served_by().as_str()),
                (200, "canary"),
                "{host}{path}"
            );
            assert_eq!(r.header("x-echo-x-canary-version"), Some(&b"canary"[..]));
        }
    }
    // A matched request's client-sent route header is replaced.
    let r = send(
        &mut client,
        "a.example",
        "/",
        &[("x-user-id", "someone"), ("x-canary-version", "bogus")],
    );
    let routed = r.header("x-echo-x-canary-version").map(<[u8]>::to_vec);
    assert!(
        routed == Some(b"stable".to_vec()) || routed == Some(b"canary".to_vec()),
        "{routed:?}"
    );
    // None of the untouched requests was counted; the last matched one was.
    assert!(wait_until(Duration::from_secs(10), || total(
        &envoy.prometheus()
    ) == 2.0));
    assert_eq!(total(&envoy.prometheus()), 2.0);
    eprintln!(
        "untouched: {} requests to unmatched hosts, paths and headers passed with no header written or removed, none counted",
        untouched.len() * 3 * 2
    );
}

#[test]
fn a_guard_trip_in_one_rollout_leaves_the_others_routing_and_gauges_alone() {
    let plugin = plugin();
    let envoy = Envoy::start(EnvoyOptions::with_config(CONFIG));
    let mut client = envoy.client();
    let users = user_ids("guard", 300);
    let in_canary = |name: &str| -> Vec<&String> {
        users
            .iter()
            .filter(|u| expected(rollout(&plugin, name), u) == "canary")
            .collect()
    };
    let (shop_canary, api_canary, ios_canary) =
        (in_canary("shop"), in_canary("api-v2"), in_canary("ios"));
    let gauge = |name: &str, rollout: &str| {
        envoy
            .prometheus()
            .value(name, &[("rollout", rollout), ("version", "canary")])
    };
    let weights_before: Vec<f64> = ROUTES
        .iter()
        .map(|(name, ..)| gauge("canary_weight_basis_points", name))
        .collect();

    // The canary fails. The shop's canary users trip its guard; api-v2's canary
    // users reach the same failing canary, but api-v2 has no guard.
    envoy.set_runtime("demo.canary_failure_percent", "100");
    let mut shop_failures = 0;
    let mut api_failures = 0;
    let mut tripped = false;
    for round in 0..200 {
        let user = shop_canary[round % shop_canary.len()];
        let r = send_to(&mut client, 0, user);
        if r.status == 503 {
            shop_failures += 1;
        } else {
            assert_eq!((r.status, r.served_by().as_str()), (200, "stable"));
            tripped = true;
        }
        let user = api_canary[round % api_canary.len()];
        let r = send_to(&mut client, 1, user);
        assert_eq!(
            (r.status, r.served_by().as_str()),
            (503, "canary"),
            "api-v2 {user}"
        );
        api_failures += 1;
        if tripped && round > 40 {
            break;
        }
    }
    assert!(
        tripped,
        "the shop's guard never tripped ({shop_failures} failures)"
    );
    assert!(
        wait_until(Duration::from_secs(10), || gauge(
            "canary_guard_tripped",
            "shop"
        ) == 1.0),
        "the shop's guard gauge"
    );
    eprintln!(
        "guard: the shop's guard tripped after {shop_failures} failed canary requests; api-v2 served {api_failures} failing canary requests, untouched"
    );

    // The shop's canary users now get stable, for the guard; api-v2's still reach
    // the canary (and fail); the ios guard never saw a failure.
    for user in shop_canary.iter().take(20) {
        let r = send_to(&mut client, 0, user);
        assert_eq!(
            (r.status, r.served_by().as_str()),
            (200, "stable"),
            "shop {user}"
        );
    }
    for user in api_canary.iter().take(20) {
        let r = send_to(&mut client, 1, user);
        assert_eq!(
            (r.status, r.served_by().as_str()),
            (503, "canary"),
            "api-v2 {user}"
        );
    }
    envoy.set_runtime("demo.canary_failure_percent", "0");
    for user in &ios_canary {
        let r = send_to(&mut client, 2, user);
        assert_eq!(
            (r.status, r.served_by().as_str()),
            (200, "canary"),
            "ios {user}"
        );
    }
    // The shop's guard holds "forever"; the others never tripped.
    for user in shop_canary.iter().take(20) {
        assert_eq!(
            send_to(&mut client, 0, user).served_by(),
            "stable",
            "shop {user}"
        );
    }
    let m = envoy.prometheus();
    assert_eq!(gauge("canary_guard_tripped", "shop"), 1.0);
    assert_eq!(gauge("canary_guard_tripped", "ios"), 0.0);
    assert_eq!(
        m.sum("canary_guard_tripped", &[("rollout", "api-v2")]),
        0.0,
        "api-v2 has no guard, so no guard gauge"
    );
    assert!(requests_total(&m, "shop", "stable", "guard") >= 40.0);
    for name in ["api-v2", "ios"] {
        assert_eq!(requests_total(&m, name, "stable", "guard"), 0.0, "{name}");
    }
    assert_eq!(
        requests_total(&m, "api-v2", "canary", "hash"),
        (api_failures + 20) as f64
    );
    assert_eq!(
        requests_total(&m, "ios", "canary", "hash"),
        ios_canary.len() as f64
    );
    let weights_after: Vec<f64> = ROUTES
        .iter()
        .map(|(name, ..)| gauge("canary_weight_basis_points", name))
        .collect();
    assert_eq!(weights_before, weights_after, "the weight gauges");
    assert_eq!(weights_after, [3000.0, 5000.0, 2000.0]);
    let log = envoy.log();
    let trips: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("guard tripped:"))
        .collect();
    assert_eq!(trips.len(), 1, "{log}");
    assert!(
        trips[0].contains("rollout shop: guard tripped:"),
        "{}",
        trips[0]
    );
}

/// Every user of `users` gets, on every rollout, the version `config` gives them.
fn assert_decided_by(client: &mut harness::Client, config: &str, users: &[String], when: &str) {
    let plugin = PluginConfig::from_json(config.as_bytes()).expect("valid");
    for user in users {
        for (route, (name, ..)) in ROUTES.iter().enumerate() {
            let r = send_to(client, route, user);
            assert_eq!(
                (r.status, r.served_by()),
                (200, expected(rollout(&plugin, name), user)),
                "{when}: {name} {user}"
            );
        }
    }
}

#[test]
fn a_bad_config_keeps_every_rollout_of_the_last_good_one() {
    let envoy = Envoy::start(EnvoyOptions {
        filter_from_ecds: true,
        ..EnvoyOptions::with_config(CONFIG)
    });
    let mut client = envoy.client();
    let users = user_ids("last-good", 60);
    assert_decided_by(&mut client, CONFIG, &users, "the first config");

    // Every rollout changed, and one of them broken: nothing of it is taken.
    let bad = CONFIG
        .replace(r#""salt": "shop""#, r#""salt": "shop-2""#)
        .replace(r#""weight": 50"#, r#""weight": 120"#);
    let log_start = envoy.log().len();
    envoy
        .push_ecds(&bad)
        .expect("taken by Envoy, refused by the filter");
    assert!(
        wait_until(Duration::from_secs(15), || envoy.log()[log_start..]
            .contains("keeps its last good config")),
        "{}",
        envoy.log()
    );
    let log = envoy.log()[log_start..].to_string();
    assert!(
        log.contains(
            "config rejected (1 problem): rollouts[1].versions[1].weight: 120 is above 100"
        ),
        "{log}"
    );
    assert!(
        log.contains("keeps its last good config: 3 rollouts: shop: route_header=x-canary-version versions stable=70% canary=30%"),
        "{log}"
    );
    let mut fresh = envoy.client();
    assert_decided_by(&mut fresh, CONFIG, &users, "after the bad config");

    // A good one is taken, every rollout of it.
    let good = CONFIG
        .replace(r#""salt": "shop""#, r#""salt": "shop-2""#)
        .replace(r#""weight": 50"#, r#""weight": 10"#);
    envoy.push_ecds(&good).expect("taken");
    let mut fresh = envoy.client();
    assert_decided_by(&mut fresh, &good, &users, "after the good config");
    assert_eq!(
        envoy.prometheus().value(
            "canary_weight_basis_points",
            &[("rollout", "api-v2"), ("version", "canary")]
        ),
        1000.0
    );
}

#[test]
fn safe_mode_removes_every_rollouts_route_token_and_pick_header() {
    // Refused (a weight above 100), with no good config before it: safe mode, which
    // still reads each rollout's headers.
    let bad = r#"{
      "rollouts": [
        { "name": "a", "match": { "hosts": ["a.example"] }, "route_header": "x-a",
          "versions": [ { "name": "stable" }, { "name": "canary", "weight": 120 } ] },
        { "name": "b", "match": { "hosts": ["b.example"] }, "route_header": "x-b",
          "versions": [ { "name": "stable" }, { "name": "canary" } ],
          "override": { "header": "x-canary", "token": { "header": "x-b-token", "values": ["0123456789abcdef"] } },
          "hash": { "header": "x-user-id", "pick_header": "x-pick" } }
      ]
    }"#;
    let echoed = ["x-canary-version", "x-a", "x-b", "x-b-token", "x-pick"];
    let envoy = Envoy::start(EnvoyOptions {
        filter_from_ecds: true,
        echo_request_headers: echoed.iter().map(|h| h.to_string()).collect(),
        ..EnvoyOptions::with_config(bad)
    });
    assert!(
        wait_until(Duration::from_secs(15), || envoy
            .log()
            .contains("x-canary-version, x-a, x-b, x-b-token, x-pick removed")),
        "{}",
        envoy.log()
    );
    let mut client = envoy.client();
    for host in ["a.example", "b.example", "elsewhere.example"] {
        let spoofed: Vec<(&str, &str)> = echoed.iter().map(|h| (*h, "canary")).collect();
        let r = send(&mut client, host, "/", &spoofed);
        assert_eq!(
            (r.status, r.served_by().as_str()),
            (200, "stable"),
            "{host}"
        );
        for header in echoed {
            assert_eq!(
                r.header(&format!("x-echo-{header}")).unwrap_or_default(),
                b"",
                "{host}: {header} reached the upstream"
            );
        }
    }
}
