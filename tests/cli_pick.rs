//! The CLI in pick mode (`hash.pick_header`): `validate` says the route's weights
//! decide; `explain` shows the pick value (the documented formula) and the
//! destination it lands in for `--route-weights`, which a real Envoy with that route
//! confirms user by user; `simulate` splits over the route's destinations.

mod cli_support;
mod harness;

use canary_router::bucket::bucket_of;
use canary_router::pick::{destination_of, pick_value};
use cli_support::{code, run, stderr, stdout};
use harness::{Envoy, EnvoyOptions};
use serde_json::Value;

const PICK: &str = "tests/fixtures/configs/good/pick-mode.json";

fn json(args: &[&str]) -> Value {
    let o = run(args, None);
    assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).expect("JSON")
}

#[test]
fn validate_knows_pick_mode() {
    let o = run(&["validate", PICK], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("valid: 2 versions: primary, canary (pick mode: the route's weights decide; pick value in x-canary-pick, for weights adding up to 100); guard on canary"),
        "{}",
        stdout(&o)
    );
    let v = json(&["validate", PICK, "--json"]);
    assert_eq!(v["pick"]["header"], "x-canary-pick");
    assert_eq!(v["pick"]["total"], 100);
    assert!(v["versions"][1]["weight"].is_null());
}

#[test]
fn explain_shows_the_documented_pick_value_and_its_destination_in_both_orders() {
    for (weights, names) in [
        ("primary=75,canary=25", ["primary", "canary"]),
        ("canary=25,primary=75", ["canary", "primary"]),
    ] {
        let w: Vec<u64> = if names[0] == "primary" {
            vec![75, 25]
        } else {
            vec![25, 75]
        };
        for i in 0..150 {
            let user = format!("user-{i}");
            let header = format!("x-user-id={user}");
            let v = json(&[
                "explain",
                PICK,
                "--header",
                &header,
                "--route-weights",
                weights,
                "--json",
            ]);
            let bucket = bucket_of(b"myapp:", user.as_bytes(), 100);
            let value = pick_value(bucket, 100, 100);
            assert_eq!(v["reason"], "hash");
            assert_eq!(v["bucket"], bucket);
            assert_eq!(v["pick"], value, "{user}");
            let expected = names[destination_of(value, &w).unwrap()];
            assert_eq!(v["destination"], expected, "{user} at {weights}");
            assert_eq!(v["version"], expected);
        }
    }
    let text = stdout(&run(
        &[
            "explain",
            PICK,
            "--header",
            "x-user-id=alice",
            "--route-weights",
            "primary=90,canary=10",
        ],
        None,
    ));
    assert!(
        text.contains("pick:    98 = 100 - 1 - floor((2 - 1) * 100 / 100)\n"),
        "{text}"
    );
    assert!(
        text.contains("lands:   canary: 98 % 100 = 98 is in its range 90-99 (route weights primary=90, canary=10)\n"),
        "{text}"
    );
    assert!(
        text.contains("sets:    x-canary-pick: 98; removes x-canary-version\n"),
        "{text}"
    );
    // Overrides, the guard, anonymous requests, and a route whose weights do not add
    // up to pick_total.
    let v = json(&["explain", PICK, "--header", "x-canary=canary", "--json"]);
    assert_eq!(
        (v["version"].as_str(), v["pick"].as_u64()),
        (Some("canary"), Some(99))
    );
    let v = json(&[
        "explain",
        PICK,
        "--header",
        "x-user-id=alice",
        "--guard-tripped",
        "--route-weights",
        "primary=50,canary=50",
        "--json",
    ]);
    assert_eq!(
        (v["reason"].as_str(), v["pick"].as_u64()),
        (Some("guard"), Some(0))
    );
    assert_eq!(v["destination"], "primary");
    let v = json(&[
        "explain",
        PICK,
        "--route-weights",
        "primary=50,canary=50",
        "--json",
    ]);
    assert_eq!(v["reason"], "random");
    assert!(v["pick"].is_null() && v["bucket"].is_null());
    let text = stdout(&run(
        &[
            "explain",
            PICK,
            "--header",
            "x-user-id=alice",
            "--route-weights",
            "primary=900,canary=100",
        ],
        None,
    ));
    assert!(
        text.contains("note:    the route's weights add up to 1000, hash.pick_total is 100"),
        "{text}"
    );
    for bad in ["primary", "primary=-1", "primary=0", "primary=1.5"] {
        let o = run(&["explain", PICK, "--route-weights", bad], None);
        assert_eq!(code(&o), 2, "{bad}: {}", stderr(&o));
    }
}

