//! End-to-end: the pluginConfig shipped in istio/app/wasmplugin.yaml, turned into
//! the JSON string Istio hands to Envoy, runs in a real Envoy 1.40 with the built
//! filter and does what the guide says: 10% of users on the canary by a sticky
//! hash, QA users and the override header on the canary, anonymous requests and
//! spoofed route headers on stable. The metrics it exports are the series the
//! Prometheus rules and the Grafana dashboard select. The same config with a gRPC
//! service behind it (grpcio on both ends, HTTP/2 upstreams) routes each user's
//! calls alike, counts them by gRPC code, and its guard trips on `UNAVAILABLE`.

mod harness;
mod istio_support;

use canary_router::config::Config;
use harness::{assert_within_4_sigma, expected_version, user_ids, Envoy, EnvoyOptions, Metrics};
use istio_support::{
    istio_plugin_config_json, load_docs, load_manifests, of_kind, repo_root, selectors,
};
use std::collections::{BTreeMap, BTreeSet};

/// The JSON the sidecar WasmPlugin's pluginConfig becomes in Envoy.
fn shipped_istio_json() -> String {
    let docs = load_manifests(&repo_root());
    let plugin = of_kind(&docs, "WasmPlugin")
        .into_iter()
        .find(|p| p.file == "istio/app/wasmplugin.yaml")
        .expect("istio/app/wasmplugin.yaml");
    istio_plugin_config_json(&plugin.value["spec"]["pluginConfig"])
}

const USERS: usize = 3000;

/// The host a caller in the mesh sends (the port is ignored): the shipped plugin's
/// `hosts` lists myapp's names, and leaves requests to any other host untouched.
const CALLER_HOST: &str = "myapp:80";

