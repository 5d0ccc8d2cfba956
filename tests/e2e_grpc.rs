//! End-to-end: gRPC and HTTP/2 through a real Envoy with the built filter, a real
//! gRPC stack on both ends (grpcio servers and clients, `tests/grpc/peer.py`),
//! HTTP/2 to the upstreams. Routing over HTTP/2 follows the pure core; gRPC
//! outcomes are counted per version and code from `grpc-status` wherever it
//! travels (`metrics.responses`, opted in here); the guard trips on a canary that answers `UNAVAILABLE` and on Envoy's
//! own answers for an unreachable one, and never on `NOT_FOUND`.

mod harness;

use canary_router::config::Config;
use harness::grpc::{GrpcServer, How, PeerClient};
use harness::{expected_version, user_ids, Envoy, EnvoyOptions, Metrics};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Envoy in front of two grpcio servers, HTTP/2 to both.
fn envoy_with(config: &str, stable: &GrpcServer, canary: Option<&GrpcServer>) -> Envoy {
    let mut h2_upstreams = vec![("stable".to_string(), stable.port)];
    let mut dead_upstreams = Vec::new();
    match canary {
        Some(canary) => h2_upstreams.push(("canary".to_string(), canary.port)),
        None => dead_upstreams.push("canary".to_string()),
    }
    Envoy::start(EnvoyOptions {
        h2_upstreams,
        dead_upstreams,
        ..EnvoyOptions::with_config(config)
    })
}

fn grpc_count(m: &Metrics, version: &str, code: &str) -> f64 {
    m.value(
        "canary_grpc_responses_total",
        &[("version", version), ("grpc_code", code)],
    )
}

const ROUTING: &str = r#"{
  "versions": [ { "name": "stable" }, { "name": "canary", "weight": 30 } ],
  "hash": { "header": "x-user-id", "salt": "grpc" },
  "override": { "header": "x-canary" },
  "anonymous": "baseline",
  "metrics": { "responses": true }
}"#;

#[test]
fn grpc_calls_are_routed_over_http2_as_the_core_decides_and_users_stay_put() {
    let config = Config::from_json(ROUTING.as_bytes()).unwrap();
    let (stable, canary) = (GrpcServer::ok("stable"), GrpcServer::ok("canary"));
    let envoy = envoy_with(ROUTING, &stable, Some(&canary));
    let mut client = PeerClient::start();
    let users = user_ids("grpc-routing", 600);
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for user in &users {
        let answer = client.unary_as(envoy.listener, user);
        assert_eq!(answer.code, "OK", "{user}: {answer:?}");
        let version = answer.served_by.clone().expect("x-served-by");
        assert_eq!(version, expected_version(&config, user).0, "user {user}");
        assert_eq!(answer.messages, std::slice::from_ref(&version));
        *served.entry(version).or_default() += 1;
    }
    // Sticky: each user's further calls, unary and streaming, stay where the first went.
    let mut sticky_calls = 0;
    for user in users.iter().take(40) {
        let expected = expected_version(&config, user).0;
        for method in ["Unary", "Stream", "Unary"] {
            let answer = client.call(envoy.listener, method, &[("x-user-id", user)]);
            assert_eq!(answer.code, "OK");
            assert_eq!(
                answer.served_by.as_deref(),
                Some(expected.as_str()),
                "{user}"
            );
            sticky_calls += 1;
        }
    }
    let canary_users = served.get("canary").copied().unwrap_or(0);
    harness::assert_within_4_sigma("canary share of gRPC users", canary_users, users.len(), 0.3);
    eprintln!(
        "gRPC routing: {canary_users} of {} users on canary, {sticky_calls} sticky calls",
        users.len()
    );

    let m = envoy.prometheus();
    let sticky_canary = users
        .iter()
        .take(40)
        .filter(|u| expected_version(&config, u).0 == "canary")
        .count()
        * 3;
    let canary_calls = canary_users + sticky_canary;
    let stable_calls = users.len() + sticky_calls - canary_calls;
    assert_eq!(grpc_count(&m, "canary", "OK"), canary_calls as f64);
    assert_eq!(grpc_count(&m, "stable", "OK"), stable_calls as f64);
    assert_eq!(
        m.sum("canary_grpc_responses_total", &[]),
        (users.len() + sticky_calls) as f64
    );
    // The HTTP status counts go on: every gRPC answer was a 200.
    assert_eq!(
        m.value(
            "canary_responses_total",
            &[("version", "canary"), ("code_class", "2xx")]
        ),
        canary_calls as f64
    );
    assert_eq!(
        m.value(
            "canary_requests_total",
            &[("version", "canary"), ("reason", "hash")]
        ),
        canary_calls as f64
    );
    envoy.assert_vm_healthy();
}

