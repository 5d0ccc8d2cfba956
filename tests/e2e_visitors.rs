//! End-to-end: `anonymous: "cookie"` through a real Envoy with the built filter. A
//! new visitor is issued an ID, decided on it exactly as its later requests (which
//! carry the cookie) are, gets it in a `Set-Cookie` beside the upstream's own, and
//! the upstream sees it in `Cookie` from the first request on. Visitors who have
//! the cookie, users with an ID in `hash.header` and gRPC calls (a real grpcio
//! server behind Envoy) get none. The issued IDs are counted per version.

mod harness;

use canary_router::config::Config;
use canary_router::decide::{Reason, Routing};
use harness::grpc::{GrpcServer, PeerClient};
use harness::{assert_within_4_sigma, core_decision, Envoy, EnvoyOptions, Response};
use std::collections::{BTreeMap, BTreeSet};

const CONFIG: &str = r#"{
  "versions": [ { "name": "stable" }, { "name": "canary", "weight": 30 } ],
  "override": { "header": "x-canary" },
  "hash": {
    "header": "x-user-id", "cookie": "visitor", "salt": "e2e-visitors",
    "cookie_attributes": { "max_age": "30d", "domain": "example.test", "same_site": "Strict" }
  },
  "anonymous": "cookie"
}"#;

/// The tail of every visitor cookie this config sets.
const ATTRIBUTES: &str =
    "; Max-Age=2592000; Path=/; Domain=example.test; SameSite=Strict; Secure; HttpOnly";

/// The application's own cookie, which every demo upstream response sets.
const UPSTREAM_COOKIE: &str = "session=from-upstream; Path=/; HttpOnly";