#[test]
fn the_istio_plugin_config_splits_ten_percent_of_users_in_a_real_envoy() {
    let json = shipped_istio_json();
    let config = Config::from_json(json.as_bytes()).expect("the filter accepts Istio's JSON");
    let envoy = Envoy::start(EnvoyOptions::with_config(json));
    let mut client = envoy.client();

    // 3000 distinct users: the documented 10%, user by user as the formula says.
    let users = user_ids("istio-wasmplugin", USERS);
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for user in &users {
        let response = client.get_with(&[("host", CALLER_HOST), ("x-user-id", user)]);
        assert_eq!(response.status, 200, "user {user}");
        let version = response.served_by();
        assert_eq!(version, expected_version(&config, user).0, "user {user}");
        *served.entry(version).or_default() += 1;
    }
    let canary = served.get("canary").copied().unwrap_or(0);
    println!(
        "canary: {canary} of {USERS} users ({:.2}%)",
        100.0 * canary as f64 / USERS as f64
    );
    assert_within_4_sigma("canary share of users", canary, USERS, 0.10);
    assert_eq!(canary + served.get("stable").copied().unwrap_or(0), USERS);

    // Sticky: a user keeps their version (also when sent as the uid cookie).
    let (sticky_user, sticky_version) = users
        .iter()
        .map(|u| (u, expected_version(&config, u).0))
        .find(|(_, v)| v == "canary")
        .expect("some canary user");
    for _ in 0..20 {
        assert_eq!(
            client
                .get_with(&[("host", CALLER_HOST), ("x-user-id", sticky_user)])
                .served_by(),
            sticky_version
        );
        let cookie = format!("uid={sticky_user}");
        assert_eq!(
            client
                .get_with(&[("host", CALLER_HOST), ("cookie", &cookie)])
                .served_by(),
            sticky_version
        );
    }

    // QA users are always on the canary; the override header picks a version;
    // requests without a user ID stay on stable (anonymous: baseline); a client
    // cannot pick a version with the route header.
    for qa in ["qa-alice", "qa-bob"] {
        assert_eq!(
            client
                .get_with(&[("host", CALLER_HOST), ("x-user-id", qa)])
                .served_by(),
            "canary"
        );
    }
    let stable_user = users
        .iter()
        .find(|u| expected_version(&config, u).0 == "stable")
        .expect("some stable user");
    assert_eq!(
        client
            .get_with(&[
                ("host", CALLER_HOST),
                ("x-user-id", stable_user),
                ("x-canary", "canary")
            ])
            .served_by(),
        "canary"
    );
    assert_eq!(
        client
            .get_with(&[
                ("host", CALLER_HOST),
                ("x-user-id", sticky_user),
                ("cookie", "canary=stable")
            ])
            .served_by(),
        "stable"
    );
    // Another Service on the same port: untouched, so a route header its client
    // sent stays (this route table then honours it) and nothing is counted.
    let before = envoy.prometheus().sum("canary_requests_total", &[]);
    let other = client.get_with(&[("host", "payments"), ("x-canary-version", "canary")]);
    assert_eq!(
        other.served_by(),
        "canary",
        "requests to other hosts are left alone"
    );
    assert_eq!(envoy.prometheus().sum("canary_requests_total", &[]), before);
    for _ in 0..50 {
        assert_eq!(
            client.get_with(&[("host", CALLER_HOST)]).served_by(),
            "stable"
        );
        assert_eq!(
            client
                .get_with(&[("host", CALLER_HOST), ("x-canary-version", "canary")])
                .served_by(),
            "stable",
            "a client-sent route header is overwritten"
        );
    }

    // The counters: what was sent, per version and reason, with Istio's tags as labels.
    let metrics = envoy.prometheus();
    let hash_canary = metrics.value(
        "canary_requests_total",
        &[("version", "canary"), ("reason", "hash")],
    );
    let hash_stable = metrics.value(
        "canary_requests_total",
        &[("version", "stable"), ("reason", "hash")],
    );
    // 3000 split users + 20 sticky requests by header and 20 by cookie.
    assert_eq!(hash_canary, (canary + 40) as f64);
    assert_eq!(hash_stable, (USERS - canary) as f64);
    assert_eq!(
        metrics.value(
            "canary_requests_total",
            &[("version", "canary"), ("reason", "user_list")]
        ),
        2.0
    );
    assert_eq!(
        metrics.value(
            "canary_requests_total",
            &[("version", "canary"), ("reason", "override")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value(
            "canary_requests_total",
            &[("version", "stable"), ("reason", "override")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value(
            "canary_requests_total",
            &[("version", "stable"), ("reason", "baseline")]
        ),
        100.0
    );
    // The gauges the dashboard's weight and guard panels read.
    assert_eq!(
        metrics.value("canary_weight_basis_points", &[("version", "canary")]),
        1000.0
    );
    assert_eq!(
        metrics.value("canary_weight_basis_points", &[("version", "stable")]),
        9000.0
    );
    assert_eq!(
        metrics.value("canary_guard_tripped", &[("version", "canary")]),
        0.0
    );
    assert_eq!(
        metrics.sum("canary_requests_total", &[("reason", "guard")]),
        0.0
    );

    assert_rules_and_dashboard_select_real_series(&metrics);
}

/// Every canary-router selector in the rules and the dashboard matches a series the
/// real filter exported, with the labels it filters on.
fn assert_rules_and_dashboard_select_real_series(metrics: &Metrics) {
    let rules = load_docs(&repo_root(), "istio/monitoring/prometheus-rules.yaml").expect("rules");
    let mut exprs: Vec<String> = rules[0].value["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| r["expr"].as_str().expect("expr").to_string())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("istio/monitoring/grafana-dashboard.json"))
            .expect("dashboard"),
    )
    .expect("JSON");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    let exported: BTreeSet<&str> = metrics.samples.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut checked = BTreeSet::new();
    for expr in &exprs {
        for s in selectors(expr, &["canary_"]) {
            assert!(
                exported.contains(s.metric.as_str()),
                "{} (in {expr}) is not exported; exported: {exported:?}",
                s.metric
            );
            for (label, op, value) in &s.matchers {
                // The dashboard's `rollout=~"$rollout"`: a single-rollout config's
                // series have no rollout label, which `=~".*"` (All) matches.
                if label == "rollout" {
                    assert_eq!((op.as_str(), value.as_str()), ("=~", "$rollout"));
                    continue;
                }
                let series: Vec<_> = metrics
                    .samples
                    .iter()
                    .filter(|(n, _, _)| n == &s.metric)
                    .collect();
                assert!(
                    series.iter().all(|(_, l, _)| l.contains_key(label)),
                    "{} has no label {label}",
                    s.metric
                );
                if op == "=" {
                    assert!(
                        series.iter().any(|(_, l, _)| l.get(label) == Some(value)),
                        "no {}{{{label}=\"{value}\"}} series",
                        s.metric
                    );
                }
            }
            checked.insert(s.metric.clone());
        }
    }
    for m in [
        "canary_weight_basis_points",
        "canary_guard_tripped",
        "canary_requests_total",
    ] {
        assert!(checked.contains(m), "{m} checked");
    }
}

/// A failing canary, as the error alert and the guard panel see it: its 5xx are
/// counted by the proxy per version (Envoy's cluster stats here, Istio's
/// istio_requests_total in a mesh), and the
/// shipped guard (over 5% failures among at least 50 responses) sends the canary's
/// users back to stable on this proxy, with canary_guard_tripped at 1.
#[test]
fn a_failing_canary_trips_the_shipped_guard_and_shows_in_the_alerted_series() {
    let json = shipped_istio_json();
    let config = Config::from_json(json.as_bytes()).expect("config");
    let mut options = EnvoyOptions::with_config(json);
    // Envoy answers 503 itself: the canary's cluster points at a closed port.
    options.dead_upstreams.push("canary".into());
    let envoy = Envoy::start(options);
    let mut client = envoy.client();
    let users = user_ids("istio-failing", 1500);
    let (mut failed, mut rerouted, mut stable_ok) = (0usize, 0usize, 0usize);
    for user in &users {
        let response = client.get_with(&[("host", CALLER_HOST), ("x-user-id", user)]);
        match (expected_version(&config, user).0.as_str(), response.status) {
            ("canary", 503) => {
                assert_eq!(rerouted, 0, "no canary failure after the guard tripped");
                failed += 1;
            }
            ("canary", 200) => {
                assert_eq!(response.served_by(), "stable");
                rerouted += 1;
            }
            ("stable", 200) => stable_ok += 1,
            (v, status) => panic!("user {user} ({v}): status {status}"),
        }
    }
    // The guard may trip once it has 50 canary responses; every one failed, so it
    // trips then, and the canary's users after that are served by stable.
    assert!(
        (50..=55).contains(&failed),
        "canary failures before the trip: {failed} (min_requests 50)"
    );
    assert!(rerouted > 50, "canary users rerouted to stable: {rerouted}");

    let metrics = envoy.prometheus();
    assert_eq!(
        metrics.value("canary_guard_tripped", &[("version", "canary")]),
        1.0
    );
    assert_eq!(
        metrics.value(
            "canary_requests_total",
            &[("version", "stable"), ("reason", "guard")]
        ),
        rerouted as f64
    );
    // The shipped config leaves per-version response and latency metrics to the
    // proxy (opt-in in the filter): in Istio istio_requests_total by
    // destination_version, here Envoy's own per-cluster stats, which count every
    // canary failure and every stable answer without the filter's help.
    let text = envoy.admin_get("/stats/prometheus").body_text();
    assert!(!text.contains("canary_responses_total"), "{text}");
    assert!(
        !text.contains("canary_request_duration_milliseconds"),
        "{text}"
    );
    assert_eq!(
        metrics.value(
            "envoy_cluster_upstream_rq_xx",
            &[
                ("envoy_cluster_name", "canary"),
                ("envoy_response_code_class", "5")
            ]
        ),
        failed as f64
    );
    assert_eq!(
        metrics.value(
            "envoy_cluster_upstream_rq_xx",
            &[
                ("envoy_cluster_name", "stable"),
                ("envoy_response_code_class", "2")
            ]
        ),
        (stable_ok + rerouted) as f64
    );
}

/// The shipped config in front of a gRPC service: users sent in gRPC metadata land
/// where the formula puts them; when the canary answers every call with
/// `UNAVAILABLE` (HTTP 200), the shipped guard trips after its 50 calls, and the
/// filter's gRPC outcome counters, opted in here (`metrics.responses`; the
/// dashboard reads Istio's istio_requests_total{grpc_response_status} instead),
/// count every call by version and code.
#[test]
fn the_istio_plugin_config_routes_grpc_calls_and_its_guard_trips_on_unavailable() {
    use harness::grpc::{GrpcServer, How, PeerClient};
    let mut plugin: serde_json::Value =
        serde_json::from_str(&shipped_istio_json()).expect("shipped JSON");
    plugin["metrics"] = serde_json::json!({ "responses": true });
    let json = plugin.to_string();
    let config = Config::from_json(json.as_bytes()).expect("config");
    let stable = GrpcServer::ok("stable");
    let canary = GrpcServer::start("canary", "UNAVAILABLE", How::AfterMetadata);
    let envoy = Envoy::start(EnvoyOptions {
        h2_upstreams: vec![
            ("stable".into(), stable.port),
            ("canary".into(), canary.port),
        ],
        ..EnvoyOptions::with_config(json)
    });
    let mut client = PeerClient::start();
    let users = user_ids("istio-grpc", 1500);
    let (mut failed, mut rerouted, mut stable_ok) = (0usize, 0usize, 0usize);
    for user in &users {
        let answer = client.call_at(
            envoy.listener,
            Some(CALLER_HOST),
            "Unary",
            &[("x-user-id", user)],
        );
        match (
            expected_version(&config, user).0.as_str(),
            answer.code.as_str(),
        ) {
            ("canary", "UNAVAILABLE") => {
                assert_eq!(rerouted, 0, "no canary failure after the guard tripped");
                assert_eq!(answer.served_by.as_deref(), Some("canary"));
                failed += 1;
            }
            ("canary", "OK") => {
                assert_eq!(answer.served_by.as_deref(), Some("stable"));
                rerouted += 1;
            }
            ("stable", "OK") => {
                assert_eq!(answer.served_by.as_deref(), Some("stable"), "user {user}");
                stable_ok += 1;
            }
            (v, code) => panic!("user {user} ({v}): {code} {answer:?}"),
        }
    }
    println!("gRPC under the Istio config: {failed} canary calls failed before the trip, {rerouted} rerouted, {stable_ok} stable");
    assert!(
        (50..=55).contains(&failed),
        "canary failures before the trip: {failed} (min_requests 50)"
    );
    assert!(rerouted > 50, "canary users rerouted to stable: {rerouted}");
    let metrics = envoy.prometheus();
    assert_eq!(
        metrics.value("canary_guard_tripped", &[("version", "canary")]),
        1.0
    );
    let grpc = |version: &str, code: &str| {
        metrics.value(
            "canary_grpc_responses_total",
            &[("version", version), ("grpc_code", code)],
        )
    };
    assert_eq!(grpc("canary", "UNAVAILABLE"), failed as f64);
    assert_eq!(grpc("stable", "OK"), (stable_ok + rerouted) as f64);
    assert_eq!(
        metrics.sum("canary_grpc_responses_total", &[]),
        users.len() as f64
    );
    // What HTTP saw: nothing but 200s.
    assert_eq!(
        metrics.sum("canary_responses_total", &[("code_class", "2xx")]),
        users.len() as f64
    );
    assert_rules_and_dashboard_select_real_series(&metrics);
}