#[test]
fn plain_http2_requests_are_routed_too_and_are_not_counted_as_grpc() {
    let config = Config::from_json(ROUTING.as_bytes()).unwrap();
    // The demo upstreams (HTTP/1.1 behind Envoy); the client speaks h2c to Envoy.
    let envoy = Envoy::start(EnvoyOptions::with_config(ROUTING));
    let mut client = PeerClient::start();
    let users = user_ids("h2c-routing", 300);
    let mut canary = 0;
    for user in &users {
        let answer = client.h2(
            envoy.listener,
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "test"),
                ("x-user-id", user),
            ],
            b"",
        );
        assert_eq!(answer.header(":status"), Some("200"), "{answer:?}");
        let version = answer.body.trim().to_string();
        assert_eq!(version, expected_version(&config, user).0, "user {user}");
        canary += usize::from(version == "canary");
    }
    // The override header works over HTTP/2 as well.
    let forced = client.h2(
        envoy.listener,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "test"),
            ("x-canary", "canary"),
        ],
        b"",
    );
    assert_eq!(forced.body.trim(), "canary");
    let m = envoy.prometheus();
    assert_eq!(
        m.sum("canary_requests_total", &[("version", "canary")]),
        (canary + 1) as f64
    );
    assert_eq!(
        m.sum("canary_responses_total", &[]),
        (users.len() + 1) as f64
    );
    assert_eq!(m.sum("canary_grpc_responses_total", &[]), 0.0);
}

#[test]
fn grpc_responses_total_counts_every_code_exactly_wherever_grpc_status_travels() {
    let (stable, canary) = (GrpcServer::ok("stable"), GrpcServer::ok("canary"));
    let envoy = envoy_with(ROUTING, &stable, Some(&canary));
    let mut client = PeerClient::start();
    let to_canary = [("x-canary", "canary")];
    let with = |code: &'static str, how: How| {
        [
            ("x-canary", "canary"),
            ("x-reply-code", code),
            ("x-reply-how", how.as_str()),
        ]
    };

    // First, where the status travels, seen frame by frame through Envoy: the
    // three ways really are three different answers on the wire.
    let trailers_only = client.grpc_over_h2(
        envoy.listener,
        "Unary",
        &with("UNAVAILABLE", How::TrailersOnly),
    );
    assert!(trailers_only.end_stream_on_headers, "{trailers_only:?}");
    assert_eq!(trailers_only.header("grpc-status"), Some("14"));
    assert_eq!(trailers_only.header(":status"), Some("200"));
    let after_metadata = client.grpc_over_h2(
        envoy.listener,
        "Unary",
        &with("UNAVAILABLE", How::AfterMetadata),
    );
    assert!(!after_metadata.end_stream_on_headers);
    assert_eq!(after_metadata.header("grpc-status"), None);
    assert_eq!(after_metadata.header("x-served-by"), Some("canary"));
    assert_eq!(after_metadata.body, "");
    assert_eq!(after_metadata.trailer("grpc-status"), Some("14"));
    let after_message = client.grpc_over_h2(
        envoy.listener,
        "Stream",
        &with("UNAVAILABLE", How::AfterMessage),
    );
    assert_eq!(after_message.header("grpc-status"), None);
    assert!(after_message.body.ends_with("canary"), "{after_message:?}");
    assert_eq!(after_message.trailer("grpc-status"), Some("14"));
    let shape_calls = 3;

    // Then with the grpcio client.
    let mut sent: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut call = |client: &mut PeerClient,
                    method: &str,
                    md: &[(&str, &str)],
                    version: &'static str,
                    code: &'static str| {
        let answer = client.call(envoy.listener, method, md);
        assert_eq!(answer.code, code, "{md:?}: {answer:?}");
        assert_eq!(answer.served_by.as_deref(), Some(version), "{md:?}");
        *sent.entry((version, code)).or_default() += 1;
    };
    for _ in 0..7 {
        call(&mut client, "Unary", &[], "stable", "OK");
    }
    for _ in 0..3 {
        call(&mut client, "Stream", &[], "stable", "OK");
    }
    for _ in 0..5 {
        call(&mut client, "Unary", &to_canary, "canary", "OK");
    }
    for _ in 0..2 {
        call(
            &mut client,
            "Unary",
            &with("NOT_FOUND", How::TrailersOnly),
            "canary",
            "NOT_FOUND",
        );
    }
    for (how, n) in [
        (How::TrailersOnly, 3),
        (How::AfterMetadata, 4),
        (How::AfterMessage, 5),
    ] {
        for _ in 0..n {
            call(
                &mut client,
                how.method(),
                &with("UNAVAILABLE", how),
                "canary",
                "UNAVAILABLE",
            );
        }
    }
    let answer = client.call(
        envoy.listener,
        "Stream",
        &with("UNAVAILABLE", How::AfterMessage),
    );
    assert_eq!(
        answer.messages,
        ["canary"],
        "one message came before the status"
    );
    *sent.entry(("canary", "UNAVAILABLE")).or_default() += 1;

    let m = envoy.prometheus();
    let expected = |version: &str, code: &str| {
        let shapes = if (version, code) == ("canary", "UNAVAILABLE") {
            shape_calls
        } else {
            0
        };
        (sent.get(&(version, code)).copied().unwrap_or(0) + shapes) as f64
    };
    for version in ["stable", "canary"] {
        for code in canary_router::grpc::CODE_NAMES {
            assert_eq!(
                grpc_count(&m, version, code),
                expected(version, code),
                "grpc_responses_total{{version={version},grpc_code={code}}}"
            );
        }
    }
    eprintln!(
        "grpc_responses_total: {}",
        m.lines_for("canary_grpc_responses_total")
            .into_iter()
            .filter(|l| !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert_eq!(grpc_count(&m, "stable", "OK"), 10.0);
    assert_eq!(grpc_count(&m, "canary", "OK"), 5.0);
    assert_eq!(grpc_count(&m, "canary", "NOT_FOUND"), 2.0);
    assert_eq!(grpc_count(&m, "canary", "UNAVAILABLE"), 16.0);
    // Every one of them had HTTP status 200.
    assert_eq!(
        m.value(
            "canary_responses_total",
            &[("version", "canary"), ("code_class", "2xx")]
        ),
        23.0
    );
    assert_eq!(
        m.sum("canary_responses_total", &[("code_class", "5xx")]),
        0.0
    );
    envoy.assert_vm_healthy();
}

/// Like the HTTP guard test in e2e_rollout.rs: trips above 20% failures among at
/// least 20 of the canary's responses in 10 s.
const GUARD: &str = r#"{
  "versions": [ { "name": "stable" }, { "name": "canary", "weight": 50 } ],
  "hash": { "header": "x-user-id", "salt": "grpc-guard" },
  "override": { "header": "x-canary" },
  "guard": { "version": "canary", "max_error_rate": 0.2, "min_requests": 20,
             "window": "10s", "hold": "forever" },
  "metrics": { "responses": true }
}"#;