#[test]
fn simulate_splits_over_the_routes_destinations() {
    let o = run(&["simulate", PICK, "--users", "100"], None);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("give them with --route-weights"),
        "{}",
        stderr(&o)
    );
    let v = json(&[
        "simulate",
        PICK,
        "--users",
        "20000",
        "--route-weights",
        "primary=75,canary=25",
        "--json",
    ]);
    assert_eq!(v["users"]["within_4_sigma"], true);
    assert_eq!(v["anonymous"]["within_4_sigma"], true);
    let canary = v["destinations"][1]["users"]["count"].as_u64().unwrap();
    // Exactly the users whose bucket is at most 25 (the last destination's range).
    let expected = (0..20000)
        .filter(|i| bucket_of(b"myapp:", format!("user-{i}").as_bytes(), 100) <= 25)
        .count() as u64;
    assert_eq!(canary, expected);
    let v = json(&[
        "simulate",
        PICK,
        "--users",
        "5000",
        "--guard-tripped",
        "--route-weights",
        "primary=75,canary=25",
        "--json",
    ]);
    assert_eq!(v["destinations"][0]["users"]["count"], 5000);
    assert_eq!(v["destinations"][0]["anonymous"]["count"], 5000);
    let text = stdout(&run(
        &[
            "simulate",
            PICK,
            "--users",
            "1000",
            "--route-weights",
            "primary=75,canary=25",
        ],
        None,
    ));
    assert!(
        text.contains("users:     every share is within 4 sigma of the expected split"),
        "{text}"
    );
}

/// `explain`'s destination is where a real Envoy with that route sends the user.
#[test]
fn explain_names_the_cluster_envoy_routes_to() {
    let config = std::fs::read_to_string(cli_support::repo_root().join(PICK)).unwrap();
    let envoy = Envoy::start(EnvoyOptions {
        bootstrap: Some("envoy/weighted-clusters.yaml".into()),
        routes_from_file: true,
        ..EnvoyOptions::with_config(config.replace("\"primary\"", "\"stable\""))
    });
    envoy
        .set_routes(|routes| {
            routes["virtual_hosts"][0]["response_headers_to_add"] =
                serde_yaml::from_str("[{ header: { key: x-routes, value: '60-40' } }]").unwrap();
            for route in routes["virtual_hosts"][0]["routes"]
                .as_sequence_mut()
                .unwrap()
            {
                if route["name"].as_str() == Some("weighted") {
                    route["route"]["weighted_clusters"]["clusters"] = serde_yaml::from_str(
                        "[{ name: stable, weight: 60 }, { name: canary, weight: 40 }]",
                    )
                    .unwrap();
                }
            }
        })
        .unwrap();
    let mut client = envoy.client();
    for i in 0..100 {
        let user = format!("cli-{i}");
        let header = format!("x-user-id={user}");
        let v = json(&[
            "explain",
            PICK,
            "--header",
            &header,
            "--route-weights",
            "stable=60,canary=40",
            "--json",
        ]);
        // A worker that has not yet taken the new routes answers without the tag.
        let served = (0..200)
            .map(|_| client.get_with(&[("x-user-id", &user)]))
            .find(|r| r.header("x-routes") == Some(&b"60-40"[..]))
            .expect("an answer from the new routes")
            .served_by();
        assert_eq!(v["destination"].as_str(), Some(served.as_str()), "{user}");
    }
}
