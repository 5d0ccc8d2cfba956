//! End-to-end, pick mode (`hash.pick_header`): a rollout controller (Flagger, Argo
//! Rollouts) owns the route's weights, which reach Envoy by RDS from a watched file
//! here; the filter writes each user's pick value and Envoy's `weighted_clusters`
//! (`header_name`) routes on it. Steps 0 → 10 → 25 → 50 → 100 → 0 in both
//! destination orders, anonymous draws, overrides through header routes placed first,
//! client-sent pick headers, and the guard.

mod harness;

use canary_router::bucket::bucket_of;
use canary_router::pick::{destination_of, pick_value};
use harness::{assert_within_4_sigma, user_ids, wait_until, Client, Envoy, EnvoyOptions};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const BOOTSTRAP: &str = "envoy/weighted-clusters.yaml";
const SALT: &str = "gr1";

/// The plugin config: 100 buckets and the Unleash group ID as salt, so that the
/// canary cohort of `[stable, canary]` is Unleash's gradual rollout; the response
/// counters (opt-in) on, as the tests check them per served version.
fn plugin_config(extra: &str) -> String {
    format!(
        r#"{{
  "route_header": "x-canary-version",
  "versions": [ {{ "name": "stable" }}, {{ "name": "canary" }} ],
  "override": {{ "header": "x-canary", "cookie": "canary" }},
  "users": {{ "canary": ["qa-alice"], "stable": ["vip-carol"] }},
  "hash": {{ "header": "x-user-id", "cookie": "uid", "salt": "{SALT}", "buckets": 100,
            "pick_header": "x-canary-pick", "pick_total": 100 }},
  "anonymous": "random",
  "metrics_prefix": "canary",
  "metrics": {{ "responses": true }}{extra}
}}"#
    )
}

fn start(extra: &str, echo: &[&str]) -> Envoy {
    Envoy::start(EnvoyOptions {
        bootstrap: Some(BOOTSTRAP.into()),
        routes_from_file: true,
        echo_request_headers: echo.iter().map(|s| s.to_string()).collect(),
        ..EnvoyOptions::with_config(plugin_config(extra))
    })
}

/// Sets the weighted route's destinations the way Istio renders a VirtualService a
/// controller has written: weight-0 destinations dropped, a single destination
/// turned into a plain `cluster` (where `header_name` has nothing to pick), and tags
/// every response with `x-routes: <tag>` so that a request answered by a worker that
/// has not yet taken the update is recognised and sent again.
fn set_weights(envoy: &Envoy, destinations: &[(&str, u64)], tag: &str) {
    let kept: Vec<&(&str, u64)> = destinations.iter().filter(|(_, w)| *w > 0).collect();
    let route: Value = if kept.len() == 1 {
        serde_yaml::from_str(&format!("{{ cluster: {} }}", kept[0].0)).unwrap()
    } else {
        let clusters: Vec<String> = kept
            .iter()
            .map(|(n, w)| format!("{{ name: {n}, weight: {w} }}"))
            .collect();
        serde_yaml::from_str(&format!(
            "{{ weighted_clusters: {{ header_name: x-canary-pick, clusters: [{}] }} }}",
            clusters.join(", ")
        ))
        .unwrap()
    };
    envoy
        .set_routes(|config| {
            let host = &mut config["virtual_hosts"][0];
            host["response_headers_to_add"] = serde_yaml::from_str(&format!(
                "[{{ header: {{ key: x-routes, value: '{tag}' }} }}]"
            ))
            .unwrap();
            let weighted = host["routes"]
                .as_sequence_mut()
                .unwrap()
                .iter_mut()
                .find(|r| r["name"].as_str() == Some("weighted"))
                .expect("the weighted route");
            weighted["route"] = route;
        })
        .expect("Envoy takes the new weights");
}