fn set_cookies(response: &Response) -> Vec<String> {
    response
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The visitor ID a response hands out, if any (at most one).
fn issued_id(response: &Response) -> Option<String> {
    let visitor: Vec<String> = set_cookies(response)
        .into_iter()
        .filter(|c| c.starts_with("visitor="))
        .collect();
    assert!(
        visitor.len() <= 1,
        "more than one visitor cookie: {visitor:?}"
    );
    let cookie = visitor.first()?;
    let (pair, attributes) = cookie.split_at(cookie.find(';').unwrap_or(cookie.len()));
    assert_eq!(attributes, ATTRIBUTES, "{cookie}");
    Some(pair["visitor=".len()..].to_string())
}

/// The version the pure core gives a request whose only ID is this cookie.
fn core_version(config: &Config, id: &str) -> (String, Reason) {
    let cookie = format!("visitor={id}");
    let a = core_decision(
        config,
        &Routing::at(config, 0),
        &[(b"cookie", cookie.as_bytes())],
    );
    (config.versions[a.version].name.clone(), a.reason)
}

#[test]
fn a_new_visitor_is_decided_on_the_id_it_is_issued_and_keeps_its_version() {
    let config = Config::from_json(CONFIG.as_bytes()).unwrap();
    let envoy = Envoy::start(EnvoyOptions {
        echo_request_headers: vec!["cookie".into()],
        upstream_response_headers: vec![("set-cookie".into(), UPSTREAM_COOKIE.into())],
        ..EnvoyOptions::with_config(CONFIG)
    });
    let mut client = envoy.client();
    let visitors = 400;
    let mut ids = BTreeSet::new();
    let mut issued_per_version: BTreeMap<String, f64> = BTreeMap::new();
    let mut canary = 0;
    for i in 0..visitors {
        // Half come with a cookie of the site's own, half with none at all.
        let own = (i % 2 == 0).then_some("theme=dark; lang=en");
        let headers: Vec<(&str, &str)> = own.map(|c| ("cookie", c)).into_iter().collect();
        let first = client.get_with(&headers);
        assert_eq!(first.status, 200);
        let id = issued_id(&first).unwrap_or_else(|| panic!("visitor {i}: no ID issued"));
        assert_eq!(id.len(), 22, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
        assert!(ids.insert(id.clone()), "{id} issued twice");
        // The upstream's own Set-Cookie is kept, beside the visitor's.
        assert!(
            set_cookies(&first).contains(&UPSTREAM_COOKIE.to_string()),
            "{:?}",
            set_cookies(&first)
        );
        // The upstream saw the ID on this very request, after the site's cookies.
        let seen =
            String::from_utf8_lossy(first.header("x-echo-cookie").unwrap_or_default()).into_owned();
        let expected_seen = match own {
            Some(c) => format!("{c}; visitor={id}"),
            None => format!("visitor={id}"),
        };
        assert_eq!(seen, expected_seen);
        // Decided on that ID, as the pure core decides a request that carries it.
        let version = first.served_by();
        assert_eq!((version.clone(), Reason::Hash), core_version(&config, &id));
        *issued_per_version.entry(version.clone()).or_default() += 1.0;
        canary += usize::from(version == "canary");

        // Later requests carry the cookie: the same version, and no new ID.
        for _ in 0..2 {
            let cookie = match own {
                Some(c) => format!("{c}; visitor={id}"),
                None => format!("visitor={id}"),
            };
            let later = client.get_with(&[("cookie", &cookie)]);
            assert_eq!(later.served_by(), version, "visitor {id} moved");
            assert_eq!(issued_id(&later), None, "a returning visitor got a new ID");
            assert_eq!(set_cookies(&later), [UPSTREAM_COOKIE.to_string()]);
            assert_eq!(
                later.header("x-echo-cookie"),
                Some(cookie.as_bytes()),
                "the Cookie of a returning visitor reaches the upstream as sent"
            );
        }
    }
    assert_within_4_sigma("new visitors in the canary", canary, visitors, 0.30);

    // A user with an ID in hash.header gets no cookie, and none is added upstream.
    for user in ["alice", "bob", "carol"] {
        let r = client.get_with(&[("x-user-id", user)]);
        assert_eq!(issued_id(&r), None, "{user}");
        assert_eq!(r.header("x-echo-cookie").unwrap_or_default(), b"");
    }
    // An empty cookie is no ID: the visitor is issued one.
    let r = client.get_with(&[("cookie", "visitor=")]);
    let id = issued_id(&r).expect("an ID for an empty cookie");
    // The upstream reads the ID, not the empty cookie it replaces.
    assert_eq!(
        r.header("x-echo-cookie"),
        Some(format!("visitor={id}").as_bytes())
    );
    *issued_per_version.entry(r.served_by()).or_default() += 1.0;
    // An override decides, and the visitor still gets its ID, which decides its
    // later requests.
    let forced = client.get_with(&[("x-canary", "canary")]);
    assert_eq!(forced.served_by(), "canary");
    let forced_id = issued_id(&forced).expect("an ID with an override");
    *issued_per_version.entry("canary".into()).or_default() += 1.0;
    let later = client.get_with(&[("cookie", &format!("visitor={forced_id}"))]);
    assert_eq!(later.served_by(), core_version(&config, &forced_id).0);
    assert_ne!(id, forced_id);

    // Counted per version: exactly the IDs issued; their decisions are `hash`
    // (the override's is `override`).
    let metrics = envoy.prometheus();
    for version in ["stable", "canary"] {
        assert_eq!(
            metrics.value("canary_visitor_ids_issued_total", &[("version", version)]),
            issued_per_version.get(version).copied().unwrap_or(0.0),
            "{version}"
        );
    }
    let hashed = metrics.sum("canary_requests_total", &[("reason", "hash")]);
    // Each visitor: one first and two later requests; 3 users; the empty cookie; the
    // forced visitor's later request.
    assert_eq!(hashed, (visitors * 3 + 3 + 1 + 1) as f64);
    assert_eq!(
        metrics.sum("canary_requests_total", &[("reason", "random")]),
        0.0
    );
    envoy.assert_vm_healthy();
}

#[test]
fn grpc_calls_get_no_cookie_and_are_drawn_as_random() {
    let (stable, canary) = (GrpcServer::ok("stable"), GrpcServer::ok("canary"));
    let envoy = Envoy::start(EnvoyOptions {
        h2_upstreams: vec![
            ("stable".to_string(), stable.port),
            ("canary".to_string(), canary.port),
        ],
        ..EnvoyOptions::with_config(CONFIG)
    });
    let mut client = PeerClient::start();
    let calls = 200;
    let mut served = BTreeMap::<String, usize>::new();
    for _ in 0..calls {
        let answer = client.grpc_over_h2(envoy.listener, "Unary", &[]);
        let status = answer
            .header("grpc-status")
            .or(answer.trailer("grpc-status"));
        assert_eq!(status, Some("0"), "{answer:?}");
        assert_eq!(answer.header("set-cookie"), None, "{answer:?}");
        let by = answer
            .header("x-served-by")
            .or(answer.trailer("x-served-by"))
            .unwrap_or_default()
            .to_string();
        *served.entry(by).or_default() += 1;
    }
    // Drawn at the weights, call by call, as anonymous: random draws.
    assert_within_4_sigma(
        "gRPC calls in the canary",
        served.get("canary").copied().unwrap_or(0),
        calls,
        0.30,
    );
    // A gRPC call with a user ID goes by it, as always.
    let answer = client.grpc_over_h2(envoy.listener, "Unary", &[("x-user-id", "alice")]);
    assert_eq!(answer.header("set-cookie"), None);
    let metrics = envoy.prometheus();
    assert_eq!(
        metrics.sum("canary_requests_total", &[("reason", "random")]),
        calls as f64
    );
    assert_eq!(
        metrics.sum("canary_requests_total", &[("reason", "hash")]),
        1.0
    );
    assert_eq!(metrics.sum("canary_visitor_ids_issued_total", &[]), 0.0);
    // The counters exist, at 0, for every version: a dashboard sees zeros.
    for version in ["stable", "canary"] {
        assert!(
            !metrics
                .lines_for("canary_visitor_ids_issued_total")
                .iter()
                .all(|l| !l.contains(&format!("version=\"{version}\""))),
            "no series for {version}"
        );
    }
    envoy.assert_vm_healthy();
}

/// Two services behind one plugin (`rollouts`, issue 21), each with its own visitor
/// cookie: a new visitor gets the cookie of the rollout its request matches,
/// decided by that rollout's salt and weights, counted under its rollout label; a
/// request no rollout matches gets none.
#[test]
fn each_rollout_issues_its_own_visitor_cookie() {
    const ROLLOUTS: &str = r#"{
      "rollouts": [
        { "name": "shop", "match": { "hosts": ["shop.example"] },
          "versions": [ { "name": "stable" }, { "name": "canary", "weight": 30 } ],
          "hash": { "cookie": "shop_vid", "salt": "shop" },
          "anonymous": "cookie" },
        { "name": "search", "match": { "hosts": ["search.example"] },
          "versions": [ { "name": "stable" }, { "name": "canary", "weight": 60 } ],
          "hash": { "header": "x-user-id", "cookie": "search_vid", "salt": "search",
                    "cookie_attributes": { "max_age": "1d", "path": "/search" } },
          "anonymous": "cookie" }
      ]
    }"#;
    let plugin = canary_router::config::PluginConfig::from_json(ROLLOUTS.as_bytes()).unwrap();
    let envoy = Envoy::start(EnvoyOptions::with_config(ROLLOUTS));
    let mut client = envoy.client();
    let mut issued: BTreeMap<(&str, String), f64> = BTreeMap::new();
    for (index, (rollout, host, cookie, attributes)) in [
        (
            "shop",
            "shop.example",
            "shop_vid",
            "; Max-Age=31536000; Path=/; SameSite=Lax; Secure; HttpOnly",
        ),
        (
            "search",
            "search.example",
            "search_vid",
            "; Max-Age=86400; Path=/search; SameSite=Lax; Secure; HttpOnly",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let config = &plugin.rollouts[index].config;
        let mut canary = 0;
        let visitors = 150;
        for _ in 0..visitors {
            let first = client.get_with(&[("host", host)]);
            assert_eq!(first.status, 200);
            let set: Vec<String> = set_cookies(&first);
            assert_eq!(set.len(), 1, "{rollout}: {set:?}");
            let (pair, tail) = set[0].split_at(set[0].find(';').unwrap_or(set[0].len()));
            assert_eq!(tail, attributes, "{rollout}");
            let id = pair
                .strip_prefix(&format!("{cookie}="))
                .unwrap_or_else(|| panic!("{rollout}: {pair}"));
            // Decided as this rollout decides a request carrying that cookie.
            let carried = format!("{cookie}={id}");
            let expected = core_decision(
                config,
                &Routing::at(config, 0),
                &[(b"cookie", carried.as_bytes())],
            );
            let version = first.served_by();
            assert_eq!(version, config.versions[expected.version].name, "{rollout}");
            canary += usize::from(version == "canary");
            *issued.entry((rollout, version.clone())).or_default() += 1.0;
            // Back with the cookie: the same version, no new cookie.
            let later = client.get_with(&[("host", host), ("cookie", &carried)]);
            assert_eq!(later.served_by(), version, "{rollout}: {id} moved");
            assert!(set_cookies(&later).is_empty(), "{rollout}");
        }
        let weight = if rollout == "shop" { 0.30 } else { 0.60 };
        assert_within_4_sigma(rollout, canary, visitors, weight);
    }
    // No rollout matches: untouched, no cookie.
    let other = client.get_with(&[("host", "other.example")]);
    assert!(set_cookies(&other).is_empty(), "{:?}", set_cookies(&other));

    let metrics = envoy.prometheus();
    for rollout in ["shop", "search"] {
        for version in ["stable", "canary"] {
            assert_eq!(
                metrics.value(
                    "canary_visitor_ids_issued_total",
                    &[("rollout", rollout), ("version", version)]
                ),
                issued
                    .get(&(rollout, version.to_string()))
                    .copied()
                    .unwrap_or(0.0),
                "{rollout} {version}"
            );
        }
    }
    envoy.assert_vm_healthy();
}