/// The fewest failures that can trip [`GUARD`] with every canary response failing.
const NEEDED: usize = 20;

/// Calls as distinct users until 200 calls in a row were served by
/// stable; returns (canary failures before the trip, canary users then rerouted).
fn call_until_tripped(
    envoy: &Envoy,
    client: &mut PeerClient,
    config: &Config,
    expect_served_by_canary: bool,
    failing_code: &str,
) -> (usize, usize, Duration) {
    let users = user_ids("grpc-guard", 3000);
    let (mut failures, mut rerouted, mut streak) = (0, 0, 0);
    let mut first_failure: Option<Instant> = None;
    let mut last_failure = Instant::now();
    for user in &users {
        if streak >= 200 {
            break;
        }
        let answer = client.unary_as(envoy.listener, user);
        match (
            expected_version(config, user).0.as_str(),
            answer.code.as_str(),
        ) {
            ("canary", code) if code == failing_code => {
                assert_eq!(rerouted, 0, "a canary failure after the trip: {answer:?}");
                let by = if expect_served_by_canary {
                    Some("canary")
                } else {
                    None
                };
                assert_eq!(answer.served_by.as_deref(), by, "{answer:?}");
                failures += 1;
                first_failure.get_or_insert_with(Instant::now);
                last_failure = Instant::now();
                streak = 0;
            }
            ("canary", "OK") => {
                assert_eq!(answer.served_by.as_deref(), Some("stable"));
                rerouted += 1;
                streak += 1;
            }
            ("stable", "OK") => {
                assert_eq!(answer.served_by.as_deref(), Some("stable"));
                streak += 1;
            }
            (v, code) => panic!("user {user} ({v}): {code} {answer:?}"),
        }
    }
    assert!(
        streak >= 200,
        "the guard never tripped ({failures} canary failures)"
    );
    let took = first_failure.map_or(Duration::ZERO, |f| last_failure - f);
    (failures, rerouted, took)
}