/// Sends a request until a worker that has the routes tagged `tag` answers it.
fn get_at(client: &mut Client, tag: &str, headers: &[(&str, &str)]) -> harness::Response {
    for _ in 0..200 {
        let response = client.get_with(headers);
        if response.header("x-routes") == Some(tag.as_bytes()) {
            return response;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no answer with the routes {tag}");
}

/// The cluster the documented formula names for a user at these weights.
fn formula(user: &str, destinations: &[(&str, u64)]) -> String {
    let bucket = bucket_of(format!("{SALT}:").as_bytes(), user.as_bytes(), 100);
    let weights: Vec<u64> = destinations.iter().map(|(_, w)| *w).collect();
    let i = destination_of(pick_value(bucket, 100, 100), &weights).expect("weights sum above 0");
    destinations[i].0.to_string()
}

#[test]
fn a_controllers_steps_keep_every_user_sticky_in_both_orders() {
    let steps = [0u64, 10, 25, 50, 100, 0];
    let users = user_ids("controllers", 2000);
    for canary_first in [false, true] {
        let order = if canary_first {
            "[canary, stable]"
        } else {
            "[stable, canary]"
        };
        let envoy = start("", &["x-canary-pick"]);
        let mut client = envoy.client();
        let mut previous: Option<Vec<String>> = None;
        let mut sent = 0usize;
        let mut served_total: BTreeMap<String, usize> = BTreeMap::new();
        for (step, &w) in steps.iter().enumerate() {
            let destinations: Vec<(&str, u64)> = if canary_first {
                vec![("canary", w), ("stable", 100 - w)]
            } else {
                vec![("stable", 100 - w), ("canary", w)]
            };
            let tag = format!("step-{step}");
            set_weights(&envoy, &destinations, &tag);
            let mut now = Vec::with_capacity(users.len());
            for user in &users {
                let first = get_at(&mut client, &tag, &[("x-user-id", user)]);
                let again = get_at(&mut client, &tag, &[("x-user-id", user)]);
                sent += 2;
                assert_eq!(first.status, 200);
                let cluster = first.served_by();
                assert_eq!(
                    again.served_by(),
                    cluster,
                    "{user} not sticky at {w}% {order}"
                );
                assert_eq!(
                    cluster,
                    formula(user, &destinations),
                    "{user} at {w}% {order}"
                );
                // The upstream saw the filter's value, in 0..100.
                let pick: u64 =
                    String::from_utf8_lossy(first.header("x-echo-x-canary-pick").unwrap())
                        .parse()
                        .unwrap();
                assert!(pick < 100);
                if !canary_first {
                    // Flagger's order: the canary cohort is Unleash's gradual rollout at w%.
                    let unleash = u64::from(bucket_of(b"gr1:", user.as_bytes(), 100));
                    assert_eq!(cluster == "canary", unleash <= w, "{user}: Unleash at {w}%");
                }
                *served_total.entry(cluster.clone()).or_default() += 2;
                now.push(cluster);
            }
            let canary = now.iter().filter(|c| *c == "canary").count();
            assert_within_4_sigma(
                &format!("canary share at {w}% {order}"),
                canary,
                users.len(),
                w as f64 / 100.0,
            );
            let moved = previous.as_ref().map_or(0, |before| {
                before.iter().zip(&now).filter(|(a, b)| a != b).count()
            });
            let left_canary = previous.as_ref().map_or(0, |before| {
                before
                    .iter()
                    .zip(&now)
                    .filter(|(a, b)| *a == "canary" && *b != "canary")
                    .count()
            });
            if step + 1 < steps.len() {
                assert_eq!(left_canary, 0, "users left the canary at {w}% {order}");
            }
            eprintln!(
                "controllers {order} step {step} weight {w}%: canary {canary} of {} ({:.2}%), moved {moved}, left the canary {left_canary}",
                users.len(),
                100.0 * canary as f64 / users.len() as f64
            );
            previous = Some(now);
        }
        // Rolled back to 0: everybody is on stable again.
        assert!(previous.unwrap().iter().all(|c| c == "stable"));
        // Decisions counted under version "weighted"; responses under the cluster's version.
        let m = envoy.prometheus();
        assert_eq!(
            m.value(
                "canary_requests_total",
                &[("version", "weighted"), ("reason", "hash")]
            ),
            sent as f64
        );
        for version in ["stable", "canary"] {
            assert_eq!(
                m.value(
                    "canary_responses_total",
                    &[("version", version), ("code_class", "2xx")]
                ),
                served_total.get(version).copied().unwrap_or(0) as f64,
                "responses of {version} {order}"
            );
            assert_eq!(
                m.sum("canary_requests_total", &[("version", version)]),
                0.0,
                "no decision names {version} {order}"
            );
        }
        envoy.assert_vm_healthy();
    }
}

#[test]
fn anonymous_requests_are_drawn_at_the_route_weights_and_carry_no_pick_value() {
    let envoy = start("", &["x-canary-pick", "x-canary-version"]);
    let destinations = [("stable", 70), ("canary", 30)];
    set_weights(&envoy, &destinations, "anon");
    let mut client = envoy.client();
    let n = 2000;
    let mut canary = 0;
    for i in 0..n {
        // Half of them send a pick value of their own: removed, so it never decides.
        let spoof = if i % 2 == 0 { "99" } else { "0" };
        let headers: &[(&str, &str)] = if i % 4 < 2 {
            &[]
        } else {
            &[("x-canary-pick", spoof)]
        };
        let r = get_at(&mut client, "anon", headers);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-echo-x-canary-pick").unwrap_or_default(), b"");
        assert_eq!(r.header("x-echo-x-canary-version").unwrap_or_default(), b"");
        canary += usize::from(r.served_by() == "canary");
    }
    eprintln!("anonymous: canary {canary} of {n} at 30%");
    assert_within_4_sigma("anonymous canary share", canary, n, 0.30);
    let m = envoy.prometheus();
    assert_eq!(
        m.value(
            "canary_requests_total",
            &[("version", "weighted"), ("reason", "random")]
        ),
        n as f64
    );
}

#[test]
fn overrides_and_listed_users_take_the_header_routes_placed_first() {
    let envoy = start("", &["x-canary-pick", "x-canary-version"]);
    let mut client = envoy.client();
    // At 0% (Istio renders a plain cluster route) and at 100%, and in between.
    for (tag, destinations) in [
        ("zero", vec![("stable", 100), ("canary", 0)]),
        ("full", vec![("stable", 0), ("canary", 100)]),
        ("half", vec![("stable", 50), ("canary", 50)]),
    ] {
        set_weights(&envoy, &destinations, tag);
        for (headers, expected) in [
            (vec![("x-canary", "canary")], "canary"),
            (vec![("x-canary", "stable")], "stable"),
            (vec![("cookie", "canary=canary")], "canary"),
            (vec![("x-user-id", "qa-alice")], "canary"),
            (vec![("x-user-id", "vip-carol")], "stable"),
            (
                vec![("x-user-id", "qa-alice"), ("x-canary-pick", "0")],
                "canary",
            ),
        ] {
            for _ in 0..5 {
                let r = get_at(&mut client, tag, &headers);
                assert_eq!(r.served_by(), expected, "{headers:?} at {tag}");
                assert_eq!(
                    r.header("x-echo-x-canary-version"),
                    Some(expected.as_bytes())
                );
                // The named version's end of the documented order, for routes
                // without header routes (Flagger's).
                let named = if expected == "canary" { "99" } else { "0" };
                assert_eq!(r.header("x-echo-x-canary-pick"), Some(named.as_bytes()));
            }
        }
    }
    let m = envoy.prometheus();
    assert_eq!(
        m.value(
            "canary_requests_total",
            &[("version", "canary"), ("reason", "override")]
        ),
        30.0
    );
    assert_eq!(
        m.value(
            "canary_requests_total",
            &[("version", "canary"), ("reason", "user_list")]
        ),
        30.0
    );
}

/// Flagger owns its whole VirtualService: no header route can stand before its
/// weighted route. Overrides and listed users then reach the canary through the
/// pick value `total - 1` (the last destination's range) while the canary has a
/// weight, and cannot at 0%, where Istio has dropped the canary's destination.
#[test]
fn without_header_routes_overrides_reach_the_canary_only_while_it_has_a_weight() {
    let envoy = start("", &[]);
    envoy
        .set_routes(|config| {
            let routes = config["virtual_hosts"][0]["routes"]
                .as_sequence_mut()
                .unwrap();
            routes.retain(|r| r["name"].as_str() == Some("weighted"));
        })
        .unwrap();
    let mut client = envoy.client();
    for (tag, canary_weight, reachable) in [("one", 1, true), ("ten", 10, true), ("none", 0, false)]
    {
        set_weights(
            &envoy,
            &[("stable", 100 - canary_weight), ("canary", canary_weight)],
            tag,
        );
        for headers in [
            vec![("x-canary", "canary")],
            vec![("x-user-id", "qa-alice")],
        ] {
            for _ in 0..20 {
                let r = get_at(&mut client, tag, &headers);
                let expected = if reachable { "canary" } else { "stable" };
                assert_eq!(r.served_by(), expected, "{headers:?} at {canary_weight}%");
            }
        }
        for _ in 0..20 {
            let r = get_at(&mut client, tag, &[("x-canary", "stable")]);
            assert_eq!(r.served_by(), "stable");
        }
    }
}

#[test]
fn a_client_sent_pick_or_route_header_never_decides() {
    let envoy = start("", &["x-canary-pick", "x-canary-version"]);
    let destinations = [("stable", 50), ("canary", 50)];
    set_weights(&envoy, &destinations, "spoof");
    let mut client = envoy.client();
    let users = user_ids("spoof", 400);
    for (i, user) in users.iter().enumerate() {
        let expected = formula(user, &destinations);
        let bucket = bucket_of(b"gr1:", user.as_bytes(), 100);
        let value = pick_value(bucket, 100, 100).to_string();
        let spoofs: [&[(&str, &str)]; 5] = [
            &[("x-canary-pick", "0")],
            &[("x-canary-pick", "99"), ("X-Canary-Pick", "99")],
            &[("x-canary-pick", "not-a-number")],
            &[("x-canary-version", "canary")],
            &[("X-Canary-Version", "stable"), ("x-canary-pick", "50")],
        ];
        let spoof = spoofs[i % spoofs.len()];
        let mut headers = vec![("x-user-id", user.as_str())];
        headers.extend_from_slice(spoof);
        let r = get_at(&mut client, "spoof", &headers);
        assert_eq!(r.served_by(), expected, "{user} with {spoof:?}");
        assert_eq!(
            r.header("x-echo-x-canary-pick"),
            Some(value.as_bytes()),
            "{user}: exactly the filter's value reached the upstream"
        );
        assert_eq!(r.header("x-echo-x-canary-version").unwrap_or_default(), b"");
    }
}

#[test]
fn the_guard_trips_in_pick_mode_and_sends_its_users_to_the_baseline() {
    let guard = r#",
  "guard": { "version": "canary", "max_error_rate": 0.2, "min_requests": 20,
             "window": "30s", "hold": "forever" }"#;
    let envoy = start(guard, &["x-canary-pick"]);
    let destinations = [("stable", 50), ("canary", 50)];
    set_weights(&envoy, &destinations, "guard");
    let mut client = envoy.client();
    let users = user_ids("guard", 2000);
    envoy.set_runtime("demo.canary_failure_percent", "100");
    let tripped = |envoy: &Envoy| {
        envoy
            .prometheus()
            .value("canary_guard_tripped", &[("version", "canary")])
            == 1.0
    };
    let mut failures = 0;
    for user in users.iter().take(400) {
        let r = get_at(&mut client, "guard", &[("x-user-id", user)]);
        failures += usize::from(r.status == 503);
        if failures >= 30 && tripped(&envoy) {
            break;
        }
    }
    assert!(
        wait_until(Duration::from_secs(5), || tripped(&envoy)),
        "the guard never tripped ({failures} canary failures)"
    );
    eprintln!("guard: tripped after {failures} canary failures");
    let before = envoy.prometheus();
    let mut stable = 0;
    for user in &users {
        let r = get_at(&mut client, "guard", &[("x-user-id", user)]);
        assert_eq!(r.status, 200, "{user}");
        assert_eq!(r.served_by(), "stable", "{user} after the trip");
        assert_eq!(r.header("x-echo-x-canary-pick"), Some(&b"0"[..]));
        stable += 1;
    }
    for _ in 0..200 {
        let r = get_at(&mut client, "guard", &[]);
        assert_eq!(r.served_by(), "stable", "anonymous after the trip");
    }
    // Overrides still reach the canary, to debug it.
    let r = get_at(&mut client, "guard", &[("x-canary", "canary")]);
    assert_eq!(r.served_by(), "canary");
    let after = envoy.prometheus();
    let guarded = |m: &harness::Metrics| {
        m.value(
            "canary_requests_total",
            &[("version", "stable"), ("reason", "guard")],
        )
    };
    assert_eq!(guarded(&after) - guarded(&before), (stable + 200) as f64);
    assert!(envoy.log().contains("guard tripped: canary failed"));
}