#[test]
fn a_canary_answering_unavailable_trips_the_guard_within_the_http_bound() {
    let config = Config::from_json(GUARD.as_bytes()).unwrap();
    let stable = GrpcServer::ok("stable");
    let canary = GrpcServer::start("canary", "UNAVAILABLE", How::TrailersOnly);
    let envoy = envoy_with(GUARD, &stable, Some(&canary));
    let mut client = PeerClient::start();
    let (failures, rerouted, took) =
        call_until_tripped(&envoy, &mut client, &config, true, "UNAVAILABLE");
    eprintln!(
        "gRPC guard (canary answers UNAVAILABLE): {failures} failed calls before the trip \
         (fewest possible {NEEDED}), {:.1} ms from the first to the last; {rerouted} canary users then served by stable",
        took.as_secs_f64() * 1000.0
    );
    // The same bound as the HTTP guard test: the fewest possible, +3 in flight.
    assert!(
        (NEEDED..=NEEDED + 3).contains(&failures),
        "{failures} calls reached the failing canary; the guard should trip after {NEEDED} (+3)"
    );
    assert!(took < Duration::from_secs(2), "tripping took {took:?}");
    let m = envoy.prometheus();
    assert_eq!(
        m.value("canary_guard_tripped", &[("version", "canary")]),
        1.0
    );
    assert_eq!(
        m.value(
            "canary_requests_total",
            &[("version", "stable"), ("reason", "guard")]
        ),
        rerouted as f64
    );
    assert!(rerouted >= 50, "only {rerouted} canary users rerouted");
    assert_eq!(grpc_count(&m, "canary", "UNAVAILABLE"), failures as f64);
    // HTTP saw nothing wrong: every failed call was a 200.
    assert_eq!(
        m.value(
            "canary_responses_total",
            &[("version", "canary"), ("code_class", "2xx")]
        ),
        failures as f64
    );
    // The override still reaches the canary, for debugging.
    let forced = client.call(envoy.listener, "Unary", &[("x-canary", "canary")]);
    assert_eq!(
        (forced.code.as_str(), forced.served_by.as_deref()),
        ("UNAVAILABLE", Some("canary"))
    );
    let log = envoy.log();
    assert_eq!(log.matches("guard tripped:").count(), 1, "{log}");
    envoy.assert_vm_healthy();
}

#[test]
fn a_canary_answering_only_not_found_never_trips_the_guard() {
    let config = Config::from_json(GUARD.as_bytes()).unwrap();
    let stable = GrpcServer::ok("stable");
    let canary = GrpcServer::start("canary", "NOT_FOUND", How::AfterMetadata);
    let envoy = envoy_with(GUARD, &stable, Some(&canary));
    let mut client = PeerClient::start();
    let users = user_ids("grpc-not-found", 400);
    let mut not_found = 0;
    for round in 0..2 {
        for user in &users {
            let answer = client.unary_as(envoy.listener, user);
            if expected_version(&config, user).0 == "canary" {
                // Never rerouted: every canary user's call reached the canary.
                assert_eq!(
                    (answer.code.as_str(), answer.served_by.as_deref()),
                    ("NOT_FOUND", Some("canary")),
                    "round {round}, {user}"
                );
                not_found += 1;
            } else {
                assert_eq!(answer.code, "OK");
            }
        }
    }
    assert!(not_found > 200, "{not_found} NOT_FOUND answers");
    let m = envoy.prometheus();
    assert_eq!(
        m.value("canary_guard_tripped", &[("version", "canary")]),
        0.0
    );
    assert_eq!(m.sum("canary_requests_total", &[("reason", "guard")]), 0.0);
    assert_eq!(grpc_count(&m, "canary", "NOT_FOUND"), not_found as f64);
    assert!(!envoy.log().contains("guard tripped"));
}

#[test]
fn an_unreachable_canary_trips_the_guard_on_envoys_own_grpc_answers() {
    let config = Config::from_json(GUARD.as_bytes()).unwrap();
    let stable = GrpcServer::ok("stable");
    let envoy = envoy_with(GUARD, &stable, None);
    let mut client = PeerClient::start();
    let (failures, rerouted, _) =
        call_until_tripped(&envoy, &mut client, &config, false, "UNAVAILABLE");
    eprintln!(
        "gRPC guard (canary unreachable): {failures} failed calls before the trip (fewest possible {NEEDED}), \
         {rerouted} canary users then served by stable"
    );
    assert!(
        (NEEDED..=NEEDED + 3).contains(&failures),
        "{failures} calls failed at the unreachable canary before the trip"
    );
    let m = envoy.prometheus();
    assert_eq!(
        m.value("canary_guard_tripped", &[("version", "canary")]),
        1.0
    );
    assert_eq!(grpc_count(&m, "canary", "UNAVAILABLE"), failures as f64);
    // Envoy's answer to a gRPC client: HTTP 200, grpc-status 14, trailers-only.
    // The override still goes to the dead canary.
    let answer = client.grpc_over_h2(envoy.listener, "Unary", &[("x-canary", "canary")]);
    assert_eq!(answer.header(":status"), Some("200"), "{answer:?}");
    assert_eq!(answer.header("grpc-status"), Some("14"));
    assert!(answer.end_stream_on_headers);
    assert_eq!(
        envoy.prometheus().value(
            "canary_responses_total",
            &[("version", "canary"), ("code_class", "2xx")]
        ),
        (failures + 1) as f64
    );
    envoy.assert_vm_healthy();
}

/// What no grpcio server sends: a call that ends without any grpc-status (the
/// stream just ends, or is reset), and HTTP errors without one, as a proxy in
/// between may answer. The filter counts what the gRPC spec says a client sees.
#[test]
fn calls_without_grpc_status_count_as_the_grpc_spec_maps_them() {
    let stable = GrpcServer::ok("stable");
    let canary = GrpcServer::broken("canary");
    let envoy = envoy_with(ROUTING, &stable, Some(&canary));
    let mut client = PeerClient::start();
    for (how, n) in [
        ("no-status", 3),
        ("reset", 2),
        ("http-503", 4),
        ("http-404", 5),
    ] {
        for _ in 0..n {
            let answer = client.call(
                envoy.listener,
                "Unary",
                &[("x-canary", "canary"), ("x-break", how)],
            );
            eprintln!(
                "{how}: the grpcio client sees {} ({})",
                answer.code, answer.details
            );
            assert_ne!(answer.code, "OK", "{how}");
        }
    }
    // A stream that ends without a status, reset or not, is UNKNOWN: counted when
    // the stream is done, since no trailers came.
    let unknown = || grpc_count(&envoy.prometheus(), "canary", "UNKNOWN");
    assert!(
        harness::wait_until(Duration::from_secs(10), || unknown() == 5.0),
        "UNKNOWN: {}",
        unknown()
    );
    let m = envoy.prometheus();
    assert_eq!(grpc_count(&m, "canary", "UNAVAILABLE"), 4.0);
    assert_eq!(grpc_count(&m, "canary", "UNIMPLEMENTED"), 5.0);
    assert_eq!(m.sum("canary_grpc_responses_total", &[]), 14.0);
    assert_eq!(
        m.value(
            "canary_responses_total",
            &[("version", "canary"), ("code_class", "5xx")]
        ),
        4.0
    );
    assert_eq!(
        m.value(
            "canary_responses_total",
            &[("version", "canary"), ("code_class", "4xx")]
        ),
        5.0
    );
    envoy.assert_vm_healthy();
}

#[test]
fn the_codes_listed_in_grpc_status_are_the_failures() {
    // NOT_FOUND listed (and only it): a canary answering NOT_FOUND trips the guard.
    let config_text = GUARD.replace(
        r#""hold": "forever""#,
        r#""hold": "forever", "grpc_status": ["NOT_FOUND"]"#,
    );
    let config = Config::from_json(config_text.as_bytes()).unwrap();
    let stable = GrpcServer::ok("stable");
    let canary = GrpcServer::start("canary", "NOT_FOUND", How::AfterMetadata);
    let envoy = envoy_with(&config_text, &stable, Some(&canary));
    let mut client = PeerClient::start();
    let (failures, rerouted, _) =
        call_until_tripped(&envoy, &mut client, &config, true, "NOT_FOUND");
    assert!(
        (NEEDED..=NEEDED + 3).contains(&failures),
        "{failures} NOT_FOUND answers before the trip"
    );
    assert!(rerouted >= 50, "{rerouted} canary users rerouted");
    let m = envoy.prometheus();
    assert_eq!(
        m.value("canary_guard_tripped", &[("version", "canary")]),
        1.0
    );
    assert_eq!(grpc_count(&m, "canary", "NOT_FOUND"), failures as f64);
}
